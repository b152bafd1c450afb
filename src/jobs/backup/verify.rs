//! `backup_verify`: re-reads every file of a set and every object its storage index names,
//! and checks size and SHA-256 against the manifest (`pg_verifybackup`, `restic check
//! --read-data`). With `restore_test` it also restores the database part into a scratch
//! database and compares row counts with the manifest.

use futures_util::StreamExt;
use opendal::Operator;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::ToSchema;

use super::{repo_config, repo_failed};
use crate::backup::repo::{self, IndexReader, Manifest};
use crate::config::Settings;
use crate::jobs::{JobCtx, JobError, JobKind, Progress, SpecError, storage_param};
use crate::storage::StorageConfig;
use crate::storage::transfer::{self, MemoryBudget, Side, hex};

/// Problems listed in a result (all are counted).
const LISTED: usize = 100;
const BATCH: usize = 256;
const CONCURRENCY: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupVerifyParams {
    /// The repository. Default: `UPKEEP_BACKUP_TARGET`, else `UPKEEP_BACKUP_DIR`.
    #[serde(default)]
    #[schema(value_type = Option<StorageConfig>)]
    pub source: Option<Value>,
    /// A set id (`20261203T030002Z-0192ab3f`) or `latest` (the newest complete set).
    pub set: String,
    /// Also restore the database part into a scratch database on the same server, compare row
    /// counts with the manifest, and drop it.
    #[serde(default)]
    pub restore_test: bool,
}

pub struct BackupVerify;

/// A file or object of a set that does not match its manifest.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Problem {
    pub path: String,
    /// The storage key the object holds, for objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `missing`, `size`, `sha256` or `unreadable`.
    pub problem: &'static str,
    pub expected: String,
    pub found: Option<String>,
}

/// A set read back against its manifest.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetCheck {
    pub files: u64,
    pub objects: u64,
    pub bytes_read: u64,
    pub problems_total: u64,
    pub problems: Vec<Problem>,
}

impl SetCheck {
    fn add(&mut self, p: Problem) {
        self.problems_total += 1;
        if self.problems.len() < LISTED {
            self.problems.push(p);
        }
    }

    pub fn message(&self, set: &str) -> String {
        let named: Vec<String> = self
            .problems
            .iter()
            .take(20)
            .map(|p| format!("{} ({})", p.path, p.problem))
            .collect();
        format!(
            "set {set} does not match its manifest: {} file(s) missing or changed: {}",
            self.problems_total,
            named.join(", ")
        )
    }
}

/// Resolves `latest` and checks the id; the set must have its manifest.
pub async fn resolve_set(op: &Operator, set: &str) -> Result<Manifest, JobError> {
    let id = if set == "latest" {
        repo::complete_sets(op)
            .await
            .map_err(repo_failed)?
            .pop()
            .ok_or_else(|| {
                JobError::failed("set_incomplete", "the repository holds no complete set")
            })?
    } else {
        set.to_string()
    };
    repo::read_manifest(op, &id).await.map_err(repo_failed)
}

pub fn check_set_param(set: &str) -> Result<(), SpecError> {
    if set != "latest" && !repo::valid_set_id(set) {
        return Err(SpecError::invalid(
            "params.set",
            format!("{set:?} is not a set id (like 20261203T030002Z-0192ab3f) or \"latest\""),
        ));
    }
    Ok(())
}

pub fn open_source(
    value: Option<&Value>,
    ctx: &JobCtx,
) -> Result<(StorageConfig, Operator), JobError> {
    let config = repo_config(value, "source", &ctx.settings).map_err(storage_param::invalid)?;
    let op = storage_param::open(&config, "source").map_err(storage_param::invalid)?;
    Ok((config, op))
}

impl JobKind for BackupVerify {
    const KIND: &'static str = "backup_verify";
    type Params = BackupVerifyParams;
    type Plan = crate::jobs::contract::backup_verify::BackupVerifyPlan;
    type Outcome = crate::jobs::contract::backup_verify::BackupVerifyResult;
    type Detail = crate::jobs::contract::backup_verify::BackupVerifyDetail;
    const PHASES: &'static [crate::jobs::contract::Phase] =
        crate::jobs::contract::backup_verify::PHASES;

