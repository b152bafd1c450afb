//! `GET /v1/preflight`: what the daemon sees before an operator runs anything.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use crate::backup::sets::SetInfo;
use crate::dify::{JOB_TABLES, TableInfo, release_of};
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

#[utoipa::path(get, path = "/v1/preflight", tag = "dify",
    responses((status = 200, body = Preflight), (status = 401, body = ErrorBody)))]
pub async fn preflight(State(state): State<AppState>) -> Result<Json<Preflight>, ApiError> {
    let version = crate::db::server_version(&state.pool).await.ok();
    let revision = crate::dify::revision(&state.pool).await.unwrap_or(None);
    let release = revision.as_deref().and_then(release_of);
    let tables = crate::dify::table_sizes(&state.pool, JOB_TABLES)
        .await
        .unwrap_or_default();
    let (vector_store, storage) = tokio::join!(
        crate::vector::check(&state.settings.vector_store),
        crate::storage::check(&state.settings.storage)
    );
    let sets = crate::backup::sets::recent(&state.pool, 20)
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
