//! Operator actions on a job: cancel and retry.

use serde_json::json;
use uuid::Uuid;

use super::submit::{is_resource_clash, resource_busy};
use super::{EventType, JobRow, QueueError, append_event, get};

/// A queued job is cancelled at once; a running one gets a cancel request that its worker sees
/// within one batch (NOTIFY wakes it, heartbeats and checkpoints report it too).
pub async fn cancel(pool: &sqlx::PgPool, id: Uuid) -> Result<JobRow, QueueError> {
    let mut tx = pool.begin().await?;
    let queued = sqlx::query_as::<_, JobRow>(
        "UPDATE upkeep.jobs SET state = 'cancelled', finished_at = now(), updated_at = now(), \
         cancel_requested_at = now() WHERE id = $1 AND state = 'queued' RETURNING *",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = queued {
        append_event(
            &mut *tx,
            id,
            EventType::State,
            None,
            json!({"state": "cancelled", "message": "cancelled before it started"}),
        )
        .await?;
        tx.commit().await?;
        return Ok(row);
    }
    let running = sqlx::query_as::<_, JobRow>(
        "UPDATE upkeep.jobs SET cancel_requested_at = coalesce(cancel_requested_at, now()), \
         updated_at = now() WHERE id = $1 AND state = 'running' RETURNING *",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = running {
        append_event(
            &mut *tx,
            id,
            EventType::Log,
            Some(row.attempts),
            json!({"message": "cancel requested; the job stops at its next batch boundary"}),
        )
        .await?;
        tx.commit().await?;
        return Ok(row);
    }
    drop(tx);
    let row = get(pool, id).await?;
    Err(QueueError::InvalidTransition {
        job_id: id,
        state: row.state,
        action: "cancel",
    })
}

/// Puts a failed or cancelled job back in the queue. Its checkpoint is kept, so it resumes
/// where it stopped rather than starting over.
pub async fn retry(pool: &sqlx::PgPool, id: Uuid) -> Result<JobRow, QueueError> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query_as::<_, JobRow>(
        "UPDATE upkeep.jobs SET state = 'queued', error = NULL, finished_at = NULL, \
         cancel_requested_at = NULL, run_after = now(), max_attempts = attempts + 5, \
         updated_at = now() WHERE id = $1 AND state IN ('failed', 'cancelled') \
         RETURNING *",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await;
    let row = match updated {
        Ok(Some(row)) => row,
        Ok(None) => {
            drop(tx);
            let row = get(pool, id).await?;
            return Err(QueueError::InvalidTransition {
                job_id: id,
                state: row.state,
                action: "retry",
            });
        }
        Err(e) if is_resource_clash(&e) => {
            drop(tx);
            let key = get(pool, id).await?.resource_key.unwrap_or_default();
            return Err(resource_busy(pool, key).await);
        }
        Err(e) => return Err(e.into()),
    };
    append_event(
        &mut *tx,
        id,
        EventType::State,
        None,
        json!({"state": "queued", "message": "retry requested; resumes from its checkpoint"}),
    )
    .await?;
    tx.commit().await?;
    Ok(row)
}
