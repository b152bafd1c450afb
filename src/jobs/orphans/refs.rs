//! The file ids Dify's tables reference, gathered for one `orphan_records` run into a
//! temporary table on a connection of the run's own: one statement reads every source
//! (`file_refs::gather`), an index follows, and the run's anti-joins read it there. Nothing is
//! written to Dify's tables or to Upkeep's, and no id passes through the daemon.
//!
//! Each statement is a read-only autocommit statement: Dify's tables see only the
//! `ACCESS SHARE` locks of a plain `SELECT`, and the longest snapshot held is that of the
//! gather (every source read in one snapshot, so a reference moving from one table to another
//! meanwhile cannot fall between two reads). A stop request cancels the statement in flight.
//! The session is closed at the end, or dropped with the run: its temporary table goes with it,
//! and no pooled connection keeps it.

use std::collections::HashSet;
use std::future::Future;

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::dify::file_refs;
use crate::jobs::{JobCtx, JobError};

/// Where the gathered ids are, in this session.
pub const TABLE: &str = "pg_temp.orphan_refs";

/// A connection of the run's own, out of the pool for good (its temporary tables and settings
/// must not outlive the run), whose statement in flight a stop request cancels.
pub struct Session {
    conn: PgConnection,
    pid: i32,
}

impl Session {
    pub async fn open(ctx: &JobCtx) -> Result<Session, JobError> {
        let mut conn = ctx.pool.acquire().await?.detach();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await?;
        Ok(Session { conn, pid })
    }

    /// Runs one statement of our own making (no bound values).
    async fn statement(&mut self, ctx: &JobCtx, sql: String) -> Result<(), JobError> {
        let pid = self.pid;
        let run = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut self.conn);
        cancellable(ctx, pid, run).await?;
        Ok(())
    }

    /// The connection, and a wrapper that cancels what runs on it when the job is asked to
    /// stop: `session.run(ctx, |conn| query.fetch_one(conn))`.
    pub async fn run<'c, T, F, Fut>(&'c mut self, ctx: &JobCtx, work: F) -> Result<T, JobError>
    where
        F: FnOnce(&'c mut PgConnection) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let pid = self.pid;
        cancellable(ctx, pid, work(&mut self.conn)).await
    }

    /// Ends the session (and with it its temporary tables).
    pub async fn close(self) {
        // Nothing to keep: a close that fails has dropped the session all the same.
        let _ = self.conn.close().await;
    }
}

pub struct Refs {
    /// The session that holds [`TABLE`]: whatever reads it runs here.
    pub session: Session,
    /// The sources read, and those absent in this Dify (see `file_refs::Gather`).
    pub read: Vec<String>,
    pub skipped: Vec<String>,
}

impl Refs {
    /// Opens the run's session and gathers every reference source present into [`TABLE`].
    pub async fn gather(ctx: &JobCtx) -> Result<Refs, JobError> {
        let gather = file_refs::gather(&ctx.pool).await?;
        let mut session = Session::open(ctx).await?;
        // CREATE TABLE AS (unlike INSERT ... SELECT) may read the sources with parallel workers.
        let create = format!("CREATE TEMP TABLE orphan_refs AS {}", gather.select);
        session.statement(ctx, create).await?;
        session
            .statement(ctx, format!("CREATE INDEX ON {TABLE} (id)"))
            .await?;
        // Autovacuum never analyzes a temporary table: without this the planner guesses its size.
        session.statement(ctx, format!("ANALYZE {TABLE}")).await?;
        Ok(Refs {
            session,
            read: gather.read,
            skipped: gather.skipped,
        })
    }

    /// Which of `ids` were gathered.
    pub async fn gathered(&mut self, ids: &[Uuid]) -> Result<HashSet<Uuid>, sqlx::Error> {
        let sql = format!("SELECT DISTINCT id FROM {TABLE} WHERE id = ANY($1)");
        let found: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(ids)
            .fetch_all(&mut self.session.conn)
            .await?;
        Ok(found.into_iter().collect())
    }

    /// Ends the session (and with it the temporary table).
    pub async fn close(self) {
        self.session.close().await;
    }
}

/// Awaits `work` (a statement on the session whose backend is `pid`); if the job is asked to
/// stop meanwhile, cancels the statement and reports the stop rather than the cancel's error.
async fn cancellable<T>(
    ctx: &JobCtx,
    pid: i32,
    work: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, JobError> {
    let stop = ctx.stop_signal();
    tokio::pin!(stop, work);
    let mut cancel_sent = false;
    loop {
        tokio::select! {
            r = &mut work => {
                return match r {
                    Ok(v) => Ok(v),
                    Err(e) => {
                        if cancel_sent {
                            ctx.check_stop()?;
                        }
                        Err(e.into())
                    }
                };
            }
            _ = &mut stop, if !cancel_sent => {
                cancel_sent = true;
                sqlx::query("SELECT pg_cancel_backend($1)")
                    .bind(pid)
                    .execute(&ctx.pool)
                    .await?;
            }
        }
    }
}
