//! The job queue: Postgres is the engine. Jobs are claimed with `FOR UPDATE SKIP LOCKED` under a
//! lease; every later write by a worker is fenced by the attempt number it claimed.

mod control;
mod events;
mod lease;
pub mod listener;
mod maintenance;
mod read;
mod submit;

pub use control::{cancel, retry};
pub use events::{EventType, JobEvent, append_event, events_after};
pub use lease::{Claimed, FenceError, Lease, claim, claim_except};
pub use maintenance::{fail_exhausted, prune_finished};
pub use read::{JobFilter, counts, get, list, ready, state_of};
pub use submit::{NewJob, Submitted, submit, submit_child};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// A row of `upkeep.jobs` as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub kind: String,
    pub params: serde_json::Value,
    pub dry_run: bool,
    pub state: String,
    pub parent_id: Option<Uuid>,
    pub resource_key: Option<String>,
    pub idempotency_key: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub locked_by: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub progress: Option<serde_json::Value>,
    pub checkpoint: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    pub error: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobRow {
    pub fn state(&self) -> JobState {
        JobState::parse(&self.state).unwrap_or(JobState::Failed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("job {0} not found")]
    NotFound(Uuid),
    #[error("idempotency key {key:?} was already used for job {job_id} with a different request")]
    IdempotencyMismatch { key: String, job_id: Uuid },
    #[error("job {job_id} ({kind}, {state}) already holds resource {resource_key:?}")]
    ResourceBusy {
        resource_key: String,
        job_id: Uuid,
        kind: String,
        state: String,
    },
    #[error("job {job_id} is {state}: {action} is not possible")]
    InvalidTransition {
        job_id: Uuid,
        state: String,
        action: &'static str,
    },
    #[error(transparent)]
    Sealing(#[from] crate::secrets::SealError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}
