//! `upkeep jobs ...`: submit, list, show, watch, cancel, retry over the REST API.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct Connection {
    /// The daemon's base URL (default: http:// + UPKEEP_LISTEN).
    #[arg(long, env = "UPKEEP_URL", global = true)]
    pub url: Option<String>,
    /// Bearer token.
    #[arg(
        long,
        env = "UPKEEP_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Queue a job: `upkeep jobs submit vacuum --param mode=full --param tables='["messages"]'`.
    /// Each kind's params are in the README and at /docs.
    Submit {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(crate::jobs::KINDS))]
        kind: String,
        /// A param as key=value; the value is read as JSON when it parses, else as a string.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// All params as one JSON object (merged under --param).
        #[arg(long)]
        params_json: Option<String>,
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Follow the job until it ends; exit 0 only if it succeeded.
        #[arg(long)]
        watch: bool,
    },
    /// List jobs, newest first.
    List {
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        /// Only the child jobs of this job (`fan_out`).
        #[arg(long)]
        parent: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Print a job (state, params, progress, result, error) as JSON.
    Show { id: String },
    /// Follow a job's progress until it ends; exit 0 only if it succeeded.
    Watch { id: String },
    /// Print a job's events, a JSON line each; with --follow, until the job ends.
    Events {
        id: String,
        #[arg(long)]
        follow: bool,
    },
    /// Cancel a job: a queued one now, a running one at its next batch.
    Cancel { id: String },
    /// Queue a failed or cancelled job again; it resumes from its checkpoint.
    Retry { id: String },
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    fn new(conn: Connection) -> Result<Self, String> {
        let base = conn.url.unwrap_or_else(default_url);
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: conn.token,
        })
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub async fn json(&self, rb: reqwest::RequestBuilder) -> Result<Value, String> {
        let resp = rb
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.base))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| format!("bad answer ({status}): {e}"))?;
        if status.is_success() {
            Ok(body)
        } else if status == reqwest::StatusCode::UNAUTHORIZED {
            Err(match &self.token {
                None => "401 unauthorized: the daemon wants its admin token: set UPKEEP_ADMIN_TOKEN or pass --token".to_string(),
                Some(_) => "401 unauthorized: the daemon refused the token: check UPKEEP_ADMIN_TOKEN or --token".to_string(),
            })
        } else {
            let field = body["field"]
                .as_str()
                .map(|f| format!(" [{f}]"))
                .unwrap_or_default();
            Err(format!(
                "{} {}{field}: {}",
                status.as_u16(),
                body["code"].as_str().unwrap_or("error"),
                body["message"].as_str().unwrap_or("")
            ))
        }
    }
}

fn default_url() -> String {
    let listen = std::env::var("UPKEEP_LISTEN").unwrap_or_else(|_| "127.0.0.1:8090".into());
    format!("http://{}", loopback_for(&listen))
}

/// A wildcard listen address is reached on loopback.
fn loopback_for(listen: &str) -> String {
    listen
        .replace("0.0.0.0", "127.0.0.1")
        .replace("[::]", "[::1]")
}

pub async fn healthcheck() -> ExitCode {
    let url = format!("{}/healthz", default_url());
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(4))
        .build()
    {
        Ok(c) => c,
        Err(_) => return ExitCode::FAILURE,
    };
    match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("{url}: {}", r.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

pub async fn run(conn: Connection, command: JobsCommand) -> ExitCode {
    let client = match Client::new(conn) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return ExitCode::FAILURE;
        }
    };
    match dispatch(&client, command).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("upkeep: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(client: &Client, command: JobsCommand) -> Result<ExitCode, String> {
    use reqwest::Method;
    let print = |v: &Value| println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    match command {
        JobsCommand::Submit {
            kind,
            params,
            params_json,
            dry_run,
            idempotency_key,
            watch,
        } => {
            let mut p = match params_json {
                Some(raw) => serde_json::from_str::<Value>(&raw)
                    .map_err(|e| format!("--params-json: {e}"))?,
                None => json!({}),
            };
            for kv in params {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--param {kv:?}: expected KEY=VALUE"))?;
                let value =
                    serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_string()));
                p[k] = value;
            }
            let body = json!({"kind": kind, "params": p, "dry_run": dry_run, "idempotency_key": idempotency_key});
            let job = client
                .json(client.request(Method::POST, "/v1/jobs").json(&body))
                .await?;
            if watch {
                let id = job["id"].as_str().unwrap_or_default().to_string();
                eprintln!("queued {id}");
                return super::watch::watch(client, &id).await;
            }
            print(&job);
        }
        JobsCommand::List {
            state,
            kind,
            parent,
            limit,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            q.extend(state.map(|s| ("state", s)));
            q.extend(kind.map(|k| ("kind", k)));
            q.extend(parent.map(|p| ("parent_id", p)));
            let page = client
                .json(client.request(Method::GET, "/v1/jobs").query(&q))
                .await?;
            let items = page["items"].as_array().map_or(&[][..], Vec::as_slice);
            if items.is_empty() {
                println!("no jobs match");
            }
            for job in items {
                println!(
                    "{}  {:<16} {:<10} {}{}",
                    job["id"].as_str().unwrap_or(""),
                    job["kind"].as_str().unwrap_or(""),
                    job["state"].as_str().unwrap_or(""),
                    job["created_at"].as_str().unwrap_or(""),
                    if job["dry_run"].as_bool() == Some(true) {
                        "  (dry run)"
                    } else {
                        ""
                    },
                );
            }
        }
        JobsCommand::Show { id } => print(
            &client
                .json(client.request(Method::GET, &format!("/v1/jobs/{id}")))
                .await?,
        ),
        JobsCommand::Watch { id } => return super::watch::watch(client, &id).await,
        JobsCommand::Events { id, follow: true } => {
            super::watch::follow(client, &id, true).await?;
        }
        JobsCommand::Events { id, follow: false } => {
            let page = client
                .json(
                    client
                        .request(Method::GET, &format!("/v1/jobs/{id}/events"))
                        .query(&[("after", "0"), ("limit", "1000")]),
                )
                .await?;
            for event in page["items"].as_array().into_iter().flatten() {
                println!("{event}");
            }
        }
        JobsCommand::Cancel { id } => print(
            &client
                .json(client.request(Method::POST, &format!("/v1/jobs/{id}/cancel")))
                .await?,
        ),
        JobsCommand::Retry { id } => print(
            &client
                .json(client.request(Method::POST, &format!("/v1/jobs/{id}/retry")))
                .await?,
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `upkeep preflight`, `upkeep tenants`: one GET, printed as JSON.
pub async fn get(conn: Connection, path: &str, query: &[(&str, String)]) -> ExitCode {
    let client = match Client::new(conn) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("upkeep: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client
        .json(client.request(reqwest::Method::GET, path).query(query))
        .await
    {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("upkeep: {e}");
            ExitCode::FAILURE
        }
    }
}
