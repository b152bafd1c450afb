//! `orphan_files`: objects under Dify's file prefixes that no row references, on any storage
//! backend. A run without `confirm` records the plan (in `upkeep.orphan_plan`) and deletes
//! nothing; a run with `confirm` and that job's id deletes exactly the planned objects that are
//! still unreferenced, unchanged and present, re-checked against the live tables per batch.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use opendal::{EntryMode, ErrorKind, Operator};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{JobCtx, JobError, JobKind, Progress, SpecError, orphan_plan, storage_param};
use crate::config::Settings;
use crate::dify::shape;
use crate::dify::storage_refs::{self, KeySource, ORPHAN_NEEDS, ORPHAN_SOURCES};
use crate::storage::StorageConfig;

/// Prefixes whose every object should have a row (`privkeys/` one per live tenant).
pub const PREFIXES: &[&str] = &[
    "upload_files",
    "image_files",
    "tools",
    "datasources",
    "privkeys",
];
/// What a run covers when `prefixes` is absent: the files Dify's rows name.
const DEFAULT_PREFIXES: &[&str] = &["upload_files", "image_files", "tools", "datasources"];
const BATCH: usize = 500;
const SAMPLE: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrphanFilesParams {
    /// false: record a plan and delete nothing. true: delete what `plan_job_id` planned.
    #[serde(default)]
    pub confirm: bool,
    /// The finished plan to apply (a run of this kind without `confirm`).
    #[serde(default)]
    pub plan_job_id: Option<Uuid>,
    /// Objects younger than this are never orphans: Dify writes an object before its row. A
    /// confirming run applies its plan's value (and prefixes), and shows them.
    #[serde(default = "default_min_age")]
    pub min_age_hours: u32,
    /// Some of upload_files, image_files, tools, datasources, privkeys (default: all but privkeys).
    #[serde(default)]
    pub prefixes: Option<Vec<String>>,
    /// Default: the storage `STORAGE_TYPE` names.
    #[serde(default)]
    #[schema(value_type = Option<StorageConfig>)]
    pub storage: Option<Value>,
}

fn default_min_age() -> u32 {
    24
}

pub struct OrphanFiles;

fn prefixes(params: &OrphanFilesParams) -> Result<Vec<&'static str>, SpecError> {
    let Some(given) = &params.prefixes else {
        return Ok(DEFAULT_PREFIXES.to_vec());
    };
    if given.is_empty() {
        return Err(SpecError::invalid(
            "params.prefixes",
            "must name at least one prefix (leave it out for Dify's file prefixes)",
        ));
    }
    let mut out = Vec::new();
    for (i, p) in given.iter().enumerate() {
        let Some(known) = PREFIXES.iter().find(|k| **k == p.trim_matches('/')) else {
            return Err(SpecError::invalid(
                format!("params.prefixes[{i}]"),
                format!(
                    "{p:?} is not one of Dify's file prefixes: {}",
                    PREFIXES.join(", ")
                ),
            ));
        };
        if !out.contains(known) {
            out.push(*known);
        }
    }
    Ok(out)
}

fn open(params: &OrphanFilesParams, ctx: &JobCtx) -> Result<(StorageConfig, Operator), JobError> {
    let config = storage_param::resolve(params.storage.as_ref(), "storage", &ctx.settings)
        .map_err(storage_param::invalid)?;
    let op = storage_param::open(&config, "storage").map_err(storage_param::invalid)?;
    Ok((config, op))
}

/// The reference sources, all of them readable, or the job refuses to run: Dify once deleted
/// every file after a failed listing.
async fn sources(pool: &PgPool) -> Result<Vec<&'static KeySource>, JobError> {
    let present = storage_refs::present_of(pool, ORPHAN_SOURCES).await?;
    if present.len() != ORPHAN_SOURCES.len() {
        let missing: Vec<&str> = ORPHAN_SOURCES
            .iter()
            .filter(|s| !present.iter().any(|p| p.label == s.label))
            .map(|s| s.label)
            .collect();
        return Err(JobError::failed(
            "references_unreadable",
            format!(
                "cannot read every table that references files ({}): refusing to call anything an orphan",
                missing.join(", ")
            ),
        ));
    }
    Ok(present)
}

impl JobKind for OrphanFiles {
    const KIND: &'static str = "orphan_files";
    type Params = OrphanFilesParams;

    fn resource_key(_: &OrphanFilesParams) -> Option<String> {
        Some("storage".into())
    }

