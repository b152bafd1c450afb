//! One LISTEN connection per daemon: wakes idle workers when a job is queued, tells a running
//! job it was cancelled, and feeds live event streams. Every consumer also polls, so a missed
//! notification (reconnects drop them) only costs latency.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Cancel tokens of the jobs this daemon is running.
#[derive(Default)]
pub struct RunningJobs(Mutex<HashMap<Uuid, CancellationToken>>);

impl RunningJobs {
    pub fn insert(&self, id: Uuid, token: CancellationToken) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(id, token);
        }
    }

    pub fn remove(&self, id: Uuid) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(&id);
        }
    }

    pub fn cancel(&self, id: Uuid) {
        if let Ok(m) = self.0.lock()
            && let Some(t) = m.get(&id)
        {
            t.cancel();
        }
    }
}

#[derive(Clone)]
pub struct Signals {
    /// Notified when a job is queued anywhere.
    pub job_queued: Arc<Notify>,
    /// Carries the id of a job that got a new event.
    pub job_events: broadcast::Sender<Uuid>,
    pub running: Arc<RunningJobs>,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            job_queued: Arc::new(Notify::new()),
            job_events: broadcast::channel(1024).0,
            running: Arc::new(RunningJobs::default()),
        }
    }
}

pub async fn run(pool: sqlx::PgPool, signals: Signals, shutdown: CancellationToken) {
    loop {
        let listener = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen_all(["upkeep_jobs", "upkeep_events", "upkeep_cancel"])
                .await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            l = listener => match l {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; retrying in 2 s");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    }
                }
            },
        };
        // Anything queued while we were not listening.
        signals.job_queued.notify_waiters();
        loop {
            let n = tokio::select! {
                _ = shutdown.cancelled() => return,
                n = listener.recv() => n,
            };
            match n {
                Ok(n) => match n.channel() {
                    "upkeep_jobs" => signals.job_queued.notify_waiters(),
                    "upkeep_events" => {
                        if let Ok(id) = n.payload().parse() {
                            let _ = signals.job_events.send(id);
                        }
                    }
                    "upkeep_cancel" => {
                        if let Ok(id) = n.payload().parse() {
                            signals.running.cancel(id);
                        }
                    }
                    _ => {}
                },
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}
