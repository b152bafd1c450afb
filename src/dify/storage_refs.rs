//! Every object key Dify's database points at, and where it is recorded: what must be on a new
//! storage backend before `STORAGE_TYPE` may name it.

use sqlx::PgPool;
use uuid::Uuid;

use crate::dify::shape::{Need, Ty, col, if_present, need};

/// One place in Dify's schema that names storage keys.
#[derive(Clone, Copy)]
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

/// What keeps a file from being an orphan: a row naming its key, or (for `privkeys/`) a tenant
/// that still exists, whether or not it has a public key.
pub const ORPHAN_SOURCES: &[KeySource] = &[
    KEY_SOURCES[0],
    KEY_SOURCES[1],
    KeySource {
        label: "tenants (privkeys/<tenant>/private.pem)",
        tables: &["tenants"],
        select: "SELECT 'privkeys/' || id || '/private.pem' FROM public.tenants",
    },
];

/// What `orphan_files` reads, for the shape check: every orphan source must be readable.
pub const ORPHAN_NEEDS: &[Need] = &[
    need("upload_files", &[col("key", Ty::Text)]),
    need("tool_files", &[col("file_key", Ty::Text)]),
    need("tenants", &[col("id", Ty::Uuid)]),
];

/// What `storage_migrate` reads and writes: each key source where its tables exist (a storage
/// move needs no Dify table), and `upload_files.storage_type`, which it updates.
pub const KEY_NEEDS: &[Need] = &[
    if_present(
        "upload_files",
        &[
            col("id", Ty::Uuid),
            col("key", Ty::Text),
            col("storage_type", Ty::Text),
        ],
    ),
    if_present("tool_files", &[col("file_key", Ty::Text)]),
    if_present(
        "tenants",
        &[col("id", Ty::Uuid), col("encrypt_public_key", Ty::Text)],
    ),
    if_present("workflow_pauses", &[col("state_object_key", Ty::Text)]),
    if_present(
        "dataset_keyword_tables",
        &[
            col("dataset_id", Ty::Uuid),
            col("data_source_type", Ty::Text),
        ],
    ),
    if_present(
        "datasets",
        &[col("id", Ty::Uuid), col("tenant_id", Ty::Uuid)],
    ),
];

/// The key sources whose tables exist in this database.
pub async fn present(pool: &PgPool) -> Result<Vec<&'static KeySource>, sqlx::Error> {
    present_of(pool, KEY_SOURCES).await
}

/// Those of `sources` whose tables exist in this database.
pub async fn present_of(
    pool: &PgPool,
    sources: &'static [KeySource],
) -> Result<Vec<&'static KeySource>, sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')",
    )
    .fetch_all(pool)
    .await?;
    Ok(sources
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

/// Gathers the keys the given sources reference into `upkeep.storage_refs` under `job_id`
/// (replacing what was there), in the database: no key passes through memory. Returns how many.
pub async fn collect(
    pool: &PgPool,
    job_id: Uuid,
    sources: &[&KeySource],
) -> Result<u64, sqlx::Error> {
    clear(pool, job_id).await?;
    let Some(union) = union_sql(sources) else {
        return Ok(0);
    };
    let sql = format!(
        "INSERT INTO upkeep.storage_refs (job_id, key, source) \
         SELECT $1, key, min(source) FROM ({union}) u WHERE key IS NOT NULL AND key <> '' \
         GROUP BY key"
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job_id)
        .execute(pool)
        .await?
        .rows_affected())
}

pub async fn clear(pool: &PgPool, job_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM upkeep.storage_refs WHERE job_id = $1")
        .bind(job_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Which of `keys` are among the references gathered under `job_id`.
pub async fn gathered(
    pool: &PgPool,
    job_id: Uuid,
    keys: &[String],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let found: Vec<String> = sqlx::query_scalar(
        "SELECT key FROM upkeep.storage_refs WHERE job_id = $1 AND key = ANY($2)",
    )
    .bind(job_id)
    .bind(keys)
    .fetch_all(pool)
    .await?;
    Ok(found.into_iter().collect())
}

/// Which of `keys` Dify's tables reference right now (the sources given), asked directly.
pub async fn live(
    pool: &PgPool,
    sources: &[&KeySource],
    keys: &[String],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let Some(union) = union_sql(sources) else {
        return Ok(Default::default());
    };
    let sql = format!("SELECT DISTINCT key FROM ({union}) u WHERE key = ANY($1)");
    let found: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(keys)
        .fetch_all(pool)
        .await?;
    Ok(found.into_iter().collect())
}