    async fn validate(
        params: &OrphanFilesParams,
        pool: &PgPool,
        settings: &Settings,
    ) -> Result<(), SpecError> {
        prefixes(params)?;
        shape::require(pool, Self::KIND, ORPHAN_NEEDS).await?;
        let config = storage_param::resolve(params.storage.as_ref(), "storage", settings)?;
        storage_param::check_exists(&config, "storage", params.storage.is_some())?;
        storage_param::open(&config, "storage")?;
        let plan = orphan_plan::check(
            pool,
            &settings.sealer,
            Self::KIND,
            params.confirm,
            params.plan_job_id,
            params.min_age_hours,
        )
        .await?;
        // A plan names objects of one storage: applying it to another would be wrong.
        let planned_on = plan
            .as_ref()
            .and_then(|p| p.get("storage"))
            .filter(|v| !v.is_null())
            .and_then(|v| storage_param::parse(v, "storage").ok());
        if planned_on.is_some_and(|p| p != config) {
            return Err(SpecError::invalid(
                "params.plan_job_id",
                "the plan was made on another storage",
            ));
        }
        Ok(())
    }

    async fn settle(params: &mut OrphanFilesParams, pool: &PgPool) -> Result<(), SpecError> {
        if let Some(plan) =
            orphan_plan::planned_params(pool, params.confirm, params.plan_job_id).await?
        {
            params.min_age_hours = orphan_plan::planned_min_age(&plan, params.min_age_hours);
            params.prefixes = serde_json::from_value(plan["prefixes"].clone()).unwrap_or(None);
        }
        Ok(())
    }

    async fn plan(params: OrphanFilesParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        shape::require(&ctx.pool, Self::KIND, ORPHAN_NEEDS).await?;
        match params.plan_job_id.filter(|_| params.confirm) {
            Some(plan) => orphan_plan::preview(ctx, plan).await,
            None => make_plan(params, ctx).await,
        }
    }

    async fn run(params: OrphanFilesParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        shape::require(&ctx.pool, Self::KIND, ORPHAN_NEEDS).await?;
        match params.plan_job_id.filter(|_| params.confirm) {
            Some(plan) => apply_plan(params, plan, ctx).await,
            None => make_plan(params, ctx).await,
        }
    }
}

#[derive(Default, Serialize)]
struct PrefixTally {
    objects: u64,
    orphans: u64,
    orphan_bytes: u64,
    /// Unreferenced but younger than `min_age_hours`: perhaps an upload in flight.
    too_young: u64,
}

/// An unreferenced object old enough to be an orphan.
struct Orphan {
    key: String,
    size: i64,
    last_modified: Option<DateTime<Utc>>,
}

