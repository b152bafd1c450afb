//! `restore`: a verified set put back, part by part, each checked against the manifest.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{NoDetail, Phase, phase};
use crate::backup::repo::DifyInfo;
use crate::jobs::backup::Part;
use crate::jobs::backup::verify::SetCheck;

pub type RestoreDetail = NoDetail;

pub const PHASES: &[Phase] = &[
    phase(
        "verify",
        "files",
        "the set read back against its manifest first",
    ),
    phase(
        "restore database {name}",
        "databases",
        "pg_restore of one database, then its rows counted",
    ),
    phase(
        "restore storage",
        "objects",
        "every object back at its key, checked",
    ),
    phase(
        "restore vectors",
        "datasets",
        "every dataset's records back in Dify's store, counted",
    ),
];

/// A dry run of `restore`: what the set holds, where each part would go, and what would stop
/// the restore.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestorePlan {
    /// The repository, described without its secrets.
    pub source: String,
    pub set: String,
    pub label: Option<String>,
    pub dify: DifyInfo,
    pub parts: Vec<Part>,
    /// Empty when the restore would go ahead.
    pub would_refuse: Vec<Refusal>,
    pub database: Option<Vec<SetDatabase>>,
    pub storage: Option<SetStorage>,
    pub vectors: Option<SetVectors>,
}

/// Why a restore would not start; nothing is written.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    /// `dify_revision_newer`, `target_not_empty` or `target_unconfigured`.
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<Part>,
    pub message: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDatabase {
    pub name: String,
    pub bytes: u64,
    pub tables: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStorage {
    pub objects: u64,
    pub bytes: u64,
    /// Dify's storage, described without its secrets (`null`: not configured).
    pub into: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetVectors {
    pub datasets: u64,
    pub records: u64,
    pub into: Option<String>,
}

/// The result of `restore`. A refused or failed restore keeps `set` with `verify` or
/// `refused`, or the `database` and `tables` that did not match.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreResult {
    pub source: String,
    pub set: String,
    pub dify: DifyInfo,
    pub parts: Vec<Part>,
    pub database: Option<RestoredDatabases>,
    pub storage: Option<RestoredStorage>,
    pub vectors: Option<RestoredVectors>,
    /// E.g. clients still connected to the database while it was restored.
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<SetCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<Vec<Refusal>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables: Option<BTreeMap<String, Rows>>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoredDatabases {
    pub databases: Vec<RestoredDatabase>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoredDatabase {
    /// The database restored into.
    pub name: String,
    /// Its name in the set.
    pub from: String,
    /// Every table's rows equal the manifest's.
    pub matches: bool,
    pub tables: BTreeMap<String, Rows>,
}

/// A table's rows in the set and after the restore (`null`: the table is not there).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rows {
    pub set: i64,
    pub restored: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoredStorage {
    pub objects: Count,
    pub bytes: Count,
    pub copied_this_attempt: u64,
    pub bytes_this_attempt: u64,
    /// Dify's storage, described without its secrets.
    pub into: String,
}

/// In the set, and back in place.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Count {
    pub set: u64,
    pub restored: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoredVectors {
    pub store: String,
    pub datasets: Vec<RestoredUnit>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoredUnit {
    /// `dataset` or `annotations`.
    pub kind: String,
    pub id: Uuid,
    /// The store and collection it was backed up from.
    pub from: String,
    pub to: String,
    pub records: RecordCount,
    /// For a dataset: the `index_struct` the restore gave it, pointing at Dify's store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_struct: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecordCount {
    pub set: u64,
    pub restored: u64,
}
