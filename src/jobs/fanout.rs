//! Fan-out: a big job splits its work into child jobs of its own kind (`parent_id` set, no
//! resource key: the parent holds it for the family) that any daemon on this database claims.
//! The parent queues the children with the checkpoint that names them, in one transaction, so
//! a parent resumed anywhere neither loses nor doubles them. It then gives its worker slot back
//! and waits: its progress adds up theirs, and it goes on only when every child has finished.
//! Cancel and retry reach the children through the queue (`queue::control`), so they hold even
//! while no daemon runs the parent. What must happen once (storage's cross-check, a dataset's
//! switch) happens in exactly one job of the family, never in two.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::contract::fanout::{ChildJob, FanOutDetail};
use super::{JobCtx, JobError, Progress};
use crate::queue::{self, JobState, QueueError};

/// How often a waiting parent looks at its children.
const POLL: Duration = Duration::from_millis(500);

/// Child jobs per parent, at most.
pub const MAX_CHILDREN: u32 = 64;

/// How a child ended, for its parent to merge.
#[derive(Debug, Clone)]
pub struct ChildEnd {
    pub id: Uuid,
    pub state: JobState,
    pub result: Option<Value>,
    pub summary: ChildJob,
}

impl ChildEnd {
    pub fn succeeded(&self) -> bool {
        self.state == JobState::Succeeded
    }
}

/// Queues one child per `params` (as the kind will read them; sealed here) and commits the
/// checkpoint `record` makes of their ids in the same transaction.
pub async fn spawn<C: Serialize>(
    ctx: &mut JobCtx,
    children: Vec<Value>,
    record: impl FnOnce(Vec<Uuid>) -> C,
) -> Result<Vec<Uuid>, JobError> {
    let mut tx = ctx.pool.begin().await?;
    let mut ids = Vec::with_capacity(children.len());
    for params in children {
        let sealed =
            ctx.settings.sealer.seal(params).map_err(|e| {
                JobError::failed("internal", format!("sealing a child's params: {e}"))
            })?;
        let id = queue::submit_child(&mut tx, ctx.job_id, ctx.kind, &sealed)
            .await
            .map_err(|e| match e {
                QueueError::Db(e) => JobError::Db(e),
                e => JobError::failed("internal", e.to_string()),
            })?;
        ids.push(id);
    }
    let checkpoint = record(ids.clone());
    ctx.save_checkpoint(&mut *tx, &checkpoint).await?;
    tx.commit().await?;
    ctx.log(
        format!("split into {} child jobs", ids.len()),
        serde_json::json!({"children": ids}),
    )
    .await?;
    Ok(ids)
}

/// Waits, without holding a worker slot, until every child has finished; reports their summed
/// progress (in `unit`) meanwhile. A cancel of the parent is passed on and waited out, then
/// reported by `ctx.check_stop()` to the caller, which merges what the children did first.
pub async fn wait(
    ctx: &mut JobCtx,
    ids: &[Uuid],
    units: &[u64],
    unit: &str,
) -> Result<Vec<ChildEnd>, JobError> {
    ctx.release_slot().await;
    let mut passed_on = false;
    loop {
        let rows = children(ctx, ids).await?;
        let finished = rows.iter().all(|r| r.state().is_finished());
        report(ctx, &rows, unit, finished).await?;
        if finished {
            break;
        }
        match ctx.check_stop() {
            Err(JobError::Cancelled) if !passed_on => {
                passed_on = true;
                for row in rows.iter().filter(|r| !r.state().is_finished()) {
                    match queue::cancel(&ctx.pool, row.id).await {
                        Ok(_) | Err(QueueError::InvalidTransition { .. }) => {}
                        Err(QueueError::Db(e)) => return Err(e.into()),
                        Err(e) => return Err(JobError::failed("internal", e.to_string())),
                    }
                }
            }
            Err(JobError::Cancelled) | Ok(()) => {}
            Err(e) => return Err(e),
        }
        if passed_on {
            tokio::time::sleep(POLL).await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = ctx.stop_signal() => {}
            }
        }
    }
    ctx.reacquire_slot().await;
    ends(ctx, ids, units).await
}

async fn children(ctx: &JobCtx, ids: &[Uuid]) -> Result<Vec<queue::JobRow>, JobError> {
    let rows: Vec<queue::JobRow> =
        sqlx::query_as("SELECT * FROM upkeep.jobs WHERE id = ANY($1) ORDER BY id")
            .bind(ids)
            .fetch_all(&ctx.pool)
            .await?;
    if rows.len() != ids.len() {
        return Err(JobError::failed(
            "children_missing",
            format!(
                "{} of {} child jobs are gone (pruned or deleted); retry is not possible",
                ids.len() - rows.len(),
                ids.len()
            ),
        ));
    }
    Ok(rows)
}

