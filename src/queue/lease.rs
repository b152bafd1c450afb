//! Claiming a job under a lease, and the fenced writes its worker makes afterwards.
//!
//! A claim increments `attempts`; every later write names the attempt it belongs to. When a lease
//! expires, another worker's claim bumps the attempt, and the old worker's next write affects no
//! row: that is how it learns it lost the job, and why it can never overwrite the new owner.

use std::time::Duration;

use serde_json::json;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use super::{EventType, JobRow, JobState, append_event};

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("lease lost: another worker owns this job now, or it was cancelled")]
    Lost,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

#[derive(Debug)]
pub struct Claimed {
    pub row: JobRow,
    /// Set when the job was taken over from a worker whose lease had expired.
    pub rescued_from: Option<String>,
}

/// Claims the next runnable job (queued and due, or running with an expired lease) in one
/// statement. Returns `None` when nothing is runnable.
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    lease: Duration,
) -> Result<Option<Claimed>, sqlx::Error> {
    claim_except(pool, worker, lease, &[]).await
}

/// [`claim`], passing over jobs of the kinds in `skip` (this daemon runs its limit of them).
pub async fn claim_except(
    pool: &PgPool,
    worker: &str,
    lease: Duration,
    skip: &[&str],
) -> Result<Option<Claimed>, sqlx::Error> {
    let sql = "WITH next AS ( \
            SELECT id, state AS prev_state, locked_by AS prev_owner FROM upkeep.jobs \
            WHERE ((state = 'queued' AND run_after <= now()) \
                OR (state = 'running' AND lease_expires_at < now())) \
              AND attempts < max_attempts AND NOT (kind = ANY($3)) \
            ORDER BY run_after, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         UPDATE upkeep.jobs j SET state = 'running', attempts = j.attempts + 1, locked_by = $1, \
            lease_expires_at = now() + make_interval(secs => $2), heartbeat_at = now(), \
            started_at = coalesce(j.started_at, now()), updated_at = now() \
         FROM next WHERE j.id = next.id \
         RETURNING j.*, next.prev_state, next.prev_owner";
    let mut tx = pool.begin().await?;
    let claimed = sqlx::query(sql)
        .bind(worker)
        .bind(lease.as_secs_f64())
        .bind(skip)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(pg_row) = claimed else {
        return Ok(None);
    };
    use sqlx::{FromRow, Row};
    let row = JobRow::from_row(&pg_row)?;
    let prev_state: String = pg_row.try_get("prev_state")?;
    let prev_owner: Option<String> = pg_row.try_get("prev_owner")?;
    let rescued_from = (prev_state == "running").then(|| prev_owner.unwrap_or_default());
    let message = match &rescued_from {
        Some(owner) => format!("lease of {owner} expired; resumed by {worker}"),
        None => format!("started by {worker}"),
    };
    append_event(
        &mut *tx,
        row.id,
        EventType::State,
        Some(row.attempts),
        json!({"state": "running", "worker": worker, "message": message}),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(Claimed { row, rescued_from }))
}

/// A worker's hold on one attempt of one job.
#[derive(Clone, Debug)]
pub struct Lease {
    pool: PgPool,
    pub job_id: Uuid,
    pub attempt: i32,
    pub duration: Duration,
}

/// Every write of a worker names the attempt it owns.
macro_rules! fence {
    () => {
        "id = $1 AND attempts = $2 AND state = 'running'"
    };
}

