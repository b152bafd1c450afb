//! The worker pool: claims jobs, runs each beside its heartbeat, and records how it ended.
//! A panic in job code fails that job only; shutdown lets jobs reach a batch boundary and
//! gives them back to the queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::Settings;
use crate::failpoint::FailPoints;
use crate::jobs::{CtxParts, JobCtx, JobError, JobSpec};
use crate::metrics::Metrics;
use crate::queue::listener::Signals;
use crate::queue::{self, Claimed, FenceError, JobState, Lease};
use crate::secrets::SealError;

mod slots;

pub use slots::{Slot, Slots};

#[derive(Clone)]
pub struct WorkerConfig {
    pub name: String,
    pub workers: usize,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub job_ttl_days: u32,
    pub failpoints: Arc<FailPoints>,
    pub settings: Arc<Settings>,
}

#[derive(Clone)]
pub struct Workers {
    pub pool: PgPool,
    pub config: WorkerConfig,
    pub signals: Signals,
    pub metrics: Arc<Metrics>,
}

impl Workers {
    /// Runs the claim loop (`config.workers` slots) and the housekeeping loop until `shutdown`
    /// fires, then waits for running jobs to stop (they requeue themselves at their next batch
    /// boundary).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut set = JoinSet::new();
        if self.config.workers > 0 {
            let w = self.clone();
            let s = shutdown.clone();
            set.spawn(async move { w.claim_loop(s).await });
        }
        let w = self.clone();
        let s = shutdown.clone();
        set.spawn(async move { w.housekeeping(s).await });
        while set.join_next().await.is_some() {}
    }

    /// Takes a free slot, then claims a job for it; each job runs in a task of its own. The
    /// slot is not held while nothing is claimable, so a parent that waited for its children
    /// can take one back.
    async fn claim_loop(&self, shutdown: CancellationToken) {
        let slots = Slots::new(
            self.config.workers,
            self.config.settings.kind_limits.clone(),
        );
        let mut running = JoinSet::new();
        loop {
            // Register for the wake-up before looking, so a job queued in between is not missed.
            let notified = self.signals.job_queued.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let released = slots.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let permit = tokio::select! {
                p = slots.free_slot() => p,
                _ = shutdown.cancelled() => None,
            };
            let Some(permit) = permit else { break };
            let worker = format!("{}/{}", self.config.name, permit.index);
            let full = slots.full_kinds();
            let skip: Vec<&str> = full.iter().map(String::as_str).collect();
            match queue::claim_except(&self.pool, &worker, self.config.lease, &skip).await {
                Ok(Some(claimed)) => {
                    let slot = slots.hold(permit, &claimed.row.kind);
                    let (w, s) = (self.clone(), shutdown.clone());
                    running.spawn(async move { w.execute(&worker, claimed, s, slot).await });
                    while running.try_join_next().is_some() {}
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(worker, error = %e, "claim failed"),
            }
            drop(permit);
            while running.try_join_next().is_some() {}
            let jitter = Duration::from_millis(fastrand::u64(0..=250));
            tokio::select! {
                _ = &mut notified => {}
                _ = &mut released => {}
                _ = tokio::time::sleep(self.config.poll_interval + jitter) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        while running.join_next().await.is_some() {}
    }

    async fn housekeeping(&self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = queue::fail_exhausted(&self.pool).await {
                tracing::warn!(error = %e, "failing exhausted jobs");
            }
            match queue::prune_finished(&self.pool, self.config.job_ttl_days).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "pruned finished jobs past their TTL"),
                Err(e) => tracing::warn!(error = %e, "pruning finished jobs"),
            }
        }
    }

    async fn execute(
        &self,
        worker: &str,
        claimed: Claimed,
        shutdown: CancellationToken,
        slot: Slot,
    ) {
        let row = claimed.row;
        let slot = Arc::new(tokio::sync::Mutex::new(slot));
        let span = tracing::info_span!("job", job.id = %row.id, job.kind = %row.kind, attempt = row.attempts);
        async move {
            let lease = Lease::new(self.pool.clone(), row.id, row.attempts, self.config.lease);
            match &claimed.rescued_from {
                Some(owner) => {
                    tracing::info!(previous = %owner, worker, "resuming the job: its lease expired")
                }
                None => tracing::info!(worker, "starting the job"),
            }
            // A parent cancelled while no daemon ran it still waits out its children.
            let waits_for_children = row.cancel_requested_at.is_some()
                && crate::jobs::fanout::has_active_children(&self.pool, row.id)
                    .await
                    .unwrap_or(false);
            if row.cancel_requested_at.is_some() && !waits_for_children {
                self.finish(
                    &lease,
                    &row.kind,
                    Instant::now(),
                    Err(JobError::Cancelled),
                    None,
                )
                .await;
                return;
            }
            let params = match self.config.settings.sealer.open(row.params.clone()) {
                Ok(p) => p,
                Err(e) => {
                    let code = match e {
                        SealError::WrongKey { .. } => "secret_key_mismatch",
                        _ => "secrets_unreadable",
                    };
                    self.finish(
                        &lease,
                        &row.kind,
                        Instant::now(),
                        Err(JobError::failed(code, e.to_string())),
                        None,
                    )
                    .await;
                    return;
                }
            };
            let spec = match JobSpec::parse(&row.kind, params) {
                Ok(spec) => spec,
                Err(e) => {
                    let err = JobError::failed(
                        "invalid_params",
                        format!("stored params no longer valid: {e}"),
                    );
                    self.finish(&lease, &row.kind, Instant::now(), Err(err), None)
                        .await;
                    return;
                }
            };
            let cancel = CancellationToken::new();
            if waits_for_children {
                cancel.cancel();
            }
            let lost = Arc::new(AtomicBool::new(false));
            self.signals.running.insert(row.id, cancel.clone());
            let mut ctx = JobCtx::new(CtxParts {
                lease: lease.clone(),
                kind: spec.kind(),
                dry_run: row.dry_run,
                checkpoint: row.checkpoint.clone(),
                cancel: cancel.clone(),
                lost: lost.clone(),
                shutdown,
                metrics: self.metrics.clone(),
                failpoints: self.config.failpoints.clone(),
                settings: self.config.settings.clone(),
                parent_id: row.parent_id,
                slot: Some(slot.clone()),
            });
            let heartbeat = tokio::spawn(
                heartbeat(lease.clone(), cancel.clone(), lost.clone()).in_current_span(),
            );
            let started = Instant::now();
            let task = tokio::spawn(
                async move {
                    let outcome = spec.execute(&mut ctx).await;
                    // Best effort: a failure here is a lost lease or database, which the
                    // end below meets and handles again.
                    if let Err(e) = ctx.flush_progress().await {
                        tracing::debug!(error = %e, "could not write the last progress");
                    }
                    (outcome, ctx.take_partial_result())
                }
                .in_current_span(),
            );
            let (outcome, partial) = match task.await {
                Ok(ended) => ended,
                Err(e) if e.is_panic() => (
                    Err(JobError::failed("panicked", panic_message(e.into_panic()))),
                    None,
                ),
                Err(e) => (Err(JobError::failed("internal", e.to_string())), None),
            };
            heartbeat.abort();
            self.signals.running.remove(row.id);
            let outcome = if lost.load(Ordering::SeqCst) {
                Err(JobError::LeaseLost)
            } else {
                outcome
            };
            self.finish(&lease, &row.kind, started, outcome, partial)
                .await;
            // Only now is the slot free: the next job it takes starts after this one's end.
            drop(slot);
        }
        .instrument(span)
        .await
    }

    async fn finish(
        &self,
        lease: &Lease,
        kind: &str,
        started: Instant,
        outcome: Result<serde_json::Value, JobError>,
        // What the job reported as done so far: the result of a job that stopped without one
        // (a cancelled vacuum still shows the tables it vacuumed).
        partial: Option<serde_json::Value>,
    ) {
        if let Err(JobError::Db(e)) = &outcome
            && crate::db::connection_lost(e)
        {
            let message = format!(
                "the database connection was lost ({}); requeued at its last checkpoint",
                crate::secrets::scrub(&e.to_string())
            );
            match requeue_after_fault(lease, &message).await {
                Ok(true) => {
                    tracing::warn!(error = %e, "database connection lost; requeued at its checkpoint");
                    return;
                }
                // No attempt left: it fails below.
                Ok(false) => {}
                Err(FenceError::Lost) => {
                    tracing::warn!("lost the job's lease; another worker owns it now");
                    return;
                }
                Err(FenceError::Db(e)) => {
                    tracing::warn!(error = %e, "database still unreachable; the job's lease will expire and it will be resumed");
                    return;
                }
            }
        }
        // A message may quote a URL it was given: never with its password.
        let failed = |code: &str, message: String| {
            Some(json!({"code": code, "message": crate::secrets::scrub(&message)}))
        };
        let (state, result, error, message) = match outcome {
            Ok(result) => (JobState::Succeeded, Some(result), None, "job succeeded"),
            Err(JobError::Cancelled) => (
                JobState::Cancelled,
                partial,
                None,
                "cancelled at a batch boundary",
            ),
            Err(JobError::Failed {
                code,
                message,
                result,
            }) => (
                JobState::Failed,
                result.or(partial),
                failed(code, message),
                "job failed",
            ),
            Err(JobError::Db(e)) => (
                JobState::Failed,
                partial,
                failed("database_error", e.to_string()),
                "job failed",
            ),
            Err(JobError::Interrupted) => {
                tracing::info!("interrupted by shutdown; requeued at its checkpoint");
                if let Err(e) = lease
                    .requeue("daemon shutting down; requeued at its last checkpoint")
                    .await
                {
                    tracing::warn!(error = %e, "could not requeue the job; its lease will expire and it will be resumed");
                }
                return;
            }
            Err(JobError::LeaseLost) => {
                tracing::warn!("lost the job's lease; another worker owns it now");
                return;
            }
        };
        // Observed before the write, so the metric is there by the time anyone sees the end.
        let elapsed = started.elapsed();
        self.metrics.observe_duration(kind, state.as_str(), elapsed);
        match lease
            .finish(state, result.as_ref(), error.as_ref(), message)
            .await
        {
            Ok(_) => {
                tracing::info!(
                    state = state.as_str(),
                    duration_ms = elapsed.as_millis() as u64,
                    "job ended: {}",
                    state.as_str()
                );
            }
            Err(FenceError::Lost) => {
                tracing::warn!("the job was taken over before its end could be recorded")
            }
            Err(FenceError::Db(e)) => {
                tracing::error!(error = %e, "could not record the job's end; its lease will expire and it will be resumed")
            }
        }
    }
}

/// Extends the lease while the job runs; a cancel request or a lost lease fires `cancel`.
async fn heartbeat(lease: Lease, cancel: CancellationToken, lost: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(lease.duration / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        match lease.heartbeat().await {
            Ok(true) => cancel.cancel(),
            Ok(false) => {}
            Err(FenceError::Lost) => {
                lost.store(true, Ordering::SeqCst);
                cancel.cancel();
                return;
            }
            Err(FenceError::Db(e)) => {
                tracing::warn!(error = %e, "heartbeat failed")
            }
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("the job panicked: {text}")
}

/// Gives the job back after its connection was lost. The pool may still hold other
/// connections the same fault cut (a job with several statements in flight used several), so
/// a write that meets one of them is tried again on the next, a few times, before the job is
/// left to its lease.
async fn requeue_after_fault(lease: &Lease, message: &str) -> Result<bool, FenceError> {
    let mut tries = 0;
    loop {
        match lease.requeue_after_fault(message).await {
            Err(FenceError::Db(e)) if tries < 3 && crate::db::connection_lost(&e) => {
                tries += 1;
                tracing::debug!(error = %e, "requeue met a cut connection; trying again");
            }
            other => return other,
        }
    }
}
