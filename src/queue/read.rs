//! Reading jobs for the API: one job, or a filtered page in newest-first order.

use uuid::Uuid;

use super::{JobRow, JobState, QueueError};

#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    /// Return jobs older than this one (ids are UUIDv7, so id order is creation order).
    pub before: Option<Uuid>,
    pub limit: i64,
}

pub async fn get(pool: &sqlx::PgPool, id: Uuid) -> Result<JobRow, QueueError> {
    sqlx::query_as::<_, JobRow>("SELECT * FROM upkeep.jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(QueueError::NotFound(id))
}

/// Just the job's state (no params or result read): what an event stream needs to know.
pub async fn state_of(pool: &sqlx::PgPool, id: Uuid) -> Result<JobState, QueueError> {
    let state: String = sqlx::query_scalar("SELECT state FROM upkeep.jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(QueueError::NotFound(id))?;
    Ok(JobState::parse(&state).unwrap_or(JobState::Failed))
}

/// One page plus whether more follow.
pub async fn list(
    pool: &sqlx::PgPool,
    filter: &JobFilter,
) -> Result<(Vec<JobRow>, bool), QueueError> {
    let mut rows = sqlx::query_as::<_, JobRow>(
        "SELECT * FROM upkeep.jobs \
         WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR kind = $2) \
           AND ($3::uuid IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4",
    )
    .bind(filter.state.map(JobState::as_str))
    .bind(&filter.kind)
    .bind(filter.before)
    .bind(filter.limit + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() as i64 > filter.limit;
    rows.truncate(filter.limit as usize);
    Ok((rows, more))
}

/// Whether the queue's tables answer (the schema is migrated and the database reachable).
pub async fn ready(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM upkeep.jobs WHERE false")
        .fetch_one(pool)
        .await
        .map(|_| ())
}

/// Jobs per (state, kind), for the metrics.
pub async fn counts(pool: &sqlx::PgPool) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT state, kind, count(*) FROM upkeep.jobs GROUP BY state, kind ORDER BY state, kind",
    )
    .fetch_all(pool)
    .await
}
