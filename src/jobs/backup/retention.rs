//! Which complete sets to keep (restic's rule: the newest N, and the newest set of each of the
//! last N days, weeks, months), removing the rest once a new set is verified, then every
//! object no remaining set references (mark and sweep).

use std::collections::{BTreeSet, HashSet};

use chrono::{Datelike, NaiveDateTime};
use futures_util::TryStreamExt;
use opendal::{ErrorKind, Operator};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::repo_failed;
use crate::backup::repo::{self, IndexReader, RepoError};
use crate::jobs::{JobCtx, JobError, SpecError};
use crate::storage::transfer::Sha256Sum;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// The newest N sets.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// The newest set of each of the last N days that have one (UTC).
    #[serde(default)]
    pub keep_daily: Option<u32>,
    /// The newest set of each of the last N ISO weeks that have one.
    #[serde(default)]
    pub keep_weekly: Option<u32>,
    /// The newest set of each of the last N months that have one.
    #[serde(default)]
    pub keep_monthly: Option<u32>,
}

impl Retention {
    pub fn check(&self) -> Result<(), SpecError> {
        let rules = [
            ("keep_last", self.keep_last),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
        ];
        for (name, v) in rules {
            if let Some(v) = v
                && !(1..=10_000).contains(&v)
            {
                return Err(SpecError::invalid(
                    format!("params.retention.{name}"),
                    "must be a whole number from 1 to 10000",
                ));
            }
        }
        if rules.iter().all(|(_, v)| v.is_none()) {
            return Err(SpecError::invalid(
                "params.retention",
                "must name at least one of keep_last, keep_daily, keep_weekly, keep_monthly",
            ));
        }
        Ok(())
    }
}

fn time_of(set: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(set.get(..15)?, "%Y%m%dT%H%M%S").ok()
}

/// `sets` oldest first, as listed; the kept ones.
pub fn keep(sets: &[String], r: &Retention) -> BTreeSet<String> {
    let newest_first: Vec<&String> = sets.iter().rev().collect();
    let mut kept = BTreeSet::new();
    if let Some(n) = r.keep_last {
        kept.extend(newest_first.iter().take(n as usize).map(|s| s.to_string()));
    }
    let mut by = |n: Option<u32>, bucket: &dyn Fn(NaiveDateTime) -> String| {
        let Some(n) = n else { return };
        let mut seen = HashSet::new();
        for set in &newest_first {
            let Some(t) = time_of(set) else { continue };
            if seen.len() >= n as usize && !seen.contains(&bucket(t)) {
                break;
            }
            if seen.insert(bucket(t)) {
                kept.insert(set.to_string());
            }
        }
    };
    by(r.keep_daily, &|t| t.format("%Y-%m-%d").to_string());
    by(r.keep_weekly, &|t| {
        let w = t.iso_week();
        format!("{}-{}", w.year(), w.week())
    });
    by(r.keep_monthly, &|t| t.format("%Y-%m").to_string());
    kept
}

/// What retention keeps and removes now (`new`: a set about to be complete, counted as one).
pub async fn select(op: &Operator, r: &Retention, new: Option<&str>) -> Result<Value, RepoError> {
    let mut sets = repo::complete_sets(op).await?;
    if let Some(n) = new {
        sets.push(n.to_string());
        sets.sort();
        sets.dedup();
    }
    let kept = keep(&sets, r);
    let removed: Vec<&String> = sets.iter().filter(|s| !kept.contains(*s)).collect();
    Ok(json!({"keep": kept, "remove": removed}))
}

