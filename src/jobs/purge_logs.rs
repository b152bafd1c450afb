//! `purge_logs`: Dify's `flask clear-free-plan-tenant-expired-logs --days --batch --tenant_ids`,
//! plus the workflow tables of Dify's newer retention commands, done safely. Per batch: the
//! rows and everything that depends on them are read, exported to storage in Dify's layout
//! and read back, and only then deleted, dependents first, in one short transaction that
//! also commits the checkpoint. A batch killed after its export is redone under the same file
//! names, so no batch is ever exported twice under two names.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, NaiveDateTime, Utc};
use opendal::Operator;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgPool, Postgres, Transaction};
use utoipa::ToSchema;
use uuid::Uuid;

use super::log_export::{self, Files};
use super::{JobCtx, JobError, JobKind, JobSpec, Progress, SpecError, storage_param};
use crate::config::Settings;
use crate::dify::access_paths::{self, Choice, Path};
use crate::dify::log_tables::{self, Dependent, Fate, Keyset, UNITS, Unit};
use crate::dify::shape::{self, Fit, Shape};
use crate::queue::{self, NewJob};

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

/// The names of the batch exported but not yet deleted: a rerun writes the same ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    stamp_us: i64,
    keys: Vec<String>,
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
    pending: Option<Pending>,
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

/// A row read for a batch: its id, its workspace, and its export JSON.
struct Row {
    id: Uuid,
    tenant: Uuid,
    json: String,
}

struct Batch {
    parents: Vec<Row>,
    /// Per dependent of the unit, in its order.
    dependents: Vec<Vec<Row>>,
    last: Cursor,
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
            .map_err(|m| JobError::failed(super::SCHEMA_UNSUPPORTED, m.to_string()))?;
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
            .map_err(|m| JobError::failed(super::SCHEMA_UNSUPPORTED, m.to_string()))?;
        let paths = access(&catalog, &fit, params.temporary_indexes);
        build_temporary(ctx, &paths).await?;
        let op = if params.export {
            let config = storage_param::resolve(params.storage.as_ref(), "storage", &ctx.settings)
                .map_err(storage_param::invalid)?;
            Some(storage_param::open(&config, "storage").map_err(storage_param::invalid)?)
        } else {
            None
        };
        let sql = statements(&ctx.pool, &fit, &paths).await?;
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
            loop {
                ctx.check_stop()?;
                if !purge_batch(&params, ctx, &sql, op.as_ref(), &mut cp).await? {
                    break;
                }
                ctx.partial_result(done_so_far(&params, &cp));
                report(ctx, &cp, unit, &mut meter).await?;
            }
            cp.unit += 1;
            cp.cursor = Cursor::start();
            cp.cursor_by_id = None;
            ctx.save_checkpoint(&ctx.pool.clone(), &cp).await?;
        }
        drop_temporary(ctx, &paths).await?;
        let mut result = finish(&params, ctx, &cp, &fit).await?;
        result["access_paths"] = serde_json::to_value(&paths).unwrap_or_default();
        Ok(result)
    }
}

/// The access path of every lookup the purge makes: each parent walk by its keyset, each
/// dependent (and the intermediate it hangs off) by its link column.
fn access(catalog: &Shape, fit: &Fit, temporary: bool) -> Vec<Choice> {
    let mut out: Vec<Choice> = Vec::new();
    for unit in UNITS {
        if unit.keyset == Keyset::CreatedAtId {
            let exact = access_paths::choose(catalog, unit.table, &["created_at", "id"], temporary);
            let first = access_paths::choose(catalog, unit.table, &["created_at"], false);
            // An index on `created_at` alone serves the walk too (ties sorted per batch).
            out.push(match (&exact.path, &first.path) {
                (Path::Index { .. }, _) => exact,
                (_, Path::Index { .. }) => first,
                (Path::Scan, _) => walk_by_id(catalog, unit.table).unwrap_or(exact),
                _ => exact,
            });
        }
        for d in unit.dependents.iter().filter(|d| d.present(fit)) {
            let mut lookups = vec![(d.table, d.column)];
            if let Some(via) = d.via {
                lookups.push(via);
            }
            for (table, column) in lookups {
                if !out.iter().any(|c| c.table == table && c.by == column) {
                    out.push(access_paths::choose(catalog, table, &[column], temporary));
                }
            }
        }
    }
    out
}

