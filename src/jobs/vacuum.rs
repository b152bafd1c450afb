//! `vacuum`: replaces the `VACUUM FULL;` operators run by hand after purging logs. Per table,
//! with a lock timeout (a busy table is reported, not waited on forever), sizes before and
//! after, and live progress from `pg_stat_progress_*`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{Connection, PgPool};

use super::{JobCtx, JobError, JobKind, Progress, SpecError};
use crate::config::Settings;
use crate::db::{qualified, sqlstate};

const SCHEMA: &str = "public";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VacuumMode {
    /// `VACUUM`: marks dead rows reusable; no exclusive lock.
    Plain,
    /// `VACUUM (ANALYZE)`: the same, and refreshes planner statistics.
    #[default]
    Analyze,
    /// `VACUUM (FULL, ANALYZE)`: rewrites the table to give space back to the OS. Holds an
    /// ACCESS EXCLUSIVE lock on each table while it runs and needs its size again in free disk.
    Full,
}

impl VacuumMode {
    fn statement(self) -> &'static str {
        match self {
            VacuumMode::Plain => "VACUUM",
            VacuumMode::Analyze => "VACUUM (ANALYZE)",
            VacuumMode::Full => "VACUUM (FULL, ANALYZE)",
        }
    }
}

/// Params of `vacuum`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VacuumParams {
    /// Tables of Dify's `public` schema; every table there when absent.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    #[serde(default)]
    pub mode: VacuumMode,
    /// How long to wait for each table's lock before reporting it busy (1..=3600000).
    #[serde(default = "default_lock_timeout_ms")]
    #[schema(default = 5000, minimum = 1, maximum = 3600000)]
    pub lock_timeout_ms: u32,
}

fn default_lock_timeout_ms() -> u32 {
    5000
}

/// One table's outcome in the result.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TableOutcome {
    pub table: String,
    /// `done`, `lock_timeout`, `missing` (dropped since the job started) or `error`.
    pub status: String,
    pub size_before_bytes: i64,
    pub size_after_bytes: Option<i64>,
    pub dead_tuples_before: i64,
    pub dead_tuples_after: Option<i64>,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The attempt that vacuumed it (a resumed job keeps earlier attempts' tables).
    pub attempt: i32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    tables: Vec<String>,
    outcomes: Vec<TableOutcome>,
}

#[derive(Debug, sqlx::FromRow)]
struct TableStats {
    table: String,
    total_bytes: i64,
    table_bytes: i64,
    index_bytes: i64,
    live_tuples: i64,
    dead_tuples: i64,
    last_vacuum: Option<DateTime<Utc>>,
    last_autovacuum: Option<DateTime<Utc>>,
}

pub struct Vacuum;

impl JobKind for Vacuum {
    const KIND: &'static str = "vacuum";
    type Params = VacuumParams;

    fn resource_key(_: &VacuumParams) -> Option<String> {
        // Two vacuums on one database compete for the same I/O and locks: one at a time.
        Some("postgres:vacuum".into())
    }

    async fn validate(
        params: &VacuumParams,
        pool: &PgPool,
        _settings: &Settings,
    ) -> Result<(), SpecError> {
        if !(1..=3_600_000).contains(&params.lock_timeout_ms) {
            return Err(SpecError::invalid(
                "params.lock_timeout_ms",
                "must be between 1 and 3600000 milliseconds",
            ));
        }
        let Some(tables) = &params.tables else {
            return Ok(());
        };
        if tables.is_empty() {
            return Err(SpecError::invalid(
                "params.tables",
                "must name at least one table (leave it out to vacuum every table)",
            ));
        }
        let existing: HashSet<String> =
            table_names(pool, Some(tables)).await?.into_iter().collect();
        let mut seen = HashSet::new();
        for (i, name) in tables.iter().enumerate() {
            if !seen.insert(name) {
                return Err(SpecError::invalid(
                    format!("params.tables[{i}]"),
                    format!("table {name:?} is listed twice"),
                ));
            }
            if !existing.contains(name) {
                return Err(SpecError::invalid(
                    format!("params.tables[{i}]"),
                    format!("no table {name:?} in schema {SCHEMA}"),
                ));
            }
        }
        Ok(())
    }

