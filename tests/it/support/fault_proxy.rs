//! A small HTTP proxy in front of a storage server (moto) that starts failing writes on cue:
//! after N more writes pass, the next ones get a chosen status (503 for a server in trouble,
//! 507 for a full one), for a number of writes or until healed. Counting requests, not
//! time, makes the fault land at the same point on every run.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Default)]
struct Policy {
    /// Writes still let through before the failures start.
    pass: u64,
    /// The status failing writes get; None: healthy.
    status: Option<StatusCode>,
    /// How many writes fail before it heals by itself (None: until `heal`).
    left: Option<u64>,
    failed: u64,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    policy: Mutex<Policy>,
}

pub struct FaultProxy {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: &str) -> FaultProxy {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            policy: Mutex::new(Policy::default()),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy { url, shared, task }
    }

    /// After `pass` more writes (PUT, POST, DELETE) succeed, answer `status` to the next
    /// `times` writes (None: every write until `heal`).
    pub fn fail_writes(&self, pass: u64, status: StatusCode, times: Option<u64>) {
        let mut p = self.shared.policy.lock().expect("policy");
        p.pass = pass;
        p.status = Some(status);
        p.left = times;
    }

    pub fn heal(&self) {
        self.shared.policy.lock().expect("policy").status = None;
    }

    /// How many writes were answered with a failure so far.
    pub fn failed(&self) -> u64 {
        self.shared.policy.lock().expect("policy").failed
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The status this write gets instead of being forwarded, if any.
fn verdict(shared: &Shared) -> Option<StatusCode> {
    let mut p = shared.policy.lock().expect("policy");
    let status = p.status?;
    if p.pass > 0 {
        p.pass -= 1;
        return None;
    }
    match p.left {
        Some(0) => return None,
        Some(n) => p.left = Some(n - 1),
        None => {}
    }
    p.failed += 1;
    Some(status)
}

const HOP: [HeaderName; 4] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
];

async fn forward(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if !matches!(parts.method, Method::GET | Method::HEAD)
        && let Some(status) = verdict(&shared)
    {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{}</Code>\
             <Message>injected by the test's fault proxy</Message></Error>",
            if status == StatusCode::INSUFFICIENT_STORAGE {
                "InsufficientStorage"
            } else {
                "ServiceUnavailable"
            }
        );
        return (status, [(header::CONTENT_TYPE, "application/xml")], xml).into_response();
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut rb = shared
        .client
        .request(parts.method.clone(), format!("{}{path}", shared.upstream));
    for (k, v) in &parts.headers {
        if !HOP.contains(k) {
            rb = rb.header(k, v);
        }
    }
    let resp = match rb.body(body).send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let mut out = Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if !HOP.contains(k) {
            out = out.header(k, v);
        }
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    out.body(Body::from(bytes)).expect("response")
}