/// Without any index on `created_at` (workflow runs before 1.13) a time-ordered walk would
/// scan the table per batch: walking by primary key reads it once for the whole purge.
fn walk_by_id(catalog: &Shape, table: &str) -> Option<Choice> {
    let mut by_id = access_paths::choose(catalog, table, &["id"], false);
    let Path::Index { index } = &by_id.path else {
        return None;
    };
    by_id.why = format!(
        "this Dify has no index on {table} (created_at): walked by {index} instead, one pass \
         over the table for the whole purge. temporary_indexes: true builds one on (created_at, id)"
    );
    Some(by_id)
}

/// How each unit's parents are walked on this release.
fn keysets(paths: &[Choice]) -> Vec<Keyset> {
    UNITS
        .iter()
        .map(|u| {
            let by_id = paths.iter().any(|c| c.table == u.table && c.by == "id");
            if by_id { Keyset::Id } else { u.keyset }
        })
        .collect()
}

/// The columns a temporary index of `choice` covers.
fn temporary_columns(choice: &Choice) -> Vec<&str> {
    choice.by.split(", ").collect()
}

/// Builds the temporary indexes the paths call for (outside any transaction, so Dify's
/// writes go on). An invalid one left by a killed build is dropped and built again.
async fn build_temporary(ctx: &mut JobCtx, paths: &[Choice]) -> Result<(), JobError> {
    for c in paths {
        let index = match &c.path {
            Path::TemporaryIndex { index } => index,
            Path::Scan => {
                ctx.warn(format!("{}: {}", c.table, c.why), Value::Null)
                    .await?;
                continue;
            }
            _ => continue,
        };
        let columns = temporary_columns(c);
        ctx.log(
            format!(
                "building the temporary index {index} on {} ({})",
                c.table, c.by
            ),
            Value::Null,
        )
        .await?;
        for sql in [
            access_paths::temporary_drop(&c.table, &columns),
            access_paths::temporary_create(&c.table, &columns),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&ctx.pool)
                .await?;
        }
    }
    Ok(())
}

/// Drops Upkeep's temporary indexes, whether this attempt or an earlier one built them.
async fn drop_temporary(ctx: &mut JobCtx, paths: &[Choice]) -> Result<(), JobError> {
    for c in paths {
        let ours = match &c.path {
            Path::TemporaryIndex { .. } => true,
            Path::Index { index } => index.starts_with("upkeep_tmp_"),
            _ => false,
        };
        if ours {
            let sql = access_paths::temporary_drop(&c.table, &temporary_columns(c));
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&ctx.pool)
                .await?;
        }
    }
    Ok(())
}

fn cutoff(days: u32) -> NaiveDateTime {
    (Utc::now() - chrono::Duration::days(i64::from(days))).naive_utc()
}

async fn protected_runs(pool: &PgPool, cutoff: NaiveDateTime) -> Result<Vec<Uuid>, JobError> {
    Ok(sqlx::query_scalar(log_tables::PROTECTED_RUNS)
        .bind(cutoff)
        .fetch_all(pool)
        .await?)
}

/// Binds the parameters every unit statement shares (see `log_tables`).
fn bind_unit<'q>(
    sql: &'q str,
    tenants: Option<&'q [Uuid]>,
    cutoff: NaiveDateTime,
    cursor: Cursor,
    limit: i64,
    protected: &'q [Uuid],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(tenants)
        .bind(cutoff)
        .bind(cursor.time)
        .bind(cursor.id)
        .bind(limit)
        .bind(protected)
}

/// Rows a purge would remove now, per table, fate and tenant.
struct Counts {
    per_tenant: BTreeMap<Uuid, BTreeMap<String, u64>>,
    fates: BTreeMap<String, &'static str>,
}

