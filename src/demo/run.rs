//! `upkeep demo`: a newcomer's working setup in one command. Uses the Postgres on
//! 127.0.0.1:5432 when it answers, else starts a throwaway cluster; loads Dify's schema and
//! demo data into a database of its own, makes a storage folder, and runs the daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use sqlx::{Connection, PgConnection};

use super::{datagen, fixture};
use crate::config::Settings;
use crate::db::quote_ident;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// A Postgres server to use (superuser URL). Default: 127.0.0.1:5432 if it answers, else a
    /// throwaway cluster under --dir.
    #[arg(long, env = "UPKEEP_DEMO_PG_URL")]
    pub pg_url: Option<String>,
    /// The database to (re)create for the demo.
    #[arg(long, default_value = "upkeep_demo")]
    pub database: String,
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: String,
    /// Where the storage folder (and a throwaway cluster) live.
    #[arg(long, default_value = ".run/demo")]
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error("{0}")]
    Setup(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
}

pub async fn run(args: DemoArgs) -> ExitCode {
    crate::cli::init_logging(crate::config::LogFormat::Text);
    let mut cluster = None;
    let outcome = demo(&args, &mut cluster).await;
    if let Some(c) = cluster {
        c.stop();
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("upkeep demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: &DemoArgs, cluster: &mut Option<Cluster>) -> Result<(), DemoError> {
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| DemoError::Setup(format!("{}: {e}", args.dir.display())))?;
    let dir = std::path::absolute(&args.dir).map_err(|e| DemoError::Setup(e.to_string()))?;
    let server = match &args.pg_url {
        Some(url) => url.clone(),
        None => {
            let local = "postgres://postgres@127.0.0.1:5432/postgres";
            if PgConnection::connect(local).await.is_ok() {
                local.to_string()
            } else {
                eprintln!("no Postgres answers on 127.0.0.1:5432: starting a throwaway cluster");
                let c = Cluster::start(&dir.join("pg"))?;
                let url = c.url.clone();
                *cluster = Some(c);
                url
            }
        }
    };
    let db_url = recreate_database(&server, &args.database).await?;
    let pool = crate::db::connect(&db_url, "--pg-url", 8)
        .await
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    fixture::load_dify_fixture(&pool).await?;
    let summary = datagen::generate(&pool, &datagen::DemoSpec::demo()).await?;
    let storage = dir.join("storage");
    make_storage(&storage)?;
    let token = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let backups = dir.join("backups");
    let mut env: std::collections::HashMap<String, String> = [
        ("UPKEEP_DATABASE_URL", db_url.as_str()),
        ("UPKEEP_LISTEN", args.listen.as_str()),
        ("UPKEEP_ADMIN_TOKEN", token.as_str()),
        // Seals the secrets of the demo's jobs at rest; the demo database lives as long as it.
        ("UPKEEP_SECRET_KEY", token.as_str()),
        ("STORAGE_TYPE", "opendal"),
        ("OPENDAL_SCHEME", "fs"),
        ("OPENDAL_FS_ROOT", &storage.display().to_string()),
        ("VECTOR_STORE", "weaviate"),
        ("UPKEEP_BACKUP_DIR", &backups.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    // The throwaway cluster's own client tools match its server.
    if let Some(c) = cluster.as_ref() {
        env.insert("UPKEEP_PG_BIN_DIR".into(), c.bin.display().to_string());
    }
    let settings = Settings::from_env(&env)?;
    crate::db::migrate(&pool)
        .await
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let daemon = crate::daemon::Daemon::start_with_pool(settings, Default::default(), pool).await?;
    let url = format!("http://{}", daemon.addr);
    println!("Upkeep demo is running at {url}");
    println!("token: {token}");
    println!("database: {}", crate::config::redact_url(&db_url));
    println!("storage: {}", storage.display());
    println!("backups: {}", backups.display());
    let rows = |t: &str| summary.rows.get(t).copied().unwrap_or(0);
    println!(
        "demo data: {} tenants, {} apps, {} messages, {} workflow runs, {} files, {} rows in all",
        rows("tenants"),
        rows("apps"),
        rows("messages"),
        rows("workflow_runs"),
        rows("upload_files") + rows("tool_files"),
        summary.rows.values().sum::<u64>()
    );
    let exe = std::env::current_exe().map_or_else(|_| "upkeep".into(), |p| p.display().to_string());
    println!();
    println!("  export UPKEEP_URL={url} UPKEEP_ADMIN_TOKEN={token}");
    println!("  curl -s -H \"Authorization: Bearer $UPKEEP_ADMIN_TOKEN\" $UPKEEP_URL/v1/tenants");
    println!("  curl -s -H \"Authorization: Bearer $UPKEEP_ADMIN_TOKEN\" $UPKEEP_URL/v1/preflight");
    println!("  {exe} jobs submit vacuum --param mode=analyze --watch");
    println!("  {exe} backup --label first --wait");
    println!("  open {url}/docs for the API;  Ctrl-C stops the demo");
    daemon.run_until_signal(Duration::from_secs(10)).await;
    Ok(())
}

/// Drops and recreates the demo database; returns its URL.
async fn recreate_database(server: &str, name: &str) -> Result<String, DemoError> {
    let mut conn = PgConnection::connect(server).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(name)
    )))
    .execute(&mut conn)
    .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {}",
        quote_ident(name)
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    let base = server.split('?').next().unwrap_or(server);
    let (prefix, _) = base
        .rsplit_once('/')
        .ok_or_else(|| DemoError::Setup("--pg-url has no database".into()))?;
    Ok(format!("{prefix}/{name}"))
}

