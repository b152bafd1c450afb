//! What a running job sees: its params' checkpoint, fenced progress and checkpoint writes,
//! cancellation and shutdown, events and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{PgExecutor, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::JobError;
use super::progress::{Progress, RateMeter};
use crate::config::Settings;
use crate::failpoint::{FailAction, FailPoints};
use crate::metrics::Metrics;
use crate::queue::{EventType, FenceError, Lease};
use crate::worker::Slot;

/// How often progress reaches the database (and the event log) at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

pub struct JobCtx {
    pub job_id: Uuid,
    pub kind: &'static str,
    pub attempt: i32,
    pub dry_run: bool,
    pub pool: PgPool,
    /// The daemon's configuration (Dify's env), for jobs whose params default to it.
    pub settings: Arc<Settings>,
    /// Set for a child job (see `fanout`).
    pub parent_id: Option<Uuid>,
    /// The worker slot this job holds; a parent gives it back while its children run. The
    /// worker holds it too, until the job's end is recorded.
    slot: Option<Arc<tokio::sync::Mutex<Slot>>>,
    lease: Lease,
    checkpoint: Option<serde_json::Value>,
    /// Fired by a cancel request or a lost lease.
    cancel: CancellationToken,
    lost: Arc<AtomicBool>,
    shutdown: CancellationToken,
    progress: Progress,
    meter: RateMeter,
    last_write: Option<Instant>,
    /// The last report was held back by the once-a-second limit.
    unwritten: bool,
    metrics: Arc<Metrics>,
    failpoints: Arc<FailPoints>,
    partial: Option<serde_json::Value>,
}

pub struct CtxParts {
    pub lease: Lease,
    pub kind: &'static str,
    pub dry_run: bool,
    pub checkpoint: Option<serde_json::Value>,
    pub cancel: CancellationToken,
    pub lost: Arc<AtomicBool>,
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub failpoints: Arc<FailPoints>,
    pub settings: Arc<Settings>,
    pub parent_id: Option<Uuid>,
    pub slot: Option<Arc<tokio::sync::Mutex<Slot>>>,
}

impl JobCtx {
    pub fn new(parts: CtxParts) -> Self {
        JobCtx {
            job_id: parts.lease.job_id,
            kind: parts.kind,
            attempt: parts.lease.attempt,
            dry_run: parts.dry_run,
            pool: parts.lease.pool().clone(),
            settings: parts.settings,
            parent_id: parts.parent_id,
            slot: parts.slot,
            lease: parts.lease,
            checkpoint: parts.checkpoint,
            cancel: parts.cancel,
            lost: parts.lost,
            shutdown: parts.shutdown,
            progress: Progress::default(),
            meter: RateMeter::default(),
            last_write: None,
            unwritten: false,
            metrics: parts.metrics,
            failpoints: parts.failpoints,
            partial: None,
        }
    }

    /// What the job has done so far, in the shape of its result: kept as the job's result when
    /// it is cancelled (or fails without a result of its own) before it gets to return one.
    pub fn partial_result(&mut self, value: serde_json::Value) {
        self.partial = Some(value);
    }

    /// The last [`JobCtx::partial_result`], for the worker once the job has returned.
    pub fn take_partial_result(&mut self) -> Option<serde_json::Value> {
        self.partial.take()
    }

    /// Gives the worker slot back while the job waits for others (its children).
    pub async fn release_slot(&self) {
        if let Some(slot) = &self.slot {
            slot.lock().await.release();
        }
    }

    /// Takes a worker slot again after [`JobCtx::release_slot`].
    pub async fn reacquire_slot(&self) {
        if let Some(slot) = &self.slot {
            slot.lock().await.reacquire().await;
        }
    }