impl Counts {
    fn totals(&self) -> Vec<(String, &'static str, u64)> {
        let mut sum: BTreeMap<&str, u64> = BTreeMap::new();
        for tables in self.per_tenant.values() {
            for (table, n) in tables {
                *sum.entry(table).or_default() += n;
            }
        }
        self.fates
            .iter()
            .map(|(table, fate)| {
                (
                    table.clone(),
                    *fate,
                    sum.get(table.as_str()).copied().unwrap_or(0),
                )
            })
            .collect()
    }
}

async fn count(
    pool: &PgPool,
    fit: &Fit,
    tenants: Option<&[Uuid]>,
    cutoff: NaiveDateTime,
    protected: &[Uuid],
) -> Result<Counts, JobError> {
    use sqlx::Row as _;
    let mut counts = Counts {
        per_tenant: BTreeMap::new(),
        fates: BTreeMap::new(),
    };
    for unit in UNITS {
        let mut statements = vec![(unit.table, "deleted", unit.count_per_tenant())];
        for d in unit.dependents.iter().filter(|d| d.present(fit)) {
            let fate = match d.fate {
                Fate::Delete => "deleted",
                Fate::Detach(_) => "detached",
            };
            statements.push((d.table, fate, d.count_per_tenant(unit)));
        }
        for (table, fate, sql) in statements {
            counts.fates.insert(table.to_string(), fate);
            let rows = bind_unit(&sql, tenants, cutoff, Cursor::start(), 0, protected)
                .fetch_all(pool)
                .await?;
            for row in rows {
                let tenant: Option<Uuid> = row.try_get(0)?;
                let n: i64 = row.try_get(1)?;
                *counts
                    .per_tenant
                    .entry(tenant.unwrap_or_default())
                    .or_default()
                    .entry(table.to_string())
                    .or_default() += n.max(0) as u64;
            }
        }
    }
    Ok(counts)
}

async fn statements(pool: &PgPool, fit: &Fit, paths: &[Choice]) -> Result<Sql, JobError> {
    // Parents are `p` and dependents `t` in the statements: one expression per table and alias.
    let mut json_of: HashMap<(&str, &str), String> = HashMap::new();
    for table in log_tables::tables().into_iter().filter(|t| fit.has(t)) {
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
        .fetch_all(pool)
        .await?;
        for alias in ["p", "t"] {
            json_of.insert((table, alias), log_tables::row_json(alias, &columns));
        }
    }
    let json = |table: &str, alias: &str| json_of.get(&(table, alias)).cloned().unwrap_or_default();
    let dependents: Vec<Vec<Dependent>> = UNITS
        .iter()
        .map(|u| {
            u.dependents
                .iter()
                .filter(|d| d.present(fit))
                .map(|d| {
                    let leading = |table: &str, column: &str| {
                        paths
                            .iter()
                            .find(|c| c.table == table && c.by == column)
                            .and_then(|c| c.leading)
                    };
                    Dependent {
                        path: leading(d.table, d.column),
                        via_path: d.via.and_then(|(via, fk)| leading(via, fk)),
                        ..*d
                    }
                })
                .collect()
        })
        .collect();
    let keysets = keysets(paths);
    Ok(Sql {
        select_parents: UNITS
            .iter()
            .zip(&keysets)
            .map(|(u, k)| u.select_batch_by(*k, &json(u.table, "p")))
            .collect(),
        keysets,
        select_dependents: dependents
            .iter()
            .map(|deps| {
                deps.iter()
                    .map(|d| d.select_for(&json(d.table, "t")))
                    .collect()
            })
            .collect(),
        dependents,
    })
}

