//! The admin web console: static files under `console/` at the repository root, embedded in
//! the binary. Pages (`/`, `/jobs/{id}`, `/new`, `/overview`) all return `index.html`; the
//! script routes on the client. Assets live at `/console/<version>/<file>`, where the version
//! is a hash of every asset: cached for a year, and a new build changes every URL.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::error::{ApiError, ErrorCode};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/api.js"),
    },
    Asset {
        name: "dom.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/dom.js"),
    },
    Asset {
        name: "views.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/views.js"),
    },
    Asset {
        name: "results.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/results.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../console/favicon.svg"),
    },
];

const INDEX: &str = include_str!("../../console/index.html");

/// Everything the console loads comes from the daemon itself.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// The first 12 hex digits of a SHA-256 over every asset.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut h = Sha256::new();
    for a in ASSETS {
        h.update(a.name.as_bytes());
        h.update(a.body);
    }
    h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
});

static PAGE: LazyLock<String> =
    LazyLock::new(|| INDEX.replace("{{assets}}", &format!("/console/{}", *VERSION)));

pub fn router() -> Router {
    Router::new()
        .route("/", get(page))
        .route("/jobs", get(page))
        .route("/jobs/{id}", get(page))
        .route("/new", get(page))
        .route("/overview", get(page))
        .route("/console/{version}/{file}", get(asset))
}

fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn page() -> Response {
    secure(
        (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            PAGE.as_str(),
        )
            .into_response(),
    )
}

async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == file) else {
        return ApiError::new(ErrorCode::NotFound, "no such console asset").into_response();
    };
    // An old page asking for an old version gets today's file, uncached.
    let cache = if version == *VERSION {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    secure(
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, cache),
            ],
            a.body,
        )
            .into_response(),
    )
}
