//! The admin console in a real browser: Debian's chromium driven by playwright-core
//! (`tests/console/console.mjs`, installed by `scripts/test`) against a daemon on the Dify
//! fixture. This test seeds what the scenario needs (a failed job, a slow job held on a table
//! lock, an orphan plan), runs the script, and releases the lock when the script asks: the
//! script has then seen the progress bar at 1 of 3 and waits for it to move without a reload.
//!
//! `UPKEEP_CONSOLE_SCREENSHOTS=1` makes the script save each page to `docs/console/`.

use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use uuid::Uuid;

use crate::support::daemon::{Options, TOKEN, TestDaemon};
use crate::support::files::TempTree;
use crate::support::pg;

fn env_or_panic(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests with scripts/test, which installs the test browser"
        )
    })
}

#[tokio::test]
async fn console_in_a_real_browser() {
    let chromium = env_or_panic("UPKEEP_TEST_CHROMIUM");
    let playwright = env_or_panic("UPKEEP_TEST_PLAYWRIGHT");
    let db = pg::dify_database().await;
    let tenant = Uuid::new_v4();
    sqlx::query("INSERT INTO public.tenants (id, name) VALUES ($1, 'Acme Support'), ($2, 'Globex Research')")
        .bind(tenant)
        .bind(Uuid::new_v4())
        .execute(&db.pool)
        .await
        .expect("seed tenants");
    // Dify's storage root: two files nothing references (orphans), one that a row references.
    let storage = TempTree::new("console");
    let orphans = [
        format!("upload_files/{tenant}/{}.pdf", Uuid::new_v4()),
        format!("image_files/{tenant}/{}.png", Uuid::new_v4()),
    ];
    for key in &orphans {
        storage.write(key, b"orphaned bytes");
    }
    let kept = format!("upload_files/{tenant}/{}.pdf", Uuid::new_v4());
    storage.write(&kept, b"referenced");
    sqlx::query(
        "INSERT INTO public.upload_files (tenant_id, storage_type, key, name, size, extension, created_by) \
         VALUES ($1, 'opendal', $2, 'f', 1, 'pdf', $1)",
    )
    .bind(tenant)
    .bind(&kept)
    .execute(&db.pool)
    .await
    .expect("seed upload_files");

    // Vacuum's failure points count every real vacuum of this daemon: the first one fails (the
    // job to retry), and the slow job pauses after its third table (until it is cancelled).
    let d = TestDaemon::start(
        &db,
        Options {
            failpoints: "vacuum.before_table=error@1,vacuum.after_table=pause@3",
            env: vec![
                ("STORAGE_TYPE", "opendal".to_string()),
                ("OPENDAL_SCHEME", "fs".to_string()),
                ("OPENDAL_FS_ROOT", storage.path().to_string()),
            ],
            ..Options::default()
        },
    )
    .await;

    let (status, failed) = d
        .submit(json!({"kind": "vacuum", "params": {"tables": ["tenants"], "mode": "plain"}}))
        .await;
    assert_eq!(status, 202, "{failed}");
    let failed_id = failed["id"].as_str().expect("id").to_string();
    let failed = d.wait_finished(&failed_id).await;
    assert_eq!(failed["state"], "failed", "{failed}");

    let (status, plan) = d
        .submit(json!({"kind": "orphan_files", "params": {"min_age_hours": 0}}))
        .await;
    assert_eq!(status, 202, "{plan}");
    let plan_id = plan["id"].as_str().expect("id").to_string();
    let plan = d.wait_finished(&plan_id).await;
    assert_eq!(plan["state"], "succeeded", "{plan}");
    assert_eq!(plan["result"]["orphans"], 2, "{plan}");

    // The slow job: `accounts`, then `apps` (locked here until the script has seen 1 of 3),
    // then `messages`, after which it pauses.
    let lock = pg::hold_lock(&db, "apps").await;
    let (status, slow) = d
        .submit(json!({"kind": "vacuum", "params": {
            "tables": ["accounts", "apps", "messages"], "mode": "plain", "lock_timeout_ms": 600000}}))
        .await;
    assert_eq!(status, 202, "{slow}");
    let slow_id = slow["id"].as_str().expect("id").to_string();
    d.wait_event(&slow_id, |e| {
        e["type"] == "progress" && e["data"]["phase"] == "vacuum public.apps"
    })
    .await;

    pages_and_assets(&d.url).await;
    // A loopback daemon without a token: the console opens without signing in.
    let open = TestDaemon::start(
        &db,
        Options {
            workers: 0,
            token: None,
            name: "open",
            ..Options::default()
        },
    )
    .await;

    let mut child = Command::new("node")
        .arg("tests/console/console.mjs")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("UPKEEP_TEST_CHROMIUM", chromium)
        .env("UPKEEP_TEST_PLAYWRIGHT", playwright)
        .env("CONSOLE_URL", &d.url)
        .env("CONSOLE_TOKEN", TOKEN)
        .env("CONSOLE_OPEN_URL", &open.url)
        .env("CONSOLE_SLOW_JOB", &slow_id)
        .env("CONSOLE_FAILED_JOB", &failed_id)
        .env("CONSOLE_PLAN_JOB", &plan_id)
        .env("CONSOLE_ORPHANS", orphans.join(","))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (scripts/test installs it)");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let errors = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut all = vec![];
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });
    let mut output = vec![];
    let mut lock = Some(lock);
    let run = async {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("console: release the lock")
                && let Some(tx) = lock.take()
            {
                tx.rollback().await.expect("release the lock");
            }
            output.push(line);
        }
        child.wait().await
    };
    let status = tokio::time::timeout(Duration::from_secs(240), run).await;
    let errors = errors.await.unwrap_or_default();
    let shown = format!(
        "stdout:\n{}\nstderr:\n{}",
        output.join("\n"),
        errors.join("\n")
    );
    match status {
        Ok(Ok(s)) => assert!(s.success(), "the browser scenario failed ({s}):\n{shown}"),
        Ok(Err(e)) => panic!("waiting for node: {e}\n{shown}"),
        Err(_) => panic!("the browser scenario took more than 240 s:\n{shown}"),
    }

    // What the browser did, as the API sees it.
    assert_eq!(d.job(&slow_id).await["state"], "cancelled");
    let retried = d.job(&failed_id).await;
    assert_eq!(retried["state"], "succeeded", "{retried}");
    assert_eq!(retried["attempts"], 2, "{retried}");
    for key in &orphans {
        assert!(!storage.root.join(key).exists(), "{key} was deleted");
    }
    assert!(
        storage.root.join(&kept).exists(),
        "the referenced file stays"
    );
    open.stop().await;
    d.stop().await;
}

