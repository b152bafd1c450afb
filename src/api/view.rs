//! What the API shows of a job: params with secrets redacted, typed progress, a short error.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::jobs::Progress;
use crate::queue::{JobRow, JobState};
use crate::secrets::{has_credentials, is_sealed, is_secret};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: Uuid,
    pub kind: String,
    pub state: JobState,
    pub dry_run: bool,
    /// The params with every default filled in; secrets are shown as `***`.
    pub params: Value,
    pub progress: Option<Progress>,
    /// The job's result (for a dry run, its plan). Kept when a job fails part way.
    pub result: Option<Value>,
    pub error: Option<JobErrorView>,
    pub attempts: i32,
    pub cancel_requested: bool,
    pub parent_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobErrorView {
    #[schema(value_type = crate::jobs::failure::FailureCode)]
    pub code: String,
    pub message: String,
}

impl From<JobRow> for JobView {
    fn from(row: JobRow) -> Self {
        let error = row.error.as_ref().map(|e| JobErrorView {
            code: e["code"].as_str().unwrap_or("unknown").to_string(),
            message: e["message"].as_str().unwrap_or("").to_string(),
        });
        JobView {
            id: row.id,
            state: row.state(),
            kind: row.kind,
            dry_run: row.dry_run,
            params: redact(row.params),
            progress: row.progress.and_then(|p| serde_json::from_value(p).ok()),
            result: row.result,
            error,
            attempts: row.attempts,
            cancel_requested: row.cancel_requested_at.is_some(),
            parent_id: row.parent_id,
            idempotency_key: row.idempotency_key,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
        }
    }
}

/// Replaces the values of secret-bearing fields (`secrets::is_secret`), URLs with a password
/// and sealed values, at any depth.
pub fn redact(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    if is_secret(&k) && !v.is_null() {
                        (k, Value::String("***".into()))
                    } else {
                        (k, redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        Value::String(s) if is_sealed(&s) || has_credentials(&s) => Value::String("***".into()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_nested_secrets() {
        let v = redact(
            json!({"target": {"type": "s3", "secret_key": "s", "access_key": "a",
            "bucket_name": "b"}, "days": 3}),
        );
        assert_eq!(
            v,
            json!({"target": {"type": "s3", "secret_key": "***", "access_key": "***",
            "bucket_name": "b"}, "days": 3})
        );
    }
}
