//! `upkeep.backup_sets`: the catalogue of finished sets that preflight shows (the repository
//! itself stays the truth: a set is what its manifest says).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::repo::Manifest;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SetInfo {
    pub set: String,
    /// The repository, without credentials.
    pub repo: String,
    pub label: Option<String>,
    /// Dify's Alembic revision when the set was taken.
    pub dify_revision: Option<String>,
    pub completed_at: DateTime<Utc>,
    pub verified_at: Option<DateTime<Utc>>,
    pub bytes: i64,
}

/// A set just written and checked by the backup that made it (`repo` without credentials).
pub async fn record(
    pool: &PgPool,
    repo: &str,
    job_id: Uuid,
    m: &Manifest,
) -> Result<(), sqlx::Error> {
    let bytes: u64 =
        m.files.iter().map(|f| f.size).sum::<u64>() + m.storage.as_ref().map_or(0, |s| s.bytes);
    sqlx::query(
        "INSERT INTO upkeep.backup_sets (repo, set_id, job_id, label, dify_revision, created_at, \
         completed_at, verified_at, bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, now(), $8) \
         ON CONFLICT (repo, set_id) DO UPDATE SET verified_at = now()",
    )
    .bind(repo)
    .bind(&m.set)
    .bind(job_id)
    .bind(&m.label)
    .bind(&m.dify.revision)
    .bind(m.created_at)
    .bind(m.completed_at)
    .bind(bytes as i64)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn mark_verified(pool: &PgPool, repo: &str, set: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE upkeep.backup_sets SET verified_at = now() WHERE repo = $1 AND set_id = $2",
    )
    .bind(repo)
    .bind(set)
    .execute(pool)
    .await?;
    Ok(())
}

/// The newest `limit` sets, newest first.
pub async fn recent(pool: &PgPool, limit: i64) -> Result<Vec<SetInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT set_id AS set, repo, label, dify_revision, completed_at, verified_at, bytes \
         FROM upkeep.backup_sets ORDER BY completed_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}
