//! `upkeep demo`: a newcomer's working setup in one command. Uses the Postgres on
//! 127.0.0.1:5432 when it answers, else starts a throwaway cluster; loads Dify's schema and
//! demo data into a database of its own, makes a storage folder, starts a Weaviate stand-in
//! with the datasets' vectors (when python3 is there), and runs the daemon.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use sqlx::{Connection, PgConnection};
use tokio::net::TcpListener;

use super::{database, datagen, fixture, storage, vectors};
use crate::config::Settings;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// A Postgres server to use (superuser URL). Default: 127.0.0.1:5432 if it answers, else a
    /// throwaway cluster under --dir.
    #[arg(long, env = "UPKEEP_DEMO_PG_URL")]
    pub pg_url: Option<String>,
    /// The database to create for the demo. One the demo made before is recreated; any other
    /// existing database is refused and left alone.
    #[arg(long, default_value = "upkeep_demo")]
    pub database: String,
    /// The daemon's address; checked before anything is created.
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
    DemoDb(#[from] database::DemoDbError),
    #[error("storage folder: {0}")]
    Storage(#[from] storage::DemoStorageError),
    #[error(transparent)]
    Daemon(#[from] crate::daemon::DaemonError),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
}

pub async fn run(args: DemoArgs) -> ExitCode {
    crate::logging::init(crate::config::LogFormat::Text);
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

/// Binds `--listen` before anything is created, so a taken port costs nothing.
async fn bind(listen: &str) -> Result<TcpListener, DemoError> {
    let addr: SocketAddr = listen.parse().map_err(|_| {
        DemoError::Setup(format!(
            "--listen {listen:?} is not an address like 127.0.0.1:8090"
        ))
    })?;
    TcpListener::bind(addr).await.map_err(|e| {
        DemoError::Setup(format!(
            "cannot listen on {addr} (--listen): {e}; pick a free port, e.g. --listen 127.0.0.1:8091"
        ))
    })
}

async fn demo(args: &DemoArgs, cluster: &mut Option<Cluster>) -> Result<(), DemoError> {
    let tcp = bind(&args.listen).await?;
    let listen = tcp
        .local_addr()
        .map_err(|e| DemoError::Setup(format!("--listen {}: {e}", args.listen)))?;
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
    let db_url = database::recreate(&server, &args.database).await?;
    let pool = crate::db::connect(&db_url, "--pg-url", 8)
        .await
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    fixture::load_dify_fixture(&pool).await?;
    let summary = datagen::generate(&pool, &datagen::DemoSpec::demo()).await?;
    let storage_root = dir.join("storage");
    let objects = storage::make(&storage_root, &pool).await?;
    let weaviate = vectors::start().await;
    let token = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let backups = dir.join("backups");
    let listen_s = listen.to_string();
    let mut env: std::collections::HashMap<String, String> = [
        ("UPKEEP_DATABASE_URL", db_url.as_str()),
        ("UPKEEP_LISTEN", listen_s.as_str()),
        ("UPKEEP_ADMIN_TOKEN", token.as_str()),
        // Seals the secrets of the demo's jobs at rest; the demo database lives as long as it.
        ("UPKEEP_SECRET_KEY", token.as_str()),
        ("STORAGE_TYPE", "opendal"),
        ("OPENDAL_SCHEME", "fs"),
        ("OPENDAL_FS_ROOT", &storage_root.display().to_string()),
        ("VECTOR_STORE", "weaviate"),
        ("UPKEEP_BACKUP_DIR", &backups.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Ok(w) = &weaviate {
        env.insert("WEAVIATE_ENDPOINT".into(), w.endpoint.clone());
    }
    // The throwaway cluster's own client tools match its server.
    if let Some(c) = cluster.as_ref() {
        env.insert("UPKEEP_PG_BIN_DIR".into(), c.bin.display().to_string());
    }
    let settings = Settings::from_env(&env)?;
    let vector_note = match &weaviate {
        Ok(w) => match vectors::load(&pool, &w.endpoint, &settings).await {
            Ok(n) => format!("{n} records in a Weaviate stand-in at {}", w.endpoint),
            Err(e) => format!("Weaviate stand-in at {}, partly loaded: {e}", w.endpoint),
        },
        Err(e) => format!("none ({e}); vector_migrate needs python3 for the demo's Weaviate"),
    };
    crate::db::migrate(&pool)
        .await
        .map_err(|e| DemoError::Setup(e.to_string()))?;
    let daemon = crate::daemon::Daemon::start_on(settings, Default::default(), pool, tcp).await?;
    let url = format!("http://{}", daemon.addr);
    println!("Upkeep demo is running at {url}");
    println!("token: {token}");
    println!("database: {}", crate::config::redact_url(&db_url));
    println!(
        "storage: {} ({} referenced objects; {} orphaned, {} of them old enough for orphan_files; \
         {} log exports, {} older than 90 days)",
        storage_root.display(),
        objects.referenced,
        objects.orphans + objects.young_orphans,
        objects.orphans,
        objects.old_exports + objects.recent_exports,
        objects.old_exports
    );
    println!("vectors: {vector_note}");
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