/// The children's progress summed: done always, total once every child knows its own.
async fn report(
    ctx: &mut JobCtx,
    rows: &[queue::JobRow],
    unit: &str,
    force: bool,
) -> Result<(), JobError> {
    let mut done = 0u64;
    let mut total = Some(0u64);
    let mut detail = FanOutDetail {
        children: rows.len() as u64,
        queued: 0,
        running: 0,
        succeeded: 0,
        failed: 0,
        cancelled: 0,
        running_on: BTreeMap::new(),
    };
    for row in rows {
        let p: Option<Progress> = row
            .progress
            .clone()
            .and_then(|v| serde_json::from_value(v).ok());
        match p.filter(|p| p.unit == unit) {
            Some(p) => {
                done += p.done;
                total = total.zip(p.total).map(|(a, b)| a + b);
            }
            None => total = None,
        }
        match row.state() {
            JobState::Queued => detail.queued += 1,
            JobState::Running => {
                detail.running += 1;
                let daemon = row
                    .locked_by
                    .as_deref()
                    .map_or("", |w| w.rsplit_once('/').map_or(w, |(d, _)| d));
                *detail.running_on.entry(daemon.to_string()).or_default() += 1;
            }
            JobState::Succeeded => detail.succeeded += 1,
            JobState::Failed => detail.failed += 1,
            JobState::Cancelled => detail.cancelled += 1,
        }
    }
    let detail =
        serde_json::to_value(detail).map_err(|e| JobError::failed("internal", e.to_string()))?;
    ctx.progress(
        Progress {
            phase: "child jobs".into(),
            done,
            total: total.map(|t| t.max(done)),
            unit: unit.into(),
            detail: Some(detail),
            ..Default::default()
        },
        force,
    )
    .await
}

async fn ends(ctx: &JobCtx, ids: &[Uuid], units: &[u64]) -> Result<Vec<ChildEnd>, JobError> {
    let rows = children(ctx, ids).await?;
    // Who ran each child, attempt by attempt: the claims' `running` events say.
    let claims: Vec<(Uuid, Option<String>)> = sqlx::query_as(
        "SELECT job_id, data->>'worker' FROM upkeep.job_events \
         WHERE job_id = ANY($1) AND type = 'state' AND data->>'state' = 'running' ORDER BY id",
    )
    .bind(ids)
    .fetch_all(&ctx.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let index = ids.iter().position(|id| *id == row.id).unwrap_or(0);
            let workers = claims
                .iter()
                .filter(|(id, _)| *id == row.id)
                .filter_map(|(_, w)| w.clone())
                .collect();
            let state = row.state();
            ChildEnd {
                id: row.id,
                state,
                summary: ChildJob {
                    id: row.id,
                    state: state.as_str().to_string(),
                    attempts: row.attempts,
                    units: units.get(index).copied().unwrap_or(0),
                    workers,
                    error: row.error.clone(),
                },
                result: row.result,
            }
        })
        .collect())
}

/// The error of a parent some of whose children did not succeed; `result` is the merged one.
pub fn children_failed(ends: &[ChildEnd], result: Value) -> JobError {
    let bad: Vec<&ChildEnd> = ends.iter().filter(|e| !e.succeeded()).collect();
    let first = bad.first().map_or(String::new(), |e| {
        let why = e
            .summary
            .error
            .as_ref()
            .and_then(|v| v["message"].as_str())
            .unwrap_or(e.state.as_str());
        format!("; first: {} ({}): {why}", e.id, e.state.as_str())
    });
    JobError::Failed {
        code: "children_failed",
        message: format!(
            "{} of {} child jobs did not succeed{first}; retry this job to retry them",
            bad.len(),
            ends.len()
        ),
        result: Some(result),
    }
}

/// Splits `items` into at most `n` shares of near-equal count, in order.
pub fn shares<T: Clone>(items: &[T], n: usize) -> Vec<Vec<T>> {
    let n = n.clamp(1, items.len().max(1));
    let mut out: Vec<Vec<T>> = vec![Vec::new(); n];
    for (i, item) in items.iter().enumerate() {
        out[i % n].push(item.clone());
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Whether the job has children of its kind still to finish (a cancelled parent waits them out).
pub async fn has_active_children(pool: &sqlx::PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM upkeep.jobs c JOIN upkeep.jobs p ON p.id = c.parent_id \
         WHERE p.id = $1 AND c.kind = p.kind AND c.state IN ('queued', 'running'))",
    )
    .bind(id)
    .fetch_one(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_near_equal_and_never_empty() {
        let items: Vec<u32> = (0..10).collect();
        let s = shares(&items, 3);
        assert_eq!(s.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 3, 3]);
        assert_eq!(shares(&items[..2], 5).len(), 2);
        assert_eq!(shares::<u32>(&[], 4).len(), 0);
    }
}
