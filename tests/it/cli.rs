//! The binary's client verbs and `openapi`, run as real processes.

use serde_json::{Value, json};

use crate::support::daemon::{Options, TOKEN, TestDaemon};
use crate::support::pg;
use crate::support::process::{Proc, serve_env};

#[tokio::test]
async fn submit_watch_list_show_exit_codes() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let env = [
        ("UPKEEP_URL", d.url.as_str()),
        ("UPKEEP_ADMIN_TOKEN", TOKEN),
    ];
    let mut p = Proc::spawn(
        &[
            "jobs",
            "submit",
            "vacuum",
            "--param",
            "tables=[\"tenants\",\"apps\"]",
            "--param",
            "mode=plain",
            "--watch",
        ],
        &env,
    );
    assert_eq!(p.wait_exit().await, Some(0), "{}", p.output.join("\n"));
    let out = p.output.join("\n");
    assert!(
        out.contains("/2 tables"),
        "plain progress lines off a terminal: {out}"
    );
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("queued "))
        .expect("job id printed")
        .to_string();
    assert!(out.contains(&format!("job {id}: succeeded")), "{out}");

    let mut p = Proc::spawn(&["jobs", "show", &id], &env);
    assert_eq!(p.wait_exit().await, Some(0));
    let shown: Value =
        serde_json::from_str(&p.output.join("\n")).expect("show prints the job as JSON");
    assert_eq!(shown["state"], "succeeded");
    assert_eq!(shown["params"]["tables"], json!(["tenants", "apps"]));

    let mut p = Proc::spawn(&["jobs", "list", "--state", "succeeded"], &env);
    assert_eq!(p.wait_exit().await, Some(0));
    assert!(
        p.output
            .iter()
            .any(|l| l.starts_with(&id) && l.contains("succeeded")),
        "{:?}",
        p.output
    );

    // A failing job: watch exits non-zero and says why.
    let holder = pg::hold_lock(&db, "apps").await;
    let mut p = Proc::spawn(
        &[
            "jobs",
            "submit",
            "vacuum",
            "--params-json",
            r#"{"tables":["apps"],"lock_timeout_ms":100}"#,
            "--watch",
        ],
        &env,
    );
    assert_eq!(p.wait_exit().await, Some(1), "{}", p.output.join("\n"));
    assert!(
        p.output.iter().any(|l| l.contains("tables_failed")),
        "{:?}",
        p.output
    );
    holder.rollback().await.unwrap();

    // Errors from the API are printed with their code and field.
    let mut p = Proc::spawn(&["jobs", "submit", "vacuum", "--param", "mode=fast"], &env);
    assert_eq!(p.wait_exit().await, Some(1));
    assert!(
        p.output
            .iter()
            .any(|l| l.contains("400 invalid_field [params.mode]")),
        "{:?}",
        p.output
    );
    let mut p = Proc::spawn(
        &["jobs", "list"],
        &[
            ("UPKEEP_URL", d.url.as_str()),
            ("UPKEEP_ADMIN_TOKEN", "wrong-token-0123456789"),
        ],
    );
    assert_eq!(p.wait_exit().await, Some(1));
    assert!(
        p.output.iter().any(|l| l.contains("401 unauthorized")),
        "{:?}",
        p.output
    );
    d.stop().await;
}

#[tokio::test]
async fn openapi_command_prints_the_document() {
    let mut p = Proc::spawn(&["openapi"], &[]);
    assert_eq!(p.wait_exit().await, Some(0));
    let printed: Value = serde_json::from_str(&p.output.join("\n")).expect("JSON");
    assert_eq!(
        printed,
        serde_json::to_value(upkeep::api::openapi()).unwrap()
    );
}

