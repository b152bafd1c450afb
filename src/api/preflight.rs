//! `GET /v1/preflight`: what the daemon sees before an operator runs anything.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::dify::{JOB_TABLES, release_of};
use crate::vector::Reachability;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Preflight {
    pub upkeep_version: String,
    pub database: DatabaseInfo,
    pub dify: DifyInfo,
    pub vector_store: Reachability,
    pub storage: Reachability,
    /// Sizes of the tables the jobs touch (row counts are Postgres's estimates: exact counts
    /// of a production table would scan it; a table never analyzed gives the live rows the
    /// statistics collector counted).
    pub tables: Vec<TableInfo>,
    pub backup: BackupInfo,
}

/// Whether a verified backup covers Dify's current schema: what "back up before `docker compose
/// pull`" checks.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BackupInfo {
    pub newest_verified: Option<SetInfo>,
    /// Dify's revision now.
    pub current_revision: Option<String>,
    /// No verified set, or the newest one was taken at another revision than today's (a schema
    /// change since: Alembic has no timestamps, so "older than the last change" is this).
    pub stale: bool,
    /// The newest sets this database's daemons made, newest first (at most 20).
    pub sets: Vec<SetInfo>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SetInfo {
    pub set: String,
    /// The repository, without credentials.
    pub repo: String,
    pub label: Option<String>,
    /// Dify's Alembic revision when the set was taken.
    pub dify_revision: Option<String>,
    pub completed_at: chrono::DateTime<chrono::Utc>,
    pub verified_at: Option<chrono::DateTime<chrono::Utc>>,
    pub bytes: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DatabaseInfo {
    pub reachable: bool,
    /// The URL with its password hidden.
    pub url: String,
    pub server_version: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DifyInfo {
    /// `alembic_version.version_num`; null when the table is missing or empty.
    pub revision: Option<String>,
    /// Whether the revision is the head of a Dify release Upkeep knows.
    pub known: bool,
    pub release: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TableInfo {
    pub table: String,
    pub exists: bool,
    pub rows_estimate: Option<i64>,
    pub total_bytes: Option<i64>,
}

#[utoipa::path(get, path = "/v1/preflight", tag = "dify",
    responses((status = 200, body = Preflight), (status = 401, body = ErrorBody)))]
pub async fn preflight(State(state): State<AppState>) -> Result<Json<Preflight>, ApiError> {
    let version: Option<String> = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&state.pool)
        .await
        .ok();
    let revision = crate::dify::revision(&state.pool).await.unwrap_or(None);
    let release = revision.as_deref().and_then(release_of);
    let tables = sqlx::query_as::<_, TableInfo>(
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
    .bind(JOB_TABLES)
    .fetch_all(&state.pool)
    .await
    .unwrap_or_default();
    let (vector_store, storage) = tokio::join!(
        crate::vector::check(&state.settings.vector_store),
        crate::storage::check(&state.settings.storage)
    );
    let sets: Vec<SetInfo> = sqlx::query_as(
        "SELECT set_id AS set, repo, label, dify_revision, completed_at, verified_at, bytes \
         FROM upkeep.backup_sets ORDER BY completed_at DESC LIMIT 20",
    )
    .fetch_all(&state.pool)
    .await
    .unwrap_or_default();
    let newest_verified = sets.iter().find(|s| s.verified_at.is_some()).cloned();
    let stale = newest_verified
        .as_ref()
        .and_then(|s| s.dify_revision.as_ref())
        .is_none_or(|r| Some(r) != revision.as_ref());
    let backup = BackupInfo {
        newest_verified,
        current_revision: revision.clone(),
        stale,
        sets,
    };
    Ok(Json(Preflight {
        upkeep_version: env!("CARGO_PKG_VERSION").into(),
        database: DatabaseInfo {
            reachable: version.is_some(),
            url: crate::config::redact_url(&state.settings.database_url),
            server_version: version,
        },
        dify: DifyInfo {
            known: release.is_some(),
            release: release.map(str::to_string),
            revision,
        },
        vector_store,
        storage,
        tables,
        backup,
    }))
}