async fn start(
    params: &PurgeLogsParams,
    ctx: &mut JobCtx,
    fit: &Fit,
) -> Result<Checkpoint, JobError> {
    ctx.progress(
        Progress {
            phase: "count".into(),
            unit: "rows".into(),
            ..Default::default()
        },
        true,
    )
    .await?;
    let cutoff = cutoff(params.days);
    let protected = protected_runs(&ctx.pool, cutoff).await?;
    let counts = count(
        &ctx.pool,
        fit,
        params.tenant_ids.as_deref(),
        cutoff,
        &protected,
    )
    .await?;
    let cp = Checkpoint {
        cutoff,
        unit: 0,
        cursor: Cursor::start(),
        protected_runs: None,
        pending: None,
        last_stamp_us: 0,
        totals: counts
            .totals()
            .into_iter()
            .map(|(table, _, n)| (table, n))
            .collect(),
        tables: BTreeMap::new(),
        batches: 0,
        files: 0,
        bytes: 0,
        retried_batches: 0,
        longest_tx_ms: 0,
        cursor_by_id: None,
    };
    ctx.save_checkpoint(&ctx.pool.clone(), &cp).await?;
    Ok(cp)
}

async fn read_batch(
    params: &PurgeLogsParams,
    ctx: &JobCtx,
    sql: &Sql,
    cp: &Checkpoint,
) -> Result<Option<Batch>, JobError> {
    use sqlx::Row as _;
    let protected = cp.protected_runs.as_deref().unwrap_or_default();
    let rows = bind_unit(
        &sql.select_parents[cp.unit],
        params.tenant_ids.as_deref(),
        cp.cutoff,
        cp.cursor,
        i64::from(params.batch),
        protected,
    )
    .fetch_all(&ctx.pool)
    .await?;
    let Some(last) = rows.last() else {
        return Ok(None);
    };
    let last = Cursor {
        time: match sql.keysets[cp.unit] {
            Keyset::CreatedAtId => last.try_get(2)?,
            Keyset::Id => cp.cursor.time,
        },
        id: last.try_get(0)?,
    };
    let mut parents = Vec::with_capacity(rows.len());
    for row in rows {
        let tenant: Option<Uuid> = row.try_get(1)?;
        parents.push(Row {
            id: row.try_get(0)?,
            tenant: tenant.unwrap_or_default(),
            json: row.try_get(3)?,
        });
    }
    let tenant_of: HashMap<Uuid, Uuid> = parents.iter().map(|r| (r.id, r.tenant)).collect();
    let ids: Vec<Uuid> = parents.iter().map(|r| r.id).collect();
    // Each dependent table on its own connection, at once: the reads are independent.
    let reads = sql.select_dependents[cp.unit].iter().map(|select| {
        sqlx::query(sqlx::AssertSqlSafe(select.clone()))
            .bind(&ids)
            .fetch_all(&ctx.pool)
    });
    let mut dependents = Vec::with_capacity(sql.dependents[cp.unit].len());
    for rows in futures_util::future::try_join_all(reads).await? {
        let mut found = Vec::with_capacity(rows.len());
        for row in rows {
            let parent: Uuid = row.try_get(1)?;
            found.push(Row {
                id: row.try_get(0)?,
                tenant: tenant_of.get(&parent).copied().unwrap_or_default(),
                json: row.try_get(2)?,
            });
        }
        dependents.push(found);
    }
    Ok(Some(Batch {
        parents,
        dependents,
        last,
    }))
}

/// Why a batch's transaction was given up; both are retried with the batch read again.
enum Abandoned {
    /// A dependent row appeared after the export: it would be deleted without a copy.
    Changed(String),
    LockBusy,
}

