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

use super::plan;
use crate::config::Settings;
use crate::dify::shape;
use crate::dify::storage_refs::{self, KeySource, ORPHAN_NEEDS, ORPHAN_SOURCES};
use crate::jobs::{JobCtx, JobError, JobKind, Progress, SpecError, storage_param};
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
    type Plan = crate::jobs::contract::orphan_files::OrphanFilesPlan;
    type Outcome = crate::jobs::contract::orphan_files::OrphanFilesResult;
    type Detail = crate::jobs::contract::orphan_files::OrphanFilesDetail;
    const PHASES: &'static [crate::jobs::contract::Phase] =
        crate::jobs::contract::orphan_files::PHASES;

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
        let plan = plan::check(
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
        if let Some(plan) = plan::planned_params(pool, params.confirm, params.plan_job_id).await? {
            params.min_age_hours = plan::planned_min_age(&plan, params.min_age_hours);
            params.prefixes = serde_json::from_value(plan["prefixes"].clone()).unwrap_or(None);
        }
        Ok(())
    }

    async fn plan(params: OrphanFilesParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        shape::require(&ctx.pool, Self::KIND, ORPHAN_NEEDS).await?;
        match params.plan_job_id.filter(|_| params.confirm) {
            Some(plan) => plan::preview(ctx, plan).await,
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

/// One prefix's count in an `orphan_files` plan.
#[derive(Default, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrefixTally {
    objects: u64,
    orphans: u64,
    orphan_bytes: u64,
    /// Unreferenced but younger than `min_age_hours`: perhaps an upload in flight.
    too_young: u64,
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
                orphans.push(plan::Planned {
                    item: key,
                    size: Some(meta.content_length() as i64),
                    last_modified,
                });
            }
            if !ctx.dry_run {
                plan::record(ctx, &orphans).await?;
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
/// A page of planned objects: kept when a row references it now, it changed, or it is gone.
struct Objects<'a> {
    op: &'a Operator,
    sources: Vec<&'static KeySource>,
}

impl plan::Decide for Objects<'_> {
    async fn decide(
        &mut self,
        ctx: &mut JobCtx,
        page: &[plan::Planned],
    ) -> Result<
        (
            Vec<&'static str>,
            Option<sqlx::Transaction<'static, sqlx::Postgres>>,
        ),
        JobError,
    > {
        let keys: Vec<String> = page.iter().map(|p| p.item.clone()).collect();
        // Referenced since the plan (a row was written for it): kept.
        let live = storage_refs::live(&ctx.pool, &self.sources, &keys).await?;
        let metas = stat_all(self.op, keys).await;
        let mut outcomes = Vec::with_capacity(page.len());
        let mut doomed = Vec::new();
        for (p, (_, meta)) in page.iter().zip(metas) {
            let outcome = if live.contains(&p.item) {
                "referenced"
            } else {
                match meta.map_err(|e| storage_failed("plan", e))? {
                    None => "gone",
                    Some(m) => {
                        let same_size = p.size.is_none_or(|s| s == m.content_length() as i64);
                        // Postgres keeps microseconds; file systems have nanoseconds.
                        let micros = |t: DateTime<Utc>| t.timestamp_micros();
                        let same_time = m.last_modified().map(|t| micros(to_chrono(t)))
                            == p.last_modified.map(micros);
                        if same_size && same_time {
                            doomed.push(p.item.clone());
                            "deleted"
                        } else {
                            "changed"
                        }
                    }
                }
            };
            outcomes.push(outcome);
        }
        ctx.failpoint("orphan_files.before_delete").await?;
        self.op
            .delete_iter(doomed)
            .await
            .map_err(|e| storage_failed("delete", e))?;
        Ok((outcomes, None))
    }
}

async fn apply_plan(
    params: OrphanFilesParams,
    plan_id: Uuid,
    ctx: &mut JobCtx,
) -> Result<Value, JobError> {
    let (config, op) = open(&params, ctx)?;
    let mut objects = Objects {
        op: &op,
        sources: sources(&ctx.pool).await?,
    };
    let phase = phase("delete planned orphans");
    let total = plan::confirm(
        ctx,
        plan_id,
        BATCH as i64,
        phase,
        "orphan_files.batch_committed",
        &mut objects,
    )
    .await?;
    let counts = plan::outcomes(ctx, plan_id).await?;
    let count = |o: &str| {
        counts
            .iter()
            .filter(|(_, k, _)| k == o)
            .map(|(_, _, n)| *n)
            .sum::<i64>()
    };
    let kept = plan::kept(ctx, plan_id, SAMPLE as i64).await?;
    ctx.count("objects", count("deleted") as u64);
    Ok(json!({
        "storage": config.describe(),
        "plan_job_id": plan_id,
        "planned": total,
        "deleted": count("deleted"),
        "kept_referenced": count("referenced"),
        "kept_changed": count("changed"),
        "already_gone": count("gone"),
        "handled_by_an_earlier_confirm": count("handled_by_an_earlier_confirm"),
        "kept_sample": kept.into_iter().map(|(k, o)| json!({"key": k, "why": o})).collect::<Vec<_>>(),
    }))
}
