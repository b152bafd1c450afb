//! Settings, read the way Dify reads its `.env` (same variable names, same defaults), plus
//! Upkeep's own `UPKEEP_*` variables. Everything is validated before the daemon starts.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

/// An invalid or missing setting, always naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

fn invalid(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Dify's configuration of one external component, kept as the env names it (values verbatim),
/// so adapters can read their own variables; secrets are never printed from here.
#[derive(Clone, Default)]
pub struct Component {
    pub kind: String,
    pub vars: Vec<(String, String)>,
}

impl Component {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.vars.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Component")
            .field("kind", &self.kind)
            .field("vars", &names)
            .finish()
    }
}

#[derive(Clone)]
pub struct Settings {
    pub database_url: String,
    /// Where the URL came from, for messages ("UPKEEP_DATABASE_URL" or "DB_*").
    pub database_source: &'static str,
    pub listen: SocketAddr,
    pub admin_token: Option<String>,
    pub workers: usize,
    /// `UPKEEP_KIND_LIMITS`: at most this many jobs of a kind run at once on this daemon
    /// (`storage_migrate=1,vector_migrate=2`), so one daemon does not take every child job.
    pub kind_limits: BTreeMap<String, usize>,
    pub job_ttl_days: u32,
    pub log_format: LogFormat,
    pub lease: Duration,
    pub poll_interval: Duration,
    /// How often this daemon looks for due schedules (every daemon does).
    pub schedule_tick: Duration,
    pub shutdown_grace: Duration,
    pub vector_store: Component,
    pub storage: Component,
    pub worker_name: String,
    pub backup: BackupEnv,
    /// Seals secrets in job params at rest: `UPKEEP_SECRET_KEY`, else Dify's `SECRET_KEY`.
    pub sealer: crate::secrets::Sealer,
}

/// Where backups go when a job does not say, and what the database part needs.
#[derive(Debug, Clone, Default)]
pub struct BackupEnv {
    /// `UPKEEP_BACKUP_TARGET` (a storage config as JSON), else `UPKEEP_BACKUP_DIR` as a local
    /// root.
    pub target: Option<serde_json::Value>,
    /// Which variable `target` came from, for messages.
    pub target_source: &'static str,
    /// Dify's plugin daemon database (`DB_PLUGIN_DATABASE`), dumped beside Dify's when it exists.
    pub plugin_database: String,
    /// `UPKEEP_PG_BIN_DIR`: where `pg_dump` and `pg_restore` are, else found on `PATH`.
    pub pg_bin_dir: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("database", &redact_url(&self.database_url))
            .field("listen", &self.listen)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("workers", &self.workers)
            .field("job_ttl_days", &self.job_ttl_days)
            .field("vector_store", &self.vector_store)
            .field("storage", &self.storage)
            .finish()
    }
}

/// A boolean as pydantic reads one from the env (`true/false/1/0/yes/no/on/off`, any case).
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "y" | "t" => Some(true),
        "false" | "0" | "no" | "off" | "n" | "f" | "" => Some(false),
        _ => None,
    }
}

/// A Postgres URL with its password replaced, safe for logs and API answers.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable url>".into();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

const VECTOR_PREFIXES: &[&str] = &[
    "WEAVIATE_",
    "QDRANT_",
    "MILVUS_",
    "PGVECTOR_",
    "ANALYTICDB_",
    "VECTOR_",
    "REDIS_",
];
const STORAGE_PREFIXES: &[&str] = &[
    "STORAGE_",
    "OPENDAL_",
    "S3_",
    "ALIYUN_OSS_",
    "AZURE_BLOB_",
    "GOOGLE_STORAGE_",
    "TENCENT_COS_",
    "HUAWEI_OBS_",
    "OCI_",
];

struct Env<'a>(&'a HashMap<String, String>);

impl Env<'_> {
    /// Dify (pydantic) treats an empty value like an absent one for these settings.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
        ok: impl Fn(&T) -> bool,
        expect: &str,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => match raw.parse::<T>() {
                Ok(v) if ok(&v) => Ok(v),
                _ => Err(invalid(name, format!("expected {expect}, got {raw:?}"))),
            },
        }
    }

    fn component(&self, kind: Option<&str>, prefixes: &[&str]) -> Component {
        let mut vars: Vec<(String, String)> = self
            .0
            .iter()
            .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort();
        Component {
            kind: kind.unwrap_or_default().to_string(),
            vars,
        }
    }
}

impl Settings {
    pub fn from_process_env() -> Result<Self, ConfigError> {
        let map: HashMap<String, String> = std::env::vars().collect();
        Self::from_env(&map)
    }