/// Exports and deletes one batch of the current unit; false when the unit has no rows left.
async fn purge_batch(
    params: &PurgeLogsParams,
    ctx: &mut JobCtx,
    sql: &Sql,
    op: Option<&Operator>,
    cp: &mut Checkpoint,
) -> Result<bool, JobError> {
    let unit = &UNITS[cp.unit];
    let (mut changed, mut busy) = (0u32, 0u32);
    loop {
        let t0 = Instant::now();
        let Some(batch) = read_batch(params, ctx, sql, cp).await? else {
            return Ok(false);
        };
        let read_ms = t0.elapsed().as_millis();
        let exported = match op {
            Some(op) => Some(export(ctx, cp, unit, &sql.dependents[cp.unit], &batch, op).await?),
            None => None,
        };
        ctx.failpoint("purge_logs.exported").await?;
        let export_ms = t0.elapsed().as_millis() - read_ms;
        let began = Instant::now();
        let mut tx = ctx.pool.begin().await?;
        let deps = &sql.dependents[cp.unit];
        match delete(
            params,
            ctx,
            &mut tx,
            cp,
            unit,
            deps,
            &batch,
            exported.is_some(),
        )
        .await
        {
            Ok(tallies) => {
                for (table, tally) in tallies {
                    let t = cp.tables.entry(table.to_string()).or_default();
                    t.deleted += tally.deleted;
                    t.detached += tally.detached;
                    t.exported += tally.exported;
                }
                if let Some((files, bytes)) = exported {
                    cp.files += files;
                    cp.bytes += bytes;
                }
                cp.pending = None;
                cp.cursor = batch.last;
                cp.cursor_by_id = Some(sql.keysets[cp.unit] == Keyset::Id);
                cp.batches += 1;
                ctx.save_checkpoint(&mut *tx, &*cp).await?;
                tx.commit().await?;
                // Kept with the next checkpoint: commit included.
                let held = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
                cp.longest_tx_ms = cp.longest_tx_ms.max(held);
                tracing::debug!(
                    job.id = %ctx.job_id,
                    "{} batch: read {read_ms} ms, export {export_ms} ms, delete {held} ms",
                    unit.table
                );
                let removed = batch.parents.len() as u64;
                ctx.count("rows", removed);
                return Ok(true);
            }
            Err(DeleteError::Job(e)) => return Err(e),
            Err(DeleteError::Abandoned(why)) => {
                tx.rollback().await?;
                cp.retried_batches += 1;
                match why {
                    Abandoned::Changed(detail) => {
                        changed += 1;
                        if changed > CHANGED_RETRIES {
                            return Err(JobError::failed(
                                "rows_changing",
                                format!(
                                    "{detail}, {changed} times in a row; nothing of this batch was deleted"
                                ),
                            ));
                        }
                        ctx.warn(format!("{detail}: exporting the batch again"), Value::Null)
                            .await?;
                    }
                    Abandoned::LockBusy => {
                        busy += 1;
                        if busy > LOCK_RETRIES {
                            return Err(JobError::failed(
                                "lock_timeout",
                                format!(
                                    "{} rows stayed locked by another session for {} tries of {} ms",
                                    unit.table, busy, params.lock_timeout_ms
                                ),
                            ));
                        }
                        let wait = Duration::from_millis(200 * 2u64.pow(busy));
                        ctx.warn(
                            format!("a lock on {} is busy; retrying in {wait:?}", unit.table),
                            Value::Null,
                        )
                        .await?;
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = ctx.stop_signal() => ctx.check_stop()?,
                        }
                    }
                }
            }
        }
    }
}

/// Writes the batch's files under the names recorded for it (new ones only for a batch never
/// exported before) and verifies them. Returns the files and bytes written.
async fn export(
    ctx: &mut JobCtx,
    cp: &mut Checkpoint,
    unit: &Unit,
    deps: &[Dependent],
    batch: &Batch,
    op: &Operator,
) -> Result<(u64, u64), JobError> {
    let stamp_us = match &cp.pending {
        Some(p) => p.stamp_us,
        None => {
            let now = Utc::now().timestamp_micros();
            now.max(cp.last_stamp_us + 1)
        }
    };
    let mut files = Files::default();
    for row in &batch.parents {
        files.push(row.tenant, unit.table, stamp_us, &row.json);
    }
    for (d, rows) in deps.iter().zip(&batch.dependents) {
        for row in rows {
            files.push(row.tenant, d.table, stamp_us, &row.json);
        }
    }
    let keys = files.keys();
    let earlier: Vec<String> = cp
        .pending
        .as_ref()
        .map(|p| p.keys.clone())
        .unwrap_or_default();
    let mut recorded: Vec<String> = earlier.clone();
    recorded.extend(keys.iter().filter(|k| !earlier.contains(k)).cloned());
    if cp.pending.is_none() || recorded.len() != earlier.len() {
        // The names are committed before the first byte is written.
        cp.pending = Some(Pending {
            stamp_us,
            keys: recorded,
        });
        cp.last_stamp_us = stamp_us;
        ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
    }
    let (n, bytes) = (keys.len() as u64, files.bytes());
    files.write_verified(op).await?;
    let stale: Vec<String> = earlier.into_iter().filter(|k| !keys.contains(k)).collect();
    log_export::remove_stale(op, stale).await?;
    if let Some(p) = cp.pending.as_mut() {
        p.keys = keys;
    }
    Ok((n, bytes))
}