    async fn plan(params: VacuumParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let (stats, exact) = table_stats(&ctx.pool, params.tables.as_ref()).await?;
        let tables: Vec<Value> = stats
            .iter()
            .map(|t| {
                let rows = (t.live_tuples + t.dead_tuples).max(1) as f64;
                json!({
                    "table": t.table,
                    "total_bytes": t.total_bytes,
                    "table_bytes": t.table_bytes,
                    "index_bytes": t.index_bytes,
                    "live_tuples": t.live_tuples,
                    "dead_tuples": t.dead_tuples,
                    "dead_ratio": ((t.dead_tuples as f64 / rows) * 1000.0).round() / 1000.0,
                    "last_vacuum": t.last_vacuum,
                    "last_autovacuum": t.last_autovacuum,
                })
            })
            .collect();
        let mut result = json!({
            "mode": params.mode,
            "tables": tables,
            "total_bytes": stats.iter().map(|t| t.total_bytes).sum::<i64>(),
            "dead_tuples": stats.iter().map(|t| t.dead_tuples).sum::<i64>(),
            // Estimated (from the catalogue) when a table was locked and could not be measured.
            "sizes": if exact { "exact" } else { "estimated" },
        });
        if params.mode == VacuumMode::Full {
            result["full_peak_free_space_bytes"] = json!(peak_space(&stats));
        }
        Ok(result)
    }

    async fn run(params: VacuumParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let mut cp: Checkpoint = match ctx.checkpoint()? {
            Some(cp) => cp,
            None => {
                let tables = table_names(&ctx.pool, params.tables.as_ref()).await?;
                Checkpoint {
                    tables,
                    outcomes: vec![],
                }
            }
        };
        // Tables that failed in an earlier attempt (a busy lock) are tried again.
        cp.outcomes.retain(|o| o.status == "done");
        if params.mode == VacuumMode::Full {
            warn_full_space(ctx, &cp).await?;
        }
        let total = cp.tables.len() as u64;
        let todo: Vec<String> = cp
            .tables
            .iter()
            .filter(|t| !cp.outcomes.iter().any(|o| &o.table == *t))
            .cloned()
            .collect();
        let mut failures: Vec<TableOutcome> = vec![];
        for table in todo {
            ctx.check_stop()?;
            ctx.failpoint("vacuum.before_table").await?;
            let done = cp.outcomes.len() as u64 + failures.len() as u64;
            let outcome = vacuum_table(ctx, &params, &table, done, total).await?;
            ctx.failpoint("vacuum.after_table").await?;
            ctx.count("tables", 1);
            if outcome.status == "done" {
                cp.outcomes.push(outcome);
                ctx.partial_result(summary(&params, &cp, &failures));
                let pool = ctx.pool.clone();
                ctx.save_checkpoint(&pool, &cp).await?;
            } else {
                ctx.warn(
                    format!(
                        "{table}: {}",
                        outcome.message.as_deref().unwrap_or(&outcome.status)
                    ),
                    json!({"table": table, "status": outcome.status}),
                )
                .await?;
                failures.push(outcome);
                ctx.partial_result(summary(&params, &cp, &failures));
            }
        }
        let done = cp.outcomes.len() as u64;
        ctx.progress(
            Progress {
                phase: "finished".into(),
                done: done + failures.len() as u64,
                total: Some(total),
                unit: "tables".into(),
                ..Default::default()
            },
            true,
        )
        .await?;
        let result = summary(&params, &cp, &failures);
        if failures.is_empty() {
            return Ok(result);
        }
        let list: Vec<String> = failures
            .iter()
            .map(|f| format!("{} ({})", f.table, f.status))
            .collect();
        Err(JobError::Failed {
            code: "tables_failed",
            message: format!(
                "{} of {total} tables were not vacuumed: {}; retry the job to try them again",
                failures.len(),
                list.join(", ")
            ),
            result: Some(result),
        })
    }
}

/// The result: every table tried so far, and the ones not reached yet (`not_reached`, empty
/// once the job has gone through them all; a cancelled job's result names them).
fn summary(params: &VacuumParams, cp: &Checkpoint, failures: &[TableOutcome]) -> Value {
    let mut outcomes = cp.outcomes.clone();
    outcomes.extend(failures.iter().cloned());
    outcomes.sort_by(|a, b| a.table.cmp(&b.table));
    let before: i64 = outcomes.iter().map(|o| o.size_before_bytes).sum();
    let after: i64 = outcomes
        .iter()
        .map(|o| o.size_after_bytes.unwrap_or(o.size_before_bytes))
        .sum();
    let not_reached: Vec<&String> = cp
        .tables
        .iter()
        .filter(|t| !outcomes.iter().any(|o| &o.table == *t))
        .collect();
    json!({
        "mode": params.mode,
        "tables": outcomes,
        "vacuumed": cp.outcomes.len(),
        "failed": failures.len(),
        "not_reached": not_reached,
        "size_before_bytes": before,
        "size_after_bytes": after,
        "reclaimed_bytes": before - after,
    })
}

