//! What Dify's tables say a dataset's vector index must hold (dify-reference: vectors.md §3,
//! §7, §8): segments of available non-hierarchical documents, child chunks of hierarchical
//! ones (never their parents), completed summaries, and multimodal attachments; the
//! annotation replies of apps that have them enabled (vectors.md §2.3); plus the `embeddings`
//! cache those records' vectors were made from.

use std::collections::HashMap;

use serde_json::{Map, Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::dify::shape::{Col, Need, Shape, Ty, col, need};

/// A dataset a migration may move, or the stand-in dataset Dify builds for an app's
/// annotation replies (`annotations`: id = app id, no `index_struct`, the annotation binding).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Dataset {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub index_struct: Option<String>,
    pub embedding_model: Option<String>,
    pub embedding_model_provider: Option<String>,
    /// The shared Qdrant collection of the dataset's embedding model, if bound.
    pub binding_collection: Option<String>,
    pub annotations: bool,
    /// Which record kinds this Dify release can hold (set from the catalog after reading).
    #[sqlx(skip)]
    pub parts: RecordParts,
}

/// Record kinds newer releases added: summaries and multimodal attachments came with 1.13
/// (their tables, and `datasets.is_multimodal`, are absent in 1.9.2 and older).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordParts {
    pub summaries: bool,
    pub attachments: bool,
}

impl Default for RecordParts {
    fn default() -> Self {
        RecordParts {
            summaries: true,
            attachments: true,
        }
    }
}

impl RecordParts {
    /// What this database's schema has.
    pub fn of(shape: &Shape) -> Self {
        RecordParts {
            summaries: shape.has_table("document_segment_summaries"),
            attachments: shape.has_table("segment_attachment_bindings")
                && shape.has_column("datasets", "is_multimodal"),
        }
    }
}

const ID: Col = col("id", Ty::Uuid);

/// What `vector_migrate` (and a restore of vectors) reads, and the `index_struct` it switches.
pub const NEEDS: &[Need] = &[
    need(
        "datasets",
        &[
            ID,
            col("tenant_id", Ty::Uuid),
            col("index_struct", Ty::Text),
            col("embedding_model", Ty::Text),
            col("embedding_model_provider", Ty::Text),
            col("collection_binding_id", Ty::Uuid),
            col("indexing_technique", Ty::Text),
            col("created_at", Ty::Timestamp),
        ],
    ),
    need(
        "dataset_collection_bindings",
        &[
            ID,
            col("provider_name", Ty::Text),
            col("model_name", Ty::Text),
            col("collection_name", Ty::Text),
            col("type", Ty::Text),
            col("created_at", Ty::Timestamp),
        ],
    ),
    need(
        "apps",
        &[
            ID,
            col("tenant_id", Ty::Uuid),
            col("status", Ty::Text),
            col("created_at", Ty::Timestamp),
        ],
    ),
    need(
        "app_annotation_settings",
        &[
            col("app_id", Ty::Uuid),
            col("collection_binding_id", Ty::Uuid),
            col("created_at", Ty::Timestamp),
        ],
    ),
    // `question` is nullable up to 1.9.2: the text falls back to the answer either way.
    need(
        "message_annotations",
        &[
            ID,
            col("app_id", Ty::Uuid),
            col("question", Ty::Text),
            col("content", Ty::Text),
        ],
    ),
    need(
        "documents",
        &[
            ID,
            col("indexing_status", Ty::Text),
            col("enabled", Ty::Bool),
            col("archived", Ty::Bool),
            col("doc_form", Ty::Text),
        ],
    ),
    need(
        "document_segments",
        &[
            ID,
            col("dataset_id", Ty::Uuid),
            col("document_id", Ty::Uuid),
            col("index_node_id", Ty::Text),
            col("index_node_hash", Ty::Text),
            col("content", Ty::Text),
            col("status", Ty::Text),
            col("enabled", Ty::Bool),
        ],
    ),
    need(
        "child_chunks",
        &[
            col("segment_id", Ty::Uuid),
            col("document_id", Ty::Uuid),
            col("dataset_id", Ty::Uuid),
            col("index_node_id", Ty::Text),
            col("index_node_hash", Ty::Text),
            col("content", Ty::Text),
        ],
    ),
    need(
        "document_segment_summaries",
        &[
            col("dataset_id", Ty::Uuid),
            col("document_id", Ty::Uuid),
            col("chunk_id", Ty::Uuid),
            col("summary_index_node_id", Ty::Text),
            col("summary_index_node_hash", Ty::Text),
            col("summary_content", Ty::Text),
            col("status", Ty::Text),
            col("enabled", Ty::Bool),
        ],
    ),
    need(
        "segment_attachment_bindings",
        &[
            col("attachment_id", Ty::Uuid),
            col("segment_id", Ty::Uuid),
            col("document_id", Ty::Uuid),
            col("dataset_id", Ty::Uuid),
        ],
    ),
];

