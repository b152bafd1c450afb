//! The vector-store test servers of `tests/servers/` (no real Weaviate, Qdrant or Milvus
//! installs here): a Weaviate REST server, a Qdrant gRPC stand-in over `qdrant-client`'s local
//! mode and a strict Milvus gRPC server over milvus-lite. Each binds a free port on 127.0.0.1
//! and says `READY <ports>` on stdout; the handle kills it on drop. The Python is
//! `.tools/venv`'s (`UPKEEP_TEST_QDRANT_PY`, `UPKEEP_TEST_MILVUS_PY`, from scripts/test).

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const READY_DEADLINE: Duration = Duration::from_secs(60);

fn python() -> String {
    std::env::var("UPKEEP_TEST_QDRANT_PY").unwrap_or_else(|_| {
        panic!(
            "UPKEEP_TEST_QDRANT_PY is not set: run the tests through scripts/test, which installs \
             qdrant-client into .tools/venv and exports its python"
        )
    })
}

fn milvus_python() -> String {
    std::env::var("UPKEEP_TEST_MILVUS_PY").unwrap_or_else(|_| {
        panic!(
            "UPKEEP_TEST_MILVUS_PY is not set: run the tests through scripts/test, which installs \
             milvus-lite and pymilvus into .tools/venv and exports its python"
        )
    })
}

/// Spawns `script args`, returns the child and the numbers after `READY`.
async fn spawn(script: &str, args: &[&str]) -> (Child, Vec<u16>) {
    spawn_with(python(), script, args).await
}

/// [`spawn`] with another Python.
async fn spawn_with(python: String, script: &str, args: &[&str]) -> (Child, Vec<u16>) {
    let path = format!("{}/tests/servers/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(python);
    cmd.arg(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    // SAFETY: only async-signal-safe calls between fork and exec: the server dies with the
    // test process even when that is killed without unwinding.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {script}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(READY_DEADLINE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(ports) = line.strip_prefix("READY ") {
                return Some(
                    ports
                        .split_whitespace()
                        .map(|p| p.parse::<u16>().expect("port"))
                        .collect::<Vec<u16>>(),
                );
            }
        }
        None
    })
    .await;
    match ready {
        Ok(Some(ports)) => (child, ports),
        _ => panic!("{script} did not say READY within {READY_DEADLINE:?}"),
    }
}

/// Qdrant's gRPC API answering as `version` (Dify's compose runs 1.8.3).
pub struct QdrantStandin {
    _child: Child,
    pub grpc_port: u16,
    control: String,
    key: Option<String>,
}

impl QdrantStandin {
    pub async fn start(version: &str) -> QdrantStandin {
        Self::start_with_key(version, None).await
    }