/// Lists the prefixes, finds unreferenced objects older than the grace period and, unless
/// `dry_run`, records them as this job's plan.
async fn make_plan(params: OrphanFilesParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
    let (config, op) = open(&params, ctx)?;
    let prefixes = prefixes(&params).map_err(storage_param::invalid)?;
    let sources = sources(&ctx.pool).await?;
    ctx.progress(phase("gather references"), true).await?;
    let referenced = storage_refs::collect(&ctx.pool, ctx.job_id, &sources).await?;
    sqlx::query("DELETE FROM upkeep.orphan_plan WHERE job_id = $1")
        .bind(ctx.job_id)
        .execute(&ctx.pool)
        .await?;
    let cutoff = Utc::now() - chrono::Duration::hours(i64::from(params.min_age_hours));
    let mut tallies: BTreeMap<&str, PrefixTally> = BTreeMap::new();
    let mut sample = Vec::new();
    let (mut listed, mut found) = (0u64, 0u64);
    for prefix in &prefixes {
        let tally = tallies.entry(prefix).or_default();
        let mut lister = match op.lister_with(&format!("{prefix}/")).recursive(true).await {
            Ok(l) => l,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(storage_failed(prefix, e)),
        };
        let mut done = false;
        while !done {
            ctx.check_stop()?;
            let mut batch = Vec::with_capacity(BATCH);
            while batch.len() < BATCH {
                match lister
                    .try_next()
                    .await
                    .map_err(|e| storage_failed(prefix, e))?
                {
                    Some(entry) => {
                        if entry.metadata().mode() == EntryMode::FILE
                            && !entry.path().ends_with('/')
                        {
                            batch.push(entry);
                        }
                    }
                    None => {
                        done = true;
                        break;
                    }
                }
            }
            listed += batch.len() as u64;
            tally.objects += batch.len() as u64;
            let keys: Vec<String> = batch.iter().map(|e| e.path().to_string()).collect();
            let known = storage_refs::gathered(&ctx.pool, ctx.job_id, &keys).await?;
            let unreferenced: Vec<String> =
                keys.into_iter().filter(|k| !known.contains(k)).collect();
            let mut orphans = Vec::new();
            for (key, meta) in stat_all(&op, unreferenced).await {
                let meta = match meta {
                    Ok(Some(m)) => m,
                    Ok(None) => continue,
                    Err(e) => return Err(storage_failed(prefix, e)),
                };
                let last_modified = meta.last_modified().map(to_chrono);
                // No timestamp at all: cannot prove it is old, so it is not an orphan.
                let old = last_modified.is_some_and(|t| t <= cutoff);
                if !old {
                    tally.too_young += 1;
                    continue;
                }
                tally.orphans += 1;
                found += 1;
                tally.orphan_bytes += meta.content_length();
                if sample.len() < SAMPLE {
                    sample.push(json!({"key": key, "bytes": meta.content_length()}));
                }
                orphans.push(Orphan {
                    key,
                    size: meta.content_length() as i64,
                    last_modified,
                });
            }
            if !ctx.dry_run {
                record(ctx, &orphans).await?;
            }
            ctx.progress(
                Progress {
                    done: listed,
                    detail: Some(json!({"orphans": found})),
                    ..phase(&format!("list {prefix}/"))
                },
                false,
            )
            .await?;
        }
    }
    storage_refs::clear(&ctx.pool, ctx.job_id).await?;
    // An empty listing where the database expects files means the wrong storage, not "clean".
    if listed == 0 && referenced > 0 {
        return Err(JobError::failed(
            "storage_empty",
            format!(
                "no objects under {} on {}, but the database references {referenced} keys: check the storage settings",
                prefixes.join(", "),
                config.describe()
            ),
        ));
    }
    Ok(json!({
        "storage": config.describe(),
        "plan_job_id": (!ctx.dry_run).then_some(ctx.job_id),
        "min_age_hours": params.min_age_hours,
        "listed": listed,
        "referenced_keys": referenced,
        "orphans": found,
        "orphan_bytes": tallies.values().map(|t| t.orphan_bytes).sum::<u64>(),
        "prefixes": tallies,
        "sample": sample,
        "next": if ctx.dry_run {
            "run again without dry_run to record this plan".to_string()
        } else {
            format!("to delete them: {{\"kind\": \"orphan_files\", \"params\": {{\"confirm\": true, \"plan_job_id\": \"{}\"}}}}", ctx.job_id)
        },
    }))
}

async fn record(ctx: &JobCtx, orphans: &[Orphan]) -> Result<(), JobError> {
    if orphans.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = orphans.iter().map(|o| o.key.as_str()).collect();
    let sizes: Vec<i64> = orphans.iter().map(|o| o.size).collect();
    let times: Vec<Option<DateTime<Utc>>> = orphans.iter().map(|o| o.last_modified).collect();
    sqlx::query(
        "INSERT INTO upkeep.orphan_plan (job_id, item, size, last_modified) \
         SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::timestamptz[]) \
         ON CONFLICT (job_id, item) DO NOTHING",
    )
    .bind(ctx.job_id)
    .bind(&keys)
    .bind(&sizes)
    .bind(&times)
    .execute(&ctx.pool)
    .await?;
    Ok(())
}

fn to_chrono(t: impl Into<std::time::SystemTime>) -> DateTime<Utc> {
    DateTime::<Utc>::from(t.into())
}

/// Each key's metadata (`None` once gone), asked with some concurrency, in order.
async fn stat_all(
    op: &Operator,
    keys: Vec<String>,
) -> Vec<(String, Result<Option<opendal::Metadata>, opendal::Error>)> {
    futures_util::stream::iter(keys)
        .map(|key| async move {
            let meta = match op.stat(&key).await {
                Ok(m) => Ok(Some(m)),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            };
            (key, meta)
        })
        .buffered(16)
        .collect()
        .await
}

fn phase(name: &str) -> Progress {
    Progress {
        phase: name.into(),
        unit: "objects".into(),
        ..Default::default()
    }
}

fn storage_failed(prefix: &str, e: opendal::Error) -> JobError {
    JobError::failed("storage_failed", format!("{prefix}/: {e}"))
}