/// Sets each dataset's record kinds from the catalog.
async fn with_parts(pool: &PgPool, mut found: Vec<Dataset>) -> Result<Vec<Dataset>, sqlx::Error> {
    let parts = RecordParts::of(&Shape::read(pool).await?);
    for d in &mut found {
        d.parts = parts;
    }
    Ok(found)
}

/// High-quality datasets not already on `target` (Dify's own rule), narrowed by ids/tenants.
pub async fn datasets(
    pool: &PgPool,
    target: &str,
    dataset_ids: Option<&[Uuid]>,
    tenant_ids: Option<&[Uuid]>,
) -> Result<Vec<Dataset>, sqlx::Error> {
    let found = sqlx::query_as(
        "SELECT d.id, d.tenant_id, d.index_struct, d.embedding_model, d.embedding_model_provider, \
                b.collection_name AS binding_collection, false AS annotations \
         FROM public.datasets d \
         LEFT JOIN public.dataset_collection_bindings b ON b.id = d.collection_binding_id \
         WHERE d.indexing_technique = 'high_quality' \
           AND (d.index_struct IS NULL OR d.index_struct::jsonb ->> 'type' IS DISTINCT FROM $1) \
           AND ($2::uuid[] IS NULL OR d.id = ANY($2)) \
           AND ($3::uuid[] IS NULL OR d.tenant_id = ANY($3)) \
         ORDER BY d.created_at, d.id",
    )
    .bind(target)
    .bind(dataset_ids)
    .bind(tenant_ids)
    .fetch_all(pool)
    .await?;
    with_parts(pool, found).await
}

/// Apps whose annotation reply is enabled (an `app_annotation_settings` row), as Dify's
/// `migrate_annotation_vector_database` walks them. The collection is the one Dify's query
/// path reads: the oldest `annotation` binding of the setting's embedding model.
pub async fn annotation_apps(
    pool: &PgPool,
    app_ids: Option<&[Uuid]>,
    tenant_ids: Option<&[Uuid]>,
) -> Result<Vec<Dataset>, sqlx::Error> {
    let found = sqlx::query_as(
        "SELECT a.id, a.tenant_id, NULL::text AS index_struct, b.model_name AS embedding_model, \
                b.provider_name AS embedding_model_provider, \
                (SELECT o.collection_name FROM public.dataset_collection_bindings o \
                 WHERE o.provider_name = b.provider_name AND o.model_name = b.model_name \
                   AND o.type = 'annotation' ORDER BY o.created_at, o.id LIMIT 1) AS binding_collection, \
                true AS annotations \
         FROM public.apps a \
         JOIN LATERAL (SELECT collection_binding_id FROM public.app_annotation_settings \
                       WHERE app_id = a.id ORDER BY created_at LIMIT 1) s ON true \
         JOIN public.dataset_collection_bindings b ON b.id = s.collection_binding_id \
         WHERE a.status = 'normal' \
           AND ($1::uuid[] IS NULL OR a.id = ANY($1)) \
           AND ($2::uuid[] IS NULL OR a.tenant_id = ANY($2)) \
         ORDER BY a.created_at, a.id",
    )
    .bind(app_ids)
    .bind(tenant_ids)
    .fetch_all(pool)
    .await?;
    with_parts(pool, found).await
}

