//! Housekeeping any daemon may run: failing jobs whose workers keep dying, pruning old jobs.

use serde_json::json;
use uuid::Uuid;

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

/// Jobs per pruning round, and rows per delete from a table that hangs off them.
const PRUNE_JOBS: i64 = 500;
const PRUNE_ROWS: i64 = 5000;

/// Deletes finished jobs older than the TTL, in short transactions however much hangs off one
/// job (a long job writes an event a second, a storage migration or backup a ledger row per
/// object). Each round takes the oldest expired jobs, deletes what references them a bounded
/// batch at a time, then the jobs themselves, whose cascade then finds nothing left.
pub async fn prune_finished(pool: &sqlx::PgPool, ttl_days: u32) -> Result<u64, sqlx::Error> {
    let ttl_days = ttl_days as i32;
    // Every table with a foreign key to a job (job_events, the ledgers, the plans), read from
    // the catalogue so a new one is pruned in batches too.
    let children: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, quote_ident(a.attname) FROM pg_constraint c \
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] \
         WHERE c.contype = 'f' AND c.confrelid = 'upkeep.jobs'::regclass \
           AND c.conrelid <> 'upkeep.jobs'::regclass AND cardinality(c.conkey) = 1",
    )
    .fetch_all(pool)
    .await?;
    let mut total = 0;
    loop {
        // Oldest first: a parent finishes after its children, so they go in the same round or
        // an earlier one and the parent's cascade never reaches a child with rows left.
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM upkeep.jobs WHERE finished_at < now() - make_interval(days => $1) \
             AND NOT EXISTS (SELECT 1 FROM upkeep.jobs c WHERE c.parent_id = upkeep.jobs.id \
                             AND c.finished_at IS NULL) \
             ORDER BY finished_at LIMIT $2",
        )
        .bind(ttl_days)
        .bind(PRUNE_JOBS)
        .fetch_all(pool)
        .await?;
        if ids.is_empty() {
            return Ok(total);
        }
        for (table, column) in &children {
            // Still expired when deleted: a job retried meanwhile keeps its rows.
            let sql = format!(
                "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT t.ctid FROM {table} t \
                 JOIN upkeep.jobs j ON j.id = t.{column} WHERE t.{column} = ANY($1) \
                 AND j.finished_at < now() - make_interval(days => $2) LIMIT $3))"
            );
            while sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(&ids)
                .bind(ttl_days)
                .bind(PRUNE_ROWS)
                .execute(pool)
                .await?
                .rows_affected()
                == PRUNE_ROWS as u64
            {}
        }
        total += sqlx::query(
            "DELETE FROM upkeep.jobs WHERE id = ANY($1) \
             AND finished_at < now() - make_interval(days => $2) \
             AND NOT EXISTS (SELECT 1 FROM upkeep.jobs c WHERE c.parent_id = upkeep.jobs.id \
                             AND c.finished_at IS NULL)",
        )
        .bind(&ids)
        .bind(ttl_days)
        .execute(pool)
        .await?
        .rows_affected();
        if (ids.len() as i64) < PRUNE_JOBS {
            return Ok(total);
        }
    }
}
