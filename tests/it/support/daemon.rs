//! An in-process daemon on a test database, with one helper per endpoint kind and waits that
//! follow the job's own event stream (never a sleep).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::Value;
use upkeep::config::Settings;
use upkeep::daemon::Daemon;
use upkeep::failpoint::FailPoints;

use super::pg::TestDb;

pub const TOKEN: &str = "test-token-0123456789abcdef";

pub struct Options {
    pub workers: usize,
    pub lease_secs: u64,
    pub failpoints: &'static str,
    pub token: Option<&'static str>,
    pub name: &'static str,
    /// More (or overriding) environment, e.g. Dify's storage variables.
    pub env: Vec<(&'static str, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            workers: 2,
            lease_secs: 30,
            failpoints: "",
            token: Some(TOKEN),
            name: "test",
            env: Vec::new(),
        }
    }
}

/// Dify's `SECRET_KEY` as a sidecar on Dify's `.env` has it: job secrets are sealed with it.
pub const SECRET_KEY: &str = "sk-test-upkeep-0123456789abcdef";

pub fn settings(db_url: &str, opts: &Options) -> Settings {
    let mut env: HashMap<String, String> = [
        ("UPKEEP_DATABASE_URL", db_url.to_string()),
        ("UPKEEP_LISTEN", "127.0.0.1:0".to_string()),
        ("UPKEEP_WORKERS", opts.workers.to_string()),
        ("UPKEEP_LEASE_SECONDS", opts.lease_secs.to_string()),
        ("UPKEEP_POLL_MS", "200".to_string()),
        ("UPKEEP_WORKER_NAME", opts.name.to_string()),
        ("SECRET_KEY", SECRET_KEY.to_string()),
        ("STORAGE_TYPE", "opendal".to_string()),
        (
            "OPENDAL_FS_ROOT",
            std::env::temp_dir().display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in &opts.env {
        env.insert(k.to_string(), v.clone());
    }
    if let Some(t) = opts.token {
        env.insert("UPKEEP_ADMIN_TOKEN".into(), t.into());
    }
    Settings::from_env(&env).expect("test settings are valid")
}

pub struct TestDaemon {
    daemon: Option<Daemon>,
    pub url: String,
    pub http: reqwest::Client,
    pub token: Option<&'static str>,
}

impl TestDaemon {
    pub async fn start(db: &TestDb, opts: Options) -> TestDaemon {
        let failpoints = FailPoints::parse(opts.failpoints).expect("failpoints");
        let daemon = Daemon::start(settings(&db.url, &opts), failpoints)
            .await
            .expect("daemon starts");
        TestDaemon {
            url: format!("http://{}", daemon.addr),
            daemon: Some(daemon),
            http: reqwest::Client::new(),
            token: opts.token,
        }
    }

    /// A client of a daemon that runs elsewhere (the `demo` process).
    pub fn remote(url: &str, token: &str) -> TestDaemon {
        TestDaemon {
            daemon: None,
            url: url.to_string(),
            http: reqwest::Client::new(),
            token: Some(Box::leak(token.to_string().into_boxed_str())),
        }
    }

    /// Stops like SIGTERM would; returns whether it finished within the grace period.
    pub async fn stop(mut self) -> bool {
        match self.daemon.take() {
            Some(d) => d.stop(Duration::from_secs(20)).await,
            None => true,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.url));
        match self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends a request and returns the status and the JSON body (Null when not JSON).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut rb = self.request(method, path);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.expect("daemon answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn submit(&self, body: Value) -> (u16, Value) {
        self.call(Method::POST, "/v1/jobs", Some(body)).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let resp = self
            .request(Method::GET, "/metrics")
            .send()
            .await
            .expect("metrics");
        assert_eq!(resp.status(), 200);
        resp.text().await.expect("metrics body")
    }

    pub async fn job(&self, id: &str) -> Value {
        let (status, body) = self
            .call(Method::GET, &format!("/v1/jobs/{id}"), None)
            .await;
        assert_eq!(status, 200, "{body}");
        super::contract::check_job(&body);
        body
    }

    /// Follows the job's event stream until `pred` accepts an event; returns that event.
    pub async fn wait_event(&self, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let events = self
            .stream(id, None, Duration::from_secs(60), |e| pred(e))
            .await;
        events.last().cloned().expect("the awaited event arrived")
    }

    /// Follows the job's event stream until the daemon ends it (the job finished); returns the
    /// job as it ended. The deadline only catches a hang: on two loaded cores a big job of the
    /// suite can take minutes.
    pub async fn wait_finished(&self, id: &str) -> Value {
        self.stream(id, None, Duration::from_secs(240), |_| false)
            .await;
        let job = self.job(id).await;
        assert!(
            ["succeeded", "failed", "cancelled"].contains(&job["state"].as_str().unwrap_or("")),
            "stream ended but job is {job}"
        );
        job
    }

    /// Reads SSE events (after `last_event_id`) until `stop` accepts one or the stream ends.
    pub async fn stream(
        &self,
        id: &str,
        last_event_id: Option<i64>,
        deadline: Duration,
        stop: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let read = async {
            let mut rb = self
                .request(Method::GET, &format!("/v1/jobs/{id}/events"))
                .header("Accept", "text/event-stream");
            if let Some(last) = last_event_id {
                rb = rb.header("Last-Event-ID", last.to_string());
            }
            let resp = rb.send().await.expect("stream opens");
            assert_eq!(resp.status(), 200);
            let mut body = resp.bytes_stream();
            let mut buf = String::new();
            let mut seen = vec![];
            let mut kind: Option<String> = None;
            while let Some(chunk) = body.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk.expect("stream chunk")));
                while let Some(end) = buf.find("\n\n") {
                    let frame: String = buf.drain(..end + 2).collect();
                    let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data:")) else {
                        continue;
                    };
                    let event: Value = serde_json::from_str(data.trim()).expect("event is JSON");
                    if event["type"] == "progress" {
                        if kind.is_none() {
                            let (_, job) = self
                                .call(Method::GET, &format!("/v1/jobs/{id}"), None)
                                .await;
                            kind = job["kind"].as_str().map(str::to_string);
                        }
                        if let Some(kind) = &kind {
                            super::contract::check_progress(kind, &event["data"]);
                        }
                    }
                    let done = stop(&event);
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
            }
            seen
        };
        tokio::time::timeout(deadline, read)
            .await
            .expect("event stream within deadline")
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(d) = &self.daemon {
            d.shutdown.cancel();
        }
    }
}

/// The body of a vacuum request on the given tables.
pub fn vacuum(tables: &[&str]) -> Value {
    serde_json::json!({"kind": "vacuum", "params": {"tables": tables, "mode": "plain"}})
}
