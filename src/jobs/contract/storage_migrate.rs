//! `storage_migrate`: objects copied and verified, the database switched, and whether it is
//! safe to point Dify at the target.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::fanout::{ChildJob, FanOutDetail, children};
use super::{Phase, phase};
use crate::jobs::storage_migrate::Verify;

pub const PHASES: &[Phase] = &[
    phase(
        "scan source and target",
        "objects",
        "a dry run: each source object looked up on the target",
    ),
    phase(
        "list source",
        "objects",
        "listing the source, before the copy",
    ),
    phase(
        "list target",
        "objects",
        "listing the target once, to skip what is already there",
    ),
    phase(
        "split into child jobs",
        "prefixes",
        "with `fan_out`: the source's tenant prefixes found, to share among the child jobs",
    ),
    children("objects"),
    phase("copy", "objects", "copying and verifying every object"),
    phase(
        "update upload_files.storage_type",
        "rows",
        "pointing the database's file rows at the target's type",
    ),
    phase(
        "cross-check database references",
        "objects",
        "every key the database references, looked up among the verified objects",
    ),
    phase(
        "delete source objects",
        "objects",
        "with `delete_source`, once it is safe: the copied objects removed from the source",
    ),
    phase("finished", "objects", "done"),
];

/// A dry run of `storage_migrate`: what is on each side now.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageMigratePlan {
    /// The source, described without its secrets.
    pub source: String,
    pub target: String,
    pub objects: u64,
    pub bytes: u64,
    /// Per top-level prefix (`(root)` for keys without one).
    pub prefixes: BTreeMap<String, PrefixScan>,
    /// Objects already on the target with the same size: skipped if their SHA-256 matches.
    pub would_skip_if_identical: u64,
    pub note: String,
    pub db_references: DbReferences,
    /// The `storage_type` the file rows would get (`null` without `update_db`).
    pub update_db: Option<String>,
    /// With `fan_out`: how the copy would be split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<SplitPlan>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitPlan {
    pub children: u64,
    /// Tenant prefixes (and top-level files) shared among them.
    pub prefixes: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrefixScan {
    pub objects: u64,
    pub bytes: u64,
    pub absent_on_target: u64,
    pub same_size_on_target: u64,
    pub different_on_target: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DbReferences {
    /// Keys the database references.
    pub total: u64,
    pub missing_on_source: u64,
    pub missing_sample: Vec<MissingKey>,
}

/// A referenced key that is not where it should be.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MissingKey {
    pub key: String,
    /// The table and column (or Dify's generated secret) that references it.
    pub referenced_by: String,
    /// Cross-check only: why it does not count as verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// The result of `storage_migrate`: the whole migration's, or a child job's share of the copy.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum StorageMigrateOutcome {
    Whole(Box<StorageMigrateResult>),
    Share(StorageShareResult),
}

/// A child job's share of a fanned-out copy (`fan_out`); its parent does the rest.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageShareResult {
    /// Prefixes it was given.
    pub prefixes: u64,
    pub copied: i64,
    pub replaced: i64,
    pub already_there: i64,
    pub failed: u64,
    pub vanished_from_source: u64,
    pub bytes_copied: i64,
    pub bytes_verified: i64,
    pub failures: Vec<CopyFailure>,
}

/// The result of a whole `storage_migrate`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageMigrateResult {
    pub source: String,
    pub target: String,
    pub copied: i64,
    /// Objects on the target that differed and were overwritten.
    pub replaced: i64,
    pub already_there: i64,
    pub failed: u64,
    /// Listed, then gone from the source before it was copied.
    pub vanished_from_source: u64,
    pub bytes_copied: i64,
    pub bytes_verified: i64,
    pub verify: Verify,
    /// The first objects that failed.
    pub failures: Vec<CopyFailure>,
    /// With `update_db`: the rows pointed at the target.
    pub db: Option<DbUpdate>,
    pub cross_check: CrossCheck,
    pub source_deleted: u64,
    /// Every referenced object is verified on the target and none failed.
    pub safe_to_switch: bool,
    /// In words: whether Dify can be switched, and if not why.
    pub summary: String,
    /// With `fan_out`: the child jobs that copied, and who ran them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<ChildJob>>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyFailure {
    pub key: String,
    pub error: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DbUpdate {
    pub storage_type: String,
    pub rows_updated: u64,
}

/// Every key the database references, against what the copy verified.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CrossCheck {
    pub referenced: u64,
    pub verified: u64,
    pub not_copied: u64,
    pub missing_on_source: u64,
    pub not_on_target: u64,
    /// The sum of the three above: 0 means safe to switch.
    #[serde(rename = "unsafe")]
    pub unsafe_keys: u64,
    pub missing: Vec<MissingKey>,
}

/// Progress detail, by phase: `copy` counts bytes and outcomes, the database update its rows,
/// `finished` the bytes verified.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum StorageMigrateDetail {
    Children(FanOutDetail),
    Copy(CopyDetail),
    UpdateDb(UpdateDbDetail),
    Finished(FinishedDetail),
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CopyDetail {
    pub bytes: u64,
    pub bytes_per_s: Option<f64>,
    pub copied: u64,
    pub replaced: u64,
    pub already_there: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDbDetail {
    pub updated: u64,
    pub verified_objects: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishedDetail {
    pub bytes: i64,
}
