//! `storage_migrate` on real backends: local directories, S3 (moto), Azure Blob (azurite), GCS
//! (the emulator) and OSS (OpenDAL's OSS service against moto), with Dify's tables beside them.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::daemon::{Options, TestDaemon};
use crate::support::files::{TempTree, snapshot};
use crate::support::pg::{self, TestDb};
use crate::support::process::{rescuer, submit_to_a_doomed_daemon};
use crate::support::servers::{Azurite, GcsEmulator, Moto};

/// A Dify storage root with every kind of key Dify writes, and the rows that reference them.
struct Dify {
    tenant: Uuid,
    /// Keys the database references, all present on the source.
    referenced: Vec<String>,
}

async fn seed(db: &TestDb, tree: &TempTree) -> Dify {
    let tenant = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO public.tenants (id, name, encrypt_public_key) VALUES ($1, 'acme', 'pk')",
    )
    .bind(tenant)
    .execute(&db.pool)
    .await
    .unwrap();
    let mut referenced = vec![];
    let upload_keys = [
        format!("upload_files/{tenant}/{}.pdf", Uuid::new_v4()),
        format!("upload_files/{tenant}/{}.", Uuid::new_v4()),
        format!(
            "image_files/{tenant}/{}/0123456789abcdef_r1_c2_{}.png",
            Uuid::new_v4(),
            "ab".repeat(32)
        ),
        format!("datasources/{tenant}/{}.bin", Uuid::new_v4().simple()),
    ];
    for (i, key) in upload_keys.iter().enumerate() {
        tree.write(key, format!("upload {i} {key}").as_bytes());
        insert_upload(db, tenant, key).await;
        referenced.push(key.clone());
    }
    let tool_key = format!("tools/{tenant}/{}.png", Uuid::new_v4().simple());
    tree.write(&tool_key, b"tool file");
    sqlx::query(
        "INSERT INTO public.tool_files (user_id, tenant_id, file_key, mimetype, name, size) \
         VALUES ($1, $2, $3, 'image/png', 'x.png', 9)",
    )
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(&tool_key)
    .execute(&db.pool)
    .await
    .unwrap();
    referenced.push(tool_key);
    let pem = format!("privkeys/{tenant}/private.pem");
    tree.write(&pem, b"-----BEGIN RSA PRIVATE KEY-----\n");
    referenced.push(pem);
    let state = format!("workflow-state-{}.json", Uuid::new_v4());
    tree.write(&state, b"{\"paused\": true}");
    sqlx::query(
        "INSERT INTO public.workflow_pauses (workflow_id, workflow_run_id, state_object_key) \
         VALUES ($1, $2, $3)",
    )
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .bind(&state)
    .execute(&db.pool)
    .await
    .unwrap();
    referenced.push(state);
    // Not referenced by any row, but Dify needs them (or operators want them) after a switch.
    tree.write(".dify_secret_key", b"generated-secret\n");
    tree.write(&format!("triggers/{}.raw", Uuid::new_v4()), b"raw");
    tree.write(
        &format!("free_plan_tenant_expired_logs/{tenant}/messages/2026-01-01-1.json"),
        b"[]",
    );
    Dify { tenant, referenced }
}

async fn insert_upload(db: &TestDb, tenant: Uuid, key: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO public.upload_files (tenant_id, storage_type, key, name, size, extension, created_by) \
         VALUES ($1, 'opendal', $2, 'f', 1, 'pdf', $1) RETURNING id",
    )
    .bind(tenant)
    .bind(key)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

pub(crate) fn migrate(source: Value, target: Value, extra: Value) -> Value {
    let mut params = json!({"source": source, "target": target});
    if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    json!({"kind": "storage_migrate", "params": params})
}

async fn run(d: &TestDaemon, body: Value) -> Value {
    let (status, job) = d.submit(body).await;
    assert_eq!(status, 202, "{job}");
    d.wait_finished(job["id"].as_str().unwrap()).await
}

