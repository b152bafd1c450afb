//! Extractors that turn every malformed request into the app's error body, naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::{ApiError, ErrorCode};

/// JSON body, parsed with the path of the first bad field.
pub struct AppJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let mime = ct.split(';').next().unwrap_or("").trim();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected a JSON body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "request body too large (over 1 MiB)",
                )
            } else {
                ApiError::new(ErrorCode::InvalidJson, format!("cannot read body: {e}"))
            }
        })?;
        parse_json(&bytes).map(AppJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        if inner.is_syntax() || inner.is_eof() {
            // Syntax errors keep their position: it is what the client needs to fix them.
            return ApiError::new(ErrorCode::InvalidJson, format!("malformed JSON: {message}"));
        }
        field_error(&path, &message)
    })
}

fn field_error(path: &str, message: &str) -> ApiError {
    let located = crate::fieldpath::locate(None, path, message);
    let code = if located.unknown {
        ErrorCode::UnknownField
    } else {
        ErrorCode::InvalidField
    };
    ApiError::field(code, located.field, located.message)
}

/// Query string, parsed with the name of the bad parameter.
pub struct AppQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for AppQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(AppQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                field_error(&path, &e.into_inner().to_string())
            })
    }
}

/// The `{id}` of a job or schedule path, as a UUID.
pub struct JobId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::field(ErrorCode::InvalidField, "id", e.body_text()))?;
        Uuid::parse_str(&raw).map(JobId).map_err(|_| {
            ApiError::field(
                ErrorCode::InvalidField,
                "id",
                format!("{raw:?} is not a UUID"),
            )
        })
    }
}
