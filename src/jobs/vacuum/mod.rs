//! `vacuum`: replaces the `VACUUM FULL;` operators run by hand after purging logs. Per table,
//! with a lock timeout (a busy table is reported, not waited on forever), sizes before and
//! after, and live progress from `pg_stat_progress_*`.

mod stats;
mod table;

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{JobCtx, JobError, JobKind, Progress, SpecError};
use crate::config::Settings;
use crate::jobs::contract::vacuum::{VacuumPlan, VacuumResult, VacuumTableNow};
use stats::{peak_space, table_names, table_stats};
use table::vacuum_table;

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

pub struct Vacuum;

impl JobKind for Vacuum {
    const KIND: &'static str = "vacuum";
    type Params = VacuumParams;
    type Plan = crate::jobs::contract::vacuum::VacuumPlan;
    type Outcome = crate::jobs::contract::vacuum::VacuumResult;
    type Detail = crate::jobs::contract::vacuum::VacuumDetail;
    const PHASES: &'static [crate::jobs::contract::Phase] = crate::jobs::contract::vacuum::PHASES;

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
        let tables = stats
            .iter()
            .map(|t| {
                let rows = (t.live_tuples + t.dead_tuples).max(1) as f64;
                VacuumTableNow {
                    table: t.table.clone(),
                    total_bytes: t.total_bytes,
                    table_bytes: t.table_bytes,
                    index_bytes: t.index_bytes,
                    live_tuples: t.live_tuples,
                    dead_tuples: t.dead_tuples,
                    dead_ratio: ((t.dead_tuples as f64 / rows) * 1000.0).round() / 1000.0,
                    last_vacuum: t.last_vacuum,
                    last_autovacuum: t.last_autovacuum,
                }
            })
            .collect();
        Ok(value(VacuumPlan {
            mode: params.mode,
            tables,
            total_bytes: stats.iter().map(|t| t.total_bytes).sum(),
            dead_tuples: stats.iter().map(|t| t.dead_tuples).sum(),
            sizes: if exact { "exact" } else { "estimated" }.into(),
            full_peak_free_space_bytes: (params.mode == VacuumMode::Full)
                .then(|| peak_space(&stats)),
        }))
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
    let not_reached: Vec<String> = cp
        .tables
        .iter()
        .filter(|t| !outcomes.iter().any(|o| &o.table == *t))
        .cloned()
        .collect();
    let result = VacuumResult {
        mode: params.mode,
        vacuumed: cp.outcomes.len() as u64,
        failed: failures.len() as u64,
        not_reached,
        size_before_bytes: before,
        size_after_bytes: after,
        reclaimed_bytes: before - after,
        tables: outcomes,
    };
    value(result)
}

/// A contract struct as JSON: plain numbers, strings and times always serialise.
fn value(v: impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
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
