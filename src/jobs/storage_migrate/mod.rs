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

use super::{JobCtx, JobError, JobKind, Progress, SpecError, fanout, storage_param};
use crate::config::Settings;
use crate::dify::{shape, storage_refs};
use crate::storage::listing::Listing;
use crate::storage::transfer::{self, MemoryBudget, Sha256Sum, Side, TransferError};
use crate::storage::{self, StorageConfig};

mod children;
mod copy;
mod database;
mod plan;
mod source_delete;

use children::*;
use copy::*;
use database::*;
use source_delete::*;

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
    /// Split the copy into this many child jobs (1..=64), by tenant prefix
    /// (`upload_files/<tenant_id>` and the like), that any daemon on this database claims.
    /// This job waits for them, then updates the database, cross-checks and deletes once.
    /// 1: the copy runs in this job.
    #[serde(default = "one")]
    #[schema(default = 1, minimum = 1, maximum = 64)]
    pub fan_out: u32,
}

fn one() -> u32 {
    1
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
    /// With `fan_out`: the child jobs that copy, queued with this checkpoint.
    #[serde(default)]
    children: Option<Children>,
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
            children: None,
        }
    }
}

impl JobKind for StorageMigrate {
    const KIND: &'static str = "storage_migrate";
    type Params = StorageMigrateParams;
    type Plan = crate::jobs::contract::storage_migrate::StorageMigratePlan;
    type Outcome = crate::jobs::contract::storage_migrate::StorageMigrateOutcome;
    type Detail = crate::jobs::contract::storage_migrate::StorageMigrateDetail;
    const PHASES: &'static [crate::jobs::contract::Phase] =
        crate::jobs::contract::storage_migrate::PHASES;

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
        if !(1..=fanout::MAX_CHILDREN).contains(&params.fan_out) {
            return Err(SpecError::invalid(
                "params.fan_out",
                format!("must be between 1 and {}", fanout::MAX_CHILDREN),
            ));
        }
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
        plan::plan(params, ctx).await
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
        let child = ctx.parent_id.is_some();
        if cp.phase == Phase::Copy {
            if params.fan_out > 1 && !child {
                copy_in_children(&params, ctx, &src, &mut cp).await?;
            } else {
                cp = Checkpoint::default();
                copy_all(&params, ctx, &src, &dst, &mut cp).await?;
            }
            // A child copies its share (again on a retry, for what failed); its parent does
            // the rest, once.
            if child {
                return child_result(ctx, &params, &cp).await;
            }
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

/// The job's ledger by outcome: objects and bytes.
struct Ledger {
    copied: i64,
    copied_bytes: i64,
    replaced: i64,
    replaced_bytes: i64,
    already: i64,
    already_bytes: i64,
}

impl Ledger {
    async fn of(ctx: &JobCtx) -> Result<Ledger, JobError> {
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
        Ok(Ledger {
            copied,
            copied_bytes,
            replaced,
            replaced_bytes,
            already,
            already_bytes,
        })
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
    let Ledger {
        copied,
        copied_bytes,
        replaced,
        replaced_bytes,
        already,
        already_bytes,
    } = Ledger::of(ctx).await?;
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
    let mut result = json!({
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
    });
    if let Some(children) = &cp.children {
        result["children"] = json!(children.ends);
    }
    Ok(result)
}