    /// One that wants `key` (`api-key` metadata), as `QDRANT__SERVICE__API_KEY` makes it.
    pub async fn start_with_key(version: &str, key: Option<&str>) -> QdrantStandin {
        let mut args = vec![
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--version",
            version,
            "--exit-on-stdin-eof",
        ];
        if let Some(key) = key {
            args.extend(["--api-key", key]);
        }
        let (child, ports) = spawn("qdrant_standin.py", &args).await;
        QdrantStandin {
            _child: child,
            grpc_port: ports[0],
            control: format!("http://127.0.0.1:{}", ports[1]),
            key: key.map(str::to_string),
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// A client of it, as the job makes one.
    pub async fn store(&self) -> upkeep::vector::qdrant::QdrantStore {
        upkeep::vector::qdrant::QdrantStore::connect(
            &self.grpc_url(),
            self.key.as_deref(),
            Duration::from_secs(20),
            1,
        )
        .await
        .expect("the Qdrant stand-in answers")
    }

    /// The collections as created: the CreateCollection request and the field indexes.
    pub async fn layout(&self) -> Value {
        control(
            &self.control,
            reqwest::Method::GET,
            "/__debug/collections",
            None,
        )
        .await
    }

    /// Matching calls after the first `after` fail with `code` (`UNAVAILABLE`, ...).
    pub async fn fail_after(&self, after: u32, code: &str, methods: &[&str]) {
        let body = serde_json::json!({"fail_after": after, "code": code, "methods": methods});
        control(&self.control, reqwest::Method::POST, "/__fault", Some(body)).await;
    }

    pub async fn heal(&self) {
        control(&self.control, reqwest::Method::POST, "/__fault/clear", None).await;
    }
}

/// Weaviate's REST API (1.27 by default, auto-schema on as in Dify's compose).
pub struct WeaviateServer {
    _child: Child,
    pub url: String,
    key: Option<String>,
}

impl WeaviateServer {
    pub async fn start() -> WeaviateServer {
        Self::start_with_key(None).await
    }

    /// One that wants `Authorization: Bearer <key>` (`AUTHENTICATION_APIKEY_*`).
    pub async fn start_with_key(key: Option<&str>) -> WeaviateServer {
        let mut args = vec!["--host", "127.0.0.1", "--port", "0"];
        if let Some(key) = key {
            args.extend(["--api-key", key]);
        }
        let (child, ports) = spawn("weaviate_server.py", &args).await;
        WeaviateServer {
            _child: child,
            url: format!("http://127.0.0.1:{}", ports[0]),
            key: key.map(str::to_string),
        }
    }

    /// A request to the server (with its key); panics unless it succeeds.
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        request(&self.url, self.key.as_deref(), method, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> Value {
        request(
            &self.url,
            self.key.as_deref(),
            reqwest::Method::GET,
            path,
            None,
        )
        .await
    }
}

/// Milvus' gRPC API (`milvus.proto.milvus.MilvusService`) over milvus-lite, strict where a real
/// Milvus is: load state, Dify's JSON `in` filter, query window, index params as sent, auth.
/// GetVersion answers `v2.6.3` (Dify's compose) unless started with another version.
pub struct MilvusServer {
    _child: Child,
    pub grpc_port: u16,
    control: String,
    token: Option<String>,
}

impl MilvusServer {
    pub async fn start() -> MilvusServer {
        Self::launch(None, None).await
    }

    /// One that wants gRPC metadata `authorization: base64(token)`; `token` is `user:password`
    /// (`MILVUS_USER`/`MILVUS_PASSWORD`) or an API key (`MILVUS_TOKEN`).
    pub async fn start_with_token(token: &str) -> MilvusServer {
        Self::launch(Some(token), None).await
    }

    /// One that answers GetVersion with `version` (`2.5.15`, `v2.6.3`, ...).
    pub async fn start_version(version: &str) -> MilvusServer {
        Self::launch(None, Some(version)).await
    }

    async fn launch(token: Option<&str>, version: Option<&str>) -> MilvusServer {
        let mut args = vec!["--host", "127.0.0.1", "--port", "0", "--exit-on-stdin-eof"];
        if let Some(token) = token {
            args.extend(["--token", token]);
        }
        if let Some(version) = version {
            args.extend(["--version", version]);
        }
        let (child, ports) = spawn_with(milvus_python(), "milvus_server.py", &args).await;
        MilvusServer {
            _child: child,
            grpc_port: ports[0],
            control: format!("http://127.0.0.1:{}", ports[1]),
            token: token.map(str::to_string),
        }
    }

    /// `http://127.0.0.1:PORT`, what `MILVUS_URI` holds.
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// The token it wants, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Per collection: the CreateCollection schema as received, the consistency level asked,
    /// the CreateIndex requests as received and the load state.
    pub async fn layout(&self) -> Value {
        control(&self.control, reqwest::Method::GET, "/layout", None).await
    }

    /// Calls `after + 1` to `after + times` of RPC `method` (`Insert`, `Query`, ...) fail with
    /// gRPC status `code` (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, ...) before they run.
    pub async fn fault(&self, method: &str, code: &str, after: u32, times: u32) {
        let body =
            serde_json::json!({"method": method, "code": code, "after": after, "times": times});
        control(&self.control, reqwest::Method::POST, "/fault", Some(body)).await;
    }

    /// Like `fault`, but each failing call is carried out first: the client sees an error for
    /// a write that landed (a lost answer).
    pub async fn fault_after_writing(&self, method: &str, code: &str, after: u32, times: u32) {
        let body = serde_json::json!({"method": method, "code": code, "after": after,
                                      "times": times, "phase": "after"});
        control(&self.control, reqwest::Method::POST, "/fault", Some(body)).await;
    }

    /// Every RPC from now on fails UNAVAILABLE: the server went away.
    pub async fn stop_serving(&self) {
        control(&self.control, reqwest::Method::POST, "/stop", None).await;
    }

    /// RPCs received per method, e.g. `{"Insert": 3}`.
    pub async fn calls(&self) -> Value {
        control(&self.control, reqwest::Method::GET, "/calls", None).await
    }

    /// The server answers again after `stop_serving`, and no fault rule is left.
    pub async fn resume_serving(&self) {
        control(&self.control, reqwest::Method::POST, "/start", None).await;
        control(&self.control, reqwest::Method::POST, "/fault/clear", None).await;
    }

    /// The last Query/Search/Delete requests: expr as sent, output fields, `query_params`,
    /// consistency level.
    pub async fn requests(&self) -> Value {
        control(&self.control, reqwest::Method::GET, "/requests", None).await
    }
}

async fn control(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    request(base, None, method, path, body).await
}

async fn request(
    base: &str,
    key: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut req = reqwest::Client::new().request(method, format!("{base}{path}"));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The pgvector server scripts/test starts (`UPKEEP_TEST_PGVECTOR_URL`): PostgreSQL 16 with
/// pgvector, as Dify's compose image. Each handle is a fresh database on it, without the
/// extension (the adapter creates it, as Dify does).
pub struct PgvectorDb {
    pub port: u16,
    pub database: String,
}

fn pgvector_server() -> String {
    std::env::var("UPKEEP_TEST_PGVECTOR_URL").unwrap_or_else(|_| {
        panic!(
            "UPKEEP_TEST_PGVECTOR_URL is not set: run the tests through scripts/test, which \
             starts a pgvector server (scripts/lib/pgvector.sh)"
        )
    })
}

fn port_of(url: &str) -> u16 {
    let host = url.rsplit_once('@').map_or(url, |(_, h)| h);
    let port = host
        .split(['/', '?'])
        .next()
        .and_then(|h| h.rsplit_once(':'));
    port.and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

impl PgvectorDb {
    pub async fn start() -> PgvectorDb {
        use sqlx::Connection;
        let server = pgvector_server();
        let database = format!("upkeep_v_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("the pgvector test server at {server}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
            .execute(&mut c)
            .await
            .expect("create database");
        PgvectorDb {
            port: port_of(&server),
            database,
        }
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{}",
            self.port, self.database
        )
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url()).await.expect("connect")
    }
}

/// AnalyticDB in SQL mode, stood in for by database `knowledgebase` of the pgvector server
/// (scripts/lib/pgvector.sh gives it a `zh_cn` configuration and the `real[] <=> real[]`
/// operator; there is no `ann`). Each handle is a namespace of its own.
pub struct AnalyticdbStandin {
    pub port: u16,
    pub namespace: String,
}

impl AnalyticdbStandin {
    pub fn start() -> AnalyticdbStandin {
        AnalyticdbStandin {
            port: port_of(&pgvector_server()),
            namespace: format!("dify_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        }
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&format!(
            "postgres://postgres@127.0.0.1:{}/knowledgebase",
            self.port
        ))
        .await
        .expect("connect")
    }
}
