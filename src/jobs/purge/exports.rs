//! `purge_exports`: removes Dify's exported logs (`free_plan_tenant_expired_logs/`) older than
//! N days from any storage backend: the docs' `rm -rf`, limited to files whose name has the
//! export layout, aged by the export time in that name (an object's mtime changes when storage
//! is migrated; the name does not).

use std::collections::BTreeMap;

use chrono::Utc;
use futures_util::TryStreamExt;
use opendal::{EntryMode, Operator};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::config::Settings;
use crate::jobs::{JobCtx, JobError, JobKind, Progress, SpecError, storage_param};
use crate::storage::StorageConfig;

/// Where Dify's log purge writes its exports.
pub const EXPORT_PREFIX: &str = "free_plan_tenant_expired_logs/";
/// Deletes per batch (also the progress and cancel boundary).
const BATCH: usize = 500;
/// Keys listed in a dry run's result.
const SAMPLE: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeExportsParams {
    /// Only exports written more than this many days ago. 0 means no age limit: every export,
    /// however new (also one Dify's log purge wrote a second ago).
    #[serde(default)]
    pub older_than_days: u32,
    /// The storage holding the exports. Default: the storage `STORAGE_TYPE` names.
    #[serde(default)]
    #[schema(value_type = Option<StorageConfig>)]
    pub storage: Option<Value>,
}

pub struct PurgeExports;

fn open(params: &PurgeExportsParams, ctx: &JobCtx) -> Result<(StorageConfig, Operator), JobError> {
    let config = storage_param::resolve(params.storage.as_ref(), "storage", &ctx.settings)
        .map_err(storage_param::invalid)?;
    let op = storage_param::open(&config, "storage").map_err(storage_param::invalid)?;
    Ok((config, op))
}

/// An export file as Dify names it: `<prefix><tenant>/<table>/<YYYY-MM-DD>-<epoch>.json`.
#[derive(Debug, PartialEq)]
struct Export<'a> {
    tenant: &'a str,
    table: &'a str,
    /// When Dify wrote it (its `time.time()`), in seconds.
    written_at: f64,
}

fn parse_export(key: &str) -> Option<Export<'_>> {
    let rest = key.strip_prefix(EXPORT_PREFIX)?;
    let mut parts = rest.split('/');
    let (tenant, table, file) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || uuid::Uuid::parse_str(tenant).is_err() || table.is_empty() {
        return None;
    }
    let stem = file.strip_suffix(".json")?;
    // `YYYY-MM-DD-<float>`: the date is 10 characters, then a dash.
    let (date, epoch) = (stem.get(..10)?, stem.get(11..)?);
    chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    if stem.as_bytes().get(10) != Some(&b'-') {
        return None;
    }
    let written_at: f64 = epoch
        .parse()
        .ok()
        .filter(|e: &f64| e.is_finite() && *e > 0.0)?;
    Some(Export {
        tenant,
        table,
        written_at,
    })
}

/// What a listing of the export prefix found.
#[derive(Default)]
struct Tally {
    /// Exports old enough to go, per table.
    per_table: BTreeMap<String, u64>,
    expired: u64,
    kept_recent: u64,
    /// Files under the prefix without the export layout: never touched.
    unrecognised: u64,
    unrecognised_sample: Vec<String>,
}

/// The export prefix, listed once, yielding expired keys in batches and tallying the rest.
struct Scan {
    lister: Option<opendal::Lister>,
    cutoff: f64,
    tally: Tally,
}

impl Scan {
    async fn new(op: &Operator, cutoff: f64) -> Result<Scan, JobError> {
        let lister = match op.lister_with(EXPORT_PREFIX).recursive(true).await {
            Ok(l) => Some(l),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => None,
            Err(e) => return Err(listing_failed(e)),
        };
        Ok(Scan {
            lister,
            cutoff,
            tally: Tally::default(),
        })
    }

    async fn next_batch(&mut self) -> Result<Option<Vec<String>>, JobError> {
        let Some(lister) = self.lister.as_mut() else {
            return Ok(None);
        };
        let mut batch = Vec::new();
        while batch.len() < BATCH {
            let Some(entry) = lister.try_next().await.map_err(listing_failed)? else {
                self.lister = None;
                break;
            };
            let key = entry.path();
            if entry.metadata().mode() != EntryMode::FILE || key.ends_with('/') {
                continue;
            }
            let tally = &mut self.tally;
            match parse_export(key) {
                Some(export) if export.written_at < self.cutoff => {
                    tally.expired += 1;
                    *tally.per_table.entry(export.table.to_string()).or_default() += 1;
                    batch.push(key.to_string());
                }
                Some(_) => tally.kept_recent += 1,
                None => {
                    tally.unrecognised += 1;
                    if tally.unrecognised_sample.len() < SAMPLE {
                        tally.unrecognised_sample.push(key.to_string());
                    }
                }
            }
        }
        Ok((!batch.is_empty()).then_some(batch))
    }
}

fn listing_failed(e: opendal::Error) -> JobError {
    JobError::failed("storage_failed", format!("listing {EXPORT_PREFIX}: {e}"))
}

/// What `older_than_days` selects, in words, for the result: 0 is easy to misread.
fn selects(older_than_days: u32, cutoff: f64) -> String {
    if older_than_days == 0 {
        return format!(
            "every export under {EXPORT_PREFIX}, however new (older_than_days: 0 means no age limit)"
        );
    }
    let at = chrono::DateTime::from_timestamp(cutoff as i64, 0).map_or_else(String::new, |t| {
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    });
    format!("exports written before {at} (more than {older_than_days} days ago)")
}

