//! `purge_logs`: Dify's `flask clear-free-plan-tenant-expired-logs --days --batch --tenant_ids`,
//! plus the workflow tables of Dify's newer retention commands, done safely. Per batch: the
//! rows and everything that depends on them are read, exported to storage in Dify's layout
//! and read back, and only then deleted, dependents first, in one short transaction that
//! also commits the checkpoint. Batches overlap (`pipeline`): one is deleted while the next is
//! exported and the one after is read. A batch killed after its export is redone under the
//! same file names, so no batch is ever exported twice under two names.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use chrono::{NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::Settings;
use crate::dify::access_paths::{self, Choice, Path};
use crate::dify::log_tables::{self, Dependent, Fate, Keyset, UNITS, Unit};
use crate::dify::shape::{self, Fit, Shape};
use crate::jobs::purge::log_export::{self, Files};
use crate::jobs::{JobCtx, JobError, JobKind, JobSpec, Progress, SpecError, storage_param};
use crate::queue::{self, NewJob};

mod batch;
mod paths;
mod pipeline;
mod statements;

use batch::*;
use paths::*;
use pipeline::*;
use statements::*;

/// A batch whose rows changed between export and delete is redone this many times.
const CHANGED_RETRIES: u32 = 3;
/// A batch that hit `lock_timeout` is retried this many times, waiting longer each time.
const LOCK_RETRIES: u32 = 5;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeLogsParams {
    /// Rows older than this many days go (1..=36500).
    #[serde(default = "default_days")]
    #[schema(default = 30, minimum = 1, maximum = 36500)]
    pub days: u32,
    /// Parent rows per batch (messages, conversations, runs), 1..=10000; each batch is one
    /// export and one transaction.
    #[serde(default = "default_batch")]
    #[schema(default = 100, minimum = 1, maximum = 10000)]
    pub batch: u32,
    /// Workspaces to purge; every workspace when absent.
    #[serde(default)]
    pub tenant_ids: Option<Vec<Uuid>>,
    /// Export each batch before deleting it (Dify's layout under
    /// `free_plan_tenant_expired_logs/`); false deletes without a copy.
    #[serde(default = "yes")]
    pub export: bool,
    /// Where exports go. Default: the storage `STORAGE_TYPE` names, as Dify's command does.
    #[serde(default)]
    #[schema(value_type = Option<crate::storage::StorageConfig>)]
    pub storage: Option<Value>,
    /// Keep annotation replies made from purged messages (unlinked from them). false deletes
    /// them with their message, as Dify's command does.
    #[serde(default = "yes")]
    pub keep_annotations: bool,
    /// Queue a `vacuum` of the tables the purge shrank once it is done.
    #[serde(default)]
    pub vacuum_after: bool,
    /// How long a batch waits for a row lock Dify holds before backing off (1..=60000).
    #[serde(default = "default_lock_timeout_ms")]
    #[schema(default = 2000, minimum = 1, maximum = 60000)]
    pub lock_timeout_ms: u32,
    /// Where this Dify release lacks an index that keeps each batch cheap (e.g. 1.7.2 and
    /// older: none on `workflow_app_logs (workflow_run_id)`), build it with
    /// `CREATE INDEX CONCURRENTLY` before the purge and drop it after. The dry run says which
    /// tables would need one.
    #[serde(default)]
    pub temporary_indexes: bool,
}

fn default_days() -> u32 {
    30
}
fn default_batch() -> u32 {
    100
}
fn yes() -> bool {
    true
}
fn default_lock_timeout_ms() -> u32 {
    2000
}

pub struct PurgeLogs;

/// Where a unit's walk stands: after this row (keyset order).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Cursor {
    time: NaiveDateTime,
    id: Uuid,
}

impl Cursor {
    fn start() -> Self {
        let time = NaiveDate::from_ymd_opt(1900, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap_or_default();
        Cursor {
            time,
            id: Uuid::nil(),
        }
    }
}

/// The names of a batch exported but not yet deleted: a rerun writes the same ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    stamp_us: i64,
    keys: Vec<String>,
}

