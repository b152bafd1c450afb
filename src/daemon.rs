//! Starting and stopping a whole daemon: HTTP server, LISTEN connection and worker pool, all
//! under one shutdown token. `upkeep serve` and the tests use the same entry point.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::Settings;
use crate::db::{self, DbError};
use crate::failpoint::FailPoints;
use crate::metrics::Metrics;
use crate::queue::listener::{self, Signals};
use crate::schedules;
use crate::worker::{WorkerConfig, Workers};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot listen on {addr} (UPKEEP_LISTEN): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("UPKEEP_FAILPOINTS: {0}")]
    FailPoints(String),
}

pub struct Daemon {
    pub addr: SocketAddr,
    pub pool: sqlx::PgPool,
    pub shutdown: CancellationToken,
    http: JoinHandle<()>,
    workers: JoinHandle<()>,
    listener: JoinHandle<()>,
    schedules: JoinHandle<()>,
}

impl Daemon {
    /// Connects, migrates, binds and starts everything. Returns once the port is open.
    pub async fn start(settings: Settings, failpoints: FailPoints) -> Result<Daemon, DaemonError> {
        let max = (settings.workers as u32) * 2 + 6;
        let pool = db::connect(&settings.database_url, settings.database_source, max).await?;
        db::migrate(&pool).await?;
        Self::start_with_pool(settings, failpoints, pool).await
    }

    pub async fn start_with_pool(
        settings: Settings,
        failpoints: FailPoints,
        pool: sqlx::PgPool,
    ) -> Result<Daemon, DaemonError> {
        let tcp = TcpListener::bind(settings.listen)
            .await
            .map_err(|source| DaemonError::Bind {
                addr: settings.listen,
                source,
            })?;
        Self::start_on(settings, failpoints, pool, tcp).await
    }

    /// Starts on a socket the caller bound, so it can check the address before anything
    /// else (as the demo does).
    pub async fn start_on(
        settings: Settings,
        failpoints: FailPoints,
        pool: sqlx::PgPool,
        tcp: TcpListener,
    ) -> Result<Daemon, DaemonError> {
        let settings = Arc::new(settings);
        let addr = tcp.local_addr().map_err(|source| DaemonError::Bind {
            addr: settings.listen,
            source,
        })?;
        let shutdown = CancellationToken::new();
        let signals = Signals::default();
        let metrics = Arc::new(Metrics::default());
        let listener = tokio::spawn(listener::run(
            pool.clone(),
            signals.clone(),
            shutdown.clone(),
        ));
        let workers = Workers {
            pool: pool.clone(),
            config: WorkerConfig {
                name: settings.worker_name.clone(),
                workers: settings.workers,
                lease: settings.lease,
                poll_interval: settings.poll_interval,
                job_ttl_days: settings.job_ttl_days,
                failpoints: Arc::new(failpoints),
                settings: settings.clone(),
            },
            signals: signals.clone(),
            metrics: metrics.clone(),
        };
        let workers = tokio::spawn(workers.run(shutdown.clone()));
        // Every daemon, API-only ones included: the rows decide who fires what.
        let schedules = tokio::spawn(schedules::run_ticker(
            pool.clone(),
            settings.clone(),
            settings.schedule_tick,
            shutdown.clone(),
        ));
        let state = AppState {
            pool: pool.clone(),
            settings,
            signals,
            metrics,
            shutdown: shutdown.clone(),
        };
        let app = api::router(state);
        let http_shutdown = shutdown.clone();
        let http = tokio::spawn(async move {
            let served = axum::serve(tcp, app)
                .with_graceful_shutdown(http_shutdown.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });
        tracing::info!(%addr, "upkeep listening");
        Ok(Daemon {
            addr,
            pool,
            shutdown,
            http,
            workers,
            listener,
            schedules,
        })
    }

    /// Stops accepting work, lets running jobs reach a batch boundary and requeue, and waits
    /// at most `grace` for that. Past it, leases expire and another daemon resumes the jobs.
    pub async fn stop(self, grace: std::time::Duration) -> bool {
        self.shutdown.cancel();
        let all = async {
            let _ = self.workers.await;
            let _ = self.http.await;
            let _ = self.listener.await;
            let _ = self.schedules.await;
        };
        let clean = tokio::time::timeout(grace, all).await.is_ok();
        if !clean {
            tracing::warn!(
                grace_s = grace.as_secs(),
                "shutdown deadline passed; jobs still running will be resumed elsewhere when their lease expires"
            );
        }
        clean
    }

    /// Runs until SIGTERM or Ctrl-C, then stops within `grace`.
    pub async fn run_until_signal(self, grace: std::time::Duration) -> bool {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing the current batch of running jobs");
        self.stop(grace).await
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
