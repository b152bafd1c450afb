//! `backup`, `backup_verify` and `restore` on real parts: Dify's schema with data in Postgres,
//! storage on local disk, vectors in the Weaviate server, the repository on S3 (moto); the
//! disaster-recovery restore lands on an empty database, Azure Blob (azurite) and the Qdrant
//! stand-in. Corrupt and missing files, sets without a manifest, non-empty targets, and kills
//! mid-dump and mid-storage.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::daemon::{Options, TestDaemon};
use crate::support::dify_vectors::{
    Ds, assert_exactly, binding, dataset, exec, index_struct, load, on_qdrant,
};
use crate::support::files::{TempTree, read_all, snapshot};
use crate::support::pg::{self, TestDb};
use crate::support::process::{rescuer_with, submit_to_a_doomed_daemon_with};
use crate::support::servers::{Azurite, Moto};
use crate::support::vector_servers::{QdrantStandin, WeaviateServer};

async fn run(d: &TestDaemon, body: Value) -> Value {
    let (status, job) = d.submit(body).await;
    assert_eq!(status, 202, "{job}");
    d.wait_finished(job["id"].as_str().expect("id")).await
}

/// A Dify with rows, storage objects (referenced and not) and two datasets on Weaviate.
pub(crate) struct Source {
    pub(crate) tree: TempTree,
    datasets: Vec<Ds>,
    collection: String,
}

async fn seed(db: &TestDb, w: Option<&WeaviateServer>, objects: usize) -> Source {
    let tree = TempTree::new("dify-storage");
    let tenant = Uuid::new_v4();
    exec(
        db,
        "INSERT INTO public.tenants (id, name, encrypt_public_key) VALUES ($1, 'acme', 'pk')",
        vec![json!(tenant)],
    )
    .await;
    for i in 0..objects {
        let key = format!("upload_files/{tenant}/{i:04}.txt");
        // Every tenth object has the bytes of another: stored once.
        tree.write(
            &key,
            format!("file {} of acme", i - i % 10 * usize::from(i % 10 == 1)).as_bytes(),
        );
        exec(
            db,
            "INSERT INTO public.upload_files (tenant_id, storage_type, key, name, size, extension, \
               created_by_role, created_by, created_at, used) \
             VALUES ($1, 'opendal', $2, 'f.txt', 10, 'txt', 'account', $1, now(), false)",
            vec![json!(tenant), json!(key)],
        )
        .await;
    }
    tree.write(
        &format!("privkeys/{tenant}/private.pem"),
        b"-----BEGIN RSA PRIVATE KEY-----\n",
    );
    tree.write(".dify_secret_key", b"secret\n");
    let (b, collection) = binding(db, "dataset").await;
    let mut datasets = Vec::new();
    if let Some(w) = w {
        for (i, named) in [(1u64, true), (2, false)] {
            let ds = dataset(db, tenant, b, 30, i == 2, i).await;
            load(w, &ds, named, &[], 0).await;
            datasets.push(ds);
        }
    }
    Source {
        tree,
        datasets,
        collection,
    }
}

