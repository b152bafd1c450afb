//! What Dify's tables say a dataset's vector index must hold (dify-reference: vectors.md §3,
//! §7, §8): segments of available non-hierarchical documents, child chunks of hierarchical
//! ones (never their parents), completed summaries, and multimodal attachments; plus the
//! `embeddings` cache those records' vectors were made from.

use std::collections::HashMap;

use sqlx::PgPool;
use uuid::Uuid;

/// A dataset a migration may move.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Dataset {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub index_struct: Option<String>,
    pub embedding_model: Option<String>,
    pub embedding_model_provider: Option<String>,
    /// The shared Qdrant collection of the dataset's embedding model, if bound.
    pub binding_collection: Option<String>,
}

/// High-quality datasets not already on `target` (Dify's own rule), narrowed by ids/tenants.
pub async fn datasets(
    pool: &PgPool,
    target: &str,
    dataset_ids: Option<&[Uuid]>,
    tenant_ids: Option<&[Uuid]>,
) -> Result<Vec<Dataset>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, d.tenant_id, d.index_struct, d.embedding_model, d.embedding_model_provider, \
                b.collection_name AS binding_collection \
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
    .await
}

/// One record the index must hold: its `doc_id`, kind, document, and the cache key of its
/// vector (`sha256(text + "None")`, or the upload file id for attachments).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Record {
    pub doc_id: String,
    pub kind: String,
    pub document_id: Uuid,
    pub cache_hash: String,
}

const AVAILABLE: &str = "d.indexing_status = 'completed' AND d.enabled AND NOT d.archived AND s.status = 'completed' AND s.enabled";

/// Every record of `dataset` Dify's query path can return.
pub async fn expected(pool: &PgPool, dataset: Uuid) -> Result<Vec<Record>, sqlx::Error> {
    let hash = |col: &str| format!("encode(sha256(convert_to({col} || 'None', 'UTF8')), 'hex')");
    let sql = format!(
        "SELECT s.index_node_id AS doc_id, 'segment' AS kind, s.document_id, {seg} AS cache_hash \
         FROM public.document_segments s JOIN public.documents d ON d.id = s.document_id \
         WHERE s.dataset_id = $1 AND {AVAILABLE} AND d.doc_form <> 'hierarchical_model' \
           AND s.index_node_id IS NOT NULL \
         UNION ALL \
         SELECT c.index_node_id, 'child_chunk', c.document_id, {child} \
         FROM public.child_chunks c JOIN public.document_segments s ON s.id = c.segment_id \
         JOIN public.documents d ON d.id = c.document_id \
         WHERE c.dataset_id = $1 AND {AVAILABLE} AND d.doc_form = 'hierarchical_model' \
           AND c.index_node_id IS NOT NULL \
         UNION ALL \
         SELECT m.summary_index_node_id, 'summary', m.document_id, {summary} \
         FROM public.document_segment_summaries m \
         WHERE m.dataset_id = $1 AND m.status = 'completed' AND m.enabled \
           AND m.summary_index_node_id IS NOT NULL \
         UNION ALL \
         SELECT DISTINCT ON (a.attachment_id) a.attachment_id::text, 'attachment', a.document_id, \
                a.attachment_id::text \
         FROM public.segment_attachment_bindings a \
         JOIN public.document_segments s ON s.id = a.segment_id \
         JOIN public.documents d ON d.id = a.document_id \
         JOIN public.datasets ds ON ds.id = a.dataset_id AND ds.is_multimodal \
         WHERE a.dataset_id = $1 AND {AVAILABLE}",
        seg = hash("s.content"),
        child = hash("c.content"),
        summary = hash("m.summary_content"),
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(dataset)
        .fetch_all(pool)
        .await
}

/// The text and metadata Dify would have written for records the source store lacks.
pub async fn rebuilt(
    pool: &PgPool,
    dataset: Uuid,
    doc_ids: &[String],
) -> Result<Vec<(String, String, Option<String>, Uuid, String)>, sqlx::Error> {
    // (doc_id, text, doc_hash, document_id, kind)
    sqlx::query_as(
        "SELECT s.index_node_id, s.content, s.index_node_hash, s.document_id, 'segment' \
         FROM public.document_segments s WHERE s.dataset_id = $1 AND s.index_node_id = ANY($2) \
         UNION ALL \
         SELECT c.index_node_id, c.content, c.index_node_hash, c.document_id, 'child_chunk' \
         FROM public.child_chunks c WHERE c.dataset_id = $1 AND c.index_node_id = ANY($2) \
         UNION ALL \
         SELECT m.summary_index_node_id, m.summary_content, m.summary_index_node_hash, m.document_id, 'summary' \
         FROM public.document_segment_summaries m \
         WHERE m.dataset_id = $1 AND m.summary_index_node_id = ANY($2)",
    )
    .bind(dataset)
    .bind(doc_ids)
    .fetch_all(pool)
    .await
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