impl Lease {
    pub fn new(pool: PgPool, job_id: Uuid, attempt: i32, duration: Duration) -> Self {
        Lease {
            pool,
            job_id,
            attempt,
            duration,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Extends the lease. Returns whether a cancel was requested.
    pub async fn heartbeat(&self) -> Result<bool, FenceError> {
        let cancel: Option<bool> = sqlx::query_scalar(concat!(
            "UPDATE upkeep.jobs SET heartbeat_at = now(), \
             lease_expires_at = now() + make_interval(secs => $3) WHERE ",
            fence!(),
            " \
             RETURNING cancel_requested_at IS NOT NULL"
        ))
        .bind(self.job_id)
        .bind(self.attempt)
        .bind(self.duration.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        cancel.ok_or(FenceError::Lost)
    }

    /// Writes progress and/or a checkpoint through `db` (pass the job's own transaction so a
    /// batch and its checkpoint commit together). Returns whether a cancel was requested.
    pub async fn save<'e>(
        &self,
        db: impl PgExecutor<'e>,
        progress: Option<&serde_json::Value>,
        checkpoint: Option<&serde_json::Value>,
    ) -> Result<bool, FenceError> {
        let cancel: Option<bool> = sqlx::query_scalar(concat!(
            "UPDATE upkeep.jobs SET progress = coalesce($3, progress), \
             checkpoint = coalesce($4, checkpoint), updated_at = now() WHERE ",
            fence!(),
            " \
             RETURNING cancel_requested_at IS NOT NULL"
        ))
        .bind(self.job_id)
        .bind(self.attempt)
        .bind(progress)
        .bind(checkpoint)
        .fetch_optional(db)
        .await?;
        cancel.ok_or(FenceError::Lost)
    }

    /// Appends an event of this attempt; fenced like every other write, so a worker that lost
    /// the job cannot add to its log.
    pub async fn event(
        &self,
        event_type: EventType,
        data: serde_json::Value,
    ) -> Result<(), FenceError> {
        let done = sqlx::query(concat!(
            "INSERT INTO upkeep.job_events (job_id, attempt, type, data) \
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM upkeep.jobs WHERE ",
            fence!(),
            ")"
        ))
        .bind(self.job_id)
        .bind(self.attempt)
        .bind(event_type.as_str())
        .bind(data)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(FenceError::Lost);
        }
        Ok(())
    }

    /// Ends the attempt in a final state, with its result or error, and records the change.
    pub async fn finish(
        &self,
        state: JobState,
        result: Option<&serde_json::Value>,
        error: Option<&serde_json::Value>,
        message: &str,
    ) -> Result<JobRow, FenceError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query_as::<_, JobRow>(concat!(
            "UPDATE upkeep.jobs SET state = $3, result = coalesce($4, result), error = $5, \
             finished_at = now(), updated_at = now(), lease_expires_at = NULL, locked_by = NULL \
             WHERE ",
            fence!(),
            " RETURNING *"
        ))
        .bind(self.job_id)
        .bind(self.attempt)
        .bind(state.as_str())
        .bind(result)
        .bind(error)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(FenceError::Lost)?;
        let mut data = json!({"state": state.as_str(), "message": message});
        if let Some(e) = error {
            data["error"] = e.clone();
        }
        append_event(
            &mut *tx,
            self.job_id,
            EventType::State,
            Some(self.attempt),
            data,
        )
        .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Gives the job back to the queue after a fault a new attempt may not meet (its database
    /// connection was lost): any daemon resumes it from its checkpoint. This attempt counts,
    /// so a fault that keeps coming back ends in a failure; false when none is left.
    pub async fn requeue_after_fault(&self, message: &str) -> Result<bool, FenceError> {
        self.give_back(message, true).await
    }

    /// Gives the job back to the queue (shutdown): any daemon resumes it from its checkpoint.
    /// The interrupted attempt does not count against `max_attempts`.
    pub async fn requeue(&self, message: &str) -> Result<(), FenceError> {
        self.give_back(message, false).await.map(|_| ())
    }

    /// Requeues the job with a `queued` event saying why; `spend`: this attempt counts (false,
    /// and nothing written, when it was the last).
    async fn give_back(&self, message: &str, spend: bool) -> Result<bool, FenceError> {
        let mut tx = self.pool.begin().await?;
        let left: Option<bool> = sqlx::query_scalar(concat!(
            "SELECT attempts < max_attempts FROM upkeep.jobs WHERE ",
            fence!(),
            " FOR UPDATE"
        ))
        .bind(self.job_id)
        .bind(self.attempt)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(left) = left else {
            return Err(FenceError::Lost);
        };
        if spend && !left {
            return Ok(false);
        }
        sqlx::query(concat!(
            "UPDATE upkeep.jobs SET state = 'queued', locked_by = NULL, lease_expires_at = NULL, \
             run_after = now(), max_attempts = max_attempts + $3, updated_at = now() WHERE ",
            fence!()
        ))
        .bind(self.job_id)
        .bind(self.attempt)
        .bind(if spend { 0i32 } else { 1 })
        .execute(&mut *tx)
        .await?;
        append_event(
            &mut *tx,
            self.job_id,
            EventType::State,
            Some(self.attempt),
            json!({"state": "queued", "message": message}),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