/// A Dify on local disk backing up into a local repository.
pub(crate) struct Local {
    pub(crate) db: TestDb,
    pub(crate) src: Source,
    pub(crate) repo: TempTree,
    /// Dify's storage and `UPKEEP_BACKUP_DIR`.
    pub(crate) env: Vec<(&'static str, String)>,
}

/// A daemon on `db` with Dify's env `env`.
async fn daemon(db: &TestDb, env: &[(&'static str, String)]) -> TestDaemon {
    TestDaemon::start(
        db,
        Options {
            env: env.to_vec(),
            ..Options::default()
        },
    )
    .await
}

pub(crate) async fn local(objects: usize) -> Local {
    let db = pg::dify_database().await;
    let src = seed(&db, None, objects).await;
    let repo = TempTree::new("repo");
    let mut env = storage_env(&src.tree);
    env.push(("UPKEEP_BACKUP_DIR", repo.path().to_string()));
    Local { db, src, repo, env }
}

fn s3_repo(moto: &Moto, bucket: &str) -> Value {
    s3_at(&moto.endpoint(), bucket)
}

/// An S3 config (path style, moto's test keys) for the server at `endpoint`.
pub(crate) fn s3_at(endpoint: &str, bucket: &str) -> Value {
    json!({"type": "s3", "bucket_name": bucket, "endpoint": endpoint, "region": "us-east-1",
           "access_key": "test", "secret_key": "test", "address_style": "path"})
}

fn storage_env(tree: &TempTree) -> Vec<(&'static str, String)> {
    vec![
        ("STORAGE_TYPE", "opendal".into()),
        ("OPENDAL_SCHEME", "fs".into()),
        ("OPENDAL_FS_ROOT", tree.path().to_string()),
    ]
}

/// `(rows, digest of every row as JSON)` per table of `public`; `index_struct` left out of
/// `datasets`, which a restore into another vector store rewrites.
pub(crate) async fn table_digests(db: &TestDb) -> BTreeMap<String, (i64, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("tables");
    let mut out = BTreeMap::new();
    for t in tables {
        let drop = if t == "datasets" { "index_struct" } else { "" };
        let row: (i64, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), md5(string_agg(x, '|' ORDER BY x)) FROM \
             (SELECT (to_jsonb(t) - $1)::text AS x FROM public.\"{t}\" t) s"
        )))
        .bind(drop)
        .fetch_one(&db.pool)
        .await
        .expect("digest");
        out.insert(t, (row.0, row.1.unwrap_or_default()));
    }
    out
}

#[tokio::test]
async fn a_whole_dify_restores_into_an_empty_one_on_other_backends_and_a_second_backup_writes_no_object_bytes()
 {
    let db = pg::dify_database().await;
    let w = WeaviateServer::start().await;
    let moto = Moto::start().await;
    moto.create_bucket("backups").await;
    let src = seed(&db, Some(&w), 40).await;
    let repo = s3_repo(&moto, "backups");
    // Dify's plugin daemon keeps its own database on the same server.
    let plugin = pg::empty_database().await;
    sqlx::raw_sql(
        "CREATE TABLE plugins (id serial PRIMARY KEY, name text NOT NULL); \
         INSERT INTO plugins (name) SELECT 'plugin ' || g FROM generate_series(1, 25) g",
    )
    .execute(&plugin.pool)
    .await
    .expect("plugin database");
    let mut env = storage_env(&src.tree);
    env.extend([
        ("DB_PLUGIN_DATABASE", plugin.name.clone()),
        ("VECTOR_STORE", "weaviate".to_string()),
        ("WEAVIATE_ENDPOINT", w.url.clone()),
        ("UPKEEP_BACKUP_TARGET", repo.to_string()),
    ]);
    let d = daemon(&db, &env).await;

    // The dry run says what would be written and writes nothing.
    let (status, dry) = d
        .submit(json!({"kind": "backup", "dry_run": true, "params": {"label": "pre-upgrade"}}))
        .await;
    assert_eq!(status, 202, "{dry}");
    let dry = d.wait_finished(dry["id"].as_str().expect("id")).await;
    assert_eq!(dry["state"], "succeeded", "{dry}");
    assert_eq!(
        dry["result"]["parts"],
        json!(["database", "storage", "vectors"])
    );
    assert_eq!(dry["result"]["storage"]["objects"], 42, "{dry}");
    assert!(
        read_all(&repo, "").await.is_empty(),
        "a dry run wrote to the repository"
    );

    let first = run(
        &d,
        json!({"kind": "backup", "params": {"label": "pre-upgrade"}}),
    )
    .await;
    assert_eq!(first["state"], "succeeded", "{first}");
    let r = &first["result"];
    let set = r["set"].as_str().expect("set").to_string();
    assert_eq!(r["verified"], true);
    assert_eq!(r["counts"]["objects"], 42, "{r}");
    assert_eq!(r["counts"]["records"], 60, "{r}");
    // 40 uploads, 4 of them duplicates of another's bytes.
    assert_eq!(r["storage"]["objects_written"], 38, "{r}");
    assert!(r["bytes_written"].as_u64().unwrap_or(0) > 0);
    let manifest: Value = serde_json::from_slice(
        &read_all(&repo, &format!("sets/{set}/")).await[&format!("sets/{set}/manifest.json")],
    )
    .expect("manifest is JSON");
    assert_eq!(manifest["label"], "pre-upgrade");
    assert_eq!(manifest["dify"]["revision"], "c3d4e5f6a7b8");
    assert_eq!(manifest["dify"]["release"], "main @76391b0 (after 1.15.0)");
    assert_eq!(
        manifest["database"]["databases"][1]["name"],
        json!(plugin.name)
    );
    assert_eq!(
        manifest["database"]["databases"][1]["tables"]["public.plugins"],
        25
    );
    let tables = &manifest["database"]["databases"][0]["tables"];
    assert_eq!(tables["public.upload_files"], 40, "{tables}");
    assert!(
        tables.get("upkeep.jobs").is_none(),
        "Upkeep's schema is not in the set"
    );
    let objects_after_first = read_all(&repo, "objects/").await.len();

    // Unchanged storage: the second set writes no object bytes and no new objects.
    let second = run(&d, json!({"kind": "backup", "params": {}})).await;
    assert_eq!(second["state"], "succeeded", "{second}");
    assert_eq!(second["result"]["storage"]["bytes_written"], 0, "{second}");
    assert_eq!(second["result"]["storage"]["objects_written"], 0);
    // Size and modification time match the first set's index: not one object was read.
    assert_eq!(
        second["result"]["storage"]["objects_unchanged_not_read"], 42,
        "{second}"
    );
    assert_eq!(second["result"]["storage"]["previous_set"], json!(set));
    assert!(
        second["result"]["bytes_deduplicated"].as_u64()
            >= first["result"]["storage"]["bytes"].as_u64(),
        "{second}"
    );
    assert_eq!(read_all(&repo, "objects/").await.len(), objects_after_first);
    assert_ne!(second["result"]["set"], first["result"]["set"]);

    // Disaster recovery: a daemon on an empty database, an empty Azure container and an empty
    // Qdrant restores the first set.
    let before = table_digests(&db).await;
    let empty = pg::empty_database().await;
    let empty_plugin = pg::empty_database().await;
    let azurite = Azurite::start().await;
    azurite.create_container("restored").await;
    let q = QdrantStandin::start("1.16.0").await;
    let dr_env = vec![
        ("DB_PLUGIN_DATABASE", empty_plugin.name.clone()),
        ("STORAGE_TYPE", "azure-blob".to_string()),
        ("AZURE_BLOB_ACCOUNT_NAME", Azurite::ACCOUNT.to_string()),
        ("AZURE_BLOB_ACCOUNT_KEY", Azurite::KEY.to_string()),
        ("AZURE_BLOB_CONTAINER_NAME", "restored".to_string()),
        ("AZURE_BLOB_ACCOUNT_URL", azurite.endpoint()),
        ("VECTOR_STORE", "qdrant".to_string()),
        ("QDRANT_URL", "http://127.0.0.1:6333".to_string()),
        ("QDRANT_GRPC_PORT", q.grpc_port.to_string()),
        ("UPKEEP_BACKUP_TARGET", repo.to_string()),
    ];
    let dr = daemon(&empty, &dr_env).await;
    // Dry runs first: what the set holds and where it would go, nothing written.
    let verify_plan = run(
        &dr,
        json!({"kind": "backup_verify", "dry_run": true, "params": {"set": set, "restore_test": true}}),
    )
    .await;
    assert_eq!(verify_plan["result"]["set"], set, "{verify_plan}");
    assert_eq!(verify_plan["result"]["restore_test"], true, "{verify_plan}");
    let restore_plan = run(
        &dr,
        json!({"kind": "restore", "dry_run": true, "params": {"set": set}}),
    )
    .await;
    let rp = &restore_plan["result"];
    assert_eq!(rp["would_refuse"], json!([]), "{rp}");
    assert_eq!(
        rp["parts"],
        json!(["database", "storage", "vectors"]),
        "{rp}"
    );
    assert!(
        rp["storage"]["into"]
            .as_str()
            .unwrap_or("")
            .contains("restored"),
        "{rp}"
    );
    let restored = run(&dr, json!({"kind": "restore", "params": {"set": set}})).await;
    assert_eq!(restored["state"], "succeeded", "{restored}");
    let rr = &restored["result"];
    assert_eq!(rr["database"]["databases"][0]["matches"], true, "{rr}");
    assert_eq!(
        rr["storage"]["objects"],
        json!({"set": 42, "restored": 42}),
        "{rr}"
    );
    let after = table_digests(&empty).await;
    assert_eq!(after, before, "every table's rows are the originals'");
    assert_eq!(
        rr["database"]["databases"][1]["name"],
        json!(empty_plugin.name),
        "{rr}"
    );
    assert_eq!(
        table_digests(&empty_plugin).await,
        table_digests(&plugin).await
    );
    assert_eq!(table_digests(&empty_plugin).await["plugins"].0, 25);
    let azure = json!({"type": "azure-blob", "account_name": Azurite::ACCOUNT, "account_key": Azurite::KEY,
                       "container_name": "restored", "account_url": azurite.endpoint()});
    assert_eq!(
        snapshot(&azure).await,
        snapshot(&src.tree.config()).await,
        "every object's bytes"
    );
    let units: Vec<&Ds> = src.datasets.iter().collect();
    assert_exactly(&q, &src.collection, &units, &[]).await;
    for ds in &src.datasets {
        assert_eq!(
            index_struct(&empty, ds.id).await,
            on_qdrant(&src.collection)
        );
    }

    // Restoring again onto what is now a non-empty Dify is refused, touching nothing.
    let again = run(&dr, json!({"kind": "restore", "params": {"set": "latest"}})).await;
    assert_eq!(again["state"], "failed", "{again}");
    assert_eq!(again["error"]["code"], "target_not_empty", "{again}");
    let parts: Vec<&str> = again["result"]["refused"]
        .as_array()
        .expect("refused")
        .iter()
        .filter_map(|r| r["part"].as_str())
        .collect();
    assert_eq!(
        parts,
        ["database", "database", "storage", "vectors"],
        "{again}"
    );
    assert_eq!(table_digests(&empty).await, before);
    d.stop().await;
    dr.stop().await;
}

#[tokio::test]
async fn a_corrupted_and_a_missing_file_fail_verification_by_name_and_restore_touches_nothing() {
    let Local {
        db,
        // Kept alive: dropping them deletes the folders.
        src: _src,
        repo: repo_tree,
        env,
    } = local(12).await;
    let d = daemon(&db, &env).await;
    let done = run(
        &d,
        json!({"kind": "backup", "params": {"parts": ["database", "storage"]}}),
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let set = done["result"]["set"].as_str().expect("set").to_string();
    let ok = run(
        &d,
        json!({"kind": "backup_verify", "params": {"set": set, "restore_test": true}}),
    )
    .await;
    assert_eq!(ok["state"], "succeeded", "{ok}");
    assert_eq!(ok["result"]["verify"]["problems_total"], 0);
    assert_eq!(ok["result"]["restore_test"]["matches"], true, "{ok}");
    assert_eq!(ok["result"]["verify"]["objects"], 14);

    // One object changed in place (same size), one gone.
    let objects: Vec<String> = read_all(&repo_tree.config(), "objects/")
        .await
        .into_keys()
        .collect();
    let (changed, gone) = (&objects[0], &objects[1]);
    let old = std::fs::read(format!("{}/{changed}", repo_tree.path())).expect("object");
    let mut flipped = old.clone();
    flipped[0] ^= 0xff;
    repo_tree.write(changed, &flipped);
    std::fs::remove_file(format!("{}/{gone}", repo_tree.path())).expect("rm");
    let bad = run(
        &d,
        json!({"kind": "backup_verify", "params": {"set": "latest"}}),
    )
    .await;
    assert_eq!(bad["state"], "failed", "{bad}");
    assert_eq!(bad["error"]["code"], "verify_failed");
    let problems: BTreeMap<String, String> = bad["result"]["verify"]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap_or("").to_string(),
                p["problem"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        problems,
        BTreeMap::from([
            (changed.clone(), "sha256".to_string()),
            (gone.clone(), "missing".to_string())
        ])
    );
    let message = bad["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(changed.as_str()) && message.contains(gone.as_str()),
        "{message}"
    );

    // A restore of that set into an empty Dify refuses before touching anything.
    let empty = pg::empty_database().await;
    let target_tree = TempTree::new("restore-target");
    let mut dr_env = storage_env(&target_tree);
    dr_env.push(("UPKEEP_BACKUP_DIR", repo_tree.path().to_string()));
    let dr = daemon(&empty, &dr_env).await;
    let refused = run(&dr, json!({"kind": "restore", "params": {"set": set}})).await;
    assert_eq!(refused["state"], "failed", "{refused}");
    assert_eq!(refused["error"]["code"], "verify_failed", "{refused}");
    assert!(
        table_digests(&empty).await.is_empty(),
        "no table was created"
    );
    assert!(
        snapshot(&target_tree.config()).await.is_empty(),
        "no object was written"
    );

    // Without its manifest the set is incomplete: never offered, never restored.
    std::fs::remove_file(format!("{}/sets/{set}/manifest.json", repo_tree.path()))
        .expect("rm manifest");
    let incomplete = run(&dr, json!({"kind": "restore", "params": {"set": set}})).await;
    assert_eq!(
        incomplete["error"]["code"], "set_incomplete",
        "{incomplete}"
    );
    let latest = run(&dr, json!({"kind": "restore", "params": {"set": "latest"}})).await;
    assert_eq!(latest["error"]["code"], "set_incomplete", "{latest}");
    assert!(table_digests(&empty).await.is_empty());
    d.stop().await;
    dr.stop().await;
}

async fn killed_at(failpoint: &str, objects: usize) -> Value {
    let Local {
        db,
        src: _src,
        repo: _repo,
        env,
    } = local(objects).await;
    let body =
        json!({"kind": "backup", "params": {"parts": ["database", "storage"], "concurrency": 4}});
    let (client, id) = submit_to_a_doomed_daemon_with(&db, failpoint, &env, body).await;
    let rescuer = rescuer_with(&db, &env).await;
    let done = rescuer.wait_finished(&id).await;
    check_set(&rescuer, &db, &done, json!({}), objects).await;
    let (_, events) = client
        .call(
            Method::GET,
            &format!("/v1/jobs/{id}/events?limit=500"),
            None,
        )
        .await;
    rescuer.stop().await;
    client.stop().await;
    json!({"job": done, "events": events})
}

/// A finished backup of the database and `objects` storage objects (plus the private key and
/// `.dify_secret_key`): it succeeded, its set verifies, and its ledger holds each file once.
/// `source` is the verify's storage (`{}`: `UPKEEP_BACKUP_DIR`).
pub(crate) async fn check_set(
    d: &TestDaemon,
    db: &TestDb,
    done: &Value,
    mut source: Value,
    objects: usize,
) {
    assert_eq!(done["state"], "succeeded", "{done}");
    source["set"] = done["result"]["set"].clone();
    let verified = run(d, json!({"kind": "backup_verify", "params": source})).await;
    assert_eq!(verified["state"], "succeeded", "{verified}");
    assert_eq!(verified["result"]["verify"]["objects"], objects as u64 + 2);
    let ledger: (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT path) FROM upkeep.backup_files WHERE job_id = $1::uuid",
    )
    .bind(done["id"].as_str())
    .fetch_one(&db.pool)
    .await
    .expect("ledger");
    assert_eq!(ledger, (objects as i64 + 2, objects as i64 + 2));
}

#[tokio::test]
async fn killed_mid_dump_the_resumed_backup_dumps_again_from_a_new_snapshot_and_says_so() {
    let out = killed_at("backup.dump_chunk=abort@1", 5).await;
    assert_eq!(out["job"]["result"]["database"]["restarts"], 1, "{out}");
    let warned = out["events"]["items"]
        .as_array()
        .expect("events")
        .iter()
        .any(|e| {
            e["type"] == "warning"
                && e["data"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("restarted from a new snapshot"))
        });
    assert!(warned, "{}", out["events"]);
}

#[tokio::test]
async fn killed_mid_storage_the_resumed_backup_skips_what_was_recorded_and_verifies() {
    let out = killed_at("backup.storage_flushed=abort@2", 600).await;
    assert_eq!(out["job"]["result"]["database"]["restarts"], 0, "{out}");
    assert_eq!(out["job"]["result"]["counts"]["objects"], 602);
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    for (body, field) in [
        (json!({"kind": "backup", "params": {}}), "params.target"),
        (
            json!({"kind": "backup", "params": {"target": {"type": "local", "root": "/tmp/x"}, "retention": {}}}),
            "params.retention",
        ),
        (
            json!({"kind": "backup", "params": {"target": {"type": "local", "root": "/tmp/x"}, "retention": {"keep_last": 0}}}),
            "params.retention.keep_last",
        ),
        (
            json!({"kind": "backup", "params": {"target": {"type": "local", "root": "/tmp/x"}, "parts": ["logs"]}}),
            "params.parts[0]",
        ),
        (
            json!({"kind": "backup_verify", "params": {"source": {"type": "local", "root": "/tmp"}, "set": "../x"}}),
            "params.set",
        ),
        (
            json!({"kind": "restore", "params": {"source": {"type": "local", "root": "/tmp"}}}),
            "params.set",
        ),
    ] {
        let (status, err) = d.submit(body.clone()).await;
        assert_eq!(status, 400, "{body} → {err}");
        assert_eq!(err["field"], field, "{body} → {err}");
    }
    d.stop().await;
}

#[tokio::test]
async fn the_cli_backs_up_and_preflight_says_whether_a_backup_covers_the_schema() {
    use crate::support::daemon::TOKEN;
    use crate::support::process::Proc;
    let Local {
        db,
        src: _src,
        repo: _repo,
        env,
    } = local(3).await;
    let d = daemon(&db, &env).await;
    let (_, pre) = d.call(Method::GET, "/v1/preflight", None).await;
    assert_eq!(pre["backup"]["stale"], true, "{pre}");
    assert_eq!(pre["backup"]["newest_verified"], Value::Null);

    let cli_env = [
        ("UPKEEP_URL", d.url.as_str()),
        ("UPKEEP_ADMIN_TOKEN", TOKEN),
    ];
    let mut p = Proc::spawn(
        &[
            "backup",
            "--label",
            "pre-upgrade",
            "--parts",
            "database,storage",
            "--wait",
        ],
        &cli_env,
    );
    assert_eq!(p.wait_exit().await, Some(0), "{}", p.output.join("\n"));
    let (_, pre) = d.call(Method::GET, "/v1/preflight", None).await;
    let newest = &pre["backup"]["newest_verified"];
    assert_eq!(pre["backup"]["stale"], false, "{pre}");
    assert_eq!(newest["label"], "pre-upgrade");
    assert_eq!(newest["dify_revision"], pre["dify"]["revision"]);
    assert!(
        newest["set"].as_str().is_some_and(|s| s.len() == 25),
        "{newest}"
    );

    // After a schema change (Dify upgraded), the newest backup no longer covers it.
    sqlx::query("UPDATE public.alembic_version SET version_num = 'd9e8f7a6b5c4'")
        .execute(&db.pool)
        .await
        .expect("alembic");
    let (_, pre) = d.call(Method::GET, "/v1/preflight", None).await;
    assert_eq!(pre["backup"]["stale"], true, "{pre}");

    // A request the daemon refuses exits non-zero, saying why.
    let mut p = Proc::spawn(&["backup", "--parts", "logs", "--wait"], &cli_env);
    assert_eq!(p.wait_exit().await, Some(1), "{}", p.output.join("\n"));
    assert!(
        p.output.iter().any(|l| l.contains("[params.parts[0]]")),
        "{:?}",
        p.output
    );
    d.stop().await;
}

#[tokio::test]
async fn retention_keeps_the_newest_sets_and_removes_objects_no_set_references() {
    let Local {
        db,
        src,
        repo: repo_tree,
        env,
    } = local(2).await;
    let d = daemon(&db, &env).await;
    let body =
        json!({"kind": "backup", "params": {"parts": ["storage"], "retention": {"keep_last": 2}}});
    let mut sets = Vec::new();
    for i in 0..3 {
        // Each set holds one object no other set has.
        src.tree
            .write("changing.txt", format!("version {i}").as_bytes());
        let done = run(&d, body.clone()).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        sets.push(done["result"]["set"].as_str().expect("set").to_string());
        // The seeded objects are taken from the previous set's index; the changed one is read.
        let unchanged = if i == 0 { 0 } else { 4 };
        assert_eq!(
            done["result"]["storage"]["objects_unchanged_not_read"], unchanged,
            "{done}"
        );
        if i == 2 {
            assert_eq!(
                done["result"]["retention"]["removed"],
                json!([sets[0]]),
                "{done}"
            );
            assert_eq!(done["result"]["retention"]["objects_removed"], 1, "{done}");
        }
    }
    let left: Vec<String> = read_all(&repo_tree.config(), "sets/")
        .await
        .into_keys()
        .filter(|k| k.ends_with("manifest.json"))
        .collect();
    assert_eq!(
        left,
        [
            format!("sets/{}/manifest.json", sets[1]),
            format!("sets/{}/manifest.json", sets[2])
        ]
    );
    assert!(!repo_tree.exists(&format!("sets/{}/storage.ndjson", sets[0])));
    // What is left verifies, byte for byte.
    for set in &sets[1..] {
        let v = run(&d, json!({"kind": "backup_verify", "params": {"set": set}})).await;
        assert_eq!(v["state"], "succeeded", "{v}");
    }
    let objects = read_all(&repo_tree.config(), "objects/").await;
    assert_eq!(
        objects.len(),
        5,
        "3 unchanging contents and the 2 kept versions of changing.txt"
    );
    d.stop().await;
}

#[tokio::test]
async fn killed_mid_vectors_the_backup_and_a_restore_into_milvus_resume_with_nothing_twice() {
    use crate::support::stores::{TestStore, assert_holds_exactly};
    let db = pg::dify_database().await;
    let w = WeaviateServer::start().await;
    let src = seed(&db, Some(&w), 1).await;
    let repo_tree = TempTree::new("repo");
    let mut env = storage_env(&src.tree);
    env.extend([
        ("VECTOR_STORE", "weaviate".to_string()),
        ("WEAVIATE_ENDPOINT", w.url.clone()),
        ("UPKEEP_BACKUP_DIR", repo_tree.path().to_string()),
    ]);
    let body = json!({"kind": "backup", "params": {"parts": ["vectors"]}});
    let (client, id) =
        submit_to_a_doomed_daemon_with(&db, "backup.vector_file=abort@2", &env, body).await;
    let rescuer = rescuer_with(&db, &env).await;
    let done = rescuer.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["counts"]["records"], 60, "{done}");
    let set = done["result"]["set"].as_str().expect("set").to_string();
    rescuer.stop().await;
    client.stop().await;

