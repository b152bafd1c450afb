//! Operator actions on a job: cancel and retry. Both reach a fanned-out job's children (its
//! child jobs of its own kind) in the same transaction.

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
        cancel_children(&mut tx, id).await?;
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
        cancel_children(&mut tx, id).await?;
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
    let children: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE upkeep.jobs c SET state = 'queued', error = NULL, finished_at = NULL, \
         cancel_requested_at = NULL, run_after = now(), max_attempts = c.attempts + 5, \
         updated_at = now() FROM upkeep.jobs p \
         WHERE p.id = $1 AND c.parent_id = p.id AND c.kind = p.kind \
           AND c.state IN ('failed', 'cancelled') RETURNING c.id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    for child in children {
        append_event(
            &mut *tx,
            child,
            EventType::State,
            None,
            json!({"state": "queued", "message": format!("retried with its parent {id}")}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(row)
}

/// Cancels the active child jobs of a fanned-out job: queued ones at once, running ones at
/// their next batch boundary.
async fn cancel_children(tx: &mut sqlx::PgConnection, id: Uuid) -> Result<(), QueueError> {
    let children: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "UPDATE upkeep.jobs c SET \
             state = CASE WHEN c.state = 'queued' THEN 'cancelled' ELSE c.state END, \
             finished_at = CASE WHEN c.state = 'queued' THEN now() ELSE c.finished_at END, \
             cancel_requested_at = coalesce(c.cancel_requested_at, now()), updated_at = now() \
         FROM upkeep.jobs p \
         WHERE p.id = $1 AND c.parent_id = p.id AND c.kind = p.kind \
           AND c.state IN ('queued', 'running') \
         RETURNING c.id, c.state, c.attempts",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    for (child, state, attempts) in children {
        if state == "cancelled" {
            let message = format!("cancelled with its parent {id} before it started");
            append_event(
                &mut *tx,
                child,
                EventType::State,
                None,
                json!({"state": "cancelled", "message": message}),
            )
            .await?;
        } else {
            let message = format!("cancel requested with its parent {id}");
            append_event(
                &mut *tx,
                child,
                EventType::Log,
                Some(attempts),
                json!({"message": message}),
            )
            .await?;
        }
    }
    Ok(())
}
