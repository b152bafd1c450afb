//! `backup`: one set in the repository (database dumps, storage objects, vector records),
//! verified before it counts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Phase, phase};
use crate::backup::repo::DifyInfo;
use crate::jobs::backup::Part;
use crate::jobs::backup::verify::SetCheck;

pub const PHASES: &[Phase] = &[
    phase(
        "dump {database}",
        "bytes",
        "pg_dump of one database, streamed into the set",
    ),
    phase("list storage", "files", "listing Dify's storage"),
    phase(
        "back up storage",
        "objects",
        "reading and hashing every object; writing new contents",
    ),
    phase(
        "back up vectors",
        "datasets",
        "reading every dataset's vector records",
    ),
    phase(
        "write the manifest",
        "files",
        "the storage index, then the manifest: the set is complete",
    ),
    phase(
        "verify the set",
        "files",
        "every file of the set read back and checked",
    ),
    phase(
        "verify",
        "files",
        "reading the set back against its manifest",
    ),
    phase("finished", "files", "done"),
];

/// A dry run of `backup`: what a set would hold, part by part.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupPlan {
    /// The repository, described without its secrets.
    pub target: String,
    pub parts: Vec<Part>,
    pub sets_in_repository: u64,
    pub newest_set: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabasePlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StoragePlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vectors: Option<VectorsPlan>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPlan>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabasePlan {
    pub databases: Vec<DatabaseSize>,
    pub excluded: Vec<String>,
    /// The pg_dump that would run, when it is usable.
    pub pg_dump: Option<String>,
    /// Why pg_dump cannot be used.
    pub problem: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSize {
    pub name: String,
    pub bytes_on_disk: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoragePlan {
    pub source: String,
    pub objects: u64,
    pub bytes: u64,
    /// Contents the repository already holds (by SHA-256).
    pub objects_in_repository: u64,
    pub note: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorsPlan {
    pub datasets: Vec<VectorsUnit>,
}

/// A dataset or app to back up, or why it cannot be read.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorsUnit {
    /// `dataset` or `annotations`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionPlan {
    pub would_keep_or_remove: KeepOrRemove,
    pub note: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeepOrRemove {
    pub keep: Vec<String>,
    pub remove: Vec<String>,
}

/// The result of `backup`. A backup whose set failed verification keeps only `set` and
/// `verify`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupResult {
    pub set: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<SetCheck>,
    pub target: String,
    pub label: Option<String>,
    pub parts: Vec<Part>,
    pub bytes_written: u64,
    pub bytes_deduplicated: u64,
    pub counts: BackupCounts,
    pub database: Option<BackedUpDatabase>,
    pub storage: Option<BackedUpStorage>,
    pub vectors: Option<Vec<BackedUpUnit>>,
    pub dify: DifyInfo,
    /// The set was read back and matched its manifest.
    pub verified: bool,
    pub retention: Option<RetentionApplied>,
}

/// What the set holds (`null`: the part is not in it).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupCounts {
    pub tables: Option<u64>,
    pub rows: Option<i64>,
    pub objects: Option<u64>,
    pub object_bytes: Option<u64>,
    pub records: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackedUpDatabase {
    /// How often the dump started over from a new snapshot.
    pub restarts: u32,
    pub snapshot_taken_at: DateTime<Utc>,
    pub databases: Vec<DumpedSize>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DumpedSize {
    pub name: String,
    pub bytes: u64,
    pub tables: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackedUpStorage {
    pub objects: u64,
    pub bytes: u64,
    pub objects_written: u64,
    pub bytes_written: u64,
    pub objects_deduplicated: u64,
    pub bytes_deduplicated: u64,
    /// Objects the previous set's index showed unchanged (same size, time and ETag).
    pub objects_unchanged_not_read: u64,
    pub previous_set: Option<String>,
    /// Listed, then gone before they were read.
    pub vanished: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackedUpUnit {
    /// `dataset` or `annotations`.
    pub kind: String,
    pub id: Uuid,
    pub store: String,
    pub collection: String,
    pub records: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionApplied {
    pub kept: Vec<String>,
    pub removed: Vec<String>,
    /// Sets that never got a manifest.
    pub removed_incomplete: Vec<String>,
    /// Stored contents no kept set references.
    pub objects_removed: u64,
    pub bytes_freed: u64,
}

/// While backing up storage: what has been written and what was already there.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupDetail {
    pub bytes_written: u64,
    pub bytes_deduplicated: u64,
}