fn cutoff(older_than_days: u32) -> f64 {
    if older_than_days == 0 {
        return f64::INFINITY;
    }
    let now = Utc::now().timestamp_millis() as f64 / 1000.0;
    now - f64::from(older_than_days) * 86_400.0
}

impl JobKind for PurgeExports {
    const KIND: &'static str = "purge_exports";
    type Params = PurgeExportsParams;
    type Plan = crate::jobs::contract::purge_exports::PurgeExportsPlan;
    type Outcome = crate::jobs::contract::purge_exports::PurgeExportsResult;
    type Detail = crate::jobs::contract::purge_exports::PurgeExportsDetail;
    const PHASES: &'static [crate::jobs::contract::Phase] =
        crate::jobs::contract::purge_exports::PHASES;

    fn resource_key(_: &PurgeExportsParams) -> Option<String> {
        Some("storage".into())
    }

    async fn validate(
        params: &PurgeExportsParams,
        _pool: &PgPool,
        settings: &Settings,
    ) -> Result<(), SpecError> {
        if params.older_than_days > 36_500 {
            return Err(SpecError::invalid(
                "params.older_than_days",
                "must be at most 36500 (0 removes every export, however new)",
            ));
        }
        let config = storage_param::resolve(params.storage.as_ref(), "storage", settings)?;
        storage_param::check_exists(&config, "storage", params.storage.is_some())?;
        storage_param::open(&config, "storage")?;
        Ok(())
    }

    async fn plan(params: PurgeExportsParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let (config, op) = open(&params, ctx)?;
        let cutoff = cutoff(params.older_than_days);
        let mut scan = Scan::new(&op, cutoff).await?;
        let mut sample = Vec::new();
        while let Some(keys) = scan.next_batch().await? {
            ctx.check_stop()?;
            let room = SAMPLE.saturating_sub(sample.len());
            sample.extend(keys.into_iter().take(room));
        }
        Ok(json!({
            "storage": config.describe(),
            "prefix": EXPORT_PREFIX,
            "older_than_days": params.older_than_days,
            "selects": selects(params.older_than_days, cutoff),
            "would_delete": scan.tally.expired,
            "would_delete_per_table": scan.tally.per_table,
            "would_delete_sample": sample,
            "kept_recent": scan.tally.kept_recent,
            "unrecognised": scan.tally.unrecognised,
            "unrecognised_sample": scan.tally.unrecognised_sample,
        }))
    }

    async fn run(params: PurgeExportsParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let (config, op) = open(&params, ctx)?;
        let cutoff = cutoff(params.older_than_days);
        // A first pass for the total, so progress has an end; deleting is idempotent, so a
        // resumed job just lists again.
        let mut count = Scan::new(&op, cutoff).await?;
        while count.next_batch().await?.is_some() {
            ctx.check_stop()?;
        }
        let total = count.tally.expired;
        let mut scan = Scan::new(&op, cutoff).await?;
        let mut deleted = 0u64;
        while let Some(keys) = scan.next_batch().await? {
            ctx.check_stop()?;
            let n = keys.len() as u64;
            op.delete_iter(keys).await.map_err(|e| {
                JobError::failed("storage_failed", format!("deleting exports: {e}"))
            })?;
            deleted += n;
            ctx.count("objects", n);
            ctx.progress(
                Progress {
                    phase: format!("delete {EXPORT_PREFIX}"),
                    done: deleted,
                    total: Some(total.max(deleted)),
                    unit: "objects".into(),
                    ..Default::default()
                },
                false,
            )
            .await?;
        }
        Ok(json!({
            "storage": config.describe(),
            "prefix": EXPORT_PREFIX,
            "older_than_days": params.older_than_days,
            "selects": selects(params.older_than_days, cutoff),
            "deleted": deleted,
            "deleted_per_table": scan.tally.per_table,
            "kept_recent": scan.tally.kept_recent,
            "unrecognised": scan.tally.unrecognised,
            "unrecognised_sample": scan.tally.unrecognised_sample,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dify_s_export_names() {
        let key = "free_plan_tenant_expired_logs/3f8a2b1c-1d2e-4f5a-8b9c-0d1e2f3a4b5c/messages/2026-01-02-1767312000.1234567.json";
        let e = parse_export(key).expect("an export");
        assert_eq!(e.table, "messages");
        assert!((e.written_at - 1_767_312_000.123_456_7).abs() < 1e-6);
        for bad in [
            "free_plan_tenant_expired_logs/not-a-uuid/messages/2026-01-02-1.json",
            "free_plan_tenant_expired_logs/3f8a2b1c-1d2e-4f5a-8b9c-0d1e2f3a4b5c/messages/notes.json",
            "free_plan_tenant_expired_logs/3f8a2b1c-1d2e-4f5a-8b9c-0d1e2f3a4b5c/messages/2026-01-02-1.txt",
            "free_plan_tenant_expired_logs/3f8a2b1c-1d2e-4f5a-8b9c-0d1e2f3a4b5c/a/b/2026-01-02-1.json",
            "upload_files/3f8a2b1c-1d2e-4f5a-8b9c-0d1e2f3a4b5c/messages/2026-01-02-1.json",
        ] {
            assert_eq!(parse_export(bad), None, "{bad}");
        }
    }
}
