//! `storage_migrate`: copies Dify's whole storage root (or chosen prefixes) from one backend to
//! another, streamed and verified, records every verified object in a ledger so a rerun copies
//! nothing twice, flips `upload_files.storage_type` for verified rows, cross-checks every key the
//! database references, and only then says whether `STORAGE_TYPE` may be switched.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use opendal::Operator;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{JobCtx, JobError, JobKind, Progress, SpecError, storage_param};
use crate::config::Settings;
use crate::dify::{shape, storage_refs};
use crate::storage::listing::Listing;
use crate::storage::transfer::{self, MemoryBudget, Sha256Sum, Side, TransferError};
use crate::storage::{self, StorageConfig};

/// Objects verified per ledger commit (also the checkpoint and cancel boundary).
const FLUSH_EVERY: usize = 64;
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Rows of `upload_files` per update transaction.
const DB_BATCH: i64 = 1000;
/// Keys checked per cross-check page.
const CHECK_PAGE: i64 = 500;
/// Failures and missing keys listed in a result (all are counted).
const SAMPLE: usize = 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verify {
    /// Sizes only.
    Size,
    /// Size and a SHA-256 computed from the source bytes, compared with the target's copy.
    #[default]
    Checksum,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageMigrateParams {
    /// Where to copy from. Default: Dify's local storage directory (`OPENDAL_FS_ROOT`, else
    /// `STORAGE_LOCAL_PATH`, else `storage`).
    #[serde(default)]
    #[schema(value_type = Option<StorageConfig>)]
    pub source: Option<Value>,
    /// Where to copy to. Default: the storage `STORAGE_TYPE` names.
    #[serde(default)]
    #[schema(value_type = Option<StorageConfig>)]
    pub target: Option<Value>,
    /// Directories (or root-level files) to copy; everything under the root when absent.
    #[serde(default)]
    pub prefixes: Option<Vec<String>>,
    /// Objects in flight at once (1..=64).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    #[serde(default)]
    pub verify: Verify,
    /// Set `upload_files.storage_type` to the target's type for rows whose object was verified.
    #[serde(default = "yes")]
    pub update_db: bool,
    /// Delete source objects once the whole migration is verified and safe to switch.
    #[serde(default)]
    pub delete_source: bool,
}

fn default_concurrency() -> u32 {
    8
}

fn yes() -> bool {
    true
}

pub struct StorageMigrate;

/// Source and target as the job will use them.
struct Ends {
    source: StorageConfig,
    target: StorageConfig,
}

impl Ends {
    fn resolve(params: &StorageMigrateParams, settings: &Settings) -> Result<Ends, SpecError> {
        // Parsed here rather than by serde so a bad field is named inside the config.
        let source = match &params.source {
            Some(v) => storage_param::parse(v, "source")?,
            None => storage::local_storage(&settings.storage),
        };
        let target = storage_param::resolve(params.target.as_ref(), "target", settings)?;
        if let (Some(a), Some(b)) = (source.local_root(), target.local_root()) {
            let (a, b) = (
                std::path::PathBuf::from(storage::config::absolute(a)),
                std::path::PathBuf::from(storage::config::absolute(b)),
            );
            if a.starts_with(&b) || b.starts_with(&a) {
                return Err(SpecError::invalid(
                    "params.target",
                    format!(
                        "{} and the source {} overlap; copy to a separate directory",
                        b.display(),
                        a.display()
                    ),
                ));
            }
        } else if source == target {
            return Err(SpecError::invalid(
                "params.target",
                format!(
                    "is the source itself ({}); set STORAGE_TYPE to the new backend or give params.target",
                    target.describe()
                ),
            ));
        }
        Ok(Ends { source, target })
    }

    fn operators(&self) -> Result<(Operator, Operator), SpecError> {
        let src = storage_param::open(&self.source, "source")?;
        let dst = storage_param::open(&self.target, "target")?;
        Ok((src, dst))
    }
}

/// `prefixes` as listing paths (`dir/`), checked to stay under the root.
fn prefix_paths(params: &StorageMigrateParams) -> Result<Vec<String>, SpecError> {
    let Some(prefixes) = &params.prefixes else {
        return Ok(vec![String::new()]);
    };
    if prefixes.is_empty() {
        return Err(SpecError::invalid(
            "params.prefixes",
            "must name at least one prefix (leave it out to copy everything)",
        ));
    }
    let mut paths = Vec::new();
    for (i, p) in prefixes.iter().enumerate() {
        let trimmed = p.trim_matches('/');
        let bad = trimmed.is_empty()
            || p.starts_with('/')
            || p.contains('\\')
            || trimmed
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..");
        if bad {
            return Err(SpecError::invalid(
                format!("params.prefixes[{i}]"),
                format!("{p:?} is not a relative path under the storage root"),
            ));
        }
        paths.push(trimmed.to_string());
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Copy,
    UpdateDb,
    CrossCheck,
    DeleteSource,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Failure {
    key: String,
    error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    phase: Phase,
    /// Objects the copy phase could not move (source errors), counted and sampled.
    failed: u64,
    failures: Vec<Failure>,
    /// Objects listed but gone by the time they were read (deleted by Dify meanwhile).
    vanished: u64,
    /// `upload_files.id` after which the DB update resumes.
    db_after: Option<Uuid>,
    rows_updated: u64,
    cross_check: Option<Value>,
}

impl Default for Checkpoint {
    fn default() -> Self {
        Checkpoint {
            phase: Phase::Copy,
            failed: 0,
            failures: Vec::new(),
            vanished: 0,
            db_after: None,
            rows_updated: 0,
            cross_check: None,
        }
    }
}

impl JobKind for StorageMigrate {
    const KIND: &'static str = "storage_migrate";
    type Params = StorageMigrateParams;

    fn resource_key(_: &StorageMigrateParams) -> Option<String> {
        // Two copies into one backend, or a copy beside a cleanup, must not interleave.
        Some("storage".into())
    }

    async fn validate(
        params: &StorageMigrateParams,
        pool: &PgPool,
        settings: &Settings,
    ) -> Result<(), SpecError> {
        storage_param::check_concurrency(params.concurrency)?;
        shape::require(pool, Self::KIND, storage_refs::KEY_NEEDS).await?;
        if params.delete_source && params.verify != Verify::Checksum {
            return Err(SpecError::invalid(
                "params.delete_source",
                "deleting the source needs verify: checksum",
            ));
        }
        prefix_paths(params)?;
        let ends = Ends::resolve(params, settings)?;
        storage_param::check_exists(&ends.source, "source", params.source.is_some())?;
        ends.operators()?;
        Ok(())
    }

    async fn plan(params: StorageMigrateParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        shape::require(&ctx.pool, Self::KIND, storage_refs::KEY_NEEDS).await?;
        let (ends, src, dst) = open(&params, ctx)?;
        let prefixes = prefix_paths(&params).map_err(invalid)?;
        ctx.progress(phase_progress("scan source and target"), true)
            .await?;
        #[derive(Default, Serialize)]
        struct Tally {
            objects: u64,
            bytes: u64,
            absent_on_target: u64,
            same_size_on_target: u64,
            different_on_target: u64,
        }
        let mut per_prefix: BTreeMap<String, Tally> = BTreeMap::new();
        let mut listing = Listing::new(&src, Side::Source, prefixes.clone());
        let mut scanned = 0u64;
        while let Some(batch) = listing.next_batch(256).await? {
            ctx.check_stop()?;
            let checks = futures_util::stream::iter(batch)
                .map(|(key, _)| {
                    let (src, dst) = (&src, &dst);
                    async move {
                        let object = transfer::stat_source(src, &key).await;
                        let there = transfer::target_size(dst, &key).await;
                        (key, object, there)
                    }
                })
                .buffer_unordered(params.concurrency as usize)
                .collect::<Vec<_>>()
                .await;
            for (key, object, there) in checks {
                let object = match object {
                    Ok(o) => o,
                    Err(e) if e.not_found => continue,
                    Err(e) => return Err(source_failed(e)),
                };
                let there = there.map_err(target_failed)?;
                let tally = per_prefix.entry(top_prefix(&key)).or_default();
                tally.objects += 1;
                tally.bytes += object.size;
                match there {
                    None => tally.absent_on_target += 1,
                    Some(size) if size == object.size => tally.same_size_on_target += 1,
                    Some(_) => tally.different_on_target += 1,
                }
                scanned += 1;
            }
            ctx.progress(
                Progress {
                    done: scanned,
                    ..phase_progress("scan source and target")
                },
                false,
            )
            .await?;
        }
        let refs = collect_refs(ctx).await?;
        let (missing_on_source, missing_sample) = refs_missing_on_source(ctx, &src).await?;
        clear_refs(ctx).await?;
        let objects: u64 = per_prefix.values().map(|t| t.objects).sum();
        let bytes: u64 = per_prefix.values().map(|t| t.bytes).sum();
        let same: u64 = per_prefix.values().map(|t| t.same_size_on_target).sum();
        Ok(json!({
            "source": ends.source.describe(),
            "target": ends.target.describe(),
            "objects": objects,
            "bytes": bytes,
            "prefixes": per_prefix,
            "would_skip_if_identical": same,
            "note": "objects of the same size on the target are skipped only if their SHA-256 matches; the run checks that",
            "db_references": {
                "total": refs,
                "missing_on_source": missing_on_source,
                "missing_sample": missing_sample,
            },
            "update_db": params.update_db.then(|| ends.target.dify_type()),
        }))
    }

    async fn run(params: StorageMigrateParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        shape::require(&ctx.pool, Self::KIND, storage_refs::KEY_NEEDS).await?;
        let (ends, src, dst) = open(&params, ctx)?;
        ctx.log(
            format!(
                "copying {} to {}",
                ends.source.describe(),
                ends.target.describe()
            ),
            Value::Null,
        )
        .await?;
        if let StorageConfig::AliyunOss(oss) = &ends.target
            && oss.path.is_none()
        {
            // Compose files up to Dify 1.14.0 turn an empty ALIYUN_OSS_PATH into `your-path`.
            ctx.warn(
                "the target has no path prefix; with Dify <= 1.14.0's compose an empty ALIYUN_OSS_PATH \
                 becomes \"your-path\" inside the api container: check what it sees \
                 (docker exec docker-api-1 printenv ALIYUN_OSS_PATH) and pass target.path if so",
                Value::Null,
            )
            .await?;
        }
        let mut cp: Checkpoint = ctx.checkpoint()?.unwrap_or_default();
        if cp.phase == Phase::Copy {
            cp = Checkpoint::default();
            copy_all(&params, ctx, &src, &dst, &mut cp).await?;
            cp.phase = Phase::UpdateDb;
            ctx.save_checkpoint(&ctx.pool.clone(), &cp).await?;
        }
        if cp.phase == Phase::UpdateDb {
            if params.update_db {
                update_db(ctx, &ends.target, &mut cp).await?;
            }
            cp.phase = Phase::CrossCheck;
            ctx.save_checkpoint(&ctx.pool.clone(), &cp).await?;
        }
        let check = match (&cp.phase, &cp.cross_check) {
            (Phase::DeleteSource, Some(check)) => check.clone(),
            _ => {
                let check = cross_check(ctx, &src, &dst).await?;
                cp.cross_check = Some(check.clone());
                cp.phase = Phase::DeleteSource;
                ctx.save_checkpoint(&ctx.pool.clone(), &cp).await?;
                check
            }
        };
        let safe = cp.failed == 0 && check["unsafe"].as_u64() == Some(0);
        let deleted = if params.delete_source && safe {
            delete_source(ctx, &src).await?
        } else {
            0
        };
        let result = summary(ctx, &ends, &params, &cp, check, safe, deleted).await?;
        let verified = result["copied"].as_u64().unwrap_or(0)
            + result["replaced"].as_u64().unwrap_or(0)
            + result["already_there"].as_u64().unwrap_or(0);
        ctx.progress(
            Progress {
                done: verified,
                total: Some(verified + cp.failed),
                detail: Some(json!({"bytes": result["bytes_verified"]})),
                ..phase_progress("finished")
            },
            true,
        )
        .await?;
        if cp.failed > 0 {
            return Err(JobError::Failed {
                code: "objects_failed",
                message: format!(
                    "{} object(s) could not be copied; first: {}",
                    cp.failed,
                    cp.failures
                        .first()
                        .map_or(String::new(), |f| format!("{}: {}", f.key, f.error))
                ),
                result: Some(result),
            });
        }
        Ok(result)
    }
}

use storage_param::invalid;

fn open(
    params: &StorageMigrateParams,
    ctx: &JobCtx,
) -> Result<(Ends, Operator, Operator), JobError> {
    let ends = Ends::resolve(params, &ctx.settings).map_err(invalid)?;
    let (src, dst) = ends.operators().map_err(invalid)?;
    Ok((ends, src, dst))
}

fn phase_progress(phase: &str) -> Progress {
    Progress {
        phase: phase.into(),
        unit: "objects".into(),
        ..Default::default()
    }
}

fn source_failed(e: TransferError) -> JobError {
    JobError::failed("source_failed", format!("source: {e}"))
}

fn target_failed(e: TransferError) -> JobError {
    JobError::failed("target_failed", format!("target: {e}"))
}

/// The first path segment, or `(root)` for files at the root: how the dry run groups objects.
fn top_prefix(key: &str) -> String {
    match key.split_once('/') {
        Some((top, _)) => top.to_string(),
        None => "(root)".to_string(),
    }
}

/// One object verified on the target.
struct Verified {
    key: String,
    size: u64,
    /// Of the source bytes.
    sha256: Sha256Sum,
    outcome: &'static str,
}

/// What the target's listing said about a key.
#[derive(Clone, Copy)]
enum OnTarget {
    Absent,
    /// Listed, with its size (0 when the listing did not say).
    Listed(u64),
}

impl OnTarget {
    /// The size, asking the target only when the listing did not say.
    async fn size(self, dst: &Operator, key: &str) -> Result<Option<u64>, TransferError> {
        match self {
            OnTarget::Absent => Ok(None),
            OnTarget::Listed(0) => transfer::target_size(dst, key).await,
            OnTarget::Listed(n) => Ok(Some(n)),
        }
    }
}

/// Copies (or confirms) one object: skipped only when the target holds the same bytes.
async fn migrate_object(
    src: Operator,
    dst: Operator,
    key: String,
    on_target: OnTarget,
    verify: Verify,
    budget: MemoryBudget,
) -> Result<Verified, TransferError> {
    let object = transfer::stat_source(&src, &key).await?;
    let mut outcome = "copied";
    if let Some(size) = on_target.size(&dst, &key).await? {
        outcome = "replaced";
        if size == object.size {
            let (len, sha) = transfer::hash_object(&src, Side::Source, &key, size, &budget).await?;
            let (tlen, tsha) =
                transfer::hash_object(&dst, Side::Target, &key, size, &budget).await?;
            if len == tlen && sha == tsha {
                return Ok(Verified {
                    key,
                    size: len,
                    sha256: sha,
                    outcome: "already_there",
                });
            }
        }
    }
    let written = transfer::copy(&src, &dst, &object, &budget).await?;
    // An ETag equal to the MD5 of what was sent already proves the stored bytes; otherwise
    // the copy is checked here.
    if !written.server_verified {
        let expected = (verify == Verify::Checksum).then_some(&written.sha256);
        transfer::verify(&dst, &object.key, written.len, expected, &budget).await?;
    }
    Ok(Verified {
        key,
        size: written.len,
        sha256: written.sha256,
        outcome,
    })
}

/// What this attempt has done so far, for progress.
#[derive(Default)]
struct Counters {
    done: u64,
    bytes: u64,
    copied: u64,
    already_there: u64,
    replaced: u64,
}

async fn copy_all(
    params: &StorageMigrateParams,
    ctx: &mut JobCtx,
    src: &Operator,
    dst: &Operator,
    cp: &mut Checkpoint,
) -> Result<(), JobError> {
    let prefixes = prefix_paths(params).map_err(invalid)?;
    // A first pass for the total: listing is cheap next to copying, and an ETA needs it.
    ctx.progress(phase_progress("list source"), true).await?;
    let mut total = 0u64;
    let mut listing = Listing::new(src, Side::Source, prefixes.clone());
    while let Some(batch) = listing.next_batch(1000).await? {
        ctx.check_stop()?;
        total += batch.len() as u64;
    }
    let (recorded, recorded_bytes): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), sum(size)::bigint FROM upkeep.storage_objects WHERE job_id = $1",
    )
    .bind(ctx.job_id)
    .fetch_one(&ctx.pool)
    .await?;
    let mut counters = Counters {
        done: recorded as u64,
        bytes: recorded_bytes.unwrap_or(0) as u64,
        ..Default::default()
    };
    let listed_on_target = list_target(ctx, dst, &prefixes).await?;
    let started = Instant::now();
    let bytes_at_start = counters.bytes;
    let limit = Arc::new(Semaphore::new(params.concurrency as usize));
    let budget = MemoryBudget::default();
    let mut tasks: JoinSet<Result<Option<Verified>, TransferError>> = JoinSet::new();
    let mut pending: Vec<Verified> = Vec::new();
    let mut last_flush = Instant::now();
    let mut listing = Listing::new(src, Side::Source, prefixes.clone());
    let mut stop: Option<JobError> = None;

    'listing: while let Some(batch) = listing.next_batch(512).await? {
        let recorded: Vec<(String, i64)> = sqlx::query_as(
            "SELECT key, size FROM upkeep.storage_objects WHERE job_id = $1 AND key = ANY($2)",
        )
        .bind(ctx.job_id)
        .bind(batch.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
        .fetch_all(&ctx.pool)
        .await?;
        let recorded: std::collections::HashMap<String, i64> = recorded.into_iter().collect();
        let keys: Vec<&str> = batch.iter().map(|(k, _)| k.as_str()).collect();
        let listed: Vec<(String, i64)> = if listed_on_target == 0 {
            Vec::new()
        } else {
            sqlx::query_as(
                "SELECT key, size FROM upkeep.storage_target WHERE job_id = $1 AND key = ANY($2)",
            )
            .bind(ctx.job_id)
            .bind(&keys)
            .fetch_all(&ctx.pool)
            .await?
        };
        let listed: std::collections::HashMap<String, i64> = listed.into_iter().collect();
        for (key, _) in batch {
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => p,
                _ = ctx.stop_signal() => { stop = ctx.check_stop().err(); break 'listing; }
            };
            let Ok(permit) = permit else { break 'listing };
            let (src, dst, budget) = (src.clone(), dst.clone(), budget.clone());
            let verify = params.verify;
            let recorded_size = recorded.get(&key).copied();
            let on_target = match listed.get(&key) {
                Some(size) => OnTarget::Listed(*size as u64),
                None => OnTarget::Absent,
            };
            tasks.spawn(async move {
                let r = match recorded_size {
                    // Verified by an earlier attempt: only make sure the target still has it.
                    Some(size) => match on_target.size(&dst, &key).await {
                        Ok(Some(s)) if s as i64 == size => Ok(None),
                        Ok(_) => migrate_object(src, dst, key, on_target, verify, budget)
                            .await
                            .map(Some),
                        Err(e) => Err(e),
                    },
                    None => migrate_object(src, dst, key, on_target, verify, budget)
                        .await
                        .map(Some),
                };
                drop(permit);
                r
            });
            while let Some(joined) = tasks.try_join_next() {
                if let Err(e) = collect(joined, &mut pending, cp) {
                    stop = Some(e);
                    break 'listing;
                }
            }
            if pending.len() >= FLUSH_EVERY || last_flush.elapsed() >= FLUSH_INTERVAL {
                flush(ctx, &mut pending, cp, &mut counters).await?;
                last_flush = Instant::now();
                report(ctx, &counters, total, started, bytes_at_start).await?;
                if let Err(e) = ctx.check_stop() {
                    stop = Some(e);
                    break 'listing;
                }
            }
        }
    }
    // Finish what is in flight (or, when stopping, keep what already finished).
    if stop.is_some() {
        tasks.abort_all();
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = collect(joined, &mut pending, cp)
            && stop.is_none()
        {
            stop = Some(e);
        }
    }
    flush(ctx, &mut pending, cp, &mut counters).await?;
    report(ctx, &counters, total, started, bytes_at_start).await?;
    sqlx::query("DELETE FROM upkeep.storage_target WHERE job_id = $1")
        .bind(ctx.job_id)
        .execute(&ctx.pool)
        .await?;
    match stop {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Records the target's listing under the prefixes in `upkeep.storage_target`; returns how
/// many objects it holds.
async fn list_target(
    ctx: &mut JobCtx,
    dst: &Operator,
    prefixes: &[String],
) -> Result<u64, JobError> {
    ctx.progress(phase_progress("list target"), true).await?;
    sqlx::query("DELETE FROM upkeep.storage_target WHERE job_id = $1")
        .bind(ctx.job_id)
        .execute(&ctx.pool)
        .await?;
    let mut listing = Listing::new(dst, Side::Target, prefixes.to_vec());
    let mut n = 0u64;
    while let Some(batch) = listing.next_batch(1000).await? {
        ctx.check_stop()?;
        n += batch.len() as u64;
        let (keys, sizes): (Vec<String>, Vec<i64>) =
            batch.into_iter().map(|(k, s)| (k, s as i64)).unzip();
        sqlx::query(
            "INSERT INTO upkeep.storage_target (job_id, key, size) \
             SELECT $1, * FROM unnest($2::text[], $3::bigint[]) ON CONFLICT DO NOTHING",
        )
        .bind(ctx.job_id)
        .bind(&keys)
        .bind(&sizes)
        .execute(&ctx.pool)
        .await?;
    }
    Ok(n)
}

/// Sorts one finished transfer: verified, a skippable source problem, or a reason to stop.
fn collect(
    joined: Result<Result<Option<Verified>, TransferError>, tokio::task::JoinError>,
    pending: &mut Vec<Verified>,
    cp: &mut Checkpoint,
) -> Result<(), JobError> {
    match joined {
        Ok(Ok(Some(v))) => pending.push(v),
        Ok(Ok(None)) => {}
        // Dify deleted it after the listing: nothing to copy.
        Ok(Err(e)) if e.side == Side::Source && e.not_found => cp.vanished += 1,
        Ok(Err(e)) if e.side == Side::Source => {
            cp.failed += 1;
            if cp.failures.len() < SAMPLE {
                cp.failures.push(Failure {
                    key: e.key.clone(),
                    error: e.to_string(),
                });
            }
        }
        Ok(Err(e)) => {
            return Err(JobError::failed(
                "target_failed",
                format!("target failed: {e}"),
            ));
        }
        Err(e) if e.is_cancelled() => {}
        Err(e) => return Err(JobError::failed("internal", format!("transfer task: {e}"))),
    }
    Ok(())
}

/// Records verified objects in the ledger, with the checkpoint, in one transaction.
async fn flush(
    ctx: &mut JobCtx,
    pending: &mut Vec<Verified>,
    cp: &Checkpoint,
    counters: &mut Counters,
) -> Result<(), JobError> {
    if pending.is_empty() {
        return Ok(());
    }
    ctx.failpoint("storage_migrate.before_flush").await?;
    let n = pending.len() as u64;
    let keys: Vec<&str> = pending.iter().map(|v| v.key.as_str()).collect();
    let sizes: Vec<i64> = pending.iter().map(|v| v.size as i64).collect();
    let shas: Vec<Vec<u8>> = pending.iter().map(|v| v.sha256.to_vec()).collect();
    let outcomes: Vec<&str> = pending.iter().map(|v| v.outcome).collect();
    let mut tx = ctx.pool.begin().await?;
    sqlx::query(
        "INSERT INTO upkeep.storage_objects (job_id, key, size, sha256, outcome) \
         SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::bytea[], $5::text[]) \
         ON CONFLICT (job_id, key) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, \
         outcome = excluded.outcome, verified_at = now()",
    )
    .bind(ctx.job_id)
    .bind(&keys)
    .bind(&sizes)
    .bind(&shas)
    .bind(&outcomes)
    .execute(&mut *tx)
    .await?;
    drop((keys, outcomes));
    ctx.save_checkpoint(&mut *tx, cp).await?;
    tx.commit().await?;
    for v in pending.drain(..) {
        counters.done += 1;
        counters.bytes += v.size;
        match v.outcome {
            "copied" => counters.copied += 1,
            "replaced" => counters.replaced += 1,
            _ => counters.already_there += 1,
        }
    }
    ctx.count("objects", n);
    ctx.failpoint("storage_migrate.flushed").await?;
    Ok(())
}

async fn report(
    ctx: &mut JobCtx,
    c: &Counters,
    total: u64,
    started: Instant,
    bytes_at_start: u64,
) -> Result<(), JobError> {
    let secs = started.elapsed().as_secs_f64();
    let bytes_rate = (secs > 0.0).then(|| (c.bytes - bytes_at_start) as f64 / secs);
    ctx.progress(
        Progress {
            phase: "copy".into(),
            done: c.done,
            total: Some(total.max(c.done)),
            unit: "objects".into(),
            detail: Some(json!({
                "bytes": c.bytes,
                "bytes_per_s": bytes_rate.map(|r| r.round()),
                "copied": c.copied,
                "replaced": c.replaced,
                "already_there": c.already_there,
            })),
            ..Default::default()
        },
        false,
    )
    .await
}

/// Sets `upload_files.storage_type` for rows whose key is verified on the target, in short
/// keyset batches so Dify's own writes never wait long.
async fn update_db(
    ctx: &mut JobCtx,
    target: &StorageConfig,
    cp: &mut Checkpoint,
) -> Result<(), JobError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('public.upload_files') IS NOT NULL")
        .fetch_one(&ctx.pool)
        .await?;
    if !exists {
        return Ok(());
    }
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM upkeep.storage_objects WHERE job_id = $1")
            .bind(ctx.job_id)
            .fetch_one(&ctx.pool)
            .await?;
    let mut scanned = 0u64;
    loop {
        ctx.check_stop()?;
        let mut tx = ctx.pool.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '5s'")
            .execute(&mut *tx)
            .await?;
        let (last, rows, updated): (Option<Uuid>, i64, i64) = sqlx::query_as(
            "WITH batch AS ( \
                 SELECT id, key FROM public.upload_files \
                 WHERE $1::uuid IS NULL OR id > $1 ORDER BY id LIMIT $2), \
             updated AS ( \
                 UPDATE public.upload_files u SET storage_type = $3 \
                 FROM batch b JOIN upkeep.storage_objects o ON o.job_id = $4 AND o.key = b.key \
                 WHERE u.id = b.id AND u.storage_type <> $3 RETURNING 1) \
             SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1), \
                    (SELECT count(*) FROM batch), (SELECT count(*) FROM updated)",
        )
        .bind(cp.db_after)
        .bind(DB_BATCH)
        .bind(target.dify_type())
        .bind(ctx.job_id)
        .fetch_one(&mut *tx)
        .await?;
        cp.rows_updated += updated as u64;
        cp.db_after = last;
        ctx.save_checkpoint(&mut *tx, cp).await?;
        tx.commit().await?;
        scanned += rows as u64;
        ctx.progress(
            Progress {
                phase: "update upload_files.storage_type".into(),
                done: scanned,
                unit: "rows".into(),
                detail: Some(json!({"updated": cp.rows_updated, "verified_objects": total})),
                ..Default::default()
            },
            false,
        )
        .await?;
        if rows < DB_BATCH {
            return Ok(());
        }
    }
}

async fn collect_refs(ctx: &JobCtx) -> Result<u64, JobError> {
    let sources = storage_refs::present(&ctx.pool).await?;
    Ok(storage_refs::collect(&ctx.pool, ctx.job_id, &sources).await?)
}

async fn clear_refs(ctx: &JobCtx) -> Result<(), JobError> {
    Ok(storage_refs::clear(&ctx.pool, ctx.job_id).await?)
}

/// A referenced key, what references it, and the ledger's size when it was verified.
type RefRow = (String, String, Option<i64>);

/// Pages through `upkeep.storage_refs` by key, checking for a stop between pages.
#[derive(Default)]
struct RefPages {
    after: String,
}

impl RefPages {
    async fn next(&mut self, ctx: &JobCtx) -> Result<Option<Vec<RefRow>>, JobError> {
        ctx.check_stop()?;
        let page: Vec<RefRow> = sqlx::query_as(
            "SELECT r.key, r.source, o.size FROM upkeep.storage_refs r \
             LEFT JOIN upkeep.storage_objects o ON o.job_id = r.job_id AND o.key = r.key \
             WHERE r.job_id = $1 AND r.key > $2 ORDER BY r.key LIMIT $3",
        )
        .bind(ctx.job_id)
        .bind(&self.after)
        .bind(CHECK_PAGE)
        .fetch_all(&ctx.pool)
        .await?;
        match page.last() {
            Some((last, _, _)) => {
                self.after = last.clone();
                Ok(Some(page))
            }
            None => Ok(None),
        }
    }
}

/// For the dry run: referenced keys the source does not have.
async fn refs_missing_on_source(
    ctx: &mut JobCtx,
    src: &Operator,
) -> Result<(u64, Vec<Value>), JobError> {
    let (mut missing, mut sample) = (0u64, Vec::new());
    let mut pages = RefPages::default();
    while let Some(page) = pages.next(ctx).await? {
        let found = stat_all(src, page.iter().map(|(k, _, _)| k.clone()).collect()).await;
        for ((key, source, _), present) in page.into_iter().zip(found) {
            if !present.map_err(source_failed)? {
                missing += 1;
                if sample.len() < SAMPLE {
                    sample.push(json!({"key": key, "referenced_by": source}));
                }
            }
        }
    }
    Ok((missing, sample))
}

/// Whether each key exists, asked with some concurrency, in order.
async fn stat_all(op: &Operator, keys: Vec<String>) -> Vec<Result<bool, TransferError>> {
    futures_util::stream::iter(keys)
        .map(|key| async move {
            match transfer::stat_source(op, &key).await {
                Ok(_) => Ok(true),
                Err(e) if e.not_found => Ok(false),
                Err(e) => Err(e),
            }
        })
        .buffered(32)
        .collect()
        .await
}

/// Every key the database references must be verified in the ledger and still on the target
/// with the verified size. Reports what is not, and why.
async fn cross_check(ctx: &mut JobCtx, src: &Operator, dst: &Operator) -> Result<Value, JobError> {
    ctx.progress(phase_progress("cross-check database references"), true)
        .await?;
    let referenced = collect_refs(ctx).await?;
    let (mut verified, mut not_copied, mut missing_on_source, mut not_on_target) =
        (0u64, 0u64, 0u64, 0u64);
    let mut sample = Vec::new();
    let mut checked = 0u64;
    let mut pages = RefPages::default();
    while let Some(page) = pages.next(ctx).await? {
        let lookups: Vec<(String, bool)> = page
            .iter()
            .map(|(k, _, s)| (k.clone(), s.is_some()))
            .collect();
        let on_target = futures_util::stream::iter(lookups)
            .map(|(key, verified)| async move {
                match verified {
                    true => transfer::target_size(dst, &key).await.map(Some),
                    false => Ok(None),
                }
            })
            .buffered(32)
            .collect::<Vec<_>>()
            .await;
        let unverified: Vec<String> = page
            .iter()
            .filter(|(_, _, size)| size.is_none())
            .map(|(k, _, _)| k.clone())
            .collect();
        let mut on_source = stat_all(src, unverified).await.into_iter();
        for ((key, source, size), there) in page.into_iter().zip(on_target) {
            let why = match size {
                Some(size) => match there.map_err(target_failed)? {
                    Some(Some(t)) if t as i64 == size => {
                        verified += 1;
                        continue;
                    }
                    _ => {
                        not_on_target += 1;
                        "verified earlier but no longer on the target with the same size"
                    }
                },
                None => match on_source.next() {
                    Some(Ok(true)) => {
                        not_copied += 1;
                        "on the source but not copied (outside prefixes, or failed)"
                    }
                    Some(Ok(false)) => {
                        missing_on_source += 1;
                        "missing on the source too (Dify cannot read it today either)"
                    }
                    Some(Err(e)) => return Err(source_failed(e)),
                    None => return Err(JobError::failed("internal", "cross-check lost a key")),
                },
            };
            if sample.len() < SAMPLE {
                sample.push(json!({"key": key, "referenced_by": source, "why": why}));
            }
        }
        checked += CHECK_PAGE as u64;
        ctx.progress(
            Progress {
                done: checked.min(referenced),
                total: Some(referenced),
                ..phase_progress("cross-check database references")
            },
            false,
        )
        .await?;
    }
    // Not in the database, but Dify 1.14.1+ cannot start the same without it.
    let secret = ".dify_secret_key";
    let secret_on_source = stat_all(src, vec![secret.to_string()])
        .await
        .pop()
        .transpose()
        .map_err(source_failed)?
        .unwrap_or(false);
    let secret_verified: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM upkeep.storage_objects WHERE job_id = $1 AND key = $2)",
    )
    .bind(ctx.job_id)
    .bind(secret)
    .fetch_one(&ctx.pool)
    .await?;
    let secret_missing = secret_on_source && !secret_verified;
    if secret_missing && sample.len() < SAMPLE {
        sample.push(json!({"key": secret, "referenced_by": "Dify's generated SECRET_KEY", "why": "on the source but not copied"}));
    }
    clear_refs(ctx).await?;
    let unsafe_count = not_copied + missing_on_source + not_on_target + u64::from(secret_missing);
    Ok(json!({
        "referenced": referenced,
        "verified": verified,
        "not_copied": not_copied + u64::from(secret_missing),
        "missing_on_source": missing_on_source,
        "not_on_target": not_on_target,
        "unsafe": unsafe_count,
        "missing": sample,
    }))
}

/// Deletes source objects recorded as verified, in ledger batches; an object that changed on
/// the source since it was copied is kept.
async fn delete_source(ctx: &mut JobCtx, src: &Operator) -> Result<u64, JobError> {
    let mut deleted = 0u64;
    loop {
        ctx.check_stop()?;
        let batch: Vec<(String, i64)> = sqlx::query_as(
            "SELECT key, size FROM upkeep.storage_objects \
             WHERE job_id = $1 AND source_deleted_at IS NULL ORDER BY key LIMIT 256",
        )
        .bind(ctx.job_id)
        .fetch_all(&ctx.pool)
        .await?;
        if batch.is_empty() {
            return Ok(deleted);
        }
        let results = futures_util::stream::iter(batch.clone())
            .map(|(key, size)| async move {
                match transfer::stat_source(src, &key).await {
                    Ok(o) if o.size as i64 == size => src
                        .delete(&key)
                        .await
                        .map(|()| true)
                        .map_err(|e| format!("deleting {key}: {e}")),
                    Ok(_) => Ok(false),
                    Err(e) if e.not_found => Ok(false),
                    Err(e) => Err(e.to_string()),
                }
            })
            .buffered(16)
            .collect::<Vec<_>>()
            .await;
        let mut done_keys = Vec::new();
        for ((key, _), r) in batch.iter().zip(results) {
            match r {
                Ok(d) => {
                    deleted += u64::from(d);
                    done_keys.push(key.clone());
                }
                Err(e) => return Err(JobError::failed("source_failed", format!("source: {e}"))),
            }
        }
        sqlx::query(
            "UPDATE upkeep.storage_objects SET source_deleted_at = now() \
             WHERE job_id = $1 AND key = ANY($2)",
        )
        .bind(ctx.job_id)
        .bind(&done_keys)
        .execute(&ctx.pool)
        .await?;
        ctx.progress(
            Progress {
                done: deleted,
                ..phase_progress("delete source objects")
            },
            false,
        )
        .await?;
    }
}

async fn summary(
    ctx: &JobCtx,
    ends: &Ends,
    params: &StorageMigrateParams,
    cp: &Checkpoint,
    check: Value,
    safe: bool,
    deleted: u64,
) -> Result<Value, JobError> {
    let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT outcome, count(*), sum(size)::bigint FROM upkeep.storage_objects \
         WHERE job_id = $1 GROUP BY outcome",
    )
    .bind(ctx.job_id)
    .fetch_all(&ctx.pool)
    .await?;
    let get = |o: &str| {
        rows.iter()
            .find(|(k, _, _)| k == o)
            .map_or((0, 0), |(_, n, b)| (*n, b.unwrap_or(0)))
    };
    let (copied, copied_bytes) = get("copied");
    let (replaced, replaced_bytes) = get("replaced");
    let (already, already_bytes) = get("already_there");
    let target_type = ends.target.dify_type();
    let verdict = if safe {
        format!(
            "safe to switch STORAGE_TYPE to {target_type}: every object the database references is verified on {}",
            ends.target.describe()
        )
    } else if cp.failed > 0 {
        format!(
            "NOT safe to switch STORAGE_TYPE: {} object(s) failed to copy",
            cp.failed
        )
    } else {
        format!(
            "NOT safe to switch STORAGE_TYPE: {} referenced object(s) are not verified on the target (see cross_check.missing)",
            check["unsafe"]
        )
    };
    Ok(json!({
        "source": ends.source.describe(),
        "target": ends.target.describe(),
        "copied": copied,
        "replaced": replaced,
        "already_there": already,
        "failed": cp.failed,
        "vanished_from_source": cp.vanished,
        "bytes_copied": copied_bytes + replaced_bytes,
        "bytes_verified": copied_bytes + replaced_bytes + already_bytes,
        "verify": params.verify,
        "failures": cp.failures,
        "db": params.update_db.then(|| json!({
            "storage_type": target_type,
            "rows_updated": cp.rows_updated,
        })),
        "cross_check": check,
        "source_deleted": deleted,
        "safe_to_switch": safe,
        "summary": verdict,
    }))
}