async fn storage_types(db: &TestDb) -> BTreeMap<String, String> {
    sqlx::query_as("SELECT key, storage_type FROM public.upload_files")
        .fetch_all(&db.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn fs_to_fs_copies_the_whole_root_skips_only_identical_bytes_and_flips_verified_rows() {
    let db = pg::dify_database().await;
    let (src, dst) = (TempTree::new("src"), TempTree::new("dst"));
    let dify = seed(&db, &src).await;
    // Already on the target: identical, same size but other bytes, and another size.
    let same = &dify.referenced[0];
    dst.write(same, &std::fs::read(src.root.join(same)).unwrap());
    let (flipped_bytes, other_size) = (&dify.referenced[1], &dify.referenced[4]);
    let mut wrong = std::fs::read(src.root.join(flipped_bytes)).unwrap();
    wrong[0] ^= 0xff;
    dst.write(flipped_bytes, &wrong);
    dst.write(other_size, b"stale and of another length");
    // A row whose object Dify has already lost.
    let gone = format!("upload_files/{}/{}.pdf", dify.tenant, Uuid::new_v4());
    let gone_id = insert_upload(&db, dify.tenant, &gone).await;

    let d = TestDaemon::start(&db, Options::default()).await;
    let done = run(&d, migrate(src.config(), dst.config(), json!({}))).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = &done["result"];
    let total = snapshot(&src.config()).await.len() as u64;
    assert_eq!(
        (
            r["copied"].as_u64(),
            r["replaced"].as_u64(),
            r["already_there"].as_u64()
        ),
        (Some(total - 3), Some(2), Some(1)),
        "{r}"
    );
    assert_eq!(r["failed"], 0);
    assert_eq!(snapshot(&dst.config()).await, snapshot(&src.config()).await);
    assert!(dst.exists(".dify_secret_key") && dst.exists(&dify.referenced[6]));

    // The lost object keeps the migration from being called safe, and says why.
    let check = &r["cross_check"];
    assert_eq!(check["missing_on_source"], 1, "{check}");
    assert_eq!(check["missing"][0]["key"], gone.as_str());
    assert_eq!(check["missing"][0]["referenced_by"], "upload_files.key");
    assert_eq!(check["verified"], dify.referenced.len() as u64);
    assert_eq!(r["safe_to_switch"], false);
    assert!(
        r["summary"].as_str().unwrap().starts_with("NOT safe"),
        "{r}"
    );

    // Rows flip only where the object was verified on the target.
    let types = storage_types(&db).await;
    assert_eq!(types[&gone], "opendal");
    for key in dify
        .referenced
        .iter()
        .filter(|k| k.contains("_files/") || k.starts_with("datasources/"))
    {
        assert_eq!(types[key], "local", "{key}");
    }
    assert_eq!(r["db"]["rows_updated"], 4);

    // Once the dead row is gone, a second run copies nothing and calls the switch safe.
    sqlx::query("DELETE FROM public.upload_files WHERE id = $1")
        .bind(gone_id)
        .execute(&db.pool)
        .await
        .unwrap();
    let again = run(&d, migrate(src.config(), dst.config(), json!({}))).await;
    let r = &again["result"];
    assert_eq!(again["state"], "succeeded", "{again}");
    assert_eq!(
        (
            r["copied"].as_u64(),
            r["replaced"].as_u64(),
            r["already_there"].as_u64()
        ),
        (Some(0), Some(0), Some(total)),
        "{r}"
    );
    assert_eq!(r["db"]["rows_updated"], 0);
    assert_eq!(r["safe_to_switch"], true, "{r}");
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .starts_with("safe to switch STORAGE_TYPE to local")
    );
    d.stop().await;
}

#[tokio::test]
async fn dry_run_counts_per_prefix_and_writes_nothing() {
    let db = pg::dify_database().await;
    let (src, dst) = (TempTree::new("src"), TempTree::new("dst"));
    let dify = seed(&db, &src).await;
    let gone = format!("upload_files/{}/{}.pdf", dify.tenant, Uuid::new_v4());
    insert_upload(&db, dify.tenant, &gone).await;
    let before = storage_types(&db).await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let mut body = migrate(src.config(), dst.config(), json!({}));
    body["dry_run"] = json!(true);
    let done = run(&d, body).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = &done["result"];
    assert_eq!(r["prefixes"]["upload_files"]["objects"], 2, "{r}");
    assert_eq!(r["prefixes"]["(root)"]["objects"], 2, "{r}");
    assert_eq!(r["prefixes"]["image_files"]["objects"], 1);
    assert_eq!(
        r["objects"].as_u64(),
        Some(snapshot(&src.config()).await.len() as u64)
    );
    assert_eq!(r["db_references"]["missing_on_source"], 1);
    assert_eq!(
        r["db_references"]["missing_sample"][0]["key"],
        gone.as_str()
    );
    assert!(
        snapshot(&dst.config()).await.is_empty(),
        "the dry run wrote to the target"
    );
    assert_eq!(storage_types(&db).await, before);
    d.stop().await;
}

#[tokio::test]
async fn bad_params_are_refused_naming_the_field_and_queue_nothing() {
    let db = pg::dify_database().await;
    let src = TempTree::new("src");
    let d = TestDaemon::start(&db, Options::default()).await;
    let s3 = |extra: Value| {
        let mut t = json!({"type": "s3", "bucket_name": "b", "endpoint": "http://127.0.0.1:1"});
        t.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        t
    };
    let cases = [
        (
            migrate(src.config(), json!({"type": "s3"}), json!({})),
            "params.target.bucket_name",
        ),
        (
            migrate(src.config(), s3(json!({"bukket": "x"})), json!({})),
            "params.target.bukket",
        ),
        (
            migrate(src.config(), json!({"type": "ftp"}), json!({})),
            "params.target.type",
        ),
        (
            migrate(
                src.config(),
                s3(json!({"address_style": "sideways"})),
                json!({}),
            ),
            "params.target.address_style",
        ),
        (
            migrate(
                src.config(),
                json!({"type": "opendal", "scheme": "hdfs"}),
                json!({}),
            ),
            "params.target.scheme",
        ),
        (
            migrate(
                json!({"type": "local", "root": "/nonexistent/upkeep"}),
                s3(json!({})),
                json!({}),
            ),
            "params.source.root",
        ),
        (
            migrate(src.config(), src.config(), json!({})),
            "params.target",
        ),
        (
            migrate(src.config(), s3(json!({})), json!({"concurrency": 0})),
            "params.concurrency",
        ),
        (
            migrate(src.config(), s3(json!({})), json!({"prefixes": ["../etc"]})),
            "params.prefixes[0]",
        ),
        (
            migrate(
                src.config(),
                s3(json!({})),
                json!({"verify": "size", "delete_source": true}),
            ),
            "params.delete_source",
        ),
    ];
    for (body, field) in cases {
        let (status, err) = d.submit(body.clone()).await;
        assert_eq!(status, 400, "{body} -> {err}");
        assert_eq!(err["field"], field, "{body} -> {err}");
    }
    let (_, jobs) = d.call(Method::GET, "/v1/jobs", None).await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "{jobs}");
    d.stop().await;
}

