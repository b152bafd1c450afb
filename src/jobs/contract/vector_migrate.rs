//! `vector_migrate`: each dataset's (and annotation app's) vectors copied, verified and
//! switched.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::fanout::{ChildJob, FanOutDetail, children};
use super::{Phase, phase};
use crate::jobs::vector_migrate::unit::Outcome;

pub const PHASES: &[Phase] = &[
    phase(
        "copy",
        "points",
        "copying, verifying and switching datasets, several at once",
    ),
    children("points"),
];

/// A dry run of `vector_migrate`: per dataset, what the source holds against what Dify
/// expects, and the target's layout.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorMigratePlan {
    /// The target store, described without its secrets.
    pub target: String,
    pub datasets: Vec<PlannedDataset>,
    /// What the target lacks of Dify's layout (or how it will be written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_notes: Option<Vec<String>>,
    /// Why the target could not be asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_error: Option<String>,
}

/// One dataset (or, with `app_id`, one app's annotation replies) in a dry run.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlannedDataset {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<Uuid>,
    pub source: String,
    pub target: String,
    /// Points Dify's records say the dataset has.
    pub expected: u64,
    /// The dimension of the collection already on the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_dimension: Option<u64>,
    /// Why the source cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_points: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimension: Option<u64>,
    /// Expected records the source lacks: re-embedded, or taken from Dify's embedding cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_vectors: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_in_cache: Option<u64>,
    /// Source points no record names: not copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strays: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_bytes: Option<u64>,
}

/// The result of `vector_migrate`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorMigrateResult {
    pub target: String,
    pub datasets: Vec<Outcome>,
    /// Units copied and verified.
    pub migrated: u64,
    pub switched: u64,
    pub failed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_notes: Option<Vec<String>>,
    /// Where Dify reads the annotation replies from, when some were moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<String>,
    /// With `fan_out`: the child jobs, who ran them; `datasets` gathers theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<Vec<ChildJob>>,
}

/// Progress detail: the datasets' while this job copies, its children's with `fan_out`.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum VectorMigrateDetail {
    Copy(VectorCopyDetail),
    Children(FanOutDetail),
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorCopyDetail {
    pub datasets_done: u64,
    pub datasets_running: u64,
    pub datasets_verifying: u64,
    pub failed: u64,
}
