//! The copy phase: every object streamed and verified on the target, with some concurrency,
//! and recorded in the ledger with the checkpoint.

use super::*;

/// One object verified on the target.
pub(super) struct Verified {
    key: String,
    size: u64,
    /// Of the source bytes.
    sha256: Sha256Sum,
    outcome: &'static str,
}

/// What the target's listing said about a key.
#[derive(Clone, Copy)]
pub(super) enum OnTarget {
    Absent,
    /// Listed, with its size (0 when the listing did not say).
    Listed(u64),
}

impl OnTarget {
    /// The size, asking the target only when the listing did not say.
    async fn size(self, dst: &Operator, key: &str) -> Result<Option<u64>, TransferError> {
        match self {
            OnTarget::Absent => Ok(None),
            OnTarget::Listed(0) => transfer::target_size(dst, key).await,
            OnTarget::Listed(n) => Ok(Some(n)),
        }
    }
}

/// Copies (or confirms) one object: skipped only when the target holds the same bytes.
pub(super) async fn migrate_object(
    src: Operator,
    dst: Operator,
    key: String,
    on_target: OnTarget,
    verify: Verify,
    budget: MemoryBudget,
) -> Result<Verified, TransferError> {
    let object = transfer::stat_source(&src, &key).await?;
    let mut outcome = "copied";
    if let Some(size) = on_target.size(&dst, &key).await? {
        outcome = "replaced";
        if size == object.size {
            let (len, sha) = transfer::hash_object(&src, Side::Source, &key, size, &budget).await?;
            let (tlen, tsha) =
                transfer::hash_object(&dst, Side::Target, &key, size, &budget).await?;
            if len == tlen && sha == tsha {
                return Ok(Verified {
                    key,
                    size: len,
                    sha256: sha,
                    outcome: "already_there",
                });
            }
        }
    }
    let written = transfer::copy(&src, &dst, &object, &budget).await?;
    // An ETag equal to the MD5 of what was sent already proves the stored bytes; otherwise
    // the copy is checked here.
    if !written.server_verified {
        let expected = (verify == Verify::Checksum).then_some(&written.sha256);
        transfer::verify(&dst, &object.key, written.len, expected, &budget).await?;
    }
    Ok(Verified {
        key,
        size: written.len,
        sha256: written.sha256,
        outcome,
    })
}

/// What this attempt has done so far, for progress.
#[derive(Default)]
pub(super) struct Counters {
    done: u64,
    bytes: u64,
    copied: u64,
    already_there: u64,
    replaced: u64,
}

