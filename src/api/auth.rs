//! Bearer-token auth for everything but health and docs. tower-http's bearer layer compares
//! with `==`; this compares in constant time.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ErrorCode};

pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(expected) = state.settings.admin_token.as_deref() else {
        // Only possible on a loopback address: config refuses anything else without a token.
        return Ok(next.run(request).await);
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => {
            Ok(next.run(request).await)
        }
        Some(_) => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "invalid bearer token",
        )),
        None => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "missing bearer token: send Authorization: Bearer <UPKEEP_ADMIN_TOKEN>",
        )),
    }
}
