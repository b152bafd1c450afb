//! What a fanned-out job (`fan_out` > 1) publishes about its child jobs, shared by the kinds
//! that fan out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Phase, phase};

/// The phase of a parent while its children run, counted in their unit.
pub const fn children(unit: &'static str) -> Phase {
    phase(
        "child jobs",
        unit,
        "with `fan_out`: the work runs in child jobs that any daemon claims; done and total add \
         up theirs",
    )
}

/// Progress detail while the child jobs run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FanOutDetail {
    pub children: u64,
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Children running now, by daemon (`UPKEEP_WORKER_NAME`).
    pub running_on: BTreeMap<String, u64>,
}

/// One child job, as its parent's result lists it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChildJob {
    pub id: Uuid,
    pub state: String,
    pub attempts: i32,
    /// How much of the work it was given (prefixes, datasets and apps).
    pub units: u64,
    /// The workers that ran it, attempt by attempt (`daemon/slot`).
    pub workers: Vec<String>,
    /// Its error, when it did not succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
}