fn s3_config(moto: &Moto, bucket: &str) -> Value {
    json!({"type": "s3", "bucket_name": bucket, "endpoint": moto.endpoint(),
           "access_key": "test", "secret_key": "test", "address_style": "path"})
}

#[tokio::test]
async fn fs_to_s3_and_back_to_fs_with_multipart_objects() {
    let db = pg::dify_database().await;
    let moto = Moto::start().await;
    moto.create_bucket("dify").await;
    let (src, back) = (TempTree::new("src"), TempTree::new("back"));
    seed(&db, &src).await;
    // Larger than one part: goes up as a multipart upload.
    src.write_large("upload_files/big/video.mp4", 21 << 20, 7);
    let d = TestDaemon::start(&db, Options::default()).await;
    let s3 = s3_config(&moto, "dify");
    let up = run(&d, migrate(src.config(), s3.clone(), json!({}))).await;
    assert_eq!(up["state"], "succeeded", "{up}");
    assert_eq!(up["result"]["safe_to_switch"], true, "{up}");
    assert_eq!(up["result"]["db"]["storage_type"], "s3");
    let source = snapshot(&src.config()).await;
    assert_eq!(snapshot(&s3).await, source);
    let down = run(
        &d,
        migrate(s3.clone(), back.config(), json!({"update_db": false})),
    )
    .await;
    assert_eq!(down["state"], "succeeded", "{down}");
    assert_eq!(snapshot(&back.config()).await, source);
    d.stop().await;
}