    /// The checkpoint the previous attempt committed, if any.
    pub fn checkpoint<T: DeserializeOwned>(&self) -> Result<Option<T>, JobError> {
        match &self.checkpoint {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                JobError::failed(
                    "bad_checkpoint",
                    format!("stored checkpoint unreadable: {e}"),
                )
            }),
        }
    }

    /// Commits a checkpoint through `db`: pass the transaction that holds the batch's work so
    /// both commit together. Also a batch boundary: a cancel or shutdown is reported here.
    pub async fn save_checkpoint<'e, T: Serialize>(
        &mut self,
        db: impl PgExecutor<'e>,
        checkpoint: &T,
    ) -> Result<(), JobError> {
        let value = serde_json::to_value(checkpoint)
            .map_err(|e| JobError::failed("bad_checkpoint", e.to_string()))?;
        let cancel = self.fenced(self.lease.save(db, None, Some(&value)).await)?;
        self.checkpoint = Some(value);
        if cancel {
            self.cancel.cancel();
        }
        Ok(())
    }

    /// Reports progress; written at most once a second unless `force` (phase changes, the end).
    pub async fn progress(&mut self, mut update: Progress, force: bool) -> Result<(), JobError> {
        let now = Instant::now();
        self.meter.observe(&mut update, now);
        let phase_changed = update.phase != self.progress.phase;
        self.progress = update;
        let due = self
            .last_write
            .is_none_or(|t| now.duration_since(t) >= PROGRESS_EVERY);
        if !(force || phase_changed || due) {
            self.unwritten = true;
            return Ok(());
        }
        self.last_write = Some(now);
        self.write_progress().await
    }

    /// Writes the last report if the once-a-second limit held it back: called when the job
    /// ends, so its stored progress (which a parent adds up) is its last, not a second old.
    pub async fn flush_progress(&mut self) -> Result<(), JobError> {
        if !self.unwritten {
            return Ok(());
        }
        self.write_progress().await
    }

    async fn write_progress(&mut self) -> Result<(), JobError> {
        self.unwritten = false;
        let value = serde_json::to_value(&self.progress)
            .map_err(|e| JobError::failed("internal", e.to_string()))?;
        let cancel = self.fenced(self.lease.save(&self.pool, Some(&value), None).await)?;
        self.lease
            .event(EventType::Progress, value)
            .await
            .map_err(|e| self.fence_error(e))?;
        if cancel {
            self.cancel.cancel();
        }
        Ok(())
    }

    pub fn current_progress(&self) -> &Progress {
        &self.progress
    }

    /// A batch boundary: stop here if the job was cancelled, lost, or the daemon is stopping.
    pub fn check_stop(&self) -> Result<(), JobError> {
        if self.lost.load(Ordering::SeqCst) {
            Err(JobError::LeaseLost)
        } else if self.cancel.is_cancelled() {
            Err(JobError::Cancelled)
        } else if self.shutdown.is_cancelled() {
            Err(JobError::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Resolves when the job should stop; owns its tokens, so it can sit in a `select!` beside
    /// work that borrows the context.
    pub fn stop_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (cancel, shutdown) = (self.cancel.clone(), self.shutdown.clone());
        async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// A named failure point (see `failpoint`): a no-op unless a test configured it.
    pub async fn failpoint(&self, name: &str) -> Result<(), JobError> {
        match self.failpoints.hit(name) {
            None => Ok(()),
            Some(FailAction::Panic) => panic!("failpoint {name}"),
            Some(FailAction::Abort) => std::process::abort(),
            Some(FailAction::Error) => {
                Err(JobError::failed("failpoint", format!("failpoint {name}")))
            }
            Some(FailAction::Pause) => {
                self.log(
                    format!("failpoint {name} reached"),
                    serde_json::json!({"failpoint": name}),
                )
                .await?;
                self.stop_signal().await;
                self.check_stop()
            }
        }
    }

    pub async fn log(
        &self,
        message: impl Into<String>,
        data: serde_json::Value,
    ) -> Result<(), JobError> {
        self.event(EventType::Log, message.into(), data).await
    }

    pub async fn warn(
        &self,
        message: impl Into<String>,
        data: serde_json::Value,
    ) -> Result<(), JobError> {
        self.event(EventType::Warning, message.into(), data).await
    }

    async fn event(
        &self,
        t: EventType,
        message: String,
        data: serde_json::Value,
    ) -> Result<(), JobError> {
        let mut body = serde_json::json!({"message": message});
        if !data.is_null() {
            body["data"] = data;
        }
        self.lease
            .event(t, body)
            .await
            .map_err(|e| self.fence_error(e))
    }

    /// Counts work for `/metrics` (`upkeep_processed_total{kind, unit}`).
    pub fn count(&self, unit: &str, n: u64) {
        self.metrics.add_processed(self.kind, unit, n);
    }

    fn fenced(&self, r: Result<bool, FenceError>) -> Result<bool, JobError> {
        r.map_err(|e| self.fence_error(e))
    }

    fn fence_error(&self, e: FenceError) -> JobError {
        match e {
            FenceError::Lost => {
                self.lost.store(true, Ordering::SeqCst);
                JobError::LeaseLost
            }
            FenceError::Db(e) => JobError::Db(e),
        }
    }
}
