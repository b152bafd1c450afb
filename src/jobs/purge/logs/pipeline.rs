//! One unit's batches, three at a time: while batch k is deleted, the files of batch k+1 are
//! written and verified and batch k+2 is read. Each stage has its own resource (the delete
//! the job's checkpoint and one connection, the write the storage, the read other pooled
//! connections), so the phases that ran one after the other now overlap.
//!
//! What keeps a kill at any instant safe: the checkpoint moves past a batch only in the
//! transaction that deletes it, after its files were verified; and a batch's file names are
//! committed (`Checkpoint::pending`, in walk order) before its first byte is written. A rerun
//! reads again from the checkpoint and gives the n-th batch after it the n-th pending names,
//! rewriting those files and removing the ones its rows no longer fill. A batch given up
//! (rows changed, a lock busy) restarts the pipeline the same way.

use std::time::Duration;

use opendal::Operator;

use super::*;

/// A batch read, its names committed, on its way to storage.
struct ToWrite {
    files: Files,
    stamp_us: i64,
    keys: Vec<String>,
    /// Names an earlier attempt of this batch recorded that this one does not fill.
    stale: Vec<String>,
}

/// Purges the current unit to its end (`cp.unit`, from `cp.cursor`).
pub(super) async fn purge_unit(
    params: &PurgeLogsParams,
    ctx: &mut JobCtx,
    sql: &Sql,
    op: Option<&Operator>,
    cp: &mut Checkpoint,
    meter: &mut TableMeter,
) -> Result<(), JobError> {
    let unit = &UNITS[cp.unit];
    let pool = ctx.pool.clone();
    let protected = cp.protected_runs.clone().unwrap_or_default();
    let walk = Walk {
        pool: &pool,
        sql,
        unit: cp.unit,
        tenants: params.tenant_ids.as_deref(),
        cutoff: cp.cutoff,
        batch: i64::from(params.batch),
        protected: &protected,
        export: op.is_some(),
    };
    // Batch k (to delete), batch k+1 (read, to write), where batch k+2 starts (`None`: the
    // unit is read to its end), and how many pending names the batches in flight hold.
    let mut ready: Option<Ready> = None;
    let mut fresh: Option<Batch> = None;
    let mut next = Some(cp.cursor);
    let mut claimed = 0usize;
    let (mut changed, mut busy) = (0u32, 0u32);
    loop {
        ctx.check_stop()?;
        if ready.is_none() && fresh.is_none() && next.is_none() {
            return Ok(());
        }
        // Batch k+1's names are committed before its files are written; it is deleted next.
        let (after, to_write) = match fresh.take() {
            Some(batch) => claim(ctx, cp, &mut claimed, batch).await?,
            None => (None, None),
        };
        let to_delete = ready.take();
        if to_delete.is_some() {
            ctx.failpoint("purge_logs.exported").await?;
        }
        let t0 = Instant::now();
        // The first failure stops the other stages at once (a write cut short is under names
        // already committed, as after a kill): the job ends, or the batches are read again.
        let deleting = async {
            match &to_delete {
                Some(k) => delete_and_commit(params, ctx, sql, cp, k).await.map(Some),
                None => Ok(None),
            }
        };
        let writing = async {
            match (to_write, op) {
                (Some(w), Some(op)) => write(op, w).await.map(Some).map_err(DeleteError::Job),
                _ => Ok(None),
            }
        };
        let reading = async {
            match next {
                Some(from) => read_batch(&walk, from)
                    .await
                    .map(Some)
                    .map_err(DeleteError::Job),
                None => Ok(None),
            }
        };
        let (held, written, read) = match tokio::try_join!(deleting, writing, reading) {
            Ok(done) => done,
            Err(DeleteError::Job(e)) => return Err(e),
            Err(DeleteError::Abandoned(why)) => {
                cp.retried_batches += 1;
                give_up(params, ctx, unit, why, &mut changed, &mut busy).await?;
                // The batches after the one given up were read from where it ended: read them
                // all again from the checkpoint (they keep their names, in order).
                (ready, fresh, next, claimed) = (None, None, Some(cp.cursor), 0);
                continue;
            }
        };
        if let Some(held) = held {
            (changed, busy) = (0, 0);
            if to_delete.as_ref().is_some_and(|k| k.copied.is_some()) {
                claimed = claimed.saturating_sub(1);
            }
            tracing::debug!(
                job.id = %ctx.job_id,
                "{} batch: delete {held} ms, with the next batches' export and read {} ms",
                unit.table,
                t0.elapsed().as_millis()
            );
            ctx.partial_result(done_so_far(params, cp));
            report(ctx, cp, unit, meter).await?;
        }
        // The names the written batch fills now (stale ones removed): saved with the next
        // checkpoint, which only ever shrinks what a rerun must clean.
        if let Some((stamp_us, keys)) = written
            && let Some(p) = cp.pending.iter_mut().find(|p| p.stamp_us == stamp_us)
        {
            p.keys = keys;
        }
        ready = after;
        match read {
            Some(Some(batch)) => {
                next = Some(batch.last);
                fresh = Some(batch);
            }
            Some(None) => next = None,
            None => {}
        }
    }
}

