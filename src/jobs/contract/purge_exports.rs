//! `purge_exports`: the purge's old export files, found and deleted.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::{NoDetail, Phase, phase};

pub type PurgeExportsDetail = NoDetail;

pub const PHASES: &[Phase] = &[phase(
    "delete {prefix}",
    "objects",
    "deleting the export files older than the limit",
)];

/// A dry run of `purge_exports`: the export files it would delete.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeExportsPlan {
    /// The storage, described without its secrets.
    pub storage: String,
    pub prefix: String,
    pub older_than_days: u32,
    /// In words, what `older_than_days` selects.
    pub selects: String,
    pub would_delete: u64,
    pub would_delete_per_table: BTreeMap<String, u64>,
    pub would_delete_sample: Vec<String>,
    /// Export files younger than the limit.
    pub kept_recent: u64,
    /// Files under the prefix without the export layout: never touched.
    pub unrecognised: u64,
    pub unrecognised_sample: Vec<String>,
}

/// The result of `purge_exports`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeExportsResult {
    pub storage: String,
    pub prefix: String,
    pub older_than_days: u32,
    pub selects: String,
    pub deleted: u64,
    pub deleted_per_table: BTreeMap<String, u64>,
    pub kept_recent: u64,
    pub unrecognised: u64,
    pub unrecognised_sample: Vec<String>,
}
