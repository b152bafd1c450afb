//! What Upkeep knows about Dify's schema: releases by Alembic head, the tables jobs touch,
//! and the read-only queries behind `/v1/tenants` and `/v1/preflight`.

pub mod access_paths;
pub mod file_refs;
pub mod index_struct;
pub mod log_tables;
pub mod shape;
pub mod storage_refs;
pub mod tenants;
pub mod vector_records;

/// Alembic heads of Dify releases, newest first (restore compares revisions by this order).
/// From dify-reference (`alembic_version` per release) and `dify/schemas/README.md`, each the
/// one head of that tag's own `api/migrations/versions`. Releases that share a head (no
/// migration between them) share an entry.
pub const KNOWN_REVISIONS: &[(&str, &str)] = &[
    ("c3d4e5f6a7b8", "main @76391b0 (after 1.15.0)"),
    ("d9e8f7a6b5c4", "1.15.0"),
    ("a4f2d8c9b731", "1.14.2"),
    ("6b5f9f8b1a2c", "1.13.3"),
    ("788d3099ae3a", "1.12.1"),
    ("905527cc8fd3", "1.11.4"),
    ("09cfdda155d1", "1.10.1"),
    ("ae662b25d9bc", "1.9.2"),
    ("b95962a3885c", "1.8.1"),
    ("532b3f888abf", "1.7.2"),
    ("4474872b0ee6", "1.4.2 / 1.4.3"),
    ("2adcbe1f5dfb", "1.4.1"),
    ("d28f2004b072", "1.4.0"),
    ("f051706725cc", "1.0.1"),
    ("08ec4f75af5e", "1.0.0"),
    ("a91b476a53de", "0.15.3 to 0.15.8"),
];

pub fn release_of(revision: &str) -> Option<&'static str> {
    KNOWN_REVISIONS
        .iter()
        .find(|(r, _)| *r == revision)
        .map(|(_, release)| *release)
}

/// How new a known revision is: 0 the newest.
pub fn age(revision: &str) -> Option<usize> {
    KNOWN_REVISIONS.iter().position(|(r, _)| *r == revision)
}

/// Whether `revision` is `head`'s release or newer; None when either is unknown.
pub fn at_least(revision: &str, head: &str) -> Option<bool> {
    Some(age(revision)? <= age(head)?)
}

/// The first release whose Weaviate classes carry the named vector `default` (1.9.2, PR
/// #25447): the releases before it write, and search, only the legacy unnamed vector.
pub const WEAVIATE_NAMED_VECTOR_FROM: &str = "ae662b25d9bc";

/// This database's Alembic revision; None when `alembic_version` is missing or empty.
pub async fn revision(pool: &sqlx::PgPool) -> Result<Option<String>, sqlx::Error> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public.alembic_version') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    if !exists {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT version_num::text FROM public.alembic_version LIMIT 1")
        .fetch_optional(pool)
        .await
}

/// Tables the jobs read or change; preflight reports their sizes.
pub const JOB_TABLES: &[&str] = &[
    "tenants",
    "apps",
    "conversations",
    "messages",
    "message_files",
    "workflow_runs",
    "workflow_node_executions",
    "workflow_app_logs",
    "datasets",
    "documents",
    "document_segments",
    "child_chunks",
    "embeddings",
    "upload_files",
    "tool_files",
];

/// One of Dify's tables as preflight shows it.
#[derive(Debug, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TableInfo {
    pub table: String,
    pub exists: bool,
    pub rows_estimate: Option<i64>,
    pub total_bytes: Option<i64>,
}

/// Each of `tables` (in `public`), in that order: whether it exists, its estimated rows (from
/// the planner's statistics: no scan) and its size with indexes and TOAST.
pub async fn table_sizes(
    pool: &sqlx::PgPool,
    tables: &[&str],
) -> Result<Vec<TableInfo>, sqlx::Error> {
    sqlx::query_as::<_, TableInfo>(
        "SELECT t.name AS table, c.oid IS NOT NULL AS exists, \
            CASE WHEN c.oid IS NULL THEN NULL \
                 WHEN c.reltuples < 0 THEN COALESCE(s.n_live_tup, 0) \
                 ELSE c.reltuples::bigint END AS rows_estimate, \
            CASE WHEN c.oid IS NULL THEN NULL ELSE pg_total_relation_size(c.oid) END AS total_bytes \
         FROM unnest($1::text[]) WITH ORDINALITY AS t(name, ord) \
         LEFT JOIN pg_namespace n ON n.nspname = 'public' \
         LEFT JOIN pg_class c ON c.relname = t.name AND c.relnamespace = n.oid AND c.relkind = 'r' \
         LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
         ORDER BY t.ord",
    )
    .bind(tables)
    .fetch_all(pool)
    .await
}