    pub fn from_env(map: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env(map);
        let (database_url, database_source) = database_url(&env)?;
        let listen: SocketAddr = env.parse(
            "UPKEEP_LISTEN",
            SocketAddr::from(([127, 0, 0, 1], 8090)),
            |_| true,
            "an address like 127.0.0.1:8090",
        )?;
        let admin_token = env.get("UPKEEP_ADMIN_TOKEN").map(str::to_string);
        match &admin_token {
            Some(t) if t.len() < 16 => {
                return Err(invalid(
                    "UPKEEP_ADMIN_TOKEN",
                    "must be at least 16 characters",
                ));
            }
            None if !listen.ip().is_loopback() => {
                return Err(invalid(
                    "UPKEEP_ADMIN_TOKEN",
                    format!(
                        "is required when UPKEEP_LISTEN is not a loopback address ({listen}): \
                         anyone on that network could run maintenance jobs"
                    ),
                ));
            }
            _ => {}
        }
        // 0 serves the API only (workers run in other daemons on the same database).
        let workers = env.parse("UPKEEP_WORKERS", 4usize, |n| *n <= 64, "0..=64")?;
        let kind_limits = kind_limits(env.get("UPKEEP_KIND_LIMITS"))?;
        let job_ttl_days = env.parse(
            "UPKEEP_JOB_TTL_DAYS",
            30u32,
            |n| (1..=3650).contains(n),
            "a number of days in 1..=3650",
        )?;
        let log_format = match env.get("UPKEEP_LOG_FORMAT") {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "UPKEEP_LOG_FORMAT",
                    format!("expected text or json, got {other:?}"),
                ));
            }
        };
        let lease = env.parse(
            "UPKEEP_LEASE_SECONDS",
            30u64,
            |n| (3..=3600).contains(n),
            "seconds in 3..=3600",
        )?;
        let poll_ms = env.parse(
            "UPKEEP_POLL_MS",
            2000u64,
            |n| (10..=60_000).contains(n),
            "milliseconds in 10..=60000",
        )?;
        // Occurrences are whole minutes; 15 s keeps a run within a quarter minute of its time.
        // Tests tick faster.
        let schedule_tick_ms = env.parse(
            "UPKEEP_SCHEDULE_TICK_MS",
            15_000u64,
            |n| (10..=600_000).contains(n),
            "milliseconds in 10..=600000",
        )?;
        let grace = env.parse(
            "UPKEEP_SHUTDOWN_GRACE_SECONDS",
            25u64,
            |n| *n <= 3600,
            "seconds in 0..=3600",
        )?;
        let vector_kind = env.get("VECTOR_STORE").unwrap_or("weaviate");
        let storage_kind = env.get("STORAGE_TYPE").unwrap_or("opendal");
        let worker_name = env
            .get("UPKEEP_WORKER_NAME")
            .map(str::to_string)
            .unwrap_or_else(default_worker_name);
        Ok(Settings {
            database_url,
            database_source,
            listen,
            admin_token,
            workers,
            kind_limits,
            job_ttl_days,
            log_format,
            lease: Duration::from_secs(lease),
            poll_interval: Duration::from_millis(poll_ms),
            schedule_tick: Duration::from_millis(schedule_tick_ms),
            shutdown_grace: Duration::from_secs(grace),
            vector_store: env.component(Some(vector_kind), VECTOR_PREFIXES),
            storage: env.component(Some(storage_kind), STORAGE_PREFIXES),
            worker_name,
            backup: backup_env(&env)?,
            sealer: crate::secrets::Sealer::from_vars(
                env.get("UPKEEP_SECRET_KEY"),
                env.get("SECRET_KEY"),
            ),
        })
    }
}

/// `kind=n,kind=n`: each kind one this daemon runs, each n in 1..=64.
fn kind_limits(raw: Option<&str>) -> Result<BTreeMap<String, usize>, ConfigError> {
    const VAR: &str = "UPKEEP_KIND_LIMITS";
    let mut limits = BTreeMap::new();
    for item in raw.unwrap_or_default().split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        let Some((kind, n)) = item.split_once('=') else {
            return Err(invalid(VAR, format!("expected kind=n, got {item:?}")));
        };
        let kind = kind.trim();
        if !crate::jobs::KINDS.contains(&kind) {
            return Err(invalid(
                VAR,
                format!(
                    "{kind:?} is not a job kind (one of {})",
                    crate::jobs::KINDS.join(", ")
                ),
            ));
        }
        match n.trim().parse::<usize>() {
            Ok(n) if (1..=64).contains(&n) => {
                limits.insert(kind.to_string(), n);
            }
            _ => return Err(invalid(VAR, format!("{kind}: expected 1..=64, got {n:?}"))),
        }
    }
    Ok(limits)
}

fn backup_env(env: &Env<'_>) -> Result<BackupEnv, ConfigError> {
    let (target, target_source) = if let Some(raw) = env.get("UPKEEP_BACKUP_TARGET") {
        let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
            invalid(
                "UPKEEP_BACKUP_TARGET",
                format!("expected a storage config as JSON ({{\"type\": \"s3\", ...}}): {e}"),
            )
        })?;
        if !v.is_object() {
            return Err(invalid(
                "UPKEEP_BACKUP_TARGET",
                "expected a JSON object like {\"type\": \"local\", \"root\": \"/backups\"}",
            ));
        }
        (Some(v), "UPKEEP_BACKUP_TARGET")
    } else if let Some(dir) = env.get("UPKEEP_BACKUP_DIR") {
        (
            Some(serde_json::json!({"type": "local", "root": dir})),
            "UPKEEP_BACKUP_DIR",
        )
    } else {
        (None, "UPKEEP_BACKUP_TARGET")
    };
    Ok(BackupEnv {
        target,
        target_source,
        plugin_database: env
            .get("DB_PLUGIN_DATABASE")
            .unwrap_or("dify_plugin")
            .to_string(),
        pg_bin_dir: env.get("UPKEEP_PG_BIN_DIR").map(str::to_string),
    })
}

fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "upkeep".into());
    format!("{host}:{}", std::process::id())
}

/// `UPKEEP_DATABASE_URL` wins; otherwise the URL Dify builds from `DB_*` with its defaults.
fn database_url(env: &Env<'_>) -> Result<(String, &'static str), ConfigError> {
    if let Some(url) = env.get("UPKEEP_DATABASE_URL") {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "UPKEEP_DATABASE_URL",
                "expected a postgres:// or postgresql:// URL",
            ));
        }
        return Ok((url.to_string(), "UPKEEP_DATABASE_URL"));
    }
    match env.get("DB_TYPE").unwrap_or("postgresql") {
        "postgresql" => {}
        other => {
            return Err(invalid(
                "DB_TYPE",
                format!("Upkeep supports Dify on PostgreSQL only, got {other:?}"),
            ));
        }
    }
    let host = env.get("DB_HOST").unwrap_or("localhost");
    let port: u16 = env.parse("DB_PORT", 5432u16, |p| *p > 0, "a TCP port")?;
    let user = env.get("DB_USERNAME").unwrap_or("postgres");
    let password = env.0.get("DB_PASSWORD").map(String::as_str).unwrap_or("");
    let database = env.get("DB_DATABASE").unwrap_or("dify");
    let mut url = format!(
        "postgres://{}:{}@{}:{port}/{}",
        percent_encode(user),
        percent_encode(password),
        host,
        percent_encode(database)
    );
    // DB_EXTRAS is a URL query in Dify (e.g. `sslmode=require`).
    if let Some(extras) = env.get("DB_EXTRAS") {
        url.push('?');
        url.push_str(extras.trim_start_matches('?'));
    }
    Ok((url, "DB_*"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads a Dify-style `.env` file (KEY=VALUE lines, `#` comments, optional quotes) into a map.
/// Used by `serve --env-file` for source deployments; process variables win, as in Dify.
pub fn read_env_file(path: &std::path::Path) -> Result<HashMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid("--env-file", format!("{}: {e}", path.display())))?;
    let mut map = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = if value.len() >= 2
            && ((value.starts_with('"') && value.ends_with('"'))
                || (value.starts_with('\'') && value.ends_with('\'')))
        {
            &value[1..value.len() - 1]
        } else {
            // Unquoted values may carry a trailing ` # comment`.
            value.split(" #").next().unwrap_or(value).trim()
        };
        map.insert(key.trim().to_string(), value.to_string());
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn builds_difys_url_with_its_defaults() {
        let s = Settings::from_env(&env(&[("DB_PASSWORD", "p@ss word")])).expect("valid");
        assert_eq!(
            s.database_url,
            "postgres://postgres:p%40ss%20word@localhost:5432/dify"
        );
        assert_eq!(s.vector_store.kind, "weaviate");
        assert_eq!(s.storage.kind, "opendal");
    }

    #[test]
    fn refuses_public_listen_without_token() {
        let err = Settings::from_env(&env(&[("UPKEEP_LISTEN", "0.0.0.0:8090")])).unwrap_err();
        assert_eq!(err.variable, "UPKEEP_ADMIN_TOKEN");
    }

    #[test]
    fn kind_limits_name_real_kinds() {
        let ok = Settings::from_env(&env(&[(
            "UPKEEP_KIND_LIMITS",
            "storage_migrate=1, vector_migrate=2",
        )]))
        .unwrap();
        assert_eq!(ok.kind_limits["storage_migrate"], 1);
        assert_eq!(ok.kind_limits["vector_migrate"], 2);
        for bad in ["storage=1", "vacuum", "vacuum=0", "vacuum=x"] {
            let err = Settings::from_env(&env(&[("UPKEEP_KIND_LIMITS", bad)])).unwrap_err();
            assert_eq!(err.variable, "UPKEEP_KIND_LIMITS", "{bad}");
        }
    }

    #[test]
    fn names_the_bad_variable() {
        let err = Settings::from_env(&env(&[("UPKEEP_WORKERS", "65")])).unwrap_err();
        assert_eq!(err.variable, "UPKEEP_WORKERS");
        let err = Settings::from_env(&env(&[("DB_TYPE", "mysql")])).unwrap_err();
        assert_eq!(err.variable, "DB_TYPE");
        let err = Settings::from_env(&env(&[("UPKEEP_LISTEN", "nowhere")])).unwrap_err();
        assert_eq!(err.variable, "UPKEEP_LISTEN");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/d"),
            "postgres://u:***@h:5432/d"
        );
    }
}
