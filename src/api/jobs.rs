//! `/v1/jobs`: submit, list, show, cancel, retry.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{AppJson, AppQuery, JobId};
use super::view::JobView;
use crate::jobs::{JobRequest, JobSpec, SpecError};
use crate::queue::{self, JobFilter, JobState, NewJob, Submitted};

/// `POST /v1/jobs` body. `params` is typed per `kind` (see `JobRequest`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    pub kind: String,
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// The request body as documented: a job kind with its typed params, plus the common fields.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SubmitJobRequest {
    #[serde(flatten)]
    pub job: JobRequest,
    /// Plan only: report what a real run would do and touch nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The same key with the same request returns the first job; with another request, 409.
    pub idempotency_key: Option<String>,
}

#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body = SubmitJobRequest,
    responses(
        (status = 202, description = "Queued (or, with a known idempotency key, the existing job)", body = JobView),
        (status = 400, description = "Malformed JSON, unknown kind or field, invalid value", body = ErrorBody),
        (status = 409, description = "Idempotency key reused with another request, or the resource is held by an active job", body = ErrorBody),
        (status = 415, body = ErrorBody),
    ))]
pub async fn submit(
    State(state): State<AppState>,
    AppJson(body): AppJson<SubmitJob>,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    if let Some(key) = &body.idempotency_key
        && (key.is_empty() || key.len() > 200)
    {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "idempotency_key",
            "must be 1 to 200 characters",
        ));
    }
    let mut spec = JobSpec::parse(&body.kind, params_object(body.params)?)?;
    spec.validate(&state.pool, &state.settings).await?;
    let submitted = queue::submit(
        &state.pool,
        &state.settings.sealer,
        NewJob {
            kind: spec.kind().to_string(),
            params: spec.params_json(),
            dry_run: body.dry_run,
            idempotency_key: body.idempotency_key,
            // A dry run reads only: it never needs to exclude the real thing.
            resource_key: if body.dry_run {
                None
            } else {
                spec.resource_key()
            },
            parent_id: None,
            max_attempts: 5,
        },
    )
    .await?;
    if let Submitted::Created(row) = &submitted {
        tracing::info!(job.id = %row.id, job.kind = %row.kind, "job queued");
    }
    Ok((StatusCode::ACCEPTED, Json(submitted.into_row().into())))
}

/// `params` of a request: absent or null is `{}`; anything else must be an object.
pub(super) fn params_object(params: Option<Value>) -> Result<Value, ApiError> {
    match params {
        None | Some(Value::Null) => Ok(Value::Object(Default::default())),
        Some(v @ Value::Object(_)) => Ok(v),
        Some(_) => Err(ApiError::field(
            ErrorCode::InvalidField,
            "params",
            "must be an object",
        )),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only the child jobs of this job (`fan_out`).
    pub parent_id: Option<Uuid>,
    /// 1..=200, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    /// Newest first.
    pub items: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobPage), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<Json<JobPage>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "limit",
            "must be between 1 and 200",
        ));
    }
    if let Some(kind) = &q.kind
        && !crate::jobs::KINDS.contains(&kind.as_str())
    {
        return Err(SpecError::UnknownKind(kind.clone()).into());
    }
    let filter = JobFilter {
        state: q.state,
        kind: q.kind,
        parent_id: q.parent_id,
        before: q.cursor,
        limit,
    };
    let (rows, more) = queue::list(&state.pool, &filter).await?;
    let next_cursor = if more {
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Json(JobPage {
        items: rows.into_iter().map(JobView::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    JobId(id): JobId,
) -> Result<Json<JobView>, ApiError> {
    Ok(Json(queue::get(&state.pool, id).await?.into()))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 202, description = "Cancelled (queued job) or cancel requested (running job)", body = JobView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The job already finished", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    JobId(id): JobId,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let row = queue::cancel(&state.pool, id).await?;
    Ok((StatusCode::ACCEPTED, Json(row.into())))
}

#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 202, description = "Queued again; resumes from its checkpoint", body = JobView),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not failed or cancelled, or its resource is held", body = ErrorBody)))]
pub async fn retry(
    State(state): State<AppState>,
    JobId(id): JobId,
) -> Result<(StatusCode, Json<JobView>), ApiError> {
    let row = queue::retry(&state.pool, id).await?;
    Ok((StatusCode::ACCEPTED, Json(row.into())))
}
