//! The daemon as a process: SIGTERM mid-job hands the job back at its checkpoint, a crash is
//! recovered by lease expiry, and bad configuration stops the start naming the variable.

use crate::support::daemon::{Options, TestDaemon, vacuum};
use crate::support::pg;
use crate::support::process::{Proc, rescuer, serve_env, submit_to_a_doomed_daemon};

const TABLES: [&str; 5] = ["accounts", "apps", "conversations", "messages", "tenants"];

/// Each table was vacuumed exactly once: the first `first_attempt` by attempt 1, the rest by
/// the attempt that resumed the job.
fn assert_resumed(job: &serde_json::Value, first_attempt: usize) {
    let got: Vec<(String, i64)> = job["result"]["tables"]
        .as_array()
        .expect("tables in the result")
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().to_string(),
                t["attempt"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, i64)> = TABLES
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), if i < first_attempt { 1 } else { 2 }))
        .collect();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn sigterm_requeues_at_the_checkpoint_and_another_daemon_resumes() {
    let db = pg::dify_database().await;
    let mut proc = Proc::spawn(
        &["serve"],
        &serve_env(&db, "vacuum.before_table=pause@3", "30"),
    );
    let addr = proc.listening_addr().await;
    let client = TestDaemon::start(
        &db,
        Options {
            workers: 0,
            ..Options::default()
        },
    )
    .await;
    let (_, job) = client.submit(vacuum(&TABLES)).await;
    let id = job["id"].as_str().unwrap().to_string();
    client
        .wait_event(&id, |e| {
            e["data"]["message"] == "failpoint vacuum.before_table reached"
        })
        .await;
    assert!(!addr.is_empty());

    proc.signal(libc::SIGTERM);
    assert_eq!(
        proc.wait_exit().await,
        Some(0),
        "{}",
        proc.output.join("\n")
    );
    let requeued = client.job(&id).await;
    assert_eq!(requeued["state"], "queued", "{requeued}");

    let worker = TestDaemon::start(
        &db,
        Options {
            workers: 1,
            name: "resumer",
            ..Options::default()
        },
    )
    .await;
    let done = worker.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_resumed(&done, 2);
    worker.stop().await;
    client.stop().await;
}

#[tokio::test]
async fn a_killed_daemon_s_job_is_resumed_after_its_lease_expires() {
    let db = pg::dify_database().await;
    // The process dies at the fourth table.
    let (client, id) =
        submit_to_a_doomed_daemon(&db, "vacuum.before_table=abort@4", vacuum(&TABLES)).await;
    let stuck = client.job(&id).await;
    assert_eq!(stuck["state"], "running");

    let worker = rescuer(&db).await;
    let done = worker.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);
    assert_resumed(&done, 3);
    worker.stop().await;
    client.stop().await;
}

#[tokio::test]
async fn bad_configuration_stops_the_start_naming_the_variable() {
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("UPKEEP_LISTEN", "0.0.0.0:0")],
            "UPKEEP_ADMIN_TOKEN: is required when UPKEEP_LISTEN is not a loopback address",
        ),
        (
            vec![("UPKEEP_ADMIN_TOKEN", "short")],
            "UPKEEP_ADMIN_TOKEN: must be at least 16 characters",
        ),
        (
            vec![("UPKEEP_WORKERS", "lots")],
            "UPKEEP_WORKERS: expected 0..=64, got \"lots\"",
        ),
        (
            vec![("DB_TYPE", "mysql")],
            "DB_TYPE: Upkeep supports Dify on PostgreSQL only",
        ),
        (
            vec![("UPKEEP_LOG_FORMAT", "xml")],
            "UPKEEP_LOG_FORMAT: expected text or json",
        ),
        (
            vec![("UPKEEP_JOB_TTL_DAYS", "0")],
            "UPKEEP_JOB_TTL_DAYS: expected a number of days in 1..=3650",
        ),
        (
            vec![("UPKEEP_DATABASE_URL", "mysql://x")],
            "UPKEEP_DATABASE_URL: expected a postgres:// or postgresql:// URL",
        ),
    ];
    for (env, expected) in cases {
        let mut proc = Proc::spawn(&["serve"], &env);
        let code = proc.wait_exit().await;
        let out = proc.output.join("\n");
        assert_eq!(code, Some(2), "{env:?}: {out}");
        assert!(out.contains(expected), "{env:?}: {out}");
    }
    // An unreachable database is named too.
    let mut proc = Proc::spawn(
        &["serve"],
        &[
            ("DB_HOST", "127.0.0.1"),
            ("DB_PORT", "1"),
            ("DB_PASSWORD", "s3cret"),
        ],
    );
    assert_eq!(proc.wait_exit().await, Some(1));
    let out = proc.output.join("\n");
    assert!(out.contains("cannot reach the database"), "{out}");
    assert!(
        !out.contains("s3cret"),
        "the password never reaches the logs: {out}"
    );
}