/// The vector stores Dify's datasets name in `index_struct` now, plus the ones migrations
/// switched them away from: where an app's annotation replies (which have no `index_struct`)
/// can have been written.
pub async fn stores_named(pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    // A regex, not a JSON cast: one malformed `index_struct` must not fail the query.
    sqlx::query_scalar(
        "SELECT DISTINCT t FROM ( \
           SELECT substring(index_struct FROM '\"type\": *\"([^\"]+)\"') AS t FROM public.datasets \
           UNION ALL \
           SELECT substring(previous FROM '\"type\": *\"([^\"]+)\"') FROM upkeep.vector_switches \
         ) s WHERE t IS NOT NULL ORDER BY t",
    )
    .fetch_all(pool)
    .await
}

/// One record the index must hold: its `doc_id`, kind, and the cache key of its vector
/// (`sha256(text + "None")`, or the upload file id for attachments).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Record {
    pub doc_id: String,
    pub kind: String,
    pub cache_hash: String,
}

/// `question_text`: the question, or the answer when the question is empty.
const ANNOTATION_TEXT: &str = "COALESCE(NULLIF(a.question, ''), a.content)";

const AVAILABLE: &str = "d.indexing_status = 'completed' AND d.enabled AND NOT d.archived AND s.status = 'completed' AND s.enabled";

fn hash(col: &str) -> String {
    format!("encode(sha256(convert_to({col} || 'None', 'UTF8')), 'hex')")
}

/// Every record of `dataset` Dify's query path can return.
pub async fn expected(pool: &PgPool, dataset: &Dataset) -> Result<Vec<Record>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(expected_sql(dataset, true)))
        .bind(dataset.id)
        .fetch_all(pool)
        .await
}

/// How many records `expected` returns, without fetching them.
pub async fn expected_count(pool: &PgPool, dataset: &Dataset) -> Result<i64, sqlx::Error> {
    // Without the hashes: hashing every text was most of the count's time.
    let sql = format!("SELECT count(*) FROM ({}) e", expected_sql(dataset, false));
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(dataset.id)
        .fetch_one(pool)
        .await
}

