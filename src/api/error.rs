//! The one error type of the HTTP layer: a code from one table, a message, and the offending
//! field. Every failure (including malformed requests axum would reject itself) ends up here.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::jobs::SpecError;
use crate::queue::QueueError;

macro_rules! error_codes {
    ($($variant:ident = $code:literal, $status:ident;)+) => {
        /// Stable error codes; clients may switch on them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode { $($variant,)+ }

        impl ErrorCode {
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant,)+];
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)+ }
            }
            pub fn status(self) -> StatusCode {
                match self { $(ErrorCode::$variant => StatusCode::$status,)+ }
            }
        }
    };
}

error_codes! {
    InvalidJson = "invalid_json", BAD_REQUEST;
    UnsupportedMediaType = "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE;
    PayloadTooLarge = "payload_too_large", PAYLOAD_TOO_LARGE;
    UnknownField = "unknown_field", BAD_REQUEST;
    InvalidField = "invalid_field", BAD_REQUEST;
    UnknownKind = "unknown_kind", BAD_REQUEST;
    Unauthorized = "unauthorized", UNAUTHORIZED;
    NotFound = "not_found", NOT_FOUND;
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED;
    RequestTimeout = "request_timeout", REQUEST_TIMEOUT;
    IdempotencyConflict = "idempotency_conflict", CONFLICT;
    ResourceBusy = "resource_busy", CONFLICT;
    InvalidState = "invalid_state", CONFLICT;
    DifySchemaMissing = "dify_schema_missing", SERVICE_UNAVAILABLE;
    DifySchemaUnsupported = "dify_schema_unsupported", BAD_REQUEST;
    DatabaseUnavailable = "database_unavailable", SERVICE_UNAVAILABLE;
    Internal = "internal", INTERNAL_SERVER_ERROR;
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// One of the stable codes, e.g. `invalid_field`, `resource_busy`.
    #[schema(example = "invalid_field")]
    pub code: String,
    pub message: String,
    /// The request field at fault, as a path (`params.tables[1]`), when there is one.
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn field(code: ErrorCode, field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        if status.is_server_error() {
            tracing::error!(code = self.code.as_str(), "{}", self.message);
        }
        let body = ErrorBody {
            code: self.code.as_str().to_string(),
            message: self.message,
            field: self.field,
        };
        (status, Json(body)).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                ApiError::new(
                    ErrorCode::DatabaseUnavailable,
                    format!("database unavailable: {e}"),
                )
            }
            _ if crate::db::sqlstate(&e).as_deref() == Some("42P01") => ApiError::new(
                ErrorCode::DifySchemaMissing,
                format!("a Dify table is missing: is this Dify's database? ({e})"),
            ),
            _ => ApiError::new(ErrorCode::Internal, format!("database error: {e}")),
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        let message = e.to_string();
        match e {
            QueueError::NotFound(_) => ApiError::field(ErrorCode::NotFound, "id", message),
            QueueError::IdempotencyMismatch { .. } => {
                ApiError::field(ErrorCode::IdempotencyConflict, "idempotency_key", message)
            }
            QueueError::ResourceBusy { .. } => ApiError::new(ErrorCode::ResourceBusy, message),
            QueueError::InvalidTransition { .. } => {
                ApiError::field(ErrorCode::InvalidState, "state", message)
            }
            QueueError::Sealing(e) => match e.field() {
                Some(field) => ApiError::field(ErrorCode::InvalidField, field, message),
                None => ApiError::new(ErrorCode::InvalidField, message),
            },
            QueueError::Db(e) => e.into(),
        }
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        match e {
            SpecError::UnknownKind(kind) => ApiError::field(
                ErrorCode::UnknownKind,
                "kind",
                format!(
                    "unknown job kind {kind:?}; this daemon runs: {}",
                    crate::jobs::KINDS.join(", ")
                ),
            ),
            SpecError::Invalid {
                field,
                message,
                unknown_field,
            } => {
                let code = if unknown_field {
                    ErrorCode::UnknownField
                } else {
                    ErrorCode::InvalidField
                };
                ApiError::field(code, field, message)
            }
            SpecError::Shape(m) => ApiError::new(ErrorCode::DifySchemaUnsupported, m.to_string()),
            SpecError::Db(e) => e.into(),
        }
    }
}

/// Gives every error answer the one JSON body: the ones axum and tower-http make themselves
/// (405 with its `Allow`, 413 for a body declared too large, 408) come out as plain text.
pub async fn json_errors(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let method = req.method().clone();
    let response = next.run(req).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json") || c.contains("+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, _) = response.into_parts();
    let allow = parts
        .headers
        .get(axum::http::header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => ApiError::new(
            ErrorCode::MethodNotAllowed,
            format!("{method} is not allowed here; this path accepts {allow}"),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorCode::PayloadTooLarge,
            "request body too large (over 1 MiB)",
        ),
        StatusCode::REQUEST_TIMEOUT => ApiError::new(
            ErrorCode::RequestTimeout,
            "the request took longer than 60 s",
        ),
        other => {
            let code = ErrorCode::ALL
                .iter()
                .copied()
                .find(|c| c.status() == other)
                .unwrap_or(if other.is_server_error() {
                    ErrorCode::Internal
                } else {
                    ErrorCode::InvalidJson
                });
            ApiError::new(
                code,
                other.canonical_reason().unwrap_or("error").to_lowercase(),
            )
        }
    };
    let mut out = error.into_response();
    *out.status_mut() = status;
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