/// Older checkpoints held at most one pending batch (`null` or an object); newer ones a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Pending>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(Pending),
        Many(Vec<Pending>),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        None => Vec::new(),
        Some(Either::One(p)) => vec![p],
        Some(Either::Many(v)) => v,
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Tally {
    deleted: u64,
    detached: u64,
    exported: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    cutoff: NaiveDateTime,
    unit: usize,
    cursor: Cursor,
    protected_runs: Option<Vec<Uuid>>,
    /// Batches whose files may be written but whose rows are not deleted yet, in walk order:
    /// the first is the batch right after `cursor`. A rerun gives each the same names.
    #[serde(default, deserialize_with = "one_or_many")]
    pending: Vec<Pending>,
    last_stamp_us: i64,
    /// Rows per table the purge expected to remove when it started.
    totals: BTreeMap<String, u64>,
    tables: BTreeMap<String, Tally>,
    batches: u64,
    files: u64,
    bytes: u64,
    /// Batches redone because rows changed under them, or a lock was busy.
    retried_batches: u64,
    /// The longest delete transaction so far: what Dify's writers could have waited for.
    #[serde(default)]
    longest_tx_ms: u64,
    /// Whether `cursor` is an id-order cursor: a resume that walks the other way (an index
    /// appeared or went) starts the unit over rather than skip rows.
    #[serde(default)]
    cursor_by_id: Option<bool>,
}

/// A batch read: its parents' ids, where the walk stands after it, and with an export its
/// files and the dependents they hold.
struct Batch {
    ids: Vec<Uuid>,
    last: Cursor,
    export: Option<Exported>,
}

struct Exported {
    files: Files,
    /// Per dependent of the unit, in its order, the ids of the rows in the files.
    copied: Vec<HashSet<Uuid>>,
}

/// Statements built once per job from the live catalog (the export has every column).
struct Sql {
    /// Per unit, how its parents are walked here.
    keysets: Vec<Keyset>,
    select_parents: Vec<String>,
    /// Per unit, the dependents this release has, in delete order.
    dependents: Vec<Vec<Dependent>>,
    select_dependents: Vec<Vec<String>>,
}

impl JobKind for PurgeLogs {
    const KIND: &'static str = "purge_logs";
    type Params = PurgeLogsParams;
    type Plan = crate::jobs::contract::purge_logs::PurgeLogsPlan;
    type Outcome = crate::jobs::contract::purge_logs::PurgeLogsResult;
    type Detail = crate::jobs::contract::purge_logs::PurgeLogsDetail;
    const PHASES: &'static [crate::jobs::contract::Phase] =
        crate::jobs::contract::purge_logs::PHASES;

    fn resource_key(params: &PurgeLogsParams) -> Option<String> {
        // Exports must not race a storage migration or `purge_exports`.
        Some(
            if params.export {
                "storage"
            } else {
                "dify:logs"
            }
            .into(),
        )
    }

    async fn validate(
        params: &PurgeLogsParams,
        pool: &PgPool,
        settings: &Settings,
    ) -> Result<(), SpecError> {
        if !(1..=36_500).contains(&params.days) {
            return Err(SpecError::invalid("params.days", "must be 1 to 36500"));
        }
        if !(1..=10_000).contains(&params.batch) {
            return Err(SpecError::invalid("params.batch", "must be 1 to 10000"));
        }
        if !(1..=60_000).contains(&params.lock_timeout_ms) {
            return Err(SpecError::invalid(
                "params.lock_timeout_ms",
                "must be 1 to 60000",
            ));
        }
        shape::require(pool, Self::KIND, log_tables::NEEDS).await?;
        if let Some(ids) = &params.tenant_ids {
            if ids.is_empty() {
                return Err(SpecError::invalid(
                    "params.tenant_ids",
                    "names no workspace; leave it out to purge every workspace",
                ));
            }
            let known: Vec<Uuid> =
                sqlx::query_scalar("SELECT id FROM public.tenants WHERE id = ANY($1)")
                    .bind(ids)
                    .fetch_all(pool)
                    .await?;
            if let Some(i) = ids.iter().position(|id| !known.contains(id)) {
                return Err(SpecError::invalid(
                    format!("params.tenant_ids[{i}]"),
                    format!("no workspace {} in tenants", ids[i]),
                ));
            }
        }
        if params.export {
            let config = storage_param::resolve(params.storage.as_ref(), "storage", settings)?;
            storage_param::check_exists(&config, "storage", params.storage.is_some())?;
            storage_param::open(&config, "storage")?;
        } else if params.storage.is_some() {
            return Err(SpecError::invalid(
                "params.storage",
                "is only used with export: true",
            ));
        }
        Ok(())
    }

