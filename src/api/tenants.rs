//! `GET /v1/tenants`: replaces the `flask shell` one-liner operators use to find tenant ids.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::AppState;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::extract::AppQuery;
use crate::dify::tenants::{self, Tenant};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// 1..=1000, default 100.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantPage {
    /// Oldest first.
    pub items: Vec<Tenant>,
    pub next_cursor: Option<Uuid>,
}

#[utoipa::path(get, path = "/v1/tenants", tag = "dify", params(TenantQuery),
    responses((status = 200, body = TenantPage), (status = 400, body = ErrorBody),
        (status = 503, description = "Not a Dify database, or unreachable", body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    AppQuery(q): AppQuery<TenantQuery>,
) -> Result<Json<TenantPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field(
            ErrorCode::InvalidField,
            "limit",
            "must be between 1 and 1000",
        ));
    }
    let mut items = tenants::list(&state.pool, q.cursor, limit + 1).await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|t| t.id)
    } else {
        None
    };
    Ok(Json(TenantPage { items, next_cursor }))
}