    fn resource_key(_: &BackupVerifyParams) -> Option<String> {
        None
    }

    async fn validate(
        params: &BackupVerifyParams,
        _pool: &PgPool,
        settings: &Settings,
    ) -> Result<(), SpecError> {
        check_set_param(&params.set)?;
        let config = repo_config(params.source.as_ref(), "source", settings)?;
        storage_param::check_exists(&config, "source", params.source.is_some())?;
        storage_param::open(&config, "source")?;
        Ok(())
    }

    async fn plan(params: BackupVerifyParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let (config, op) = open_source(params.source.as_ref(), ctx)?;
        let m = resolve_set(&op, &params.set).await?;
        Ok(json!({
            "source": config.describe(),
            "set": m.set,
            "files": m.files.len(),
            "objects": m.storage.as_ref().map(|s| s.objects),
            "bytes": m.files.iter().map(|f| f.size).sum::<u64>() + m.storage.as_ref().map_or(0, |s| s.bytes),
            "restore_test": params.restore_test && m.database.is_some(),
        }))
    }

    async fn run(params: BackupVerifyParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let (config, op) = open_source(params.source.as_ref(), ctx)?;
        let m = resolve_set(&op, &params.set).await?;
        let check = verify_set(ctx, &op, &m, true).await?;
        let mut result = json!({
            "source": config.describe(),
            "set": m.set,
            "dify": m.dify,
            "verify": check,
        });
        if !check.problems.is_empty() {
            return Err(JobError::Failed {
                code: "verify_failed",
                message: check.message(&m.set),
                result: Some(result),
            });
        }
        if params.restore_test && m.database.is_some() {
            let test = crate::jobs::restore::database::restore_test(ctx, &op, &m).await?;
            let ok = test["matches"].as_bool() == Some(true);
            result["restore_test"] = test;
            if !ok {
                return Err(JobError::Failed {
                    code: "restore_test_failed",
                    message: format!(
                        "set {}: the restored database's row counts differ from the manifest",
                        m.set
                    ),
                    result: Some(result),
                });
            }
        }
        crate::backup::sets::mark_verified(&ctx.pool, &config.describe(), &m.set).await?;
        Ok(result)
    }
}

fn progress(done: u64, total: u64) -> Progress {
    Progress {
        phase: "verify".into(),
        done,
        total: Some(total),
        unit: "files".into(),
        ..Default::default()
    }
}

/// Checks every file of `m`, and every object its index names: by content when `read_data`,
/// else by size (a backup just wrote and checked them).
pub async fn verify_set(
    ctx: &mut JobCtx,
    op: &Operator,
    m: &Manifest,
    read_data: bool,
) -> Result<SetCheck, JobError> {
    let mut check = SetCheck::default();
    let total = m.files.len() as u64 + m.storage.as_ref().map_or(0, |s| s.objects);
    let budget = MemoryBudget::default();
    let mut done = 0u64;
    let files: Vec<(String, Option<String>, u64, String)> = m
        .files
        .iter()
        .map(|f| (f.path.clone(), None, f.size, f.sha256.clone()))
        .collect();
    for batch in files.chunks(BATCH) {
        check_batch(op, batch, true, &budget, &mut check).await;
        done += batch.len() as u64;
        check.files += batch.len() as u64;
        ctx.check_stop()?;
        ctx.progress(progress(done, total), false).await?;
    }
    let index_ok = m
        .storage
        .as_ref()
        .is_some_and(|s| !check.problems.iter().any(|p| p.path == s.index.path));
    // Without reading data, sizes come from one listing of `objects/` (a request per thousand
    // objects), not a request per object.
    let listed = match (&m.storage, index_ok, read_data) {
        (Some(_), true, false) => Some(repo::known_objects(op).await.map_err(repo_failed)?),
        _ => None,
    };
    if let (Some(s), true) = (&m.storage, index_ok) {
        let mut lines = IndexReader::open(op, &s.index.path)
            .await
            .map_err(repo_failed)?;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let line = lines.next().await.map_err(repo_failed)?;
            let end = line.is_none();
            if let Some(l) = line {
                let path = repo::object_path(&repo::parse_hex(&l.h).unwrap_or_default());
                batch.push((path, Some(l.k), l.s, l.h));
            }
            if batch.len() >= BATCH || (end && !batch.is_empty()) {
                match &listed {
                    Some(listed) => check_listed(listed, &batch, &mut check),
                    None => check_batch(op, &batch, read_data, &budget, &mut check).await,
                }
                done += batch.len() as u64;
                check.objects += batch.len() as u64;
                batch.clear();
                ctx.check_stop()?;
                ctx.progress(progress(done, total), false).await?;
            }
            if end {
                break;
            }
        }
    }
    ctx.progress(progress(done, total), true).await?;
    Ok(check)
}