#[tokio::test]
async fn fs_to_azure_blob_with_shared_key_signatures() {
    let db = pg::dify_database().await;
    let azurite = Azurite::start().await;
    azurite.create_container("difyai-container").await;
    let src = TempTree::new("src");
    seed(&db, &src).await;
    src.write_large("upload_files/big/blob.bin", 9 << 20, 3);
    let target = json!({"type": "azure-blob", "account_name": Azurite::ACCOUNT,
        "account_key": Azurite::KEY, "container_name": "difyai-container",
        "account_url": azurite.endpoint()});
    let d = TestDaemon::start(&db, Options::default()).await;
    let done = run(&d, migrate(src.config(), target.clone(), json!({}))).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["safe_to_switch"], true);
    assert_eq!(snapshot(&target).await, snapshot(&src.config()).await);

    // A wrong key is refused by Azurite's signature check: the job fails on the target.
    let mut wrong = target.clone();
    wrong["account_key"] = json!("d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk=");
    let failed = run(&d, migrate(src.config(), wrong, json!({}))).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "target_failed", "{failed}");
    d.stop().await;
}

#[tokio::test]
async fn fs_to_google_storage_emulator() {
    let db = pg::dify_database().await;
    let gcs = GcsEmulator::start("dify-bucket").await;
    let src = TempTree::new("src");
    seed(&db, &src).await;
    let target =
        json!({"type": "google-storage", "bucket_name": "dify-bucket", "endpoint": gcs.endpoint()});
    let d = TestDaemon::start(&db, Options::default()).await;
    let done = run(&d, migrate(src.config(), target.clone(), json!({}))).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["safe_to_switch"], true);
    assert_eq!(snapshot(&target).await, snapshot(&src.config()).await);
    d.stop().await;
}

#[tokio::test]
async fn fs_to_aliyun_oss_puts_every_key_under_the_oss_path() {
    let db = pg::dify_database().await;
    let moto = Moto::start().await;
    moto.create_bucket("oss-bucket").await;
    let src = TempTree::new("src");
    seed(&db, &src).await;
    let target = json!({"type": "aliyun-oss", "bucket_name": "oss-bucket", "endpoint": moto.endpoint(),
        "access_key": "test", "secret_key": "test", "path": "your-path"});
    let d = TestDaemon::start(&db, Options::default()).await;
    let done = run(&d, migrate(src.config(), target.clone(), json!({}))).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let source = snapshot(&src.config()).await;
    assert_eq!(snapshot(&target).await, source);
    // Seen as a plain bucket, every key sits under ALIYUN_OSS_PATH, as Dify's oss2 writes it.
    let raw = snapshot(&s3_config(&moto, "oss-bucket")).await;
    let expected: BTreeMap<String, (u64, String)> = source
        .into_iter()
        .map(|(k, v)| (format!("your-path/{k}"), v))
        .collect();
    assert_eq!(raw, expected);
    d.stop().await;
}

