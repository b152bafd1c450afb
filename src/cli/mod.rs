//! The command line: `serve`, `openapi`, `healthcheck`, `demo`, `completions`, and `jobs ...`,
//! a thin client of the API for scripts.

mod client;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "upkeep",
    version,
    about = "Maintenance daemon for self-hosted Dify"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: API, queue and workers (configured by Dify's env and UPKEEP_*).
    Serve {
        /// Read Dify's `.env` from this file too (process variables win, as in Dify).
        #[arg(long)]
        env_file: Option<PathBuf>,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Print a shell completion script, e.g. `upkeep completions bash >
    /// /etc/bash_completion.d/upkeep` (zsh: into a directory of your `fpath`, as `_upkeep`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Exit 0 when the daemon at UPKEEP_LISTEN answers /healthz (for container health checks).
    Healthcheck,
    /// After changing UPKEEP_SECRET_KEY (or SECRET_KEY): re-encrypt the secrets stored in jobs
    /// and schedules, from the old key in UPKEEP_OLD_SECRET_KEY to the current one. Run it
    /// with the daemons' environment, before restarting them with the new key.
    Rekey {
        /// Read Dify's `.env` from this file too (process variables win, as in Dify).
        #[arg(long)]
        env_file: Option<PathBuf>,
    },
    /// A working local setup in one command: Postgres (the local one, or a throwaway cluster),
    /// Dify's schema with demo data, a storage folder, and the daemon.
    Demo(crate::demo::DemoArgs),
    /// Back up Dify through a running daemon (`upkeep backup --label pre-upgrade --wait` before
    /// `docker compose pull`): exits non-zero unless the set was written and verified.
    Backup {
        #[command(flatten)]
        conn: client::Connection,
        /// Kept in the set's manifest.
        #[arg(long)]
        label: Option<String>,
        /// Comma-separated: database, storage, vectors (default: every part configured).
        #[arg(long, value_delimiter = ',')]
        parts: Vec<String>,
        /// The repository as a storage config in JSON (default: UPKEEP_BACKUP_TARGET or
        /// UPKEEP_BACKUP_DIR of the daemon).
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        dry_run: bool,
        /// Follow the job until it ends; exit 0 only if it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// What the daemon sees: database, Dify's revision, storage, vector store, table sizes,
    /// backups (`GET /v1/preflight`).
    Preflight {
        #[command(flatten)]
        conn: client::Connection,
    },
    /// Dify's workspaces with their ids, apps and members (`GET /v1/tenants`).
    Tenants {
        #[command(flatten)]
        conn: client::Connection,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// The `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Talk to a running daemon.
    Jobs {
        #[command(flatten)]
        conn: client::Connection,
        #[command(subcommand)]
        command: client::JobsCommand,
    },
}

pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("upkeep: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { env_file } => serve(env_file).await,
        Command::Openapi => match crate::api::openapi().to_pretty_json() {
            Ok(doc) => {
                println!("{doc}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("upkeep: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "upkeep", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Healthcheck => client::healthcheck().await,
        Command::Rekey { env_file } => rekey(env_file).await,
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Jobs { conn, command } => client::run(conn, command).await,
        Command::Preflight { conn } => client::get(conn, "/v1/preflight", &[]).await,
        Command::Tenants {
            conn,
            limit,
            cursor,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            q.extend(cursor.map(|c| ("cursor", c)));
            client::get(conn, "/v1/tenants", &q).await
        }
        Command::Backup {
            conn,
            label,
            parts,
            target,
            dry_run,
            wait,
        } => {
            let mut params = serde_json::json!({});
            if let Some(l) = label {
                params["label"] = l.into();
            }
            if !parts.is_empty() {
                params["parts"] = parts.into();
            }
            if let Some(t) = target {
                match serde_json::from_str::<serde_json::Value>(&t) {
                    Ok(v) => params["target"] = v,
                    Err(e) => {
                        eprintln!("upkeep: --target: not JSON: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            let submit = client::JobsCommand::Submit {
                kind: "backup".into(),
                params: Vec::new(),
                params_json: Some(params.to_string()),
                dry_run,
                idempotency_key: None,
                watch: wait,
            };
            client::run(conn, submit).await
        }
    }
}

async fn rekey(env_file: Option<PathBuf>) -> ExitCode {
    let Some((env, settings)) = environment(env_file) else {
        return ExitCode::from(2);
    };
    let Some(old) = env.get("UPKEEP_OLD_SECRET_KEY").filter(|k| !k.is_empty()) else {
        eprintln!("upkeep: set UPKEEP_OLD_SECRET_KEY to the key the secrets were encrypted with");
        return ExitCode::from(2);
    };
    let Some(key) = settings.sealer.key_id() else {
        eprintln!("upkeep: set UPKEEP_SECRET_KEY (or SECRET_KEY) to the new key");
        return ExitCode::from(2);
    };
    let pool = match crate::db::connect(&settings.database_url, settings.database_source, 2).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return ExitCode::FAILURE;
        }
    };
    let old = crate::secrets::Sealer::new(Some(old));
    match crate::secrets::rekey(&pool, &old, &settings.sealer).await {
        Ok((jobs, schedules)) => {
            println!(
                "re-encrypted the secrets of {jobs} jobs and {schedules} schedules with key {key}"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("upkeep: nothing changed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Dify's `.env` (when given) under the process environment, and the settings from both.
fn environment(
    env_file: Option<PathBuf>,
) -> Option<(std::collections::HashMap<String, String>, Settings)> {
    let mut env = match &env_file {
        Some(path) => match crate::config::read_env_file(path) {
            Ok(map) => map,
            Err(e) => {
                eprintln!("upkeep: {e}");
                return None;
            }
        },
        None => Default::default(),
    };
    env.extend(std::env::vars());
    match Settings::from_env(&env) {
        Ok(s) => Some((env, s)),
        Err(e) => {
            eprintln!("upkeep: invalid configuration: {e}");
            None
        }
    }
}

async fn serve(env_file: Option<PathBuf>) -> ExitCode {
    let Some((env, settings)) = environment(env_file) else {
        return ExitCode::from(2);
    };
    crate::logging::init(settings.log_format);
    let failpoints = match crate::failpoint::FailPoints::parse(
        env.get("UPKEEP_FAILPOINTS")
            .map(String::as_str)
            .unwrap_or(""),
    ) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("upkeep: UPKEEP_FAILPOINTS: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(settings = ?settings, "starting upkeep {}", env!("CARGO_PKG_VERSION"));
    let grace = settings.shutdown_grace;
    match crate::daemon::Daemon::start(settings, failpoints).await {
        Ok(daemon) => {
            daemon.run_until_signal(grace).await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("upkeep: {e}");
            ExitCode::FAILURE
        }
    }
}
