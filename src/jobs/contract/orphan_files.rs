//! `orphan_files`: a plan of objects no row references, then its confirmation.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Phase, phase};

pub const PHASES: &[Phase] = &[
    phase(
        "gather references",
        "objects",
        "reading every key Dify's database references",
    ),
    phase(
        "list {prefix}/",
        "objects",
        "listing one prefix of the storage",
    ),
    phase(
        "delete planned orphans",
        "objects",
        "a confirm: each planned object checked again, then deleted",
    ),
];

/// A dry run of `orphan_files`: the orphans it finds now, or what a confirm would check.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum OrphanFilesPlan {
    Found(OrphanFilesFound),
    Confirm(ConfirmPreview),
}

/// The result of `orphan_files`: the plan it recorded, or what its confirm deleted.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum OrphanFilesResult {
    Found(OrphanFilesFound),
    Confirmed(OrphanFilesConfirmed),
}

/// A dry run of a confirm: the plan it would work through.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmPreview {
    pub plan_job_id: Uuid,
    /// Planned items no earlier confirm has handled.
    pub would_check_and_delete: i64,
    pub note: String,
}

/// The orphaned objects found (and, when not a dry run, recorded as the plan).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrphanFilesFound {
    pub storage: String,
    /// The plan to confirm; `null` for a dry run, which records nothing.
    pub plan_job_id: Option<Uuid>,
    pub min_age_hours: u32,
    pub listed: u64,
    pub referenced_keys: u64,
    pub orphans: u64,
    pub orphan_bytes: u64,
    pub prefixes: BTreeMap<String, crate::jobs::orphans::files::PrefixTally>,
    pub sample: Vec<OrphanObject>,
    /// What to send next.
    pub next: String,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrphanObject {
    pub key: String,
    pub bytes: u64,
}

/// What a confirm did with each planned object.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrphanFilesConfirmed {
    pub storage: String,
    pub plan_job_id: Uuid,
    pub planned: u64,
    pub deleted: i64,
    pub kept_referenced: i64,
    /// Changed since it was planned (size or time): kept.
    pub kept_changed: i64,
    pub already_gone: i64,
    pub handled_by_an_earlier_confirm: i64,
    pub kept_sample: Vec<KeptObject>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeptObject {
    pub key: String,
    /// `referenced` or `changed`.
    pub why: String,
}

/// Progress while listing: the orphans found so far.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrphanFilesDetail {
    pub orphans: u64,
}