#[tokio::test]
async fn ten_thousand_small_files_in_nested_prefixes() {
    let db = pg::dify_database().await;
    let (src, dst) = (TempTree::new("src"), TempTree::new("dst"));
    for i in 0..10_000u32 {
        let key = format!("upload_files/t{}/d{}/{i}.txt", i % 7, i % 13);
        src.write(&key, format!("file {i}").as_bytes());
    }
    let d = TestDaemon::start(&db, Options::default()).await;
    let done = run(
        &d,
        migrate(src.config(), dst.config(), json!({"concurrency": 16})),
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["copied"], 10_000);
    assert_eq!(done["progress"]["total"], 10_000, "{done}");
    assert_eq!(snapshot(&dst.config()).await, snapshot(&src.config()).await);
    d.stop().await;
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[tokio::test]
async fn a_200_mb_object_streams_to_s3_in_bounded_memory() {
    let db = pg::dify_database().await;
    let moto = Moto::start().await;
    moto.create_bucket("dify").await;
    let src = TempTree::new("src");
    src.write_large("upload_files/t/huge.bin", 200 << 20, 11);
    let d = TestDaemon::start(&db, Options::default()).await;
    let before = peak_rss_kib();
    let s3 = s3_config(&moto, "dify");
    let done = run(&d, migrate(src.config(), s3.clone(), json!({}))).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let grew_mib = (peak_rss_kib() - before) / 1024;
    // The file is 200 MiB; a transfer holds at most a read chunk and a few parts.
    assert!(grew_mib < 100, "peak RSS grew by {grew_mib} MiB");
    assert_eq!(done["result"]["bytes_verified"], 200u64 << 20);
    assert_eq!(snapshot(&s3).await, snapshot(&src.config()).await);
    d.stop().await;
}

pub(crate) async fn ledger(db: &TestDb, job: &str) -> BTreeMap<String, (String, String)> {
    sqlx::query_as(
        "SELECT key, outcome, verified_at::text FROM upkeep.storage_objects WHERE job_id = $1::uuid",
    )
    .bind(job)
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(k, o, t): (String, String, String)| (k, (o, t)))
    .collect()
}

#[tokio::test]
async fn killed_mid_copy_the_job_resumes_and_copies_nothing_twice() {
    let db = pg::dify_database().await;
    let (src, dst) = (TempTree::new("src"), TempTree::new("dst"));
    for i in 0..1500u32 {
        src.write(
            &format!("upload_files/t{}/{i}.bin", i % 5),
            &i.to_le_bytes().repeat(50),
        );
    }
    let (client, id) = submit_to_a_doomed_daemon(
        &db,
        "storage_migrate.flushed=abort@4",
        migrate(src.config(), dst.config(), json!({})),
    )
    .await;
    let before = ledger(&db, &id).await;
    assert!(
        !before.is_empty() && before.len() < 1500,
        "{} recorded",
        before.len()
    );
    let mtimes: BTreeMap<String, std::time::SystemTime> = before
        .keys()
        .map(|k| {
            (
                k.clone(),
                std::fs::metadata(dst.root.join(k))
                    .unwrap()
                    .modified()
                    .unwrap(),
            )
        })
        .collect();

    let rescuer = rescuer(&db).await;
    let done = rescuer.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);
    let after = ledger(&db, &id).await;
    assert_eq!(after.len(), 1500);
    // What the first attempt verified was neither rewritten nor re-recorded.
    for (key, row) in &before {
        assert_eq!(&after[key], row, "{key}");
        let mtime = std::fs::metadata(dst.root.join(key))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(mtime, mtimes[key], "{key} was written again");
    }
    // Objects written but not yet recorded are found identical; one cut off mid-write is found
    // different and written again. Either way each key is recorded once.
    let r = &done["result"];
    let n = |k: &str| r[k].as_u64().unwrap();
    assert_eq!(
        n("copied") + n("replaced") + n("already_there"),
        1500,
        "{r}"
    );
    assert!(
        n("replaced") + n("already_there") <= 8,
        "more than the transfers in flight: {r}"
    );
    assert_eq!(snapshot(&dst.config()).await, snapshot(&src.config()).await);
    rescuer.stop().await;
    client.stop().await;
}

#[tokio::test]
async fn a_target_that_dies_mid_run_fails_the_job_naming_the_object() {
    let db = pg::dify_database().await;
    let mut moto = Moto::start().await;
    moto.create_bucket("dify").await;
    let src = TempTree::new("src");
    for i in 0..1200u32 {
        src.write(
            &format!("upload_files/t/{i}.bin"),
            &i.to_le_bytes().repeat(100),
        );
    }
    let d = TestDaemon::start(&db, Options::default()).await;
    let (_, job) = d
        .submit(migrate(src.config(), s3_config(&moto, "dify"), json!({})))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    d.wait_event(&id, |e| {
        e["type"] == "progress"
            && e["data"]["phase"] == "copy"
            && e["data"]["done"].as_u64() > Some(0)
    })
    .await;
    moto.kill().await;
    let done = d.wait_finished(&id).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "target_failed", "{done}");
    let message = done["error"]["message"].as_str().unwrap();
    let key = message
        .split_whitespace()
        .find(|w| w.starts_with("upload_files/"))
        .unwrap_or_else(|| panic!("no object named in {message:?}"))
        .trim_end_matches(':');
    let recorded = ledger(&db, &id).await;
    assert!(
        !recorded.is_empty() && recorded.len() < 1200,
        "{}",
        recorded.len()
    );
    assert!(!recorded.contains_key(key), "{key} counted as done");

    // The server comes back having lost everything: a retry notices and copies it all again.
    moto.restart().await;
    moto.create_bucket("dify").await;
    let (status, _) = d
        .call(Method::POST, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_eq!(status, 202);
    let done = d.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        snapshot(&s3_config(&moto, "dify")).await,
        snapshot(&src.config()).await
    );
    d.stop().await;
}

