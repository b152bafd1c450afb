//! Knowledge bases as Dify's indexing leaves them: datasets pointing at their Weaviate
//! collections, documents built from upload files, and completed segments with vector ids.

use sqlx::PgPool;

use super::copy::CopyWriter;
use super::ids::{self, Kind};
use super::world::{DAY, EMBEDDING_MODEL, World, collection_name};

type Rows = Result<u64, sqlx::Error>;

/// `datasets.retrieval_model` as Dify's default writes it.
const RETRIEVAL_MODEL: &str = r#"{"search_method": "semantic_search", "reranking_enable": false, "reranking_model": {"reranking_provider_name": "", "reranking_model_name": ""}, "top_k": 4, "score_threshold_enabled": false}"#;

pub(super) async fn dataset_collection_bindings(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "dataset_collection_bindings",
        "id, provider_name, model_name, collection_name, created_at, type",
    )
    .await?;
    let created = w.tenants.iter().map(|t| t.created).min().unwrap_or(w.start);
    for b in &w.bindings {
        out.uuid(b.id)
            .text(b.provider)
            .text(EMBEDDING_MODEL)
            .text(&b.collection)
            .ts(created, 0)
            .text(b.kind);
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn datasets(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "datasets",
        "id, tenant_id, name, description, provider, permission, data_source_type, \
         indexing_technique, index_struct, created_by, created_at, updated_by, \
         updated_at, embedding_model, embedding_model_provider, \
         collection_binding_id, retrieval_model",
    )
    .await?;
    for d in &w.datasets {
        let tenant = &w.tenants[d.tenant];
        // Exactly the JSON Dify writes (json.dumps defaults: ", " and ": " separators).
        let index_struct = d.high_quality.then(|| {
            format!(
                r#"{{"type": "weaviate", "vector_store": {{"class_prefix": "{}"}}}}"#,
                collection_name(d.id)
            )
        });
        out.uuid(d.id)
            .uuid(tenant.id)
            .text(&d.name)
            .text(&format!("Useful documents about {}.", d.name))
            .text("vendor")
            .text("only_me")
            .text("upload_file")
            .text(if d.high_quality {
                "high_quality"
            } else {
                "economy"
            })
            .opt_text(index_struct.as_deref())
            .uuid(tenant.owner())
            .ts(d.created, 0)
            .uuid(tenant.owner())
            .ts(d.created, 0)
            .opt_text(d.high_quality.then_some(EMBEDDING_MODEL))
            .opt_text(d.high_quality.then_some(tenant.embedding_provider))
            .opt_uuid(d.binding)
            .text(RETRIEVAL_MODEL);
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn dataset_process_rules(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "dataset_process_rules",
        "id, dataset_id, mode, rules, created_by, created_at",
    )
    .await?;
    for d in &w.datasets {
        out.uuid(d.process_rule)
            .uuid(d.id)
            .text("custom")
            .text(r#"{"pre_processing_rules": [{"id": "remove_extra_spaces", "enabled": true}, {"id": "remove_urls_emails", "enabled": false}], "segmentation": {"separator": "\n\n", "max_tokens": 500, "chunk_overlap": 50}}"#)
            .uuid(w.tenants[d.tenant].owner())
            .ts(d.created, 0);
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn documents(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "documents",
        "id, tenant_id, dataset_id, position, data_source_type, data_source_info, \
         dataset_process_rule_id, batch, name, created_from, created_by, \
         created_at, processing_started_at, word_count, parsing_completed_at, \
         cleaning_completed_at, splitting_completed_at, tokens, indexing_latency, \
         completed_at, indexing_status, enabled, archived, updated_at, doc_form, \
         doc_language",
    )
    .await?;
    for d in &w.datasets {
        let tenant = &w.tenants[d.tenant];
        for i in 0..w.spec.documents_per_dataset {
            let doc = w.doc(d, i);
            let at = doc.created;
            let batch = chrono::DateTime::from_timestamp(at, 0)
                .map(|t| t.naive_utc().format("%Y%m%d%H%M%S").to_string())
                .unwrap_or_default();
            let words = 120 * w.spec.segments_per_document as i64;
            out.uuid(doc.id)
                .uuid(tenant.id)
                .uuid(d.id)
                .int(doc.position as i64)
                .text("upload_file")
                .text(&format!(r#"{{"upload_file_id": "{}"}}"#, doc.file))
                .uuid(d.process_rule)
                .text(&format!("{batch}{}", 100_000 + doc.index % 900_000))
                .text(&doc.name)
                .text("web")
                .uuid(tenant.owner())
                .ts(at, 0)
                .ts(at + 1, 0)
                .int(words)
                .ts(at + 2, 0)
                .ts(at + 2, 0)
                .ts(at + 3, 0)
                .int(words * 4 / 3)
                .float(4.2)
                .ts(at + 5, 0)
                .text("completed")
                .boolean(true)
                .boolean(false)
                .ts(at + 5, 0)
                .text("text_model")
                .text("English");
            out.end_row().await?;
        }
    }
    out.finish().await
}

pub(super) async fn document_segments(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "document_segments",
        "id, tenant_id, dataset_id, document_id, position, content, word_count, \
         tokens, keywords, index_node_id, index_node_hash, hit_count, enabled, \
         status, created_by, created_at, indexing_at, completed_at, updated_at",
    )
    .await?;
    for d in &w.datasets {
        let tenant = &w.tenants[d.tenant];
        for i in 0..w.spec.documents_per_dataset {
            let doc = w.doc(d, i);
            for s in 0..w.spec.segments_per_document {
                let seg = w.segment(d, &doc, s);
                let keywords = format!(r#"["{}", "{}"]"#, seg.keywords[0], seg.keywords[1]);
                out.uuid(seg.id)
                    .uuid(tenant.id)
                    .uuid(d.id)
                    .uuid(doc.id)
                    .int(seg.position as i64)
                    .text(&seg.content)
                    .int(seg.content.chars().count() as i64)
                    .int(super::text::tokens(&seg.content))
                    .opt_text((!d.high_quality).then_some(keywords.as_str()))
                    .text(&seg.node_id.to_string())
                    .text(&seg.hash)
                    .int(seg.hit_count)
                    .boolean(true)
                    .text("completed")
                    .uuid(tenant.owner())
                    .ts(doc.created + 3, 0)
                    .ts(doc.created + 4, 0)
                    .ts(doc.created + 5, 0)
                    .ts(doc.created + 5, 0);
                out.end_row().await?;
            }
        }
    }
    out.finish().await
}

pub(super) async fn app_annotation_settings(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "app_annotation_settings",
        "id, app_id, score_threshold, collection_binding_id, created_user_id, \
         created_at, updated_user_id, updated_at",
    )
    .await?;
    for app in w.apps.iter().filter(|a| a.annotations) {
        let tenant = &w.tenants[app.tenant];
        let at = app.created + DAY;
        out.uuid(ids::id(w.seed, Kind::AnnotationSetting, app.index as u64))
            .uuid(app.id)
            .float(0.9)
            .uuid(w.binding(tenant.embedding_provider, "annotation"))
            .uuid(tenant.owner())
            .ts(at, 0)
            .uuid(tenant.owner())
            .ts(at, 0);
        out.end_row().await?;
    }
    out.finish().await
}
