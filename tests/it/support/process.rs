//! The `upkeep` binary as a real process: for signals, exit codes and the demo command.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

pub struct Proc {
    pub child: Child,
    pub lines: mpsc::UnboundedReceiver<String>,
    pub output: Vec<String>,
}

impl Proc {
    /// Starts `upkeep ARGS` with exactly `env` (plus PATH/HOME), capturing stdout and stderr.
    /// `UPKEEP_TEST_BIN` names another build of the binary: where worktrees share a target
    /// directory, `target/debug/upkeep` is whichever tree built last.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let bin = std::env::var("UPKEEP_TEST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_upkeep").to_string());
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("UPKEEP_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn upkeep");
        let (tx, lines) = mpsc::unbounded_channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for reader in [
            Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(err),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(reader).lines();
                while let Ok(Some(line)) = r.next_line().await {
                    let _ = tx.send(line);
                }
            });
        }
        Proc {
            child,
            lines,
            output: vec![],
        }
    }

    /// Waits for a line containing `needle` and returns it.
    pub async fn wait_line(&mut self, needle: &str) -> String {
        let wait = async {
            while let Some(line) = self.lines.recv().await {
                self.output.push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            panic!(
                "process ended before printing {needle:?}; output:\n{}",
                self.output.join("\n")
            );
        };
        tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no line {needle:?} within 60 s; output:\n{}",
                    self.output.join("\n")
                )
            })
    }

    /// The daemon's address, from its "upkeep listening addr=..." log line.
    pub async fn listening_addr(&mut self) -> String {
        let line = self.wait_line("upkeep listening").await;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("addr="))
            .expect("addr in the listening line")
            .to_string()
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.child.id().expect("process still running") as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// Waits for exit (60 s at most) and returns the exit code, with all output read: the
    /// line channel closes once both pipes reach EOF.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("process exits within 60 s")
            .expect("wait");
        let drain = async {
            while let Some(line) = self.lines.recv().await {
                self.output.push(line);
            }
        };
        tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .expect("output pipes close after exit");
        status.code()
    }
}

/// The environment of `upkeep serve` as a process on the test database: one worker, the test
/// token, a lease of `lease` seconds and the given failure points.
pub fn serve_env<'a>(
    db: &'a super::pg::TestDb,
    failpoints: &'a str,
    lease: &'a str,
) -> Vec<(&'static str, &'a str)> {
    vec![
        ("UPKEEP_DATABASE_URL", db.url.as_str()),
        ("UPKEEP_LISTEN", "127.0.0.1:0"),
        ("UPKEEP_ADMIN_TOKEN", super::daemon::TOKEN),
        ("UPKEEP_WORKERS", "1"),
        ("UPKEEP_WORKER_NAME", "proc"),
        ("SECRET_KEY", super::daemon::SECRET_KEY),
        ("UPKEEP_LEASE_SECONDS", lease),
        ("UPKEEP_FAILPOINTS", failpoints),
    ]
}

/// Submits `body` to a daemon process (one worker, 3 s lease) that `failpoints` abort, and waits
/// until it died as under kill -9: no requeue, the lease just lapses. Returns an API-only
/// client and the job id.
pub async fn submit_to_a_doomed_daemon(
    db: &super::pg::TestDb,
    failpoints: &str,
    body: serde_json::Value,
) -> (super::daemon::TestDaemon, String) {
    submit_to_a_doomed_daemon_with(db, failpoints, &[], body).await
}

/// The same, with more environment for both daemons (e.g. Dify's store variables).
pub async fn submit_to_a_doomed_daemon_with(
    db: &super::pg::TestDb,
    failpoints: &str,
    env: &[(&'static str, String)],
    body: serde_json::Value,
) -> (super::daemon::TestDaemon, String) {
    use super::daemon::{Options, TestDaemon};
    let mut proc_env = serve_env(db, failpoints, "3");
    proc_env.extend(env.iter().map(|(k, v)| (*k, v.as_str())));
    let mut proc = Proc::spawn(&["serve"], &proc_env);
    proc.listening_addr().await;
    let client = TestDaemon::start(
        db,
        Options {
            workers: 0,
            env: env.to_vec(),
            ..Options::default()
        },
    )
    .await;
    let (status, job) = client.submit(body).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(
        proc.wait_exit().await,
        None,
        "killed by abort() at {failpoints}"
    );
    let id = job["id"].as_str().expect("job id").to_string();
    (client, id)
}

/// A daemon that resumes jobs whose 3 s lease lapsed.
pub async fn rescuer(db: &super::pg::TestDb) -> super::daemon::TestDaemon {
    rescuer_with(db, &[]).await
}

pub async fn rescuer_with(
    db: &super::pg::TestDb,
    env: &[(&'static str, String)],
) -> super::daemon::TestDaemon {
    super::daemon::TestDaemon::start(
        db,
        super::daemon::Options {
            workers: 1,
            lease_secs: 3,
            name: "rescuer",
            env: env.to_vec(),
            ..Default::default()
        },
    )
    .await
}
