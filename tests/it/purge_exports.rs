//! `purge_exports` on a local directory and on S3 (moto): only Dify's export files under
//! `free_plan_tenant_expired_logs/`, aged by the export time in their names.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::daemon::{Options, TestDaemon};
use crate::support::files::{TempTree, put, snapshot};
use crate::support::pg;
use crate::support::servers::Moto;

/// Export names as Dify writes them, `days_ago` days back.
fn export_key(tenant: Uuid, table: &str, days_ago: i64) -> String {
    let at = chrono::Utc::now() - chrono::Duration::days(days_ago);
    format!(
        "free_plan_tenant_expired_logs/{tenant}/{table}/{}-{}.{:07}.json",
        at.format("%Y-%m-%d"),
        at.timestamp(),
        at.timestamp_subsec_micros()
    )
}

struct Layout {
    old: Vec<String>,
    kept: Vec<String>,
}

/// Old and recent exports, plus files that must never be touched.
async fn layout(storage: &Value) -> Layout {
    let (t1, t2) = (Uuid::new_v4(), Uuid::new_v4());
    let old = vec![
        export_key(t1, "messages", 40),
        export_key(t1, "workflow_runs", 45),
        export_key(t2, "messages", 31),
    ];
    let kept = vec![
        export_key(t1, "messages", 2),
        // Under the prefix but not an export name: reported, kept.
        format!("free_plan_tenant_expired_logs/{t1}/messages/notes.txt"),
        // Outside the prefix, even with an export-like name.
        format!("upload_files/{t1}/2020-01-01-1577836800.0.json"),
        format!("free_plan_tenant_expired_logs_backup/{t1}/messages/2020-01-01-1577836800.0.json"),
        ".dify_secret_key".to_string(),
    ];
    for key in old.iter().chain(&kept) {
        put(storage, key, b"[]".to_vec()).await;
    }
    Layout { old, kept }
}

async fn run(d: &TestDaemon, params: Value, dry_run: bool) -> Value {
    let (status, job) = d
        .submit(json!({"kind": "purge_exports", "params": params, "dry_run": dry_run}))
        .await;
    assert_eq!(status, 202, "{job}");
    let done = d.wait_finished(job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    done["result"].clone()
}

async fn check(d: &TestDaemon, storage: Value, layout: Layout) {
    let before = snapshot(&storage).await;
    let plan = run(d, json!({"older_than_days": 30, "storage": storage}), true).await;
    assert_eq!(plan["would_delete"], 3, "{plan}");
    assert!(
        plan["selects"]
            .as_str()
            .is_some_and(|s| s.starts_with("exports written before ")
                && s.ends_with("(more than 30 days ago)")),
        "{plan}"
    );
    assert_eq!(plan["would_delete_per_table"]["messages"], 2);
    assert_eq!(plan["unrecognised"], 1);
    assert_eq!(
        snapshot(&storage).await,
        before,
        "the dry run deleted something"
    );

    let done = run(d, json!({"older_than_days": 30, "storage": storage}), false).await;
    assert_eq!(done["deleted"], 3, "{done}");
    assert_eq!(done["kept_recent"], 1);
    let after = snapshot(&storage).await;
    for key in &layout.old {
        assert!(!after.contains_key(key), "{key} survived");
    }
    for key in &layout.kept {
        assert!(after.contains_key(key), "{key} was deleted");
    }

    // 0 days: the dry run says it means every export, however new; then every export goes,
    // and still nothing else.
    let all = run(d, json!({"older_than_days": 0, "storage": storage}), true).await;
    assert_eq!(
        all["selects"],
        "every export under free_plan_tenant_expired_logs/, however new (older_than_days: 0 means no age limit)",
        "{all}"
    );
    assert_eq!(all["would_delete"], 1, "{all}");
    let all = run(d, json!({"older_than_days": 0, "storage": storage}), false).await;
    assert_eq!(all["deleted"], 1, "{all}");
    assert_eq!(snapshot(&storage).await.len(), layout.kept.len() - 1);
}

#[tokio::test]
async fn local_exports_older_than_n_days_go_and_nothing_else() {
    let db = pg::dify_database().await;
    let tree = TempTree::new("exports");
    let layout = layout(&tree.config()).await;
    let d = TestDaemon::start(&db, Options::default()).await;
    check(&d, tree.config(), layout).await;
    d.stop().await;
}

#[tokio::test]
async fn s3_exports_older_than_n_days_go_and_nothing_else() {
    let db = pg::dify_database().await;
    let moto = Moto::start().await;
    moto.create_bucket("dify").await;
    let s3 = json!({"type": "s3", "bucket_name": "dify", "endpoint": moto.endpoint(),
        "access_key": "test", "secret_key": "test", "address_style": "path"});
    let layout = layout(&s3).await;
    let d = TestDaemon::start(&db, Options::default()).await;
    check(&d, s3, layout).await;
    d.stop().await;
}

#[tokio::test]
async fn bad_params_name_the_field() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    for (params, field) in [
        (json!({"older_than_days": -1}), "params.older_than_days"),
        (json!({"older_than_days": 99999}), "params.older_than_days"),
        (
            json!({"storage": {"type": "s3"}}),
            "params.storage.bucket_name",
        ),
        (
            json!({"storage": {"type": "local", "root": "/nonexistent/upkeep"}}),
            "params.storage.root",
        ),
        (json!({"days": 3}), "params.days"),
    ] {
        let (status, err) = d
            .submit(json!({"kind": "purge_exports", "params": params}))
            .await;
        assert_eq!(status, 400, "{params} -> {err}");
        assert_eq!(err["field"], field, "{params} -> {err}");
    }
    d.stop().await;
}
