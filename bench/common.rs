//! What the benchmark programs share: a scratch database, and `upkeep serve` as a process.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};

pub const TOKEN: &str = "bench-token-0123456789abcdef";

/// (Re)creates database `name` on `server`, optionally from a template; returns its URL.
pub async fn recreate(server: &str, name: &str, template: Option<&str>) -> String {
    let mut c = PgConnection::connect(server)
        .await
        .expect("bench Postgres answers");
    let create = match template {
        Some(t) => format!("CREATE DATABASE {name} TEMPLATE {t}"),
        None => format!("CREATE DATABASE {name}"),
    };
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        create,
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .expect("recreate");
    }
    let (prefix, _) = server.rsplit_once('/').expect("URL with a database");
    format!("{prefix}/{name}")
}

/// Starts `upkeep serve` on a free port and waits until `/readyz` answers.
pub async fn spawn_daemon(bin: &str, db_url: &str, name: &str) -> (Child, String) {
    spawn_daemon_with(bin, db_url, name, &[]).await
}

/// `spawn_daemon` with more environment (Dify's variables).
pub async fn spawn_daemon_with(
    bin: &str,
    db_url: &str,
    name: &str,
    env: &[(&str, String)],
) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let child = Command::new(bin)
        .arg("serve")
        .env("UPKEEP_DATABASE_URL", db_url)
        .env("UPKEEP_LISTEN", format!("127.0.0.1:{port}"))
        .env("UPKEEP_ADMIN_TOKEN", TOKEN)
        .env("UPKEEP_WORKERS", "4")
        .env("UPKEEP_WORKER_NAME", name)
        .env("UPKEEP_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn upkeep");
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("{url}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "daemon {name} not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, url)
}

/// Peak resident memory of a running child (VmHWM).
pub fn peak_rss(c: &Child) -> String {
    let pid = c.id().unwrap_or(0);
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l[6..].trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// SIGTERM, then wait (30 s at most).
pub async fn stop(c: &mut Child) {
    if let Some(pid) = c.id() {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), c.wait()).await;
}

/// An older Dify release's real schema (`../shared/dify/schemas/<version>.sql`, made by that
/// release's migrations) and its Alembic head.
pub struct ReleaseSchema {
    pub sql: String,
    pub head: &'static str,
}

// Only the purge bench runs on older releases.
#[allow(dead_code)]
pub fn release_schema(version: &str) -> ReleaseSchema {
    let path = format!(
        "{}/../shared/dify/schemas/{version}.sql",
        env!("CARGO_MANIFEST_DIR")
    );
    let sql = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let head = upkeep::dify::KNOWN_REVISIONS
        .iter()
        .find(|(_, name)| name.split([' ', '/']).any(|n| n == version))
        .map(|(head, _)| *head)
        .unwrap_or_else(|| panic!("Dify {version} is not a release Upkeep knows"));
    ReleaseSchema { sql, head }
}

/// A fresh database `name` holding Dify's schema (`release`'s, else the 1.15 fixture),
/// Upkeep's migrations and the data `spec` describes; returns its URL, an open pool, what was
/// generated and how long it took.
pub async fn generated_database(
    server: &str,
    name: &str,
    spec: &upkeep::demo::datagen::DemoSpec,
    release: Option<&ReleaseSchema>,
) -> (
    String,
    sqlx::PgPool,
    upkeep::demo::datagen::GenSummary,
    Duration,
) {
    let url = recreate(server, name, None).await;
    let pool = sqlx::PgPool::connect(&url).await.expect("connect");
    match release {
        None => upkeep::demo::fixture::load_dify_fixture(&pool)
            .await
            .expect("fixture"),
        Some(r) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(r.sql.clone()))
                .execute(&pool)
                .await
                .expect("the release's schema loads");
            sqlx::query("INSERT INTO public.alembic_version (version_num) VALUES ($1)")
                .bind(r.head)
                .execute(&pool)
                .await
                .expect("stamp the release's head");
        }
    }
    upkeep::db::migrate(&pool).await.expect("migrate");
    let started = Instant::now();
    let summary = upkeep::demo::datagen::generate(&pool, spec)
        .await
        .expect("generate");
    (url, pool, summary, started.elapsed())
}

/// Submits a job to the daemon at `url` and polls it (every 100 ms) until it succeeds; returns
/// the finished job view. Panics if it fails or is cancelled.
pub async fn run_job(url: &str, body: &serde_json::Value) -> serde_json::Value {
    run_job_watching(url, body, |_| {}).await
}

/// `run_job`, showing every polled view of the job to `seen`.
pub async fn run_job_watching(
    url: &str,
    body: &serde_json::Value,
    mut seen: impl FnMut(&serde_json::Value),
) -> serde_json::Value {
    let http = reqwest::Client::new();
    let job: serde_json::Value = http
        .post(format!("{url}/v1/jobs"))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("job");
    let id = job["id"].as_str().expect("job id").to_string();
    loop {
        let view: serde_json::Value = http
            .get(format!("{url}/v1/jobs/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("show")
            .json()
            .await
            .expect("job");
        seen(&view);
        match view["state"].as_str() {
            Some("succeeded") => return view,
            Some("failed") | Some("cancelled") => panic!("job ended {view}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
