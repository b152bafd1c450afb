//! One batch: exported, then deleted in one short transaction that gives up (and is retried)
//! when a dependent row appeared since the export or a lock is busy.

use std::collections::HashSet;
use std::time::Duration;

use opendal::Operator;
use sqlx::{Postgres, Transaction};

use super::*;
use crate::jobs::purge::log_export::{self, Files};

/// Why a batch's transaction was given up; both are retried with the batch read again.
pub(super) enum Abandoned {
    /// A dependent row appeared after the export: it would be deleted without a copy.
    Changed(String),
    LockBusy,
}

/// Exports and deletes one batch of the current unit; false when the unit has no rows left.
pub(super) async fn purge_batch(
    params: &PurgeLogsParams,
    ctx: &mut JobCtx,
    sql: &Sql,
    op: Option<&Operator>,
    cp: &mut Checkpoint,
) -> Result<bool, JobError> {
    let unit = &UNITS[cp.unit];
    let (mut changed, mut busy) = (0u32, 0u32);
    loop {
        let t0 = Instant::now();
        let Some(batch) = read_batch(params, ctx, sql, cp).await? else {
            return Ok(false);
        };
        let read_ms = t0.elapsed().as_millis();
        let exported = match op {
            Some(op) => Some(export(ctx, cp, unit, &sql.dependents[cp.unit], &batch, op).await?),
            None => None,
        };
        ctx.failpoint("purge_logs.exported").await?;
        let export_ms = t0.elapsed().as_millis() - read_ms;
        let began = Instant::now();
        let mut tx = ctx.pool.begin().await?;
        let deps = &sql.dependents[cp.unit];
        match delete(
            params,
            ctx,
            &mut tx,
            cp,
            unit,
            deps,
            &batch,
            exported.is_some(),
        )
        .await
        {
            Ok(tallies) => {
                for (table, tally) in tallies {
                    let t = cp.tables.entry(table.to_string()).or_default();
                    t.deleted += tally.deleted;
                    t.detached += tally.detached;
                    t.exported += tally.exported;
                }
                if let Some((files, bytes)) = exported {
                    cp.files += files;
                    cp.bytes += bytes;
                }
                cp.pending = None;
                cp.cursor = batch.last;
                cp.cursor_by_id = Some(sql.keysets[cp.unit] == Keyset::Id);
                cp.batches += 1;
                ctx.save_checkpoint(&mut *tx, &*cp).await?;
                tx.commit().await?;
                // Kept with the next checkpoint: commit included.
                let held = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
                cp.longest_tx_ms = cp.longest_tx_ms.max(held);
                tracing::debug!(
                    job.id = %ctx.job_id,
                    "{} batch: read {read_ms} ms, export {export_ms} ms, delete {held} ms",
                    unit.table
                );
                let removed = batch.parents.len() as u64;
                ctx.count("rows", removed);
                return Ok(true);
            }
            Err(DeleteError::Job(e)) => return Err(e),
            Err(DeleteError::Abandoned(why)) => {
                tx.rollback().await?;
                cp.retried_batches += 1;
                match why {
                    Abandoned::Changed(detail) => {
                        changed += 1;
                        if changed > CHANGED_RETRIES {
                            return Err(JobError::failed(
                                "rows_changing",
                                format!(
                                    "{detail}, {changed} times in a row; nothing of this batch was deleted"
                                ),
                            ));
                        }
                        ctx.warn(format!("{detail}: exporting the batch again"), Value::Null)
                            .await?;
                    }
                    Abandoned::LockBusy => {
                        busy += 1;
                        if busy > LOCK_RETRIES {
                            return Err(JobError::failed(
                                "lock_timeout",
                                format!(
                                    "{} rows stayed locked by another session for {} tries of {} ms",
                                    unit.table, busy, params.lock_timeout_ms
                                ),
                            ));
                        }
                        let wait = Duration::from_millis(200 * 2u64.pow(busy));
                        ctx.warn(
                            format!("a lock on {} is busy; retrying in {wait:?}", unit.table),
                            Value::Null,
                        )
                        .await?;
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = ctx.stop_signal() => ctx.check_stop()?,
                        }
                    }
                }
            }
        }
    }
}