pub async fn apply(
    ctx: &mut JobCtx,
    op: &Operator,
    r: &Retention,
    new_set: &str,
) -> Result<Value, JobError> {
    let sets = repo::complete_sets(op).await.map_err(repo_failed)?;
    let kept = keep(&sets, r);
    if !kept.contains(new_set) {
        return Err(JobError::failed(
            "internal",
            format!("retention would remove the set just made ({new_set})"),
        ));
    }
    let mut removed = Vec::new();
    for set in sets.iter().filter(|s| !kept.contains(*s)) {
        ctx.check_stop()?;
        // The manifest first: a half-removed set is then incomplete, never a broken "complete" one.
        let manifest = repo::manifest_path(set);
        op.delete(&manifest)
            .await
            .map_err(|e| repo_failed(RepoError::storage(&manifest, e)))?;
        remove_dir(op, &format!("sets/{set}/")).await?;
        removed.push(set.clone());
    }
    // Sets that never got a manifest are dead: one backup at a time runs per repository.
    let mut incomplete = Vec::new();
    for dir in repo::set_dirs(op).await.map_err(repo_failed)? {
        if dir != new_set && !kept.contains(&dir) && !removed.contains(&dir) && !sets.contains(&dir)
        {
            remove_dir(op, &format!("sets/{dir}/")).await?;
            incomplete.push(dir);
        }
    }
    let (objects, bytes) = sweep(ctx, op, &kept).await?;
    ctx.log(
        format!(
            "retention removed {} set(s) and {objects} unreferenced object(s) ({bytes} bytes)",
            removed.len()
        ),
        Value::Null,
    )
    .await?;
    Ok(json!({
        "kept": kept,
        "removed": removed,
        "removed_incomplete": incomplete,
        "objects_removed": objects,
        "bytes_freed": bytes,
    }))
}

async fn remove_dir(op: &Operator, dir: &str) -> Result<(), JobError> {
    match op.delete_with(dir).recursive(true).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(repo_failed(RepoError::storage(dir, e))),
    }
}

/// Deletes every object no kept set's index or vector files reference.
async fn sweep(
    ctx: &JobCtx,
    op: &Operator,
    kept: &BTreeSet<String>,
) -> Result<(u64, u64), JobError> {
    let mut referenced: HashSet<Sha256Sum> = HashSet::new();
    for set in kept {
        ctx.check_stop()?;
        let m = repo::read_manifest(op, set).await.map_err(repo_failed)?;
        if let Some(v) = &m.vectors {
            for d in &v.datasets {
                for f in &d.parts {
                    if let Some(sha) = repo::parse_hex(&f.sha256) {
                        referenced.insert(sha);
                    }
                }
            }
        }
        if let Some(s) = &m.storage {
            let mut lines = IndexReader::open(op, &s.index.path)
                .await
                .map_err(repo_failed)?;
            while let Some(line) = lines.next().await.map_err(repo_failed)? {
                if let Some(sha) = repo::parse_hex(&line.h) {
                    referenced.insert(sha);
                }
            }
        }
    }
    let mut lister = match op.lister_with("objects/sha256/").recursive(true).await {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(repo_failed(RepoError::storage("objects/", e))),
    };
    let (mut objects, mut bytes) = (0u64, 0u64);
    while let Some(entry) = lister
        .try_next()
        .await
        .map_err(|e| repo_failed(RepoError::storage("objects/", e)))?
    {
        let Some(sha) = repo::parse_hex(entry.name()) else {
            continue;
        };
        if referenced.contains(&sha) {
            continue;
        }
        op.delete(entry.path())
            .await
            .map_err(|e| repo_failed(RepoError::storage(entry.path(), e)))?;
        objects += 1;
        bytes += entry.metadata().content_length();
    }
    Ok((objects, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_per_rule() {
        let sets: Vec<String> = [
            "20261101T030000Z-00000001",
            "20261102T030000Z-00000002",
            "20261102T150000Z-00000003",
            "20261109T030000Z-00000004",
            "20261201T030000Z-00000005",
            "20261202T030000Z-00000006",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let last2 = keep(
            &sets,
            &Retention {
                keep_last: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(last2.iter().collect::<Vec<_>>(), [&sets[4], &sets[5]]);
        let daily = keep(
            &sets,
            &Retention {
                keep_daily: Some(4),
                ..Default::default()
            },
        );
        // 2 Nov has two sets: only the later one counts for that day.
        assert_eq!(
            daily.iter().collect::<Vec<_>>(),
            [&sets[2], &sets[3], &sets[4], &sets[5]]
        );
        let monthly = keep(
            &sets,
            &Retention {
                keep_monthly: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(monthly.iter().collect::<Vec<_>>(), [&sets[3], &sets[5]]);
        assert!(Retention::default().check().is_err());
        assert!(
            Retention {
                keep_last: Some(0),
                ..Default::default()
            }
            .check()
            .is_err()
        );
    }
}
