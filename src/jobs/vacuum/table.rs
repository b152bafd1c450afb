//! One table's VACUUM: on a pooled connection of its own, under the job's lock timeout, with
//! Postgres' own progress sampled while it runs.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::{Connection, PgPool};

use super::stats::table_stats;
use super::{SCHEMA, TableOutcome, VacuumParams};
use crate::db::{qualified, sqlstate};
use crate::jobs::{JobCtx, JobError, Progress};

pub(super) async fn vacuum_table(
    ctx: &mut JobCtx,
    params: &VacuumParams,
    table: &str,
    done: u64,
    total: u64,
) -> Result<TableOutcome, JobError> {
    let started = Instant::now();
    let before = table_stats(&ctx.pool, Some(&vec![table.to_string()]))
        .await?
        .0
        .into_iter()
        .next();
    let mut outcome = TableOutcome {
        table: table.to_string(),
        status: "missing".into(),
        size_before_bytes: before.as_ref().map_or(0, |b| b.total_bytes),
        size_after_bytes: None,
        dead_tuples_before: before.as_ref().map_or(0, |b| b.dead_tuples),
        dead_tuples_after: None,
        duration_ms: 0,
        message: None,
        attempt: ctx.attempt,
    };
    if before.is_none() {
        outcome.message = Some("table no longer exists".into());
        return Ok(outcome);
    }
    let phase = format!("vacuum {SCHEMA}.{table}");
    let base = Progress {
        phase: phase.clone(),
        done,
        total: Some(total),
        unit: "tables".into(),
        ..Default::default()
    };
    ctx.progress(base.clone(), true).await?;

    // A pooled connection outside any transaction (VACUUM refuses to run in one). Its session
    // setting is reset below, and a connection that cannot be reset is closed, not pooled.
    let mut conn = ctx.pool.acquire().await?;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query("SELECT set_config('lock_timeout', $1, false)")
        .bind(format!("{}ms", params.lock_timeout_ms))
        .execute(&mut *conn)
        .await?;
    // Safe: the mode is one of three literals and the table name is quoted.
    let statement = format!("{} {}", params.mode.statement(), qualified(SCHEMA, table));
    let pool = ctx.pool.clone();
    let stop = ctx.stop_signal();
    tokio::pin!(stop);
    let mut cancel_sent = false;
    let outcome_sql = {
        let exec = sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut *conn);
        tokio::pin!(exec);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                r = &mut exec => break r,
                _ = tick.tick() => {
                    let detail = sample_progress(&pool, pid).await;
                    ctx.progress(Progress { detail, ..base.clone() }, false).await?;
                }
                _ = &mut stop, if !cancel_sent => {
                    // Stop promptly: cancel the statement; the table counts as not done.
                    cancel_sent = true;
                    sqlx::query("SELECT pg_cancel_backend($1)").bind(pid).execute(&pool).await?;
                }
            }
        }
    };
    if sqlx::raw_sql("RESET lock_timeout")
        .execute(&mut *conn)
        .await
        .is_err()
    {
        let _ = conn.detach().close().await;
    }
    outcome.duration_ms = started.elapsed().as_millis() as u64;
    match outcome_sql {
        Ok(_) => {
            let after = table_stats(&ctx.pool, Some(&vec![table.to_string()]))
                .await?
                .0
                .into_iter()
                .next();
            outcome.status = "done".into();
            outcome.size_after_bytes = after.as_ref().map(|a| a.total_bytes);
            outcome.dead_tuples_after = after.as_ref().map(|a| a.dead_tuples);
        }
        Err(e) => {
            if cancel_sent {
                ctx.check_stop()?;
            }
            match sqlstate(&e).as_deref() {
                Some("55P03") => {
                    outcome.status = "lock_timeout".into();
                    outcome.message = Some(format!(
                        "lock not available within {} ms (another session holds it)",
                        params.lock_timeout_ms
                    ));
                }
                Some("42P01") => {
                    outcome.status = "missing".into();
                    outcome.message = Some("table no longer exists".into());
                }
                _ => {
                    outcome.status = "error".into();
                    outcome.message = Some(e.to_string());
                }
            }
        }
    }
    Ok(outcome)
}

/// What Postgres says about the running VACUUM (or, for FULL, the rewrite), if anything.
async fn sample_progress(pool: &PgPool, pid: i32) -> Option<Value> {
    let row: Option<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT 'vacuum', phase, heap_blks_total, heap_blks_scanned \
            FROM pg_stat_progress_vacuum WHERE pid = $1 \
         UNION ALL SELECT 'cluster', phase, heap_blks_total, heap_blks_scanned \
            FROM pg_stat_progress_cluster WHERE pid = $1 \
         UNION ALL SELECT 'analyze', phase, sample_blks_total, sample_blks_scanned \
            FROM pg_stat_progress_analyze WHERE pid = $1 LIMIT 1",
    )
    .bind(pid)
    .fetch_optional(pool)
    .await
    .ok()
    .flatten();
    row.map(|(view, phase, total, scanned)| {
        json!({"view": view, "phase": phase, "blocks_total": total, "blocks_scanned": scanned})
    })
}