/// Writes the batch's files under the names recorded for it (new ones only for a batch never
/// exported before) and verifies them. Returns the files and bytes written.
pub(super) async fn export(
    ctx: &mut JobCtx,
    cp: &mut Checkpoint,
    unit: &Unit,
    deps: &[Dependent],
    batch: &Batch,
    op: &Operator,
) -> Result<(u64, u64), JobError> {
    let stamp_us = match &cp.pending {
        Some(p) => p.stamp_us,
        None => {
            let now = Utc::now().timestamp_micros();
            now.max(cp.last_stamp_us + 1)
        }
    };
    let mut files = Files::default();
    for row in &batch.parents {
        files.push(row.tenant, unit.table, stamp_us, &row.json);
    }
    for (d, rows) in deps.iter().zip(&batch.dependents) {
        for row in rows {
            files.push(row.tenant, d.table, stamp_us, &row.json);
        }
    }
    let keys = files.keys();
    let earlier: Vec<String> = cp
        .pending
        .as_ref()
        .map(|p| p.keys.clone())
        .unwrap_or_default();
    let mut recorded: Vec<String> = earlier.clone();
    recorded.extend(keys.iter().filter(|k| !earlier.contains(k)).cloned());
    if cp.pending.is_none() || recorded.len() != earlier.len() {
        // The names are committed before the first byte is written.
        cp.pending = Some(Pending {
            stamp_us,
            keys: recorded,
        });
        cp.last_stamp_us = stamp_us;
        ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
    }
    let (n, bytes) = (keys.len() as u64, files.bytes());
    files.write_verified(op).await?;
    let stale: Vec<String> = earlier.into_iter().filter(|k| !keys.contains(k)).collect();
    log_export::remove_stale(op, stale).await?;
    if let Some(p) = cp.pending.as_mut() {
        p.keys = keys;
    }
    Ok((n, bytes))
}

pub(super) enum DeleteError {
    Job(JobError),
    Abandoned(Abandoned),
}

impl From<sqlx::Error> for DeleteError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::sqlstate(&e).as_deref() == Some("55P03") {
            DeleteError::Abandoned(Abandoned::LockBusy)
        } else {
            DeleteError::Job(e.into())
        }
    }
}

impl From<JobError> for DeleteError {
    fn from(e: JobError) -> Self {
        DeleteError::Job(e)
    }
}

/// Locks the batch's parents that still qualify, then removes their dependents and them.
/// With an export, every removed row must be one the export holds.
#[allow(clippy::too_many_arguments)]
pub(super) async fn delete(
    params: &PurgeLogsParams,
    ctx: &JobCtx,
    tx: &mut Transaction<'static, Postgres>,
    cp: &Checkpoint,
    unit: &Unit,
    deps: &[Dependent],
    batch: &Batch,
    exported: bool,
) -> Result<Vec<(&'static str, Tally)>, DeleteError> {
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(format!("{}ms", params.lock_timeout_ms))
        .execute(&mut **tx)
        .await?;
    let ids: Vec<Uuid> = batch.parents.iter().map(|r| r.id).collect();
    let eligible: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(unit.lock_eligible()))
        .bind(&ids)
        .bind(cp.cutoff)
        .fetch_all(&mut **tx)
        .await?;
    let mut tallies = Vec::new();
    for (d, rows) in deps.iter().zip(&batch.dependents) {
        let fate = match d.fate {
            Fate::Detach(_) if !params.keep_annotations => Fate::Delete,
            f => f,
        };
        let sql = Dependent { fate, ..*d }.apply_for();
        let done: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(&eligible)
            .fetch_all(&mut **tx)
            .await?;
        if exported {
            let copied: HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
            if let Some(new) = done.iter().find(|id| !copied.contains(id)) {
                return Err(DeleteError::Abandoned(Abandoned::Changed(format!(
                    "{} row {new} appeared after the export",
                    d.table
                ))));
            }
        }
        let n = done.len() as u64;
        tallies.push((
            d.table,
            match fate {
                Fate::Delete => Tally {
                    deleted: n,
                    exported: if exported { n } else { 0 },
                    ..Tally::default()
                },
                Fate::Detach(_) => Tally {
                    detached: n,
                    exported: if exported { n } else { 0 },
                    ..Tally::default()
                },
            },
        ));
        if tallies.len() == 1 {
            ctx.failpoint("purge_logs.mid_delete").await?;
        }
    }
    let gone: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(unit.delete_parents()))
        .bind(&eligible)
        .fetch_all(&mut **tx)
        .await?;
    let n = gone.len() as u64;
    tallies.push((
        unit.table,
        Tally {
            deleted: n,
            exported: if exported { n } else { 0 },
            ..Tally::default()
        },
    ));
    Ok(tallies)
}
