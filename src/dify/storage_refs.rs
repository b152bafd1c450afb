//! Every object key Dify's database points at, and where it is recorded: what must be on a new
//! storage backend before `STORAGE_TYPE` may name it.

use sqlx::PgPool;

/// One place in Dify's schema that names storage keys.
pub struct KeySource {
    /// Shown in reports, e.g. `upload_files.key`.
    pub label: &'static str,
    /// Tables the query reads; a source whose tables this Dify lacks is skipped.
    pub tables: &'static [&'static str],
    /// Selects one text column, the key.
    pub select: &'static str,
}

pub const KEY_SOURCES: &[KeySource] = &[
    KeySource {
        label: "upload_files.key",
        tables: &["upload_files"],
        select: "SELECT key FROM public.upload_files",
    },
    KeySource {
        label: "tool_files.file_key",
        tables: &["tool_files"],
        select: "SELECT file_key FROM public.tool_files",
    },
    // Workspace creation writes the private half of `encrypt_public_key` here.
    KeySource {
        label: "tenants (privkeys/<tenant>/private.pem)",
        tables: &["tenants"],
        select: "SELECT 'privkeys/' || id || '/private.pem' FROM public.tenants \
                 WHERE encrypt_public_key IS NOT NULL",
    },
    KeySource {
        label: "workflow_pauses.state_object_key",
        tables: &["workflow_pauses"],
        select: "SELECT state_object_key FROM public.workflow_pauses",
    },
    // Only when KEYWORD_DATA_SOURCE_TYPE is not `database` (Dify's default) are keyword
    // tables files.
    KeySource {
        label: "dataset_keyword_tables (keyword_files/<tenant>/<dataset>.txt)",
        tables: &["dataset_keyword_tables", "datasets"],
        select: "SELECT 'keyword_files/' || d.tenant_id || '/' || k.dataset_id || '.txt' \
                 FROM public.dataset_keyword_tables k JOIN public.datasets d ON d.id = k.dataset_id \
                 WHERE k.data_source_type <> 'database'",
    },
];

/// The key sources whose tables exist in this database.
pub async fn present(pool: &PgPool) -> Result<Vec<&'static KeySource>, sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
    )
    .fetch_all(pool)
    .await?;
    Ok(KEY_SOURCES
        .iter()
        .filter(|s| s.tables.iter().all(|t| tables.iter().any(|x| x == t)))
        .collect())
}

/// `SELECT key, source FROM (...)` over the given sources.
pub fn union_sql(sources: &[&KeySource]) -> Option<String> {
    if sources.is_empty() {
        return None;
    }
    let parts: Vec<String> = sources
        .iter()
        .map(|s| {
            format!(
                "SELECT k::text AS key, '{}'::text AS source FROM ({}) AS q(k)",
                s.label, s.select
            )
        })
        .collect();
    Some(parts.join(" UNION ALL "))
}