    async fn plan(params: PurgeLogsParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let catalog = Shape::read(&ctx.pool).await?;
        let fit = shape::check(&catalog, Self::KIND, log_tables::NEEDS)
            .map_err(|m| JobError::failed(crate::jobs::SCHEMA_UNSUPPORTED, m.to_string()))?;
        let paths = access(&catalog, &fit, params.temporary_indexes);
        let cutoff = cutoff(params.days);
        let tenants = params.tenant_ids.clone();
        let protected = protected_runs(&ctx.pool, cutoff).await?;
        let counts = count(&ctx.pool, &fit, tenants.as_deref(), cutoff, &protected).await?;
        let mut tables: BTreeMap<String, Value> = BTreeMap::new();
        for (table, fate, n) in counts.totals() {
            let what = if fate == "detached" && !params.keep_annotations {
                "would_delete"
            } else if fate == "detached" {
                "would_detach"
            } else {
                "would_delete"
            };
            tables.insert(table, json!({ what: n }));
        }
        Ok(json!({
            "cutoff": cutoff.and_utc(),
            "days": params.days,
            "tenant_ids": params.tenant_ids,
            "tables": tables,
            "per_tenant": counts.per_tenant,
            "runs_kept_for_younger_messages": protected.len(),
            "export": params.export,
            "schema": fit,
            "access_paths": paths,
        }))
    }

    async fn run(params: PurgeLogsParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let catalog = Shape::read(&ctx.pool).await?;
        let fit = shape::check(&catalog, Self::KIND, log_tables::NEEDS)
            .map_err(|m| JobError::failed(crate::jobs::SCHEMA_UNSUPPORTED, m.to_string()))?;
        let paths = access(&catalog, &fit, params.temporary_indexes);
        build_temporary(ctx, &paths).await?;
        let op = if params.export {
            let config = storage_param::resolve(params.storage.as_ref(), "storage", &ctx.settings)
                .map_err(storage_param::invalid)?;
            Some(storage_param::open(&config, "storage").map_err(storage_param::invalid)?)
        } else {
            None
        };
        let sql = statements(&ctx.pool, &fit, &paths, params.export).await?;
        let mut cp = match ctx.checkpoint::<Checkpoint>()? {
            Some(cp) => cp,
            None => start(&params, ctx, &fit).await?,
        };
        let mut meter = TableMeter::default();
        while cp.unit < UNITS.len() {
            let unit = &UNITS[cp.unit];
            let by_id = sql.keysets[cp.unit] == Keyset::Id;
            if cp.cursor_by_id.is_some_and(|b| b != by_id) {
                cp.cursor = Cursor::start();
                cp.cursor_by_id = None;
            }
            if unit.table == "workflow_runs" && cp.protected_runs.is_none() {
                cp.protected_runs = Some(protected_runs(&ctx.pool, cp.cutoff).await?);
                ctx.save_checkpoint(&ctx.pool.clone(), &cp).await?;
            }
            purge_unit(&params, ctx, &sql, op.as_ref(), &mut cp, &mut meter).await?;
            cp.unit += 1;
            cp.cursor = Cursor::start();
            cp.cursor_by_id = None;
            ctx.save_checkpoint(&ctx.pool.clone(), &cp).await?;
        }
        if let Some(op) = &op {
            forget_pending(ctx, op, &mut cp).await?;
        }
        drop_temporary(ctx, &paths).await?;
        let mut result = finish(&params, ctx, &cp, &fit).await?;
        result["access_paths"] = serde_json::to_value(&paths).unwrap_or_default();
        Ok(result)
    }
}

/// Per-table rates and ETAs, measured within this attempt.
#[derive(Default)]
struct TableMeter {
    started: HashMap<String, (Instant, u64)>,
}

async fn report(
    ctx: &mut JobCtx,
    cp: &Checkpoint,
    unit: &Unit,
    meter: &mut TableMeter,
) -> Result<(), JobError> {
    let now = Instant::now();
    let mut detail = serde_json::Map::new();
    for (table, total) in &cp.totals {
        let done = cp
            .tables
            .get(table)
            .map(|t| t.deleted + t.detached)
            .unwrap_or(0);
        let (since, at) = *meter.started.entry(table.clone()).or_insert((now, done));
        let secs = now.duration_since(since).as_secs_f64();
        let rate = (secs > 0.5 && done > at).then(|| (done - at) as f64 / secs);
        let eta = rate.map(|r| total.saturating_sub(done) as f64 / r);
        detail.insert(
            table.clone(),
            json!({"done": done, "total": total, "rate_per_s": rate, "eta_s": eta}),
        );
    }
    let done: u64 = cp.tables.values().map(|t| t.deleted + t.detached).sum();
    let total: u64 = cp.totals.values().sum();
    ctx.progress(
        Progress {
            phase: format!("purge {}", unit.table),
            done,
            total: Some(total.max(done)),
            unit: "rows".into(),
            detail: Some(json!({"tables": detail, "batches": cp.batches})),
            ..Default::default()
        },
        false,
    )
    .await
}