pub(super) async fn copy_all(
    params: &StorageMigrateParams,
    ctx: &mut JobCtx,
    src: &Operator,
    dst: &Operator,
    cp: &mut Checkpoint,
) -> Result<(), JobError> {
    let prefixes = prefix_paths(params).map_err(invalid)?;
    // A first pass for the total: listing is cheap next to copying, and an ETA needs it.
    ctx.progress(phase_progress("list source"), true).await?;
    let mut total = 0u64;
    let mut listing = Listing::new(src, Side::Source, prefixes.clone());
    while let Some(batch) = listing.next_batch(1000).await? {
        ctx.check_stop()?;
        total += batch.len() as u64;
    }
    let (recorded, recorded_bytes): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), sum(size)::bigint FROM upkeep.storage_objects WHERE job_id = $1",
    )
    .bind(ctx.job_id)
    .fetch_one(&ctx.pool)
    .await?;
    let mut counters = Counters {
        done: recorded as u64,
        bytes: recorded_bytes.unwrap_or(0) as u64,
        ..Default::default()
    };
    let listed_on_target = list_target(ctx, dst, &prefixes).await?;
    let started = Instant::now();
    let bytes_at_start = counters.bytes;
    let limit = Arc::new(Semaphore::new(params.concurrency as usize));
    let budget = MemoryBudget::default();
    let mut tasks: JoinSet<Result<Option<Verified>, TransferError>> = JoinSet::new();
    let mut pending: Vec<Verified> = Vec::new();
    let mut last_flush = Instant::now();
    let mut listing = Listing::new(src, Side::Source, prefixes.clone());
    let mut stop: Option<JobError> = None;

    'listing: while let Some(batch) = listing.next_batch(512).await? {
        let recorded: Vec<(String, i64)> = sqlx::query_as(
            "SELECT key, size FROM upkeep.storage_objects WHERE job_id = $1 AND key = ANY($2)",
        )
        .bind(ctx.job_id)
        .bind(batch.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
        .fetch_all(&ctx.pool)
        .await?;
        let recorded: std::collections::HashMap<String, i64> = recorded.into_iter().collect();
        let keys: Vec<&str> = batch.iter().map(|(k, _)| k.as_str()).collect();
        let listed: Vec<(String, i64)> = if listed_on_target == 0 {
            Vec::new()
        } else {
            sqlx::query_as(
                "SELECT key, size FROM upkeep.storage_target WHERE job_id = $1 AND key = ANY($2)",
            )
            .bind(ctx.job_id)
            .bind(&keys)
            .fetch_all(&ctx.pool)
            .await?
        };
        let listed: std::collections::HashMap<String, i64> = listed.into_iter().collect();
        for (key, _) in batch {
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => p,
                _ = ctx.stop_signal() => { stop = ctx.check_stop().err(); break 'listing; }
            };
            let Ok(permit) = permit else { break 'listing };
            let (src, dst, budget) = (src.clone(), dst.clone(), budget.clone());
            let verify = params.verify;
            let recorded_size = recorded.get(&key).copied();
            let on_target = match listed.get(&key) {
                Some(size) => OnTarget::Listed(*size as u64),
                None => OnTarget::Absent,
            };
            tasks.spawn(async move {
                let r = match recorded_size {
                    // Verified by an earlier attempt: only make sure the target still has it.
                    Some(size) => match on_target.size(&dst, &key).await {
                        Ok(Some(s)) if s as i64 == size => Ok(None),
                        Ok(_) => migrate_object(src, dst, key, on_target, verify, budget)
                            .await
                            .map(Some),
                        Err(e) => Err(e),
                    },
                    None => migrate_object(src, dst, key, on_target, verify, budget)
                        .await
                        .map(Some),
                };
                drop(permit);
                r
            });
            while let Some(joined) = tasks.try_join_next() {
                if let Err(e) = collect(joined, &mut pending, cp) {
                    stop = Some(e);
                    break 'listing;
                }
            }
            if pending.len() >= FLUSH_EVERY || last_flush.elapsed() >= FLUSH_INTERVAL {
                flush(ctx, &mut pending, cp, &mut counters).await?;
                last_flush = Instant::now();
                report(ctx, &counters, total, started, bytes_at_start).await?;
                if let Err(e) = ctx.check_stop() {
                    stop = Some(e);
                    break 'listing;
                }
            }
        }
    }
    // Finish what is in flight (or, when stopping, keep what already finished).
    if stop.is_some() {
        tasks.abort_all();
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = collect(joined, &mut pending, cp)
            && stop.is_none()
        {
            stop = Some(e);
        }
    }
    flush(ctx, &mut pending, cp, &mut counters).await?;
    report(ctx, &counters, total, started, bytes_at_start).await?;
    sqlx::query("DELETE FROM upkeep.storage_target WHERE job_id = $1")
        .bind(ctx.job_id)
        .execute(&ctx.pool)
        .await?;
    match stop {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Records the target's listing under the prefixes in `upkeep.storage_target`; returns how
/// many objects it holds.
pub(super) async fn list_target(
    ctx: &mut JobCtx,
    dst: &Operator,
    prefixes: &[String],
) -> Result<u64, JobError> {
    ctx.progress(phase_progress("list target"), true).await?;
    sqlx::query("DELETE FROM upkeep.storage_target WHERE job_id = $1")
        .bind(ctx.job_id)
        .execute(&ctx.pool)
        .await?;
    let mut listing = Listing::new(dst, Side::Target, prefixes.to_vec());
    let mut n = 0u64;
    while let Some(batch) = listing.next_batch(1000).await? {
        ctx.check_stop()?;
        n += batch.len() as u64;
        let (keys, sizes): (Vec<String>, Vec<i64>) =
            batch.into_iter().map(|(k, s)| (k, s as i64)).unzip();
        sqlx::query(
            "INSERT INTO upkeep.storage_target (job_id, key, size) \
             SELECT $1, * FROM unnest($2::text[], $3::bigint[]) ON CONFLICT DO NOTHING",
        )
        .bind(ctx.job_id)
        .bind(&keys)
        .bind(&sizes)
        .execute(&ctx.pool)
        .await?;
    }
    Ok(n)
}

/// Sorts one finished transfer: verified, a skippable source problem, or a reason to stop.
pub(super) fn collect(
    joined: Result<Result<Option<Verified>, TransferError>, tokio::task::JoinError>,
    pending: &mut Vec<Verified>,
    cp: &mut Checkpoint,
) -> Result<(), JobError> {
    match joined {
        Ok(Ok(Some(v))) => pending.push(v),
        Ok(Ok(None)) => {}
        // Dify deleted it after the listing: nothing to copy.
        Ok(Err(e)) if e.side == Side::Source && e.not_found => cp.vanished += 1,
        Ok(Err(e)) if e.side == Side::Source => {
            cp.failed += 1;
            if cp.failures.len() < SAMPLE {
                cp.failures.push(Failure {
                    key: e.key.clone(),
                    error: e.to_string(),
                });
            }
        }
        Ok(Err(e)) => {
            return Err(JobError::failed(
                "target_failed",
                format!("target failed: {e}"),
            ));
        }
        Err(e) if e.is_cancelled() => {}
        Err(e) => return Err(JobError::failed("internal", format!("transfer task: {e}"))),
    }
    Ok(())
}

/// Records verified objects in the ledger, with the checkpoint, in one transaction.
pub(super) async fn flush(
    ctx: &mut JobCtx,
    pending: &mut Vec<Verified>,
    cp: &Checkpoint,
    counters: &mut Counters,
) -> Result<(), JobError> {
    if pending.is_empty() {
        return Ok(());
    }
    ctx.failpoint("storage_migrate.before_flush").await?;
    let n = pending.len() as u64;
    let keys: Vec<&str> = pending.iter().map(|v| v.key.as_str()).collect();
    let sizes: Vec<i64> = pending.iter().map(|v| v.size as i64).collect();
    let shas: Vec<Vec<u8>> = pending.iter().map(|v| v.sha256.to_vec()).collect();
    let outcomes: Vec<&str> = pending.iter().map(|v| v.outcome).collect();
    let mut tx = ctx.pool.begin().await?;
    sqlx::query(
        "INSERT INTO upkeep.storage_objects (job_id, key, size, sha256, outcome) \
         SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::bytea[], $5::text[]) \
         ON CONFLICT (job_id, key) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, \
         outcome = excluded.outcome, verified_at = now()",
    )
    .bind(ctx.job_id)
    .bind(&keys)
    .bind(&sizes)
    .bind(&shas)
    .bind(&outcomes)
    .execute(&mut *tx)
    .await?;
    drop((keys, outcomes));
    ctx.save_checkpoint(&mut *tx, cp).await?;
    tx.commit().await?;
    for v in pending.drain(..) {
        counters.done += 1;
        counters.bytes += v.size;
        match v.outcome {
            "copied" => counters.copied += 1,
            "replaced" => counters.replaced += 1,
            _ => counters.already_there += 1,
        }
    }
    ctx.count("objects", n);
    ctx.failpoint("storage_migrate.flushed").await?;
    Ok(())
}

pub(super) async fn report(
    ctx: &mut JobCtx,
    c: &Counters,
    total: u64,
    started: Instant,
    bytes_at_start: u64,
) -> Result<(), JobError> {
    let secs = started.elapsed().as_secs_f64();
    let bytes_rate = (secs > 0.0).then(|| (c.bytes - bytes_at_start) as f64 / secs);
    ctx.progress(
        Progress {
            phase: "copy".into(),
            done: c.done,
            total: Some(total.max(c.done)),
            unit: "objects".into(),
            detail: Some(json!({
                "bytes": c.bytes,
                "bytes_per_s": bytes_rate.map(|r| r.round()),
                "copied": c.copied,
                "replaced": c.replaced,
                "already_there": c.already_there,
            })),
            ..Default::default()
        },
        false,
    )
    .await
}