#[tokio::test]
async fn preflight_tenants_events_and_the_hints_an_operator_needs() {
    let db = pg::dify_database().await;
    sqlx::query(
        "INSERT INTO public.tenants (id, name, encrypt_public_key) VALUES (gen_random_uuid(), 'Acme', 'pk')",
    )
    .execute(&db.pool)
    .await
    .expect("tenant");
    let d = TestDaemon::start(&db, Options::default()).await;
    let env = [
        ("UPKEEP_URL", d.url.as_str()),
        ("UPKEEP_ADMIN_TOKEN", TOKEN),
    ];
    let mut p = Proc::spawn(&["preflight"], &env);
    assert_eq!(p.wait_exit().await, Some(0), "{}", p.output.join("\n"));
    let pre: Value = serde_json::from_str(&p.output.join("\n")).expect("preflight as JSON");
    assert_eq!(pre["database"]["reachable"], true);

    let mut p = Proc::spawn(&["tenants", "--limit", "10"], &env);
    assert_eq!(p.wait_exit().await, Some(0), "{}", p.output.join("\n"));
    let page: Value = serde_json::from_str(&p.output.join("\n")).expect("tenants as JSON");
    assert_eq!(page["items"][0]["name"], "Acme", "{page}");

    // Nothing matched: it says so rather than printing nothing.
    let mut p = Proc::spawn(&["jobs", "list", "--state", "failed"], &env);
    assert_eq!(p.wait_exit().await, Some(0));
    assert_eq!(p.output, ["no jobs match"]);

    let (status, job) = d
        .submit(json!({"kind": "vacuum", "params": {"tables": ["tenants"], "mode": "analyze"}}))
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    let mut p = Proc::spawn(&["jobs", "events", &id, "--follow"], &env);
    assert_eq!(p.wait_exit().await, Some(0), "{}", p.output.join("\n"));
    // Events on stdout, a JSON line each; the ending job's state on stderr.
    let events: Vec<Value> = p
        .output
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON line per event"))
        .collect();
    assert!(
        p.output
            .iter()
            .any(|l| l == &format!("job {id}: succeeded")),
        "{:?}",
        p.output
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "state" && e["data"]["state"] == "succeeded"),
        "{events:?}"
    );
    let mut p = Proc::spawn(&["jobs", "events", &id], &env);
    assert_eq!(p.wait_exit().await, Some(0));
    assert_eq!(
        p.output.len(),
        events.len(),
        "the same events, without following"
    );

    // An unknown kind is refused by the CLI itself, listing the kinds.
    let mut p = Proc::spawn(&["jobs", "submit", "defrag"], &env);
    assert_eq!(p.wait_exit().await, Some(2));
    assert!(
        p.output
            .iter()
            .any(|l| l.contains("vacuum") && l.contains("backup")),
        "{:?}",
        p.output
    );

    // No token: it says what to set.
    let mut p = Proc::spawn(&["jobs", "list"], &[("UPKEEP_URL", d.url.as_str())]);
    assert_eq!(p.wait_exit().await, Some(1));
    assert!(
        p.output
            .iter()
            .any(|l| l.contains("set UPKEEP_ADMIN_TOKEN or pass --token")),
        "{:?}",
        p.output
    );
    d.stop().await;
}

#[tokio::test]
async fn completions_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let mut p = Proc::spawn(&["completions", shell], &[]);
        assert_eq!(p.wait_exit().await, Some(0), "{}", p.output.join("\n"));
        let script = p.output.join("\n");
        assert!(script.contains("upkeep"), "{shell}: {script}");
        for sub in [
            "serve",
            "openapi",
            "healthcheck",
            "demo",
            "backup",
            "preflight",
            "tenants",
            "jobs",
            "submit",
            "events",
            "completions",
        ] {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let mut p = Proc::spawn(&["completions", "cmd.exe"], &[]);
    assert_eq!(p.wait_exit().await, Some(2));
    assert!(
        p.output.iter().any(|l| l.contains("bash")),
        "{:?}",
        p.output
    );
}

#[tokio::test]
async fn a_job_s_log_lines_carry_its_id_once_as_a_field() {
    let db = pg::dify_database().await;
    let mut env = serve_env(&db, "", "30");
    env.push(("UPKEEP_LOG_FORMAT", "json"));
    let mut p = Proc::spawn(&["serve"], &env);
    let listening: Value =
        serde_json::from_str(&p.wait_line("upkeep listening").await).expect("a JSON log line");
    let addr = listening["fields"]["addr"].as_str().expect("addr field");
    let d = TestDaemon::remote(&format!("http://{addr}"), TOKEN);
    let (status, job) = d.submit(crate::support::daemon::vacuum(&["tenants"])).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    let done = d.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit().await, Some(0), "{}", p.output.join("\n"));

    let lines: Vec<&String> = p.output.iter().filter(|l| l.contains(&id)).collect();
    for line in &lines {
        assert_eq!(
            line.matches(&id).count(),
            1,
            "the id more than once: {line}"
        );
    }
    let worker: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON log line"))
        .filter(|l| l["span"]["name"] == "job")
        .collect();
    let messages: Vec<&str> = worker
        .iter()
        .map(|l| l["fields"]["message"].as_str().unwrap_or(""))
        .collect();
    assert!(
        messages.contains(&"starting the job") && messages.contains(&"job ended: succeeded"),
        "{messages:?}"
    );
    for line in &worker {
        assert_eq!(line["span"]["job.id"], id.as_str(), "{line}");
        assert_eq!(line["span"]["job.kind"], "vacuum", "{line}");
    }
}