/// A storage root shaped like Dify's: the secret key file, an upload, a tool file.
fn make_storage(root: &Path) -> Result<(), DemoError> {
    let write = |rel: &str, body: &[u8]| -> Result<(), DemoError> {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| DemoError::Setup(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&path, body)
            .map_err(|e| DemoError::Setup(format!("{}: {e}", path.display())))
    };
    write(".dify_secret_key", b"demo-secret-key-not-for-production")?;
    write(
        "upload_files/demo/readme.txt",
        b"a file uploaded to the demo workspace\n",
    )?;
    write(
        "tools/demo/chart.svg",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n",
    )?;
    Ok(())
}

/// A throwaway Postgres cluster, stopped when the demo ends.
struct Cluster {
    data: PathBuf,
    bin: PathBuf,
    url: String,
}

impl Cluster {
    fn start(dir: &Path) -> Result<Cluster, DemoError> {
        let bin = pg_bindir().ok_or_else(|| {
            DemoError::Setup(
                "no Postgres answers on 127.0.0.1:5432 and no initdb found (install postgresql)"
                    .into(),
            )
        })?;
        let data = dir.join("data");
        let port = free_port()?;
        let as_root = unsafe { libc::geteuid() } == 0;
        let run = |program: &Path, argv: &[&str]| -> Result<(), DemoError> {
            let mut cmd = if as_root {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            } else {
                std::process::Command::new(program)
            };
            let out = cmd
                .args(argv)
                .output()
                .map_err(|e| DemoError::Setup(format!("{}: {e}", program.display())))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(DemoError::Setup(format!(
                    "{} failed: {}",
                    program.display(),
                    String::from_utf8_lossy(&out.stderr)
                )))
            }
        };
        if !data.join("PG_VERSION").exists() {
            std::fs::create_dir_all(dir).map_err(|e| DemoError::Setup(e.to_string()))?;
            if as_root {
                let _ = std::process::Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir)
                    .status();
            }
            let data_s = data.display().to_string();
            run(
                &bin.join("initdb"),
                &[
                    "-D",
                    &data_s,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            )?;
        }
        let data_s = data.display().to_string();
        let log = dir.join("server.log").display().to_string();
        let opts = format!("-h 127.0.0.1 -p {port} -k {} -c fsync=off", dir.display());
        run(
            &bin.join("pg_ctl"),
            &[
                "-D", &data_s, "-l", &log, "-w", "-t", "30", "-o", &opts, "start",
            ],
        )?;
        Ok(Cluster {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            data,
            bin,
        })
    }

    fn stop(self) {
        let as_root = unsafe { libc::geteuid() } == 0;
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data.display().to_string();
        let mut cmd = if as_root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            c
        } else {
            std::process::Command::new(&pg_ctl)
        };
        let _ = cmd.args(["-D", &data, "-m", "fast", "-w", "stop"]).output();
    }
}

fn pg_bindir() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    candidates.sort();
    candidates.pop()
}

fn free_port() -> Result<u16, DemoError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DemoError::Setup(format!("no free port: {e}")))
}
