//! An OpenAI-compatible `POST /v1/embeddings` for re-embedding tests, in-process on a free
//! port: it knows the texts it is given (answering each with its vector scaled by 3, so the
//! caller must normalise as Dify does), checks the bearer key and the request shape as
//! OpenAI does, counts requests, and can be told to fail.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

pub const KEY: &str = "sk-test-embeddings";

#[derive(Default)]
struct Known {
    vectors: HashMap<String, Vec<f32>>,
    requests: AtomicUsize,
    failing: AtomicBool,
}

pub struct EmbeddingsServer {
    pub url: String,
    known: Arc<Known>,
    _task: tokio::task::JoinHandle<()>,
}

impl EmbeddingsServer {
    pub async fn start(vectors: HashMap<String, Vec<f32>>) -> EmbeddingsServer {
        let known = Arc::new(Known {
            vectors,
            ..Known::default()
        });
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .with_state(known.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        EmbeddingsServer {
            url,
            known,
            _task: task,
        }
    }

    pub fn requests(&self) -> usize {
        self.known.requests.load(Ordering::SeqCst)
    }

    /// Every request from now on answers 500, as a provider outage does.
    pub fn fail(&self, on: bool) {
        self.known.failing.store(on, Ordering::SeqCst);
    }
}

fn error(status: StatusCode, message: &str) -> (StatusCode, Json<Value>) {
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error"}})),
    )
}

async fn embeddings(
    State(known): State<Arc<Known>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    known.requests.fetch_add(1, Ordering::SeqCst);
    if known.failing.load(Ordering::SeqCst) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "the model is overloaded");
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {KEY}") {
        return error(StatusCode::UNAUTHORIZED, "Incorrect API key provided");
    }
    if body["model"] != "text-embedding-3-small" || body["encoding_format"] != "float" {
        return error(
            StatusCode::BAD_REQUEST,
            "unexpected model or encoding_format",
        );
    }
    let Some(inputs) = body["input"].as_array() else {
        return error(StatusCode::BAD_REQUEST, "'input' must be a list of strings");
    };
    let mut data = Vec::new();
    for (index, text) in inputs.iter().enumerate() {
        let Some(v) = text.as_str().and_then(|t| known.vectors.get(t)) else {
            return error(StatusCode::BAD_REQUEST, &format!("unknown input {text}"));
        };
        let scaled: Vec<f64> = v.iter().map(|x| f64::from(*x) * 3.0).collect();
        data.push(json!({"object": "embedding", "index": index, "embedding": scaled}));
    }
    (
        StatusCode::OK,
        Json(
            json!({"object": "list", "data": data, "model": body["model"],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
        ),
    )
}