/// `hashed`: with each record's cache key, else NULL in its place.
fn expected_sql(dataset: &Dataset, hashed: bool) -> String {
    let key = |col: &str| {
        if hashed {
            hash(col)
        } else {
            "NULL".to_string()
        }
    };
    if dataset.annotations {
        // `Vector.create` drops documents whose text is blank.
        return format!(
            "SELECT a.id::text AS doc_id, 'annotation' AS kind, {h} AS cache_hash \
             FROM public.message_annotations a \
             WHERE a.app_id = $1 AND btrim({ANNOTATION_TEXT}) <> ''",
            h = key(ANNOTATION_TEXT)
        );
    }
    let mut parts = vec![
        format!(
            "SELECT s.index_node_id AS doc_id, 'segment' AS kind, {seg} AS cache_hash \
             FROM public.document_segments s JOIN public.documents d ON d.id = s.document_id \
             WHERE s.dataset_id = $1 AND {AVAILABLE} AND d.doc_form <> 'hierarchical_model' \
               AND s.index_node_id IS NOT NULL",
            seg = key("s.content"),
        ),
        format!(
            "SELECT c.index_node_id, 'child_chunk', {child} \
             FROM public.child_chunks c JOIN public.document_segments s ON s.id = c.segment_id \
             JOIN public.documents d ON d.id = c.document_id \
             WHERE c.dataset_id = $1 AND {AVAILABLE} AND d.doc_form = 'hierarchical_model' \
               AND c.index_node_id IS NOT NULL",
            child = key("c.content"),
        ),
    ];
    if dataset.parts.summaries {
        parts.push(format!(
            "SELECT m.summary_index_node_id, 'summary', {summary} \
             FROM public.document_segment_summaries m \
             WHERE m.dataset_id = $1 AND m.status = 'completed' AND m.enabled \
               AND m.summary_index_node_id IS NOT NULL",
            summary = key("m.summary_content"),
        ));
    }
    if dataset.parts.attachments {
        parts.push(format!(
            "SELECT DISTINCT ON (a.attachment_id) a.attachment_id::text, 'attachment', \
                    a.attachment_id::text \
             FROM public.segment_attachment_bindings a \
             JOIN public.document_segments s ON s.id = a.segment_id \
             JOIN public.documents d ON d.id = a.document_id \
             JOIN public.datasets ds ON ds.id = a.dataset_id AND ds.is_multimodal \
             WHERE a.dataset_id = $1 AND {AVAILABLE}"
        ));
    }
    // Parenthesised: DISTINCT ON binds to its own branch.
    parts
        .iter()
        .map(|p| format!("({p})"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// A record as Dify would have written it, for one the source store lacks: its text and
/// the metadata Dify's indexing path gives that kind.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    pub doc_id: String,
    pub kind: String,
    pub text: String,
    pub metadata: Map<String, Value>,
}

pub async fn rebuilt(
    pool: &PgPool,
    dataset: &Dataset,
    doc_ids: &[String],
) -> Result<Vec<Rebuilt>, sqlx::Error> {
    // (doc_id, kind, text, doc_hash, document_id, original_chunk_id)
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        String,
        String,
        String,
        Option<String>,
        Option<Uuid>,
        Option<Uuid>,
    )> = if dataset.annotations {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT a.id::text, 'annotation', {ANNOTATION_TEXT}, NULL::text, NULL::uuid, NULL::uuid \
                 FROM public.message_annotations a WHERE a.app_id = $1 AND a.id::text = ANY($2)"
            )))
            .bind(dataset.id)
            .bind(doc_ids)
            .fetch_all(pool)
            .await?
    } else {
        // Attachments: the file name as text, an empty `doc_hash` (Dify's multimodal path).
        let mut parts = vec![
            "SELECT s.index_node_id, 'segment', s.content, s.index_node_hash, s.document_id, \
                    NULL::uuid \
             FROM public.document_segments s WHERE s.dataset_id = $1 AND s.index_node_id = ANY($2)",
            "SELECT c.index_node_id, 'child_chunk', c.content, c.index_node_hash, c.document_id, NULL::uuid \
             FROM public.child_chunks c WHERE c.dataset_id = $1 AND c.index_node_id = ANY($2)",
        ];
        if dataset.parts.summaries {
            parts.push(
                "SELECT m.summary_index_node_id, 'summary', m.summary_content, m.summary_index_node_hash, \
                        m.document_id, m.chunk_id \
                 FROM public.document_segment_summaries m \
                 WHERE m.dataset_id = $1 AND m.summary_index_node_id = ANY($2)",
            );
        }
        if dataset.parts.attachments {
            parts.push(
                "SELECT DISTINCT ON (a.attachment_id) a.attachment_id::text, 'attachment', u.name, '', \
                        a.document_id, NULL::uuid \
                 FROM public.segment_attachment_bindings a \
                 JOIN public.upload_files u ON u.id = a.attachment_id \
                 WHERE a.dataset_id = $1 AND a.attachment_id::text = ANY($2)",
            );
        }
        let sql: Vec<String> = parts.iter().map(|p| format!("({p})")).collect();
        sqlx::query_as(sqlx::AssertSqlSafe(sql.join(" UNION ALL ")))
            .bind(dataset.id)
            .bind(doc_ids)
            .fetch_all(pool)
            .await?
    };
    let owner = dataset.id.to_string();
    Ok(rows
        .into_iter()
        .map(|(doc_id, kind, text, doc_hash, document_id, original)| {
            let mut metadata = Map::new();
            if kind == "annotation" {
                metadata.insert("annotation_id".into(), json!(doc_id));
                metadata.insert("app_id".into(), json!(owner));
                metadata.insert("doc_id".into(), json!(doc_id));
            } else {
                metadata.insert("doc_id".into(), json!(doc_id));
                metadata.insert("doc_hash".into(), json!(doc_hash));
                metadata.insert(
                    "document_id".into(),
                    json!(document_id.map(|d| d.to_string())),
                );
                metadata.insert("dataset_id".into(), json!(owner));
                match kind.as_str() {
                    "summary" => {
                        metadata.insert("doc_type".into(), json!("text"));
                        metadata.insert("is_summary".into(), json!(true));
                        metadata.insert(
                            "original_chunk_id".into(),
                            json!(original.map(|o| o.to_string())),
                        );
                    }
                    "attachment" => {
                        metadata.insert("doc_type".into(), json!("image"));
                    }
                    _ => {}
                }
            }
            Rebuilt {
                doc_id,
                kind,
                text,
                metadata,
            }
        })
        .collect())
}

