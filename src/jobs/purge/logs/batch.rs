//! One batch's delete: one short transaction that locks the batch's parents still eligible,
//! removes their dependents and them, and commits the checkpoint past them. It is given up
//! (and the batch read again) when a dependent row appeared since the export or a lock is busy.

use sqlx::{Postgres, Transaction};

use super::*;

/// Why a batch's transaction was given up; both are retried with the batch read again.
pub(super) enum Abandoned {
    /// A dependent row appeared after the export: it would be deleted without a copy.
    Changed(String),
    LockBusy,
}

/// A batch ready to delete: with an export, its files are written and verified.
pub(super) struct Ready {
    pub(super) ids: Vec<Uuid>,
    pub(super) last: Cursor,
    /// Per dependent of the unit, the ids its files hold; `None` without an export.
    pub(super) copied: Option<Vec<HashSet<Uuid>>>,
    pub(super) files: u64,
    pub(super) bytes: u64,
}

/// Deletes `batch` and commits, in the same transaction, the checkpoint past it (its pending
/// names dropped: its files now hold deleted rows). Returns how long the transaction was open,
/// commit included.
pub(super) async fn delete_and_commit(
    params: &PurgeLogsParams,
    ctx: &mut JobCtx,
    sql: &Sql,
    cp: &mut Checkpoint,
    batch: &Ready,
) -> Result<u64, DeleteError> {
    let unit = &UNITS[cp.unit];
    let began = Instant::now();
    let mut tx = ctx.pool.begin().await?;
    let deps = &sql.dependents[cp.unit];
    let tallies = match delete(params, ctx, &mut tx, cp.cutoff, unit, deps, batch).await {
        Ok(tallies) => tallies,
        Err(e) => {
            if let DeleteError::Abandoned(_) = e {
                tx.rollback().await?;
            }
            return Err(e);
        }
    };
    let exported = batch.copied.is_some();
    for (table, tally) in tallies {
        let t = cp.tables.entry(table.to_string()).or_default();
        t.deleted += tally.deleted;
        t.detached += tally.detached;
        t.exported += tally.exported;
    }
    if exported {
        cp.files += batch.files;
        cp.bytes += batch.bytes;
        if !cp.pending.is_empty() {
            cp.pending.remove(0);
        }
    }
    cp.cursor = batch.last;
    cp.cursor_by_id = Some(sql.keysets[cp.unit] == Keyset::Id);
    cp.batches += 1;
    ctx.save_checkpoint(&mut *tx, &*cp).await?;
    tx.commit().await?;
    let held = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
    // Kept with the next checkpoint.
    cp.longest_tx_ms = cp.longest_tx_ms.max(held);
    ctx.count("rows", batch.ids.len() as u64);
    Ok(held)
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
pub(super) async fn delete(
    params: &PurgeLogsParams,
    ctx: &JobCtx,
    tx: &mut Transaction<'static, Postgres>,
    cutoff: NaiveDateTime,
    unit: &Unit,
    deps: &[Dependent],
    batch: &Ready,
) -> Result<Vec<(&'static str, Tally)>, DeleteError> {
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(format!("{}ms", params.lock_timeout_ms))
        .execute(&mut **tx)
        .await?;
    let eligible: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(unit.lock_eligible()))
        .bind(&batch.ids)
        .bind(cutoff)
        .fetch_all(&mut **tx)
        .await?;
    let exported = batch.copied.is_some();
    let mut tallies = Vec::new();
    for (i, d) in deps.iter().enumerate() {
        let fate = match d.fate {
            Fate::Detach(_) if !params.keep_annotations => Fate::Delete,
            f => f,
        };
        let sql = Dependent { fate, ..*d }.apply_for();
        let done: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(&eligible)
            .fetch_all(&mut **tx)
            .await?;
        if let Some(copied) = &batch.copied {
            let copied = copied.get(i);
            if let Some(new) = done
                .iter()
                .find(|id| !copied.is_some_and(|c| c.contains(id)))
            {
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
