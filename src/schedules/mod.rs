//! Recurring jobs: a job request plus a cron expression and a time zone, kept in
//! `upkeep.schedules`. Every daemon runs the ticker; each occurrence becomes exactly one job
//! (see `ticker`).

mod cron;
mod ticker;

pub use cron::Cron;
pub use ticker::{run_ticker, tick};

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::config::Settings;
use crate::jobs::{JobSpec, SpecError};

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron: {message}")]
    Cron { message: String },
    #[error("timezone: {message}")]
    Timezone { message: String },
    /// The job request (kind or params) is not one `POST /v1/jobs` would accept.
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("schedule {0} not found")]
    NotFound(Uuid),
    #[error("time out of range: {0}")]
    Time(String),
    #[error(transparent)]
    Sealing(#[from] crate::secrets::SealError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A row of `upkeep.schedules` as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub id: Uuid,
    pub kind: String,
    pub params: Value,
    pub dry_run: bool,
    pub cron: String,
    pub timezone: String,
    pub enabled: bool,
    pub next_run_at: DateTime<Utc>,
    pub last_occurrence: Option<DateTime<Utc>>,
    pub last_job_id: Option<Uuid>,
    pub last_outcome: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A schedule as requested: `params` as the client sent them (an object).
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub kind: String,
    pub params: Value,
    pub dry_run: bool,
    pub cron: String,
    pub timezone: Option<String>,
}

/// Checks the request as `POST /v1/jobs` would, then stores it with its first occurrence.
pub async fn create(
    pool: &sqlx::PgPool,
    settings: &Settings,
    new: NewSchedule,
) -> Result<ScheduleRow, ScheduleError> {
    let mut spec = JobSpec::parse(&new.kind, new.params)?;
    let cron = Cron::parse(&new.cron, new.timezone.as_deref())?;
    spec.validate(pool, settings).await?;
    // The database's clock, as the ticker uses, so daemons with drifting clocks agree.
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(pool).await?;
    let next_run_at = cron.next_after(now)?;
    let params = settings.sealer.seal(spec.params_json())?;
    Ok(sqlx::query_as::<_, ScheduleRow>(
        "INSERT INTO upkeep.schedules (id, kind, params, dry_run, cron, timezone, enabled, \
         next_run_at) VALUES ($1, $2, $3, $4, $5, $6, true, $7) RETURNING *",
    )
    .bind(Uuid::now_v7())
    .bind(spec.kind())
    .bind(&params)
    .bind(new.dry_run)
    .bind(&cron.expression)
    .bind(&cron.timezone)
    .bind(next_run_at)
    .fetch_one(pool)
    .await?)
}

pub async fn get(pool: &sqlx::PgPool, id: Uuid) -> Result<ScheduleRow, ScheduleError> {
    sqlx::query_as::<_, ScheduleRow>("SELECT * FROM upkeep.schedules WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(ScheduleError::NotFound(id))
}

/// One page, newest first (ids are UUIDv7), older than `before`; plus whether more follow.
pub async fn list(
    pool: &sqlx::PgPool,
    before: Option<Uuid>,
    limit: i64,
) -> Result<(Vec<ScheduleRow>, bool), ScheduleError> {
    let mut rows = sqlx::query_as::<_, ScheduleRow>(
        "SELECT * FROM upkeep.schedules WHERE ($1::uuid IS NULL OR id < $1) \
         ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    Ok((rows, more))
}

/// Deletes the schedule; jobs it already queued are left alone.
pub async fn delete(pool: &sqlx::PgPool, id: Uuid) -> Result<(), ScheduleError> {
    let n = sqlx::query("DELETE FROM upkeep.schedules WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(ScheduleError::NotFound(id));
    }
    Ok(())
}
