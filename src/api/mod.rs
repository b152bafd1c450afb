//! The HTTP API (v1): one function builds the whole router from state; `serve` and every test
//! call it. The OpenAPI document is assembled from the same handlers.

mod auth;
mod console;
pub mod error;
mod events;
pub mod extract;
mod health;
mod jobs;
mod preflight;
mod schedules;
mod tenants;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::queue::listener::Signals;

pub use error::{ApiError, ErrorBody, ErrorCode};

#[derive(Clone)]
pub struct AppState {
    pub pool: sqlx::PgPool,
    pub settings: Arc<Settings>,
    pub signals: Signals,
    pub metrics: Arc<Metrics>,
    /// Ends live event streams so a graceful shutdown does not wait on them.
    pub shutdown: CancellationToken,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Upkeep",
        description = "Maintenance jobs for a self-hosted Dify: queued in Postgres, observable, resumable.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "jobs", description = "Submit, watch, cancel and retry maintenance jobs"),
        (name = "schedules", description = "Recurring jobs: a job request plus a cron expression and time zone"),
        (name = "dify", description = "Read-only views of the Dify deployment"),
        (name = "health", description = "Open endpoints for probes and scrapers"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("UPKEEP_ADMIN_TOKEN"))
                    .build(),
            ),
        );
    }
}

fn routes() -> (OpenApiRouter<AppState>, OpenApiRouter<AppState>) {
    let protected = OpenApiRouter::new()
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::show))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::retry))
        .routes(routes!(events::events))
        .routes(routes!(schedules::create, schedules::list))
        .routes(routes!(schedules::show, schedules::delete))
        .routes(routes!(tenants::list))
        .routes(routes!(preflight::preflight))
        .routes(routes!(health::metrics));
    let open = OpenApiRouter::new()
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz));
    (protected, open)
}

/// The OpenAPI document, as served at `/openapi.json` and committed as `openapi/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (protected, open) = routes();
    let mut doc = OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi())
        .merge(protected)
        .merge(open)
        .into_openapi();
    crate::jobs::contract::publish(&mut doc, crate::jobs::contracts());
    // Health endpoints need no token.
    for path in ["/healthz", "/readyz"] {
        if let Some(item) = doc.paths.paths.get_mut(path)
            && let Some(op) = item.get.as_mut()
        {
            op.security = Some(vec![
                utoipa::openapi::security::SecurityRequirement::default(),
            ]);
        }
    }
    doc
}

pub fn router(state: AppState) -> Router {
    let (protected, open) = routes();
    let protected = protected.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        auth::require_token,
    ));
    let (router, _) = OpenApiRouter::<AppState>::new()
        .merge(protected)
        .merge(open)
        .split_for_parts();
    router
        .with_state(state)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi()))
        .merge(console::router())
        .fallback(not_found)
        .layer(RequestBodyLimitLayer::new(1024 * 1024))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(60),
        ))
        .layer(axum::middleware::from_fn(error::json_errors))
        .layer(TraceLayer::new_for_http())
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such endpoint")
}