    // The same set into Milvus, killed after the first dataset's records were written.
    let milvus = TestStore::start("milvus").await;
    let mut menv = storage_env(&src.tree);
    menv.push(("VECTOR_STORE", "milvus".to_string()));
    menv.extend(milvus.env());
    menv.push(("UPKEEP_BACKUP_DIR", repo_tree.path().to_string()));
    let body = json!({"kind": "restore", "params": {"set": set, "parts": ["vectors"]}});
    let (client, id) =
        submit_to_a_doomed_daemon_with(&db, "restore.vector_file=abort@1", &menv, body).await;
    let rescuer = rescuer_with(&db, &menv).await;
    let done = rescuer.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let store = milvus.open().await;
    for ds in &src.datasets {
        let at = milvus.locate(ds, &src.collection, false);
        assert_holds_exactly(&store, &at, ds, &[]).await;
        assert_eq!(
            index_struct(&db, ds.id).await,
            milvus.index_struct(ds, &src.collection)
        );
    }
    rescuer.stop().await;
    client.stop().await;
}

#[tokio::test]
async fn restore_with_overwrite_brings_back_what_was_lost_in_one_transaction() {
    let Local {
        db,
        src,
        repo: _repo,
        env,
    } = local(6).await;
    let d = daemon(&db, &env).await;
    let done = run(
        &d,
        json!({"kind": "backup", "params": {"parts": ["database", "storage"]}}),
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let set = done["result"]["set"].as_str().expect("set").to_string();
    let before = table_digests(&db).await;
    let files_before = snapshot(&src.tree.config()).await;

    // An operator's mistake: rows and an object gone.
    sqlx::query(
        "DELETE FROM public.upload_files WHERE key LIKE '%0003.txt' OR key LIKE '%0004.txt'",
    )
    .execute(&db.pool)
    .await
    .expect("delete");
    let lost = files_before
        .keys()
        .find(|k| k.ends_with("0003.txt"))
        .expect("key")
        .clone();
    std::fs::remove_file(format!("{}/{lost}", src.tree.path())).expect("rm");
    assert_ne!(table_digests(&db).await, before);

    let restored = run(
        &d,
        json!({"kind": "restore", "params": {"set": set, "overwrite": true}}),
    )
    .await;
    assert_eq!(restored["state"], "succeeded", "{restored}");
    assert_eq!(table_digests(&db).await, before);
    assert_eq!(snapshot(&src.tree.config()).await, files_before);
    // The test's own pool stands for Dify's api here: connected, without Upkeep's name.
    let warnings = restored["result"]["warnings"].as_array().expect("warnings");
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains("stop Dify's api and worker"))),
        "{restored}"
    );
    // Upkeep's own schema was left alone: the jobs that did this are still there.
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM upkeep.jobs")
        .fetch_one(&db.pool)
        .await
        .expect("jobs");
    assert_eq!(jobs, 2);
    d.stop().await;
}