/// Commits the names of `batch`'s files before any is written: the n-th batch in flight takes
/// the n-th pending names (a rerun's), else new ones. Returns the batch as its delete will
/// need it, and its files to write.
async fn claim(
    ctx: &mut JobCtx,
    cp: &mut Checkpoint,
    claimed: &mut usize,
    batch: Batch,
) -> Result<(Option<Ready>, Option<ToWrite>), JobError> {
    let Some(Exported { files, copied }) = batch.export else {
        let ready = Ready {
            ids: batch.ids,
            last: batch.last,
            copied: None,
            files: 0,
            bytes: 0,
        };
        return Ok((Some(ready), None));
    };
    let (stamp_us, earlier) = match cp.pending.get(*claimed) {
        Some(p) => (p.stamp_us, p.keys.clone()),
        None => (
            Utc::now().timestamp_micros().max(cp.last_stamp_us + 1),
            Vec::new(),
        ),
    };
    let keys = files.keys(stamp_us);
    let new: Vec<String> = keys
        .iter()
        .filter(|k| !earlier.contains(k))
        .cloned()
        .collect();
    match cp.pending.get_mut(*claimed) {
        Some(_) if new.is_empty() => {}
        Some(p) => {
            p.keys.extend(new);
            ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
        }
        None => {
            cp.pending.push(Pending {
                stamp_us,
                keys: keys.clone(),
            });
            cp.last_stamp_us = stamp_us;
            ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
        }
    }
    *claimed += 1;
    let stale: Vec<String> = earlier.into_iter().filter(|k| !keys.contains(k)).collect();
    let ready = Ready {
        ids: batch.ids,
        last: batch.last,
        copied: Some(copied),
        files: keys.len() as u64,
        bytes: files.bytes(),
    };
    let write = ToWrite {
        files,
        stamp_us,
        keys,
        stale,
    };
    Ok((Some(ready), Some(write)))
}

/// Writes and verifies a batch's files, then removes its stale names. Returns the batch's
/// stamp and the names it fills.
async fn write(op: &Operator, w: ToWrite) -> Result<(i64, Vec<String>), JobError> {
    w.files.write_verified(op, w.stamp_us).await?;
    log_export::remove_stale(op, w.stale).await?;
    Ok((w.stamp_us, w.keys))
}

/// Counts a batch given up and waits before it is redone; fails once it was given up too often.
async fn give_up(
    params: &PurgeLogsParams,
    ctx: &mut JobCtx,
    unit: &Unit,
    why: Abandoned,
    changed: &mut u32,
    busy: &mut u32,
) -> Result<(), JobError> {
    match why {
        Abandoned::Changed(detail) => {
            *changed += 1;
            if *changed > CHANGED_RETRIES {
                return Err(JobError::failed(
                    "rows_changing",
                    format!(
                        "{detail}, {changed} times in a row; nothing of this batch was deleted"
                    ),
                ));
            }
            ctx.warn(format!("{detail}: exporting the batch again"), Value::Null)
                .await
        }
        Abandoned::LockBusy => {
            *busy += 1;
            if *busy > LOCK_RETRIES {
                return Err(JobError::failed(
                    "lock_timeout",
                    format!(
                        "{} rows stayed locked by another session for {} tries of {} ms",
                        unit.table, busy, params.lock_timeout_ms
                    ),
                ));
            }
            let wait = Duration::from_millis(200 * 2u64.pow(*busy));
            ctx.warn(
                format!("a lock on {} is busy; retrying in {wait:?}", unit.table),
                Value::Null,
            )
            .await?;
            tokio::select! {
                _ = tokio::time::sleep(wait) => Ok(()),
                _ = ctx.stop_signal() => ctx.check_stop(),
            }
        }
    }
}

/// Removes the files of batches named but never deleted (a rerun found their rows gone or
/// changed), once the whole purge is done: the export holds exactly what was deleted.
pub(super) async fn forget_pending(
    ctx: &mut JobCtx,
    op: &Operator,
    cp: &mut Checkpoint,
) -> Result<(), JobError> {
    if cp.pending.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = cp.pending.iter().flat_map(|p| p.keys.clone()).collect();
    log_export::remove_stale(op, keys).await?;
    cp.pending.clear();
    ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await
}
