//! Housekeeping any daemon may run: failing jobs whose workers keep dying, pruning old jobs.

use serde_json::json;

/// Running jobs whose lease expired and that have used all their attempts are failed rather
/// than claimed again (a job that crashes its daemon must not crash every daemon in turn).
pub async fn fail_exhausted(pool: &sqlx::PgPool) -> Result<u64, sqlx::Error> {
    let error = json!({
        "code": "attempts_exhausted",
        "message": "the job's worker stopped answering on every attempt (lease expired)",
    });
    let ids: Vec<(uuid::Uuid, i32)> = sqlx::query_as(
        "UPDATE upkeep.jobs SET state = 'failed', error = $1, finished_at = now(), \
         lease_expires_at = NULL, locked_by = NULL, updated_at = now() \
         WHERE state = 'running' AND lease_expires_at < now() AND attempts >= max_attempts \
         RETURNING id, attempts",
    )
    .bind(&error)
    .fetch_all(pool)
    .await?;
    for (id, attempt) in &ids {
        super::append_event(
            pool,
            *id,
            super::EventType::State,
            Some(*attempt),
            json!({"state": "failed", "error": error}),
        )
        .await?;
    }
    Ok(ids.len() as u64)
}

/// Deletes finished jobs (and, by cascade, their events) older than the TTL, in small batches
/// so the queue table is never locked for long.
pub async fn prune_finished(pool: &sqlx::PgPool, ttl_days: u32) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let n = sqlx::query(
            "DELETE FROM upkeep.jobs WHERE id IN (SELECT id FROM upkeep.jobs \
             WHERE finished_at < now() - make_interval(days => $1) \
             AND NOT EXISTS (SELECT 1 FROM upkeep.jobs c WHERE c.parent_id = upkeep.jobs.id \
                             AND c.finished_at IS NULL) LIMIT 500)",
        )
        .bind(ttl_days as i32)
        .execute(pool)
        .await?
        .rows_affected();
        total += n;
        if n < 500 {
            return Ok(total);
        }
    }
}
