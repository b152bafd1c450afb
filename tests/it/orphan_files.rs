//! `orphan_files` on a local directory, S3 (moto) and Azure Blob (azurite): the plan/confirm
//! cycle, the grace period, keys outside Dify's prefixes, and the refusals that protect data.

use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::daemon::{Options, TestDaemon};
use crate::support::files::{TempTree, put, snapshot};
use crate::support::pg::{self, TestDb};
use crate::support::servers::{Azurite, Moto};

pub(crate) struct Files {
    pub(crate) referenced: Vec<String>,
    pub(crate) orphans: Vec<String>,
    pub(crate) untouchable: Vec<String>,
}

async fn insert_upload(db: &TestDb, tenant: Uuid, key: &str) {
    sqlx::query(
        "INSERT INTO public.upload_files (tenant_id, storage_type, key, name, size, extension, created_by) \
         VALUES ($1, 'opendal', $2, 'f', 1, 'pdf', $1)",
    )
    .bind(tenant)
    .bind(key)
    .execute(&db.pool)
    .await
    .unwrap();
}

/// Rows and objects: referenced ones, true orphans, and keys no orphan run may touch.
pub(crate) async fn seed(db: &TestDb, storage: &Value) -> Files {
    let tenant = Uuid::new_v4();
    sqlx::query("INSERT INTO public.tenants (id, name) VALUES ($1, 'acme')")
        .bind(tenant)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut referenced = vec![];
    for key in [
        format!("upload_files/{tenant}/{}.pdf", Uuid::new_v4()),
        format!("image_files/{tenant}/{}.png", Uuid::new_v4()),
        format!("datasources/{tenant}/{}.bin", Uuid::new_v4().simple()),
        // Datasource files downloaded by URL get an upload_files row under tools/.
        format!("tools/{tenant}/{}.bin", Uuid::new_v4().simple()),
    ] {
        insert_upload(db, tenant, &key).await;
        referenced.push(key);
    }
    let tool = format!("tools/{tenant}/{}.png", Uuid::new_v4().simple());
    sqlx::query(
        "INSERT INTO public.tool_files (user_id, tenant_id, file_key, mimetype, name, size) \
         VALUES ($1, $1, $2, 'image/png', 'x', 1)",
    )
    .bind(tenant)
    .bind(&tool)
    .execute(&db.pool)
    .await
    .unwrap();
    referenced.push(tool);
    let orphans = vec![
        format!("upload_files/{tenant}/{}.pdf", Uuid::new_v4()),
        format!("image_files/{tenant}/{}/0123_r1_c1_ab.png", Uuid::new_v4()),
        format!("tools/{tenant}/{}.bin", Uuid::new_v4().simple()),
    ];
    let untouchable = vec![
        ".dify_secret_key".to_string(),
        format!("privkeys/{tenant}/private.pem"),
        format!("triggers/{}.raw", Uuid::new_v4()),
        format!("workflow-state-{}.json", Uuid::new_v4()),
        format!("free_plan_tenant_expired_logs/{tenant}/messages/2026-01-01-1.0.json"),
    ];
    for key in referenced.iter().chain(&orphans).chain(&untouchable) {
        put(storage, key, key.as_bytes().to_vec()).await;
    }
    Files {
        referenced,
        orphans,
        untouchable,
    }
}

/// Ages local files past the grace period (object stores keep their own times).
pub(crate) fn age(tree: &TempTree, keys: &[String]) {
    let old = SystemTime::now() - Duration::from_secs(3 * 86_400);
    for key in keys {
        let f = std::fs::File::options()
            .write(true)
            .open(tree.root.join(key))
            .unwrap();
        f.set_modified(old).unwrap();
    }
}

async fn finished(d: &TestDaemon, body: Value) -> Value {
    let (status, job) = d.submit(body).await;
    assert_eq!(status, 202, "{job}");
    d.wait_finished(job["id"].as_str().unwrap()).await
}

