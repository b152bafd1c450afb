//! `/v1/schedules`: recurring jobs (create, list, show, delete).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{AppJson, AppQuery, JobId};
use super::jobs::params_object;
use super::view::redact;
use crate::jobs::JobRequest;
use crate::schedules::{self, NewSchedule, ScheduleError, ScheduleRow};

/// `POST /v1/schedules` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    pub kind: String,
    #[serde(default)]
    pub params: Option<Value>,
    #[serde(default)]
    pub dry_run: bool,
    pub cron: String,
    #[serde(default)]
    pub timezone: Option<String>,
}

/// The request body as documented: a job request (as for `POST /v1/jobs`) plus when to run it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreateScheduleRequest {
    #[serde(flatten)]
    pub job: JobRequest,
    /// Each run is a dry run.
    #[serde(default)]
    pub dry_run: bool,
    /// Five fields: minute hour day-of-month month day-of-week (`0 3 * * *` is 03:00 daily).
    #[schema(example = "0 3 * * *")]
    pub cron: String,
    /// An IANA time zone the fields are read in; `UTC` when absent. A time a DST change
    /// skips runs when the clock has jumped past it; a repeated one runs once.
    #[schema(example = "Europe/Berlin")]
    pub timezone: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub id: Uuid,
    pub kind: String,
    /// The params every run gets, defaults filled in; secrets are shown as `***`.
    pub params: Value,
    pub dry_run: bool,
    pub cron: String,
    pub timezone: String,
    pub enabled: bool,
    /// When the ticker next submits a job (occurrences missed while no daemon ran collapse
    /// into one run).
    pub next_run_at: DateTime<Utc>,
    /// The occurrence the last outcome is about.
    pub last_occurrence: Option<DateTime<Utc>>,
    pub last_job_id: Option<Uuid>,
    /// `queued`, `skipped: busy` (the resource was held; the run was skipped, not delayed),
    /// `skipped: invalid request: …` or `disabled: …`.
    pub last_outcome: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ScheduleRow> for ScheduleView {
    fn from(row: ScheduleRow) -> Self {
        ScheduleView {
            id: row.id,
            kind: row.kind,
            params: redact(row.params),
            dry_run: row.dry_run,
            cron: row.cron,
            timezone: row.timezone,
            enabled: row.enabled,
            next_run_at: row.next_run_at,
            last_occurrence: row.last_occurrence,
            last_job_id: row.last_job_id,
            last_outcome: row.last_outcome,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        let message = e.to_string();
        match e {
            ScheduleError::Cron { message } => {
                ApiError::field(ErrorCode::InvalidField, "cron", message)
            }
            ScheduleError::Timezone { message } => {
                ApiError::field(ErrorCode::InvalidField, "timezone", message)
            }
            ScheduleError::Spec(e) => e.into(),
            ScheduleError::NotFound(_) => ApiError::field(ErrorCode::NotFound, "id", message),
            ScheduleError::Time(_) => ApiError::new(ErrorCode::Internal, message),
            ScheduleError::Sealing(e) => match e.field() {
                Some(field) => ApiError::field(ErrorCode::InvalidField, field, message),
                None => ApiError::new(ErrorCode::InvalidField, message),
            },
            ScheduleError::Db(e) => e.into(),
        }
    }
}

#[utoipa::path(post, path = "/v1/schedules", tag = "schedules",
    request_body = CreateScheduleRequest,
    responses(
        (status = 201, description = "Created, with its first `next_run_at`", body = ScheduleView),
        (status = 400, description = "Malformed JSON, unknown kind or field, invalid params, `cron` or `timezone`", body = ErrorBody),
        (status = 415, body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    AppJson(body): AppJson<CreateSchedule>,
) -> Result<(StatusCode, Json<ScheduleView>), ApiError> {
    let row = schedules::create(
        &state.pool,
        &state.settings,
        NewSchedule {
            kind: body.kind,
            params: params_object(body.params)?,
            dry_run: body.dry_run,
            cron: body.cron,
            timezone: body.timezone,
        },
    )
    .await?;
    tracing::info!(schedule.id = %row.id, kind = %row.kind, cron = %row.cron, timezone = %row.timezone, "created schedule {}", row.id);
    Ok((StatusCode::CREATED, Json(row.into())))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1..=200, default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SchedulePage {
    /// Newest first.
    pub items: Vec<ScheduleView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", params(ListQuery),
    responses((status = 200, body = SchedulePage), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<ListQuery>,
) -> Result<Json<SchedulePage>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "limit",
            "must be between 1 and 200",
        ));
    }
    let (rows, more) = schedules::list(&state.pool, q.cursor, limit).await?;
    let next_cursor = if more {
        rows.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Json(SchedulePage {
        items: rows.into_iter().map(ScheduleView::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/schedules/{id}", tag = "schedules",
    params(("id" = Uuid, Path, description = "Schedule id")),
    responses((status = 200, body = ScheduleView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    JobId(id): JobId,
) -> Result<Json<ScheduleView>, ApiError> {
    Ok(Json(schedules::get(&state.pool, id).await?.into()))
}

#[utoipa::path(delete, path = "/v1/schedules/{id}", tag = "schedules",
    params(("id" = Uuid, Path, description = "Schedule id")),
    responses(
        (status = 204, description = "Deleted; jobs it already queued are left alone"),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    JobId(id): JobId,
) -> Result<StatusCode, ApiError> {
    schedules::delete(&state.pool, id).await?;
    tracing::info!(schedule.id = %id, "deleted schedule {id}");
    Ok(StatusCode::NO_CONTENT)
}