/// Objects against the listing's sizes (0: the listing did not say, taken as present).
fn check_listed(
    listed: &std::collections::HashMap<crate::storage::transfer::Sha256Sum, u64>,
    batch: &[(String, Option<String>, u64, String)],
    check: &mut SetCheck,
) {
    for (path, key, size, sha) in batch {
        let found = repo::parse_hex(sha).and_then(|h| listed.get(&h).copied());
        let problem = match found {
            None => Some(("missing", None)),
            Some(s) if s != 0 && s != *size => Some(("size", Some(s.to_string()))),
            Some(_) => None,
        };
        if let Some((problem, found)) = problem {
            check.add(Problem {
                path: path.clone(),
                key: key.clone(),
                problem,
                expected: size.to_string(),
                found,
            });
        }
    }
}

async fn check_batch(
    op: &Operator,
    batch: &[(String, Option<String>, u64, String)],
    read_data: bool,
    budget: &MemoryBudget,
    check: &mut SetCheck,
) {
    let results: Vec<(Option<Problem>, u64)> = futures_util::stream::iter(batch.to_vec())
        .map(|(path, key, size, sha)| {
            let (op, budget) = (op.clone(), budget.clone());
            async move {
                let (op, budget, size) = (&op, &budget, &size);
                let problem = |problem, found: Option<String>| Problem {
                    path: path.clone(),
                    key: key.clone(),
                    problem,
                    expected: if problem == "sha256" {
                        sha.clone()
                    } else {
                        size.to_string()
                    },
                    found,
                };
                if !read_data {
                    return match transfer::target_size(op, &path).await {
                        Ok(Some(s)) if s == *size => (None, 0),
                        Ok(Some(s)) => (Some(problem("size", Some(s.to_string()))), 0),
                        Ok(None) => (Some(problem("missing", None)), 0),
                        Err(e) => (Some(problem("unreadable", Some(e.to_string()))), 0),
                    };
                }
                match transfer::hash_object(op, Side::Target, &path, *size, budget).await {
                    Ok((len, _)) if len != *size => {
                        (Some(problem("size", Some(len.to_string()))), len)
                    }
                    Ok((len, got)) if hex(&got) != *sha => {
                        (Some(problem("sha256", Some(hex(&got)))), len)
                    }
                    Ok((len, _)) => (None, len),
                    Err(e) if e.not_found => (Some(problem("missing", None)), 0),
                    // Some backends only notice a missing object once its bytes are read.
                    Err(e) => match transfer::target_size(op, &path).await {
                        Ok(None) => (Some(problem("missing", None)), 0),
                        _ => (Some(problem("unreadable", Some(e.to_string()))), 0),
                    },
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut problems = Vec::new();
    for (p, read) in results {
        check.bytes_read += read;
        problems.extend(p);
    }
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    for p in problems {
        check.add(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_names_missing_and_resized_objects() {
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        let listed = std::collections::HashMap::from([(a, 10u64), (b, 7), (c, 0)]);
        let line = |sha: &[u8; 32], size: u64| {
            (
                repo::object_path(sha),
                Some(format!("key-{}", sha[0])),
                size,
                hex(sha),
            )
        };
        let batch = vec![line(&a, 10), line(&b, 8), line(&c, 5), line(&[4u8; 32], 1)];
        let mut check = SetCheck::default();
        check_listed(&listed, &batch, &mut check);
        let found: Vec<(&str, Option<&str>)> = check
            .problems
            .iter()
            .map(|p| (p.problem, p.key.as_deref()))
            .collect();
        // c's listing gave no size: present, not a mismatch.
        assert_eq!(found, [("size", Some("key-2")), ("missing", Some("key-4"))]);
        assert_eq!(check.problems_total, 2);
    }
}