async fn finish(
    params: &PurgeLogsParams,
    ctx: &mut JobCtx,
    cp: &Checkpoint,
    fit: &Fit,
) -> Result<Value, JobError> {
    let shrunk: Vec<&String> = cp
        .tables
        .iter()
        .filter(|(_, t)| t.deleted > 0)
        .map(|(table, _)| table)
        .collect();
    let vacuum = if shrunk.is_empty() {
        Value::Null
    } else {
        let spec = JobSpec::parse("vacuum", json!({ "tables": shrunk }))
            .map_err(|e| JobError::failed("internal", e.to_string()))?;
        let queued = if params.vacuum_after {
            let submitted = queue::submit(
                &ctx.pool,
                &ctx.settings.sealer,
                NewJob {
                    kind: spec.kind().to_string(),
                    params: spec.params_json(),
                    dry_run: false,
                    // A resumed purge finds the vacuum it queued before.
                    idempotency_key: Some(format!("purge_logs:{}:vacuum", ctx.job_id)),
                    resource_key: spec.resource_key(),
                    parent_id: Some(ctx.job_id),
                    max_attempts: 5,
                },
            )
            .await;
            match submitted {
                Ok(s) => Some(s.into_row().id),
                Err(e) => {
                    ctx.warn(format!("could not queue the vacuum: {e}"), Value::Null)
                        .await?;
                    None
                }
            }
        } else {
            None
        };
        json!({"kind": "vacuum", "params": spec.params_json(), "queued_job_id": queued})
    };
    let mut result = done_so_far(params, cp);
    result["vacuum"] = vacuum;
    result["schema"] = json!(fit);
    Ok(result)
}

/// What the batches committed so far deleted and exported: the result, less the vacuum that
/// only the end queues (and the whole result of a cancelled purge).
fn done_so_far(params: &PurgeLogsParams, cp: &Checkpoint) -> Value {
    let tables: BTreeMap<&String, Value> = cp
        .tables
        .iter()
        .map(|(table, t)| {
            let mut v = json!({"deleted": t.deleted});
            if t.detached > 0 {
                v["detached"] = json!(t.detached);
            }
            if params.export {
                v["exported"] = json!(t.exported);
            }
            (table, v)
        })
        .collect();
    let offloads = cp
        .tables
        .get("workflow_node_execution_offload")
        .map_or(0, |t| t.deleted);
    json!({
        "cutoff": cp.cutoff.and_utc(),
        "days": params.days,
        "tenant_ids": params.tenant_ids,
        "tables": tables,
        "batches": cp.batches,
        "retried_batches": cp.retried_batches,
        "longest_transaction_ms": cp.longest_tx_ms,
        "export": if params.export {
            json!({"prefix": super::exports::EXPORT_PREFIX, "files": cp.files, "bytes": cp.bytes})
        } else {
            Value::Null
        },
        "files_left_for_orphan_records": offloads,
        "vacuum": Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Held {
        #[serde(default, deserialize_with = "one_or_many")]
        pending: Vec<Pending>,
    }

    #[test]
    fn a_checkpoint_from_before_the_pipeline_keeps_its_pending_batch() {
        let one: Held = serde_json::from_value(json!({"pending": {"stamp_us": 7, "keys": ["a"]}}))
            .expect("one");
        assert_eq!(one.pending.len(), 1);
        assert_eq!((one.pending[0].stamp_us, one.pending[0].keys.len()), (7, 1));
        let none: Held = serde_json::from_value(json!({"pending": null})).expect("null");
        assert!(none.pending.is_empty());
        let absent: Held = serde_json::from_value(json!({})).expect("absent");
        assert!(absent.pending.is_empty());
        let many: Held = serde_json::from_value(
            json!({"pending": [{"stamp_us": 1, "keys": []}, {"stamp_us": 2, "keys": []}]}),
        )
        .expect("many");
        assert_eq!(many.pending.len(), 2);
    }
}