/// Names of Dify's tables (all, or those of `only` that exist), from the catalogue alone: no
/// lock is taken, so a busy table never blocks a request.
async fn table_names(
    pool: &PgPool,
    only: Option<&Vec<String>>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'm') \
           AND ($2::text[] IS NULL OR c.relname = ANY($2)) ORDER BY c.relname",
    )
    .bind(SCHEMA)
    .bind(only)
    .fetch_all(pool)
    .await
}

/// How long measuring sizes may wait for a table's lock before falling back to estimates.
const MEASURE_LOCK_TIMEOUT: &str = "1s";

/// Sizes and tuple counts. Exact sizes open each table (a lock a busy table may not grant);
/// when that would wait, the sizes come from the catalogue instead (`false` in the answer).
async fn table_stats(
    pool: &PgPool,
    only: Option<&Vec<String>>,
) -> Result<(Vec<TableStats>, bool), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(MEASURE_LOCK_TIMEOUT)
        .execute(&mut *tx)
        .await?;
    match stats_query(&mut *tx, only, true).await {
        Ok(stats) => {
            tx.commit().await?;
            Ok((stats, true))
        }
        Err(e) if sqlstate(&e).as_deref() == Some("55P03") => {
            drop(tx);
            Ok((stats_query(pool, only, false).await?, false))
        }
        Err(e) => Err(e),
    }
}

/// One query for both ways of measuring: `exact` calls the size functions (which lock each
/// table), otherwise sizes are pages from the catalogue (no lock). CASE evaluates only the
/// branch it takes.
async fn stats_query<'e>(
    db: impl sqlx::PgExecutor<'e>,
    only: Option<&Vec<String>>,
    exact: bool,
) -> Result<Vec<TableStats>, sqlx::Error> {
    sqlx::query_as::<_, TableStats>(
        "SELECT c.relname::text AS table, \
            CASE WHEN $3 THEN pg_total_relation_size(c.oid) \
                 ELSE (c.relpages + coalesce(t.relpages, 0) + coalesce(ix.pages, 0)) * bs.v END AS total_bytes, \
            CASE WHEN $3 THEN pg_relation_size(c.oid) ELSE c.relpages * bs.v END AS table_bytes, \
            CASE WHEN $3 THEN pg_indexes_size(c.oid) ELSE coalesce(ix.pages, 0) * bs.v END AS index_bytes, \
            coalesce(s.n_live_tup, 0) AS live_tuples, coalesce(s.n_dead_tup, 0) AS dead_tuples, \
            s.last_vacuum, s.last_autovacuum \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         CROSS JOIN (SELECT current_setting('block_size')::bigint AS v) bs \
         LEFT JOIN pg_class t ON t.oid = c.reltoastrelid \
         LEFT JOIN LATERAL (SELECT sum(i.relpages)::bigint AS pages FROM pg_index x \
            JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid) ix ON true \
         LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'm') \
           AND ($2::text[] IS NULL OR c.relname = ANY($2)) \
         ORDER BY c.relname",
    )
    .bind(SCHEMA)
    .bind(only)
    .bind(exact)
    .fetch_all(db)
    .await
}

/// VACUUM FULL rewrites one table at a time; at its peak it needs the largest table with its
/// indexes again in free space.
fn peak_space(stats: &[TableStats]) -> i64 {
    stats.iter().map(|t| t.total_bytes).max().unwrap_or(0)
}

async fn warn_full_space(ctx: &JobCtx, cp: &Checkpoint) -> Result<(), JobError> {
    let (stats, _) = table_stats(&ctx.pool, Some(&cp.tables)).await?;
    let largest = stats.iter().max_by_key(|t| t.total_bytes);
    if let Some(t) = largest {
        ctx.warn(
            format!(
                "VACUUM FULL needs up to {} bytes of free disk in the tablespace while it \
                 rewrites {} (the table and its indexes again); Upkeep cannot see the database \
                 server's free space, so it is not known to be free",
                t.total_bytes, t.table
            ),
            json!({"peak_free_space_bytes": t.total_bytes, "largest_table": t.table}),
        )
        .await?;
    }
    Ok(())
}

async fn vacuum_table(
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
