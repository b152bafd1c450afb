//! The append-only event log of each job (state changes, progress, logs, warnings).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    State,
    Progress,
    Log,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::State => "state",
            EventType::Progress => "progress",
            EventType::Log => "log",
            EventType::Warning => "warning",
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct JobEvent {
    /// Monotonic per database; SSE uses it as the event id (`Last-Event-ID`).
    pub id: i64,
    pub job_id: Uuid,
    pub at: DateTime<Utc>,
    /// `state`, `progress`, `log` or `warning`.
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub event_type: String,
    pub attempt: Option<i32>,
    pub data: serde_json::Value,
}

pub async fn append_event<'e>(
    db: impl PgExecutor<'e>,
    job_id: Uuid,
    event_type: EventType,
    attempt: Option<i32>,
    data: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO upkeep.job_events (job_id, type, attempt, data) VALUES ($1, $2, $3, $4)",
    )
    .bind(job_id)
    .bind(event_type.as_str())
    .bind(attempt)
    .bind(data)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn events_after<'e>(
    db: impl PgExecutor<'e>,
    job_id: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<JobEvent>, sqlx::Error> {
    sqlx::query_as::<_, JobEvent>(
        "SELECT id, job_id, at, type, attempt, data FROM upkeep.job_events \
         WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(job_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}