#[tokio::test]
async fn restore_refuses_a_set_newer_than_the_dify_that_would_read_it() {
    let Local {
        db,
        src: _src,
        repo: _repo,
        env,
    } = local(1).await;
    let d = daemon(&db, &env).await;
    let done = run(
        &d,
        json!({"kind": "backup", "params": {"parts": ["database", "storage"]}}),
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    // Another Dify, still on 1.9.2.
    let old = pg::dify_database().await;
    sqlx::query("UPDATE public.alembic_version SET version_num = 'ae662b25d9bc'")
        .execute(&old.pool)
        .await
        .expect("alembic");
    let before = table_digests(&old).await;
    let o = daemon(&old, &env).await;
    let refused = run(
        &o,
        json!({"kind": "restore", "params": {"set": "latest", "overwrite": true}}),
    )
    .await;
    assert_eq!(refused["state"], "failed", "{refused}");
    assert_eq!(refused["error"]["code"], "dify_revision_newer", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("1.9.2") && message.contains("upgrade Dify first"),
        "{message}"
    );
    assert_eq!(table_digests(&old).await, before);

    // A daemon whose storage is not usable refuses before restoring the database.
    let empty = pg::empty_database().await;
    let mut broken = env.clone();
    broken.retain(|(k, _)| !k.starts_with("OPENDAL") && *k != "STORAGE_TYPE");
    broken.push(("STORAGE_TYPE", "s3".to_string()));
    let e = daemon(&empty, &broken).await;
    let refused = run(&e, json!({"kind": "restore", "params": {"set": "latest"}})).await;
    assert_eq!(refused["error"]["code"], "target_unconfigured", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("S3_BUCKET_NAME")),
        "{refused}"
    );
    assert!(
        table_digests(&empty).await.is_empty(),
        "the database was not restored"
    );
    d.stop().await;
    o.stop().await;
    e.stop().await;
}
