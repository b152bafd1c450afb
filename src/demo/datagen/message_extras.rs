//! What users and operators attach to messages and conversations: saved messages, pins,
//! annotations and their hits, retrieval sources, and advanced-chat conversation variables.

use sqlx::PgPool;

use super::copy::CopyWriter;
use super::ids::{self, Kind, uuid4};
use super::logs::{Conv, Msg};
use super::text::{self, json_str};
use super::world::{App, World};

type Rows = Result<u64, sqlx::Error>;

pub(super) async fn saved_messages(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "saved_messages",
        "id, app_id, message_id, created_by, created_at, created_by_role",
    )
    .await?;
    for (app, c, m) in w.messages() {
        if !m.saved {
            continue;
        }
        out.uuid(ids::id(w.seed, Kind::Saved, m.index))
            .uuid(app.id)
            .uuid(m.id)
            .uuid(c.actor.id())
            .ts(m.created + 5, 0)
            .text(c.actor.role());
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn pinned_conversations(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "pinned_conversations",
        "id, app_id, conversation_id, created_by, created_at, created_by_role",
    )
    .await?;
    for (app, c) in w.conversations() {
        if !c.pinned {
            continue;
        }
        out.uuid(ids::id(w.seed, Kind::Pinned, c.index))
            .uuid(app.id)
            .uuid(c.id)
            .uuid(c.actor.id())
            .ts(c.created + 60, 0)
            .text(c.actor.role());
        out.end_row().await?;
    }
    out.finish().await
}

/// The annotated message a hit history points at: the first message of conversation `j`.
fn annotated(w: &World, app: &App, j: usize) -> Msg {
    let conv: Conv = w.conv(app, j);
    w.msg(app, &conv, 0)
}

pub(super) async fn message_annotations(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "message_annotations",
        "id, app_id, conversation_id, message_id, content, account_id, created_at, \
         updated_at, question, hit_count",
    )
    .await?;
    for (app, c, m) in w.messages() {
        if !m.annotated {
            continue;
        }
        let at = (m.created + 3600).min(w.now);
        out.uuid(ids::id(w.seed, Kind::Annotation, m.index))
            .uuid(app.id)
            .uuid(c.id)
            .uuid(m.id)
            .text(m.answer)
            .uuid(w.tenants[app.tenant].owner())
            .ts(at, 0)
            .ts(at, 0)
            .text(m.query)
            .int((m.index % 7) as i64);
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn app_annotation_hit_histories(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "app_annotation_hit_histories",
        "id, app_id, annotation_id, source, question, account_id, created_at, \
         score, message_id, annotation_question, annotation_content",
    )
    .await?;
    for (app, c, m) in w.messages() {
        let Some(j) = m.hit else { continue };
        let target = annotated(w, app, j);
        out.uuid(ids::id(w.seed, Kind::HitHistory, m.index))
            .uuid(app.id)
            .uuid(ids::id(w.seed, Kind::Annotation, target.index))
            .text(c.invoke_from)
            .text(m.query)
            .uuid(w.tenants[app.tenant].owner())
            .ts(m.created, 0)
            .float(0.9 + (m.index % 10) as f64 / 100.0)
            .uuid(m.id)
            .text(target.query)
            .text(target.answer);
        out.end_row().await?;
    }
    out.finish().await
}

pub(super) async fn dataset_retriever_resources(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "dataset_retriever_resources",
        "id, message_id, position, dataset_id, dataset_name, document_id, \
         document_name, data_source_type, segment_id, score, content, hit_count, \
         word_count, segment_position, index_node_hash, retriever_from, \
         created_by, created_at",
    )
    .await?;
    for (app, c, m) in w.messages() {
        let usable: Vec<usize> = w.tenants[app.tenant]
            .datasets
            .iter()
            .copied()
            .filter(|&d| w.datasets[d].high_quality)
            .collect();
        for r in 0..m.retrievals {
            let mut rng = ids::rng(w.seed, Kind::Retrieval, m.index * 3 + r as u64);
            let id = uuid4(&mut rng);
            let dataset = &w.datasets[*text::pick(&mut rng, &usable)];
            let doc = w.doc(dataset, rng.usize(..w.spec.documents_per_dataset));
            let segment = w.segment(dataset, &doc, rng.usize(..w.spec.segments_per_document));
            out.uuid(id)
                .uuid(m.id)
                .int(r as i64 + 1)
                .uuid(dataset.id)
                .text(&dataset.name)
                .uuid(doc.id)
                .text(&doc.name)
                .text("upload_file")
                .uuid(segment.id)
                .float(0.95 - r as f64 * 0.1)
                .text(&segment.content)
                .int(segment.hit_count)
                .int(text::words(&segment.content))
                .int(segment.position as i64)
                .text(&segment.hash)
                .text(if c.from_source == "console" {
                    "dev"
                } else {
                    "api"
                })
                .uuid(c.actor.id())
                .ts(m.created, m.micros);
            out.end_row().await?;
        }
    }
    out.finish().await
}

pub(super) async fn workflow_conversation_variables(pool: &PgPool, w: &World) -> Rows {
    let mut out = CopyWriter::begin(
        pool,
        "workflow_conversation_variables",
        "id, conversation_id, app_id, data, created_at, updated_at",
    )
    .await?;
    let per_conv = w.spec.messages_per_conversation;
    for (app, c) in w.conversations() {
        if !c.variable {
            continue;
        }
        let mut rng = ids::rng(w.seed, Kind::ConversationVariable, c.index);
        let id = uuid4(&mut rng);
        let data = format!(
            r#"{{"id": "{id}", "name": "memory", "description": "", "value_type": "string", "value": {}, "selector": ["conversation", "memory"]}}"#,
            json_str(text::QUERIES[c.title])
        );
        out.uuid(id)
            .uuid(c.id)
            .uuid(app.id)
            .text(&data)
            .ts(c.created, 0)
            .ts(c.updated(per_conv), 0);
        out.end_row().await?;
    }
    out.finish().await
}
