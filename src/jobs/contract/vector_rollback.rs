//! `vector_rollback`: datasets pointed back at the store they were migrated from.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{NoDetail, Phase};

pub type VectorRollbackDetail = NoDetail;

/// Reports no progress: it is one short update per dataset.
pub const PHASES: &[Phase] = &[];

/// A dry run of `vector_rollback`: each dataset's switch it would undo.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorRollbackPlan {
    pub datasets: Vec<PlannedRollback>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlannedRollback {
    pub dataset_id: Uuid,
    /// The `index_struct` it would get back (`null`: Dify's default store).
    pub back_to: Option<String>,
    /// The `index_struct` the migration gave it.
    pub from: String,
}

/// The result of `vector_rollback`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorRollbackResult {
    pub datasets: Vec<RolledBack>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolledBack {
    pub dataset_id: Uuid,
    /// `restored`, `already_restored`, or `changed_since` (someone switched it since the
    /// migration: left alone).
    pub state: String,
    /// Its `index_struct` now.
    pub index_struct: Option<String>,
}
