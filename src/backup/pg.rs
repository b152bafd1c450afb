//! `pg_dump` and `pg_restore` as child processes: found in `UPKEEP_PG_BIN_DIR` or on `PATH`,
//! connected with the password in the environment (never in argv, where `ps` shows it), their
//! error output kept for the job's message.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Error output kept per process: the end is where pg_dump says what went wrong.
const STDERR_KEEP: usize = 16 << 10;

#[derive(Debug, thiserror::Error)]
pub enum PgToolError {
    #[error(
        "cannot run {tool}: {message} (install the PostgreSQL client or set UPKEEP_PG_BIN_DIR)"
    )]
    Missing { tool: String, message: String },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: &'static str,
        status: String,
        stderr: String,
    },
    #[error("the database URL cannot be used for {0}")]
    Url(String),
}

/// A database as the client tools reach it.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// `postgres://user@host:port/db?params`, without the password.
    url: url::Url,
    password: Option<String>,
}

impl PgTarget {
    pub fn from_url(database_url: &str) -> Result<Self, PgToolError> {
        let mut url =
            url::Url::parse(database_url).map_err(|e| PgToolError::Url(format!("pg_dump: {e}")))?;
        let password = url.password().map(percent_decode);
        url.set_password(None)
            .map_err(|_| PgToolError::Url("pg_dump: no host".into()))?;
        Ok(PgTarget { url, password })
    }

    pub fn database(&self) -> String {
        percent_decode(self.url.path().trim_start_matches('/'))
    }

    /// The same server and credentials, another database.
    pub fn with_database(&self, name: &str) -> Self {
        let mut other = self.clone();
        other.url.set_path(&format!("/{name}"));
        other
    }

    fn apply(&self, cmd: &mut Command) {
        cmd.env_remove("PGPASSWORD").env("PGAPPNAME", "upkeep");
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
    }

    pub fn dbname_arg(&self) -> String {
        format!("--dbname={}", self.url)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn tool_path(bin_dir: Option<&str>, tool: &str) -> PathBuf {
    match bin_dir {
        Some(dir) => PathBuf::from(dir).join(tool),
        None => PathBuf::from(tool),
    }
}

/// `pg_dump --version` → ("15.20", 15).
pub async fn tool_version(bin_dir: Option<&str>, tool: &str) -> Result<(String, u32), PgToolError> {
    let path = tool_path(bin_dir, tool);
    let missing = |message: String| PgToolError::Missing {
        tool: path.display().to_string(),
        message,
    };
    let out = Command::new(&path)
        .arg("--version")
        .output()
        .await
        .map_err(|e| missing(e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .ok_or_else(|| missing(format!("unexpected --version output {text:?}")))?
        .to_string();
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| missing(format!("unexpected version {version:?}")))?;
    Ok((version, major))
}

/// A running client tool.
pub struct Running {
    pub child: Child,
    tool: &'static str,
    stderr: JoinHandle<String>,
}

pub fn spawn(
    bin_dir: Option<&str>,
    tool: &'static str,
    target: &PgTarget,
    args: &[String],
    stdin: bool,
) -> Result<Running, PgToolError> {
    let path = tool_path(bin_dir, tool);
    let mut cmd = Command::new(&path);
    cmd.args(args)
        .arg(target.dbname_arg())
        .arg("--no-password")
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(if stdin { Stdio::null() } else { Stdio::piped() })
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    target.apply(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| PgToolError::Missing {
        tool: path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut err = child.stderr.take();
    let stderr = tokio::spawn(async move {
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        if let Some(err) = err.as_mut() {
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > STDERR_KEEP {
                    kept.drain(..kept.len() - STDERR_KEEP);
                }
            }
        }
        String::from_utf8_lossy(&kept).trim().to_string()
    });
    Ok(Running {
        child,
        tool,
        stderr,
    })
}

impl Running {
    /// Waits for the exit; anything but success is an error carrying what the tool said.
    pub async fn finish(mut self) -> Result<(), PgToolError> {
        let status = self.child.wait().await;
        let stderr = self.stderr.await.unwrap_or_default();
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(PgToolError::Failed {
                tool: self.tool,
                status: s.to_string(),
                stderr,
            }),
            Err(e) => Err(PgToolError::Failed {
                tool: self.tool,
                status: e.to_string(),
                stderr,
            }),
        }
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
        self.stderr.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_leaves_the_url() {
        let t = PgTarget::from_url("postgres://dify:p%40ss%3Aw@db:5432/dify?sslmode=require")
            .expect("parses");
        assert_eq!(t.password.as_deref(), Some("p@ss:w"));
        assert_eq!(
            t.dbname_arg(),
            "--dbname=postgres://dify@db:5432/dify?sslmode=require"
        );
        assert_eq!(t.database(), "dify");
        assert_eq!(
            t.with_database("dify_plugin").dbname_arg(),
            "--dbname=postgres://dify@db:5432/dify_plugin?sslmode=require"
        );
    }
}