/// Plan, then one orphan becomes referenced, then confirm: only the rest go.
async fn cycle(db: &TestDb, d: &TestDaemon, storage: Value, files: &Files, min_age_hours: u32) {
    let before = snapshot(&storage).await;
    let dry = finished(
        d,
        json!({"kind": "orphan_files", "dry_run": true, "params": {"storage": storage, "min_age_hours": min_age_hours}}),
    )
    .await;
    assert_eq!(dry["result"]["plan_job_id"], Value::Null, "{dry}");
    assert_eq!(
        dry["result"]["orphans"],
        files.orphans.len() as u64,
        "{dry}"
    );
    let plan = finished(
        d,
        json!({"kind": "orphan_files", "params": {"storage": storage, "min_age_hours": min_age_hours}}),
    )
    .await;
    assert_eq!(plan["state"], "succeeded", "{plan}");
    let r = &plan["result"];
    assert_eq!(r["orphans"], files.orphans.len() as u64, "{r}");
    let mut sampled: Vec<String> = r["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_string())
        .collect();
    sampled.sort();
    let mut expected = files.orphans.clone();
    expected.sort();
    assert_eq!(sampled, expected);
    assert_eq!(
        snapshot(&storage).await,
        before,
        "planning deleted something"
    );

    // Dify writes a row for one of them between the plan and the confirmation.
    let revived = &files.orphans[0];
    insert_upload(db, Uuid::new_v4(), revived).await;
    let plan_id = plan["id"].as_str().unwrap();
    let preview = finished(
        d,
        json!({"kind": "orphan_files", "dry_run": true, "params": {"storage": storage, "confirm": true, "plan_job_id": plan_id}}),
    )
    .await;
    assert_eq!(
        preview["result"]["would_check_and_delete"],
        files.orphans.len() as u64,
        "{preview}"
    );
    let applied = finished(
        d,
        json!({"kind": "orphan_files", "params": {"storage": storage, "confirm": true, "plan_job_id": plan_id}}),
    )
    .await;
    assert_eq!(applied["state"], "succeeded", "{applied}");
    // The confirm's view shows the grace period it applies: its plan's, not the default.
    assert_eq!(
        applied["params"]["min_age_hours"], min_age_hours,
        "{applied}"
    );
    let r = &applied["result"];
    assert_eq!(r["deleted"], files.orphans.len() as u64 - 1, "{r}");
    assert_eq!(r["kept_referenced"], 1);
    assert_eq!(r["kept_sample"][0]["key"], revived.as_str());
    let after = snapshot(&storage).await;
    for key in files
        .referenced
        .iter()
        .chain(&files.untouchable)
        .chain([revived])
    {
        assert!(after.contains_key(key), "{key} was deleted");
    }
    for key in &files.orphans[1..] {
        assert!(!after.contains_key(key), "{key} survived");
    }

    // The same plan applied again finds nothing left to do, and says so.
    let again = finished(
        d,
        json!({"kind": "orphan_files", "params": {"storage": storage, "confirm": true, "plan_job_id": plan_id}}),
    )
    .await;
    let r = &again["result"];
    assert_eq!(r["deleted"], 0, "{r}");
    assert_eq!(r["kept_referenced"], 0, "{r}");
    assert_eq!(
        r["handled_by_an_earlier_confirm"],
        files.orphans.len() as u64,
        "{r}"
    );
    assert_eq!(snapshot(&storage).await, after);
}

#[tokio::test]
async fn local_plan_then_confirm_keeps_young_and_revived_files() {
    local_cycle(&pg::dify_database().await).await;
}

#[tokio::test]
async fn local_cycle_on_difys_full_real_schema() {
    if let Some(db) = pg::real_dify_database("orphan_files real schema").await {
        local_cycle(&db).await;
    }
}

/// Plan then confirm on a local directory (also on every release's schema).
pub(crate) async fn local_cycle(db: &TestDb) {
    let tree = TempTree::new("orphans");
    let files = seed(db, &tree.config()).await;
    age(&tree, &files.orphans);
    // Unreferenced but fresh: an upload whose row is not written yet.
    let young = format!("upload_files/{}/{}.pdf", Uuid::new_v4(), Uuid::new_v4());
    tree.write(&young, b"in flight");
    let d = TestDaemon::start(db, Options::default()).await;
    cycle(db, &d, tree.config(), &files, 48).await;
    assert!(tree.exists(&young), "a young file was deleted");
    d.stop().await;
}

#[tokio::test]
async fn s3_plan_then_confirm() {
    let db = pg::dify_database().await;
    let moto = Moto::start().await;
    moto.create_bucket("dify").await;
    let s3 = json!({"type": "s3", "bucket_name": "dify", "endpoint": moto.endpoint(),
        "access_key": "test", "secret_key": "test", "address_style": "path"});
    let files = seed(&db, &s3).await;
    let d = TestDaemon::start(&db, Options::default()).await;
    cycle(&db, &d, s3, &files, 0).await;
    d.stop().await;
}

#[tokio::test]
async fn azure_blob_plan_then_confirm() {
    let db = pg::dify_database().await;
    let azurite = Azurite::start().await;
    azurite.create_container("dify").await;
    let azure = json!({"type": "azure-blob", "account_name": Azurite::ACCOUNT,
        "account_key": Azurite::KEY, "container_name": "dify", "account_url": azurite.endpoint()});
    let files = seed(&db, &azure).await;
    let d = TestDaemon::start(&db, Options::default()).await;
    cycle(&db, &d, azure, &files, 0).await;
    d.stop().await;
}

#[tokio::test]
async fn refuses_when_a_referencing_table_is_unreadable_or_the_storage_is_empty() {
    let db = pg::dify_database().await;
    let tree = TempTree::new("orphans");
    let files = seed(&db, &tree.config()).await;
    age(&tree, &files.orphans);
    let d = TestDaemon::start(&db, Options::default()).await;

    // An empty directory where Dify's files should be: an error, not "nothing to do".
    let empty = TempTree::new("empty");
    let failed = finished(
        &d,
        json!({"kind": "orphan_files", "params": {"storage": empty.config(), "min_age_hours": 0}}),
    )
    .await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "storage_empty");

    sqlx::query("ALTER TABLE public.tool_files RENAME TO tool_files_moved")
        .execute(&db.pool)
        .await
        .unwrap();
    let (status, err) = d
        .submit(json!({"kind": "orphan_files", "params": {"storage": tree.config()}}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["code"], "dify_schema_unsupported", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("table public.tool_files is missing"),
        "{err}"
    );
    for key in files.referenced.iter().chain(&files.orphans) {
        assert!(tree.exists(key), "{key} was deleted");
    }
    d.stop().await;
}

#[tokio::test]
async fn bad_params_name_the_field() {
    let db = pg::dify_database().await;
    let tree = TempTree::new("orphans");
    let d = TestDaemon::start(&db, Options::default()).await;
    let (_, vacuum) = d
        .submit(json!({"kind": "vacuum", "params": {"tables": ["tenants"]}}))
        .await;
    let vacuum_id = vacuum["id"].as_str().unwrap().to_string();
    d.wait_finished(&vacuum_id).await;
    let storage = tree.config();
    for (params, field) in [
        (
            json!({"confirm": true, "storage": storage}),
            "params.plan_job_id",
        ),
        (
            json!({"confirm": true, "plan_job_id": Uuid::new_v4(), "storage": storage}),
            "params.plan_job_id",
        ),
        (
            json!({"confirm": true, "plan_job_id": vacuum_id, "storage": storage}),
            "params.plan_job_id",
        ),
        (
            json!({"confirm": true, "plan_job_id": "nope", "storage": storage}),
            "params.plan_job_id",
        ),
        (
            json!({"plan_job_id": Uuid::new_v4(), "storage": storage}),
            "params.plan_job_id",
        ),
        (
            json!({"prefixes": ["privkeys", "etc"], "storage": storage}),
            "params.prefixes[1]",
        ),
        (
            json!({"min_age_hours": -2, "storage": storage}),
            "params.min_age_hours",
        ),
        (
            json!({"storage": {"type": "azure-blob"}}),
            "params.storage.account_name",
        ),
    ] {
        let (status, err) = d
            .submit(json!({"kind": "orphan_files", "params": params}))
            .await;
        assert_eq!(status, 400, "{params} -> {err}");
        assert_eq!(err["field"], field, "{params} -> {err}");
    }
    // A vacuum is not a plan, and the message says what a plan is, in plain words.
    let (_, err) = d
        .submit(json!({"kind": "orphan_files", "params": {"confirm": true, "plan_job_id": vacuum_id, "storage": storage}}))
        .await;
    assert_eq!(
        err["message"],
        format!(
            "job {vacuum_id} is a vacuum job, not the plan of an orphan_files job (the plan is the orphan_files run without confirm)"
        ),
        "{err}"
    );
    let (_, jobs) = d
        .call(Method::GET, "/v1/jobs?kind=orphan_files", None)
        .await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "{jobs}");
    d.stop().await;
}