#[tokio::test]
async fn delete_source_removes_only_verified_objects_after_a_safe_migration() {
    let db = pg::dify_database().await;
    let (src, dst) = (TempTree::new("src"), TempTree::new("dst"));
    seed(&db, &src).await;
    let source = snapshot(&src.config()).await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let done = run(
        &d,
        migrate(src.config(), dst.config(), json!({"delete_source": true})),
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["source_deleted"], source.len() as u64);
    assert_eq!(snapshot(&dst.config()).await, source);
    assert!(snapshot(&src.config()).await.is_empty());

    // Not safe (a referenced object is missing): nothing is deleted.
    let (src2, dst2) = (TempTree::new("src"), TempTree::new("dst"));
    src2.write("upload_files/x/a.txt", b"a");
    let dify_tenant = Uuid::new_v4();
    insert_upload(
        &db,
        dify_tenant,
        &format!("upload_files/{dify_tenant}/lost.pdf"),
    )
    .await;
    let kept = run(
        &d,
        migrate(src2.config(), dst2.config(), json!({"delete_source": true})),
    )
    .await;
    assert_eq!(kept["result"]["safe_to_switch"], false, "{kept}");
    assert_eq!(kept["result"]["source_deleted"], 0);
    assert!(src2.exists("upload_files/x/a.txt"));
    d.stop().await;
}

#[tokio::test]
async fn source_and_target_default_to_dify_s_env() {
    let db = pg::dify_database().await;
    let moto = Moto::start().await;
    moto.create_bucket("difyai").await;
    let src = TempTree::new("src");
    seed(&db, &src).await;
    // As in Dify's .env after the operator chose S3: the old local root is still named.
    let env = vec![
        ("STORAGE_TYPE", "s3".to_string()),
        ("OPENDAL_FS_ROOT", src.path().to_string()),
        ("S3_ENDPOINT", moto.endpoint()),
        ("S3_BUCKET_NAME", "difyai".to_string()),
        ("S3_ACCESS_KEY", "test".to_string()),
        ("S3_SECRET_KEY", "test".to_string()),
        ("S3_ADDRESS_STYLE", "path".to_string()),
    ];
    let d = TestDaemon::start(
        &db,
        Options {
            env: env.clone(),
            ..Options::default()
        },
    )
    .await;
    let (_, preflight) = d.call(Method::GET, "/v1/preflight", None).await;
    let storage = &preflight["storage"];
    assert_eq!(storage["reachable"], true, "{storage}");
    assert_eq!(
        storage["location"],
        format!("s3://difyai at {}", moto.endpoint())
    );
    let done = run(&d, json!({"kind": "storage_migrate"})).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["safe_to_switch"], true, "{done}");
    assert_eq!(
        snapshot(&s3_config(&moto, "difyai")).await,
        snapshot(&src.config()).await
    );
    d.stop().await;

    // A missing variable is named when the job would use it.
    let broken: Vec<_> = env
        .into_iter()
        .filter(|(k, _)| *k != "S3_BUCKET_NAME")
        .collect();
    let d = TestDaemon::start(
        &db,
        Options {
            env: broken,
            ..Options::default()
        },
    )
    .await;
    let (status, err) = d.submit(json!({"kind": "storage_migrate"})).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["field"], "params.target");
    assert!(
        err["message"].as_str().unwrap().contains("S3_BUCKET_NAME"),
        "{err}"
    );
    d.stop().await;
}