enum DeleteError {
    Job(JobError),
    Abandoned(Abandoned),
}

impl From<sqlx::Error> for DeleteError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::sqlstate(&e).as_deref() == Some("55P03") {
            DeleteError::Abandoned(Abandoned::LockBusy)
        } else {
            DeleteError::Job(e.into())
        }
    }
}

impl From<JobError> for DeleteError {
    fn from(e: JobError) -> Self {
        DeleteError::Job(e)
    }
}

/// Locks the batch's parents that still qualify, then removes their dependents and them.
/// With an export, every removed row must be one the export holds.
#[allow(clippy::too_many_arguments)]
async fn delete(
    params: &PurgeLogsParams,
    ctx: &JobCtx,
    tx: &mut Transaction<'static, Postgres>,
    cp: &Checkpoint,
    unit: &Unit,
    deps: &[Dependent],
    batch: &Batch,
    exported: bool,
) -> Result<Vec<(&'static str, Tally)>, DeleteError> {
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(format!("{}ms", params.lock_timeout_ms))
        .execute(&mut **tx)
        .await?;
    let ids: Vec<Uuid> = batch.parents.iter().map(|r| r.id).collect();
    let eligible: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(unit.lock_eligible()))
        .bind(&ids)
        .bind(cp.cutoff)
        .fetch_all(&mut **tx)
        .await?;
    let mut tallies = Vec::new();
    for (d, rows) in deps.iter().zip(&batch.dependents) {
        let fate = match d.fate {
            Fate::Detach(_) if !params.keep_annotations => Fate::Delete,
            f => f,
        };
        let sql = Dependent { fate, ..*d }.apply_for();
        let done: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(&eligible)
            .fetch_all(&mut **tx)
            .await?;
        if exported {
            let copied: HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
            if let Some(new) = done.iter().find(|id| !copied.contains(id)) {
                return Err(DeleteError::Abandoned(Abandoned::Changed(format!(
                    "{} row {new} appeared after the export",
                    d.table
                ))));
            }
        }
        let n = done.len() as u64;
        tallies.push((
            d.table,
            match fate {
                Fate::Delete => Tally {
                    deleted: n,
                    exported: if exported { n } else { 0 },
                    ..Tally::default()
                },
                Fate::Detach(_) => Tally {
                    detached: n,
                    exported: if exported { n } else { 0 },
                    ..Tally::default()
                },
            },
        ));
        if tallies.len() == 1 {
            ctx.failpoint("purge_logs.mid_delete").await?;
        }
    }
    let gone: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(unit.delete_parents()))
        .bind(&eligible)
        .fetch_all(&mut **tx)
        .await?;
    let n = gone.len() as u64;
    tallies.push((
        unit.table,
        Tally {
            deleted: n,
            exported: if exported { n } else { 0 },
            ..Tally::default()
        },
    ));
    Ok(tallies)
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
            json!({"prefix": super::purge_exports::EXPORT_PREFIX, "files": cp.files, "bytes": cp.bytes})
        } else {
            Value::Null
        },
        "files_left_for_orphan_records": offloads,
        "vacuum": Value::Null,
    })
}
