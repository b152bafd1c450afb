//! `purge_logs`: what would go and what went, per table, with the access path each used.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Phase, phase};
use crate::dify::access_paths::Choice;
use crate::dify::shape::Fit;
use crate::jobs::vacuum::VacuumParams;

pub const PHASES: &[Phase] = &[
    phase(
        "count",
        "rows",
        "counting what the purge will remove, per table",
    ),
    phase(
        "purge {table}",
        "rows",
        "deleting in batches, led by one table",
    ),
];

/// A dry run of `purge_logs`: what it would remove now.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeLogsPlan {
    /// Rows created before this time are purged (naive UTC in Dify's tables).
    pub cutoff: DateTime<Utc>,
    pub days: u32,
    pub tenant_ids: Option<Vec<Uuid>>,
    /// Per table: rows it would delete, or (with `keep_annotations`) detach.
    pub tables: BTreeMap<String, WouldPurge>,
    /// Per workspace, per table: rows it would remove.
    pub per_tenant: BTreeMap<Uuid, BTreeMap<String, u64>>,
    /// Old workflow runs kept because a message younger than the cutoff still points at them.
    pub runs_kept_for_younger_messages: u64,
    pub export: bool,
    pub schema: Fit,
    pub access_paths: Vec<Choice>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WouldPurge {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_delete: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_detach: Option<u64>,
}

/// The result of `purge_logs` (a cancelled or failed purge keeps what its committed batches
/// did, without `vacuum`, `schema` and `access_paths`).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeLogsResult {
    pub cutoff: DateTime<Utc>,
    pub days: u32,
    pub tenant_ids: Option<Vec<Uuid>>,
    pub tables: BTreeMap<String, Purged>,
    pub batches: u64,
    /// Batches exported again because their rows changed between export and delete.
    pub retried_batches: u64,
    /// The longest delete transaction, commit included.
    pub longest_transaction_ms: u64,
    /// Where the deleted rows were exported (`null` with `export: false`).
    pub export: Option<PurgeExport>,
    /// `workflow_node_execution_offload` rows deleted: their files are left for an
    /// `orphan_records` run.
    pub files_left_for_orphan_records: u64,
    /// The VACUUM of the tables that shrank: queued as a child job with `vacuum_after`,
    /// otherwise the request to send. `null` when no table shrank.
    pub vacuum: Option<PurgeVacuum>,
    pub schema: Fit,
    pub access_paths: Vec<Choice>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Purged {
    pub deleted: u64,
    /// Rows kept with their link to a deleted row cleared (`keep_annotations`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detached: Option<u64>,
    /// Rows written to the export (with `export: true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exported: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeExport {
    pub prefix: String,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeVacuum {
    /// Always `vacuum`.
    pub kind: String,
    pub params: VacuumParams,
    pub queued_job_id: Option<Uuid>,
}

/// Progress while purging: each table's own count, rate and ETA.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeLogsDetail {
    pub tables: BTreeMap<String, PurgeTableProgress>,
    pub batches: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeTableProgress {
    pub done: u64,
    pub total: u64,
    pub rate_per_s: Option<f64>,
    pub eta_s: Option<f64>,
}