/// Deletes the plan's items that are still unreferenced, present and unchanged, batch by batch;
/// each item's outcome is recorded, so a rerun continues where this one stopped.
async fn apply_plan(
    params: OrphanFilesParams,
    plan: Uuid,
    ctx: &mut JobCtx,
) -> Result<Value, JobError> {
    let (config, op) = open(&params, ctx)?;
    let sources = sources(&ctx.pool).await?;
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM upkeep.orphan_plan WHERE job_id = $1")
            .bind(plan)
            .fetch_one(&ctx.pool)
            .await?;
    let mut after = String::new();
    loop {
        ctx.check_stop()?;
        let batch: Vec<(String, Option<i64>, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT item, size, last_modified FROM upkeep.orphan_plan \
             WHERE job_id = $1 AND outcome IS NULL AND item > $2 ORDER BY item LIMIT $3",
        )
        .bind(plan)
        .bind(&after)
        .bind(BATCH as i64)
        .fetch_all(&ctx.pool)
        .await?;
        let Some((last, _, _)) = batch.last() else {
            break;
        };
        after = last.clone();
        let keys: Vec<String> = batch.iter().map(|(k, _, _)| k.clone()).collect();
        // Referenced since the plan (a row was written for it): kept.
        let live = storage_refs::live(&ctx.pool, &sources, &keys).await?;
        let metas = stat_all(&op, keys.clone()).await;
        let mut outcomes: Vec<(String, &str)> = Vec::with_capacity(batch.len());
        let mut doomed = Vec::new();
        for ((key, size, modified), (_, meta)) in batch.into_iter().zip(metas) {
            let outcome = if live.contains(&key) {
                "referenced"
            } else {
                match meta.map_err(|e| storage_failed("plan", e))? {
                    None => "gone",
                    Some(m) => {
                        let same_size = size.is_none_or(|s| s == m.content_length() as i64);
                        // Postgres keeps microseconds; file systems have nanoseconds.
                        let micros = |t: DateTime<Utc>| t.timestamp_micros();
                        let same_time =
                            m.last_modified().map(|t| micros(to_chrono(t))) == modified.map(micros);
                        if same_size && same_time {
                            doomed.push(key.clone());
                            "deleted"
                        } else {
                            "changed"
                        }
                    }
                }
            };
            outcomes.push((key, outcome));
        }
        ctx.failpoint("orphan_files.before_delete").await?;
        op.delete_iter(doomed)
            .await
            .map_err(|e| storage_failed("delete", e))?;
        let items: Vec<&str> = outcomes.iter().map(|(k, _)| k.as_str()).collect();
        let kinds: Vec<&str> = outcomes.iter().map(|(_, o)| *o).collect();
        sqlx::query(
            "UPDATE upkeep.orphan_plan p SET outcome = o.outcome, handled_by = $2 \
             FROM unnest($3::text[], $4::text[]) AS o(item, outcome) \
             WHERE p.job_id = $1 AND p.item = o.item",
        )
        .bind(plan)
        .bind(ctx.job_id)
        .bind(&items)
        .bind(&kinds)
        .execute(&ctx.pool)
        .await?;
        let handled: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM upkeep.orphan_plan WHERE job_id = $1 AND outcome IS NOT NULL",
        )
        .bind(plan)
        .fetch_one(&ctx.pool)
        .await?;
        ctx.progress(
            Progress {
                done: handled as u64,
                total: Some(total as u64),
                ..phase("delete planned orphans")
            },
            false,
        )
        .await?;
    }
    // This run's outcomes only: items an earlier confirm handled are counted apart, so
    // confirming a plan twice reports 0 deleted the second time.
    let counts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT CASE WHEN handled_by = $2 THEN outcome ELSE 'earlier' END, count(*) \
         FROM upkeep.orphan_plan WHERE job_id = $1 AND outcome IS NOT NULL GROUP BY 1",
    )
    .bind(plan)
    .bind(ctx.job_id)
    .fetch_all(&ctx.pool)
    .await?;
    let count = |o: &str| counts.iter().find(|(k, _)| k == o).map_or(0, |(_, n)| *n);
    let kept: Vec<(String, String)> = sqlx::query_as(
        "SELECT item, outcome FROM upkeep.orphan_plan WHERE job_id = $1 AND handled_by = $3 \
         AND outcome IN ('referenced', 'changed') ORDER BY item LIMIT $2",
    )
    .bind(plan)
    .bind(SAMPLE as i64)
    .bind(ctx.job_id)
    .fetch_all(&ctx.pool)
    .await?;
    ctx.count("objects", count("deleted") as u64);
    Ok(json!({
        "storage": config.describe(),
        "plan_job_id": plan,
        "planned": total,
        "deleted": count("deleted"),
        "kept_referenced": count("referenced"),
        "kept_changed": count("changed"),
        "already_gone": count("gone"),
        "handled_by_an_earlier_confirm": count("earlier"),
        "kept_sample": kept.into_iter().map(|(k, o)| json!({"key": k, "why": o})).collect::<Vec<_>>(),
    }))
}