/// Provider names a cache row may carry: the short form (before Dify 1.0) and the plugin id.
pub fn provider_names(provider: &str) -> Vec<String> {
    let short = provider.rsplit('/').next().unwrap_or(provider);
    let mut names = vec![
        provider.to_string(),
        format!("langgenius/{short}/{short}"),
        short.to_string(),
    ];
    names.sort();
    names.dedup();
    names
}

/// How many of these hashes Dify's `embeddings` cache holds a vector for.
pub async fn cached_count(
    pool: &PgPool,
    model: &str,
    provider: &str,
    hashes: &[String],
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(DISTINCT hash) FROM public.embeddings \
         WHERE model_name = $1 AND provider_name = ANY($2) AND hash = ANY($3)",
    )
    .bind(model)
    .bind(provider_names(provider))
    .bind(hashes)
    .fetch_one(pool)
    .await
}

/// Vectors from Dify's `embeddings` cache for these hashes (pickled float64 lists), as f32.
pub async fn cached_vectors(
    pool: &PgPool,
    model: &str,
    provider: &str,
    hashes: &[String],
) -> Result<HashMap<String, Vec<f32>>, sqlx::Error> {
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT DISTINCT ON (hash) hash, embedding FROM public.embeddings \
         WHERE model_name = $1 AND provider_name = ANY($2) AND hash = ANY($3) \
         ORDER BY hash, created_at DESC",
    )
    .bind(model)
    .bind(provider_names(provider))
    .bind(hashes)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(hash, bytes)| {
            let floats: Vec<f64> =
                serde_pickle::from_slice(&bytes, serde_pickle::DeOptions::new()).ok()?;
            Some((hash, floats.into_iter().map(|f| f as f32).collect()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_provider_forms() {
        let names = provider_names("openai");
        assert!(names.contains(&"openai".to_string()));
        assert!(names.contains(&"langgenius/openai/openai".to_string()));
        assert!(provider_names("langgenius/openai/openai").contains(&"openai".to_string()));
    }

    #[test]
    fn reads_python_pickles_of_float_lists() {
        // pickle.dumps([0.5, -1.25], protocol=5)
        let bytes: &[u8] = b"\x80\x05\x95\x17\x00\x00\x00\x00\x00\x00\x00]\x94(G?\xe0\x00\x00\x00\x00\x00\x00G\xbf\xf4\x00\x00\x00\x00\x00\x00e.";
        let v: Vec<f64> =
            serde_pickle::from_slice(bytes, serde_pickle::DeOptions::new()).expect("pickle");
        assert_eq!(v, vec![0.5, -1.25]);
    }
}
