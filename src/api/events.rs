//! `/v1/jobs/{id}/events`: a JSON page of a job's events, or with `Accept: text/event-stream`
//! a live stream that resumes after `Last-Event-ID` and ends when the job has finished.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::ACCEPT;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::{AppQuery, JobId};
use crate::queue::{self, JobEvent};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events after this event id (for SSE, `Last-Event-ID` does the same).
    pub after: Option<i64>,
    /// 1..=1000, default 200 (JSON page only).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// Oldest first.
    pub items: Vec<JobEvent>,
    /// Pass as `after` for the next page.
    pub next_after: Option<i64>,
}

#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id"), EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume a stream after this event")),
    responses(
        (status = 200, description = "A page of events, or a live `text/event-stream` when asked for",
            content((EventPage = "application/json"), (String = "text/event-stream"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    JobId(id): JobId,
    headers: HeaderMap,
    AppQuery(q): AppQuery<EventsQuery>,
) -> Result<Response, ApiError> {
    queue::state_of(&state.pool, id).await?;
    let wants_stream = headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::field(
                        ErrorCode::InvalidField,
                        "Last-Event-ID",
                        "must be an event id",
                    )
                })?,
        ),
    };
    let after = last_event_id.or(q.after).unwrap_or(0);
    if wants_stream {
        let stream = event_stream(state, id, after);
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response());
    }
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "limit",
            "must be between 1 and 1000",
        ));
    }
    let items = queue::events_after(&state.pool, id, after, limit).await?;
    let next_after = items.last().map(|e| e.id);
    Ok(Json(EventPage { items, next_after }).into_response())
}

struct Cursor {
    state: AppState,
    job: Uuid,
    after: i64,
    buffered: VecDeque<JobEvent>,
    rx: broadcast::Receiver<Uuid>,
    closing: bool,
}

fn event_stream(
    state: AppState,
    job: Uuid,
    after: i64,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let rx = state.signals.job_events.subscribe();
    let cursor = Cursor {
        state,
        job,
        after,
        buffered: VecDeque::new(),
        rx,
        closing: false,
    };
    futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(ev) = c.buffered.pop_front() {
                c.after = ev.id;
                let data = serde_json::to_string(&ev).unwrap_or_default();
                let event = Event::default()
                    .id(ev.id.to_string())
                    .event(ev.event_type.clone())
                    .data(data);
                return Some((Ok(event), c));
            }
            match queue::events_after(&c.state.pool, c.job, c.after, 200).await {
                Ok(events) if !events.is_empty() => {
                    c.buffered.extend(events);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job.id = %c.job, error = %e, "event stream read failed");
                }
            }
            // Nothing new. A finished job's final event is committed with its state, so one
            // more read after seeing the end catches it; then the stream ends.
            if c.closing || c.state.shutdown.is_cancelled() {
                return None;
            }
            match queue::state_of(&c.state.pool, c.job).await {
                Ok(state) if state.is_finished() => {
                    c.closing = true;
                    continue;
                }
                Err(queue::QueueError::NotFound(_)) => return None,
                _ => {}
            }
            wait_for_event(&mut c).await;
        }
    })
}

/// Waits for a notification about this job, with a poll as the fallback.
async fn wait_for_event(c: &mut Cursor) {
    let deadline = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = c.state.shutdown.cancelled() => return,
            r = c.rx.recv() => match r {
                Ok(id) if id == c.job => return,
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => return,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
