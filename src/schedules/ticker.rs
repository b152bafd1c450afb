//! The ticker every daemon runs: due schedules become jobs, exactly once per occurrence.
//!
//! - `FOR UPDATE SKIP LOCKED` keeps two daemons off the same row at once; a daemon that
//!   comes second re-reads the committed row, whose `next_run_at` has moved on.
//! - The job's idempotency key is derived from the occurrence, so a daemon that dies between
//!   submitting and committing the row makes its successor find the same job, not a second.
//! - Missed occurrences (every daemon was down) collapse into the latest one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Cron, ScheduleError, ScheduleRow};
use crate::config::Settings;
use crate::jobs::{JobSpec, SpecError};
use crate::queue::{self, NewJob, QueueError, Submitted};

/// Due rows handled per tick; more wait for the next one.
const BATCH: i64 = 100;

/// Ticks at start and then every `every` until `shutdown`.
pub async fn run_ticker(
    pool: sqlx::PgPool,
    settings: Arc<Settings>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        if let Err(e) = tick(&pool, &settings).await {
            tracing::warn!(error = %e, "schedules: tick failed; retrying at the next one");
        }
    }
}

/// What became of one due schedule.
struct Fired {
    next_run_at: DateTime<Utc>,
    enabled: bool,
    occurrence: Option<DateTime<Utc>>,
    job_id: Option<Uuid>,
    outcome: Option<String>,
}

/// One pass over the due schedules, in one transaction. Returns how many were due.
pub async fn tick(pool: &sqlx::PgPool, settings: &Settings) -> Result<usize, ScheduleError> {
    let mut tx = pool.begin().await?;
    // now() is the transaction's start: one instant for the selection and the arithmetic.
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    let due = sqlx::query_as::<_, ScheduleRow>(
        "SELECT * FROM upkeep.schedules WHERE enabled AND next_run_at <= $1 \
         ORDER BY next_run_at LIMIT $2 FOR UPDATE SKIP LOCKED",
    )
    .bind(now)
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    for row in &due {
        let fired = fire(pool, settings, row, now).await?;
        sqlx::query(
            "UPDATE upkeep.schedules SET next_run_at = $2, enabled = $3, \
             last_occurrence = COALESCE($4, last_occurrence), \
             last_job_id = COALESCE($5, last_job_id), \
             last_outcome = COALESCE($6, last_outcome), updated_at = now() WHERE id = $1",
        )
        .bind(row.id)
        .bind(fired.next_run_at)
        .bind(fired.enabled)
        .bind(fired.occurrence)
        .bind(fired.job_id)
        .bind(&fired.outcome)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(due.len())
}

/// Submits the schedule's latest occurrence and says where it goes next. Only database
/// errors are returned (the tick is rolled back and retried); everything else is recorded
/// as the schedule's outcome.
async fn fire(
    pool: &sqlx::PgPool,
    settings: &Settings,
    row: &ScheduleRow,
    now: DateTime<Utc>,
) -> Result<Fired, ScheduleError> {
    let (occurrence, next_run_at) = match timing(row, now) {
        Ok(t) => t,
        // Validated when created, so only a changed zone database gets here: stop rather
        // than fail on every tick.
        Err(e) => {
            tracing::error!(schedule.id = %row.id, error = %e, "schedule disabled");
            return Ok(Fired {
                next_run_at: row.next_run_at,
                enabled: false,
                occurrence: None,
                job_id: None,
                outcome: Some(format!("disabled: {e}")),
            });
        }
    };
    let mut fired = Fired {
        next_run_at,
        enabled: true,
        occurrence,
        job_id: None,
        outcome: None,
    };
    // next_run_at was set by hand to a time no occurrence follows before now: nothing to run.
    let Some(occurrence) = occurrence else {
        return Ok(fired);
    };
    let key = format!(
        "schedule:{}:{}",
        row.id,
        occurrence.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let params = match settings.sealer.open(row.params.clone()) {
        Ok(p) => p,
        Err(e) => return skipped(fired, row, format!("skipped: {e}")),
    };
    // Checked again as POST /v1/jobs would: a table named then may be gone now.
    let mut spec = match JobSpec::parse(&row.kind, params) {
        Ok(spec) => spec,
        Err(e) => return skipped(fired, row, spec_outcome(e)?),
    };
    if let Err(e) = spec.validate(pool, settings).await {
        return skipped(fired, row, spec_outcome(e)?);
    }
    let submitted = queue::submit(
        pool,
        &settings.sealer,
        NewJob {
            kind: spec.kind().to_string(),
            params: spec.params_json(),
            dry_run: row.dry_run,
            idempotency_key: Some(key.clone()),
            resource_key: if row.dry_run {
                None
            } else {
                spec.resource_key()
            },
            parent_id: None,
            max_attempts: 5,
        },
    )
    .await;
    let outcome = match submitted {
        Ok(s) => {
            let (job, how) = match s {
                Submitted::Created(job) => (job, "queued"),
                // A daemon submitted it and died before recording it.
                Submitted::Existing(job) => (job, "found already queued"),
            };
            tracing::info!(schedule.id = %row.id, job.id = %job.id, %occurrence, "schedule fired: {how} job");
            fired.job_id = Some(job.id);
            "queued".to_string()
        }
        // The previous run (or another job on the same resource) is still going: skip this
        // occurrence rather than pile runs up.
        Err(QueueError::ResourceBusy { job_id, kind, .. }) => {
            tracing::info!(schedule.id = %row.id, holder = %job_id, %occurrence, "schedule skipped: a {kind} job holds the resource");
            "skipped: busy".to_string()
        }
        Err(QueueError::Db(e)) => return Err(e.into()),
        Err(e) => {
            tracing::warn!(schedule.id = %row.id, error = %e, "schedule {}: not submitted", row.id);
            format!("skipped: {e}")
        }
    };
    fired.outcome = Some(outcome);
    Ok(fired)
}

/// The occurrence to run now (the latest due one) and the one after `now`.
fn timing(
    row: &ScheduleRow,
    now: DateTime<Utc>,
) -> Result<(Option<DateTime<Utc>>, DateTime<Utc>), ScheduleError> {
    let cron = Cron::parse(&row.cron, Some(&row.timezone))?;
    Ok((cron.latest_in(row.next_run_at, now)?, cron.next_after(now)?))
}

fn spec_outcome(e: SpecError) -> Result<String, ScheduleError> {
    match e {
        SpecError::Db(e) => Err(e.into()),
        other => Ok(format!("skipped: invalid request: {other}")),
    }
}

fn skipped(mut fired: Fired, row: &ScheduleRow, outcome: String) -> Result<Fired, ScheduleError> {
    tracing::warn!(schedule.id = %row.id, "schedule {}: {outcome}", row.id);
    fired.outcome = Some(outcome);
    Ok(fired)
}