/// Every page is index.html with a strict CSP; assets have their type and a year of cache
/// under a versioned path; an unknown asset is a JSON 404.
async fn pages_and_assets(url: &str) {
    let http = reqwest::Client::new();
    let mut asset_paths = vec![];
    for path in [
        "/",
        "/jobs",
        "/jobs/01a23c4f-1966-7478-9d9c-ffd7341483a4",
        "/new",
        "/overview",
    ] {
        let resp = http.get(format!("{url}{path}")).send().await.expect("page");
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers().clone();
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{path}");
        let csp = h["content-security-policy"].to_str().expect("csp");
        assert!(
            csp.contains("default-src 'self'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let body = resp.text().await.expect("body");
        assert!(body.contains("<main id=\"main\""), "{body}");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "only same-origin URLs: {body}"
        );
        asset_paths = body
            .split('"')
            .filter(|s| s.starts_with("/console/"))
            .map(str::to_string)
            .collect();
    }
    assert_eq!(
        asset_paths.len(),
        3,
        "favicon, stylesheet, script: {asset_paths:?}"
    );
    for (path, kind) in asset_paths.iter().map(|p| {
        let kind = if p.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else if p.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            "image/svg+xml"
        };
        (p, kind)
    }) {
        let resp = http
            .get(format!("{url}{path}"))
            .send()
            .await
            .expect("asset");
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], kind, "{path}");
        assert_eq!(
            resp.headers()["cache-control"],
            "public, max-age=31536000, immutable",
            "{path}"
        );
    }
    let resp = http
        .get(format!("{url}/console/0/nothing.js"))
        .send()
        .await
        .expect("404");
    assert_eq!(resp.status(), 404);
}
