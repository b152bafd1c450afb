//! `orphan_records`: a plan of unreferenced file rows, then its confirmation.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::orphan_files::ConfirmPreview;
use super::{Phase, phase};

pub const PHASES: &[Phase] = &[
    phase(
        "gather references",
        "rows",
        "reading every place Dify references a file from",
    ),
    phase(
        "find orphaned {table}",
        "rows",
        "finding the table's unreferenced rows",
    ),
    phase(
        "delete planned rows",
        "rows",
        "a confirm: each planned row checked again, then deleted",
    ),
];

/// A dry run of `orphan_records`: the orphans it finds now, or what a confirm would check.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum OrphanRecordsPlan {
    Found(OrphanRecordsFound),
    Confirm(ConfirmPreview),
}

/// The result of `orphan_records`: the plan it recorded, or what its confirm deleted.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum OrphanRecordsResult {
    Found(OrphanRecordsFound),
    Confirmed(OrphanRecordsConfirmed),
}

/// The unreferenced rows found (and, when not a dry run, recorded as the plan).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrphanRecordsFound {
    /// The plan to confirm; `null` for a dry run, which records nothing.
    pub plan_job_id: Option<Uuid>,
    pub min_age_hours: u32,
    pub tables: BTreeMap<String, OrphansInTable>,
    /// Some planned items, as `table:id`.
    pub sample: Vec<String>,
    /// The reference sources read.
    pub references_read: Vec<String>,
    /// Reference sources this Dify release does not have.
    pub references_absent_in_this_dify: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrphansInTable {
    pub orphans: u64,
    /// Unreferenced, but younger than `min_age_hours`: left alone.
    pub too_young: u64,
}

/// What a confirm did with each planned row.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrphanRecordsConfirmed {
    pub plan_job_id: Uuid,
    pub planned: u64,
    pub deleted: i64,
    /// Per table, per outcome (`deleted`, `referenced`, `gone`,
    /// `handled_by_an_earlier_confirm`): rows.
    pub tables: BTreeMap<String, BTreeMap<String, i64>>,
    /// Planned rows kept because they are referenced now, as `table:id`.
    pub kept_referenced_sample: Vec<String>,
    pub note: String,
}

/// Progress while finding: the table being searched.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrphanRecordsDetail {
    pub table: String,
}
