//! `upkeep demo`, run as a real process: what it refuses before touching anything, and a setup
//! on which every README example finds what the README says it finds.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::support::daemon::TestDaemon;
use crate::support::files::TempTree;
use crate::support::pg;
use crate::support::process::Proc;

fn demo_args<'a>(
    database: &'a str,
    listen: &'a str,
    dir: &'a str,
    server: &'a str,
) -> Vec<&'a str> {
    vec![
        "demo",
        "--pg-url",
        server,
        "--database",
        database,
        "--listen",
        listen,
        "--dir",
        dir,
    ]
}

async fn database_exists(name: &str) -> bool {
    let mut c = PgConnection::connect(&pg::server_url())
        .await
        .expect("admin");
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut c)
        .await
        .expect("pg_database")
}

async fn drop_database(name: &str) {
    let mut c = PgConnection::connect(&pg::server_url())
        .await
        .expect("admin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut c)
    .await
    .expect("drop the demo database");
}

#[tokio::test]
async fn demo_refuses_a_taken_port_and_a_database_it_did_not_make_before_touching_anything() {
    let server = pg::server_url();
    let dir = std::env::temp_dir().join(format!("upkeep-demo-{}", uuid::Uuid::new_v4().simple()));
    let dir_s = dir.display().to_string();

    // A taken port: refused first, naming the demo's flag; no database, no folder.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().expect("addr").to_string();
    let database = format!("upkeep_t_demo_{}", uuid::Uuid::new_v4().simple());
    let mut p = Proc::spawn(&demo_args(&database, &taken, &dir_s, &server), &[]);
    assert_eq!(p.wait_exit().await, Some(1), "{}", p.output.join("\n"));
    let out = p.output.join("\n");
    assert!(
        out.contains(&format!("cannot listen on {taken} (--listen)")),
        "{out}"
    );
    assert!(!out.contains("UPKEEP_LISTEN"), "{out}");
    assert!(!database_exists(&database).await, "no database made");
    assert!(!dir.exists(), "no folder made: {}", dir.display());

    // Somebody's database: refused with a way out, and untouched.
    let theirs = pg::empty_database().await;
    sqlx::raw_sql("CREATE TABLE precious (v text); INSERT INTO precious VALUES ('keep me')")
        .execute(&theirs.pool)
        .await
        .expect("their data");
    let mut p = Proc::spawn(
        &demo_args(&theirs.name, "127.0.0.1:0", &dir_s, &server),
        &[],
    );
    assert_eq!(p.wait_exit().await, Some(1), "{}", p.output.join("\n"));
    let out = p.output.join("\n");
    assert!(
        out.contains(&format!(
            "database \"{}\" already exists and was not made by upkeep demo",
            theirs.name
        )) && out.contains("pick another name with --database NAME"),
        "{out}"
    );
    let kept: String = sqlx::query_scalar("SELECT v FROM precious")
        .fetch_one(&theirs.pool)
        .await
        .expect("their table is still there");
    assert_eq!(kept, "keep me");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every key the demo database references, read through Upkeep's own list of key sources.
async fn referenced_keys(db_url: &str) -> Vec<String> {
    let pool = sqlx::PgPool::connect(db_url).await.expect("demo database");
    let sources = upkeep::dify::storage_refs::present(&pool)
        .await
        .expect("key sources");
    let union = upkeep::dify::storage_refs::union_sql(&sources).expect("some key sources");
    let keys = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT key FROM ({union}) u WHERE key IS NOT NULL AND key <> ''"
    )))
    .fetch_all(&pool)
    .await
    .expect("keys");
    pool.close().await;
    keys
}

async fn run_job(d: &TestDaemon, body: Value) -> Value {
    let (status, job) = d.submit(body).await;
    assert_eq!(status, 202, "{job}");
    let job = d.wait_finished(job["id"].as_str().expect("id")).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    job["result"].clone()
}

struct Demo {
    proc: Proc,
    client: TestDaemon,
}

async fn start_demo(database: &str, dir: &Path) -> Demo {
    let server = pg::server_url();
    let dir_s = dir.display().to_string();
    let mut proc = Proc::spawn(&demo_args(database, "127.0.0.1:0", &dir_s, &server), &[]);
    let line = proc.wait_line("Upkeep demo is running at ").await;
    let url = line.rsplit(' ').next().expect("url").to_string();
    let token_line = proc.wait_line("token: ").await;
    let token = token_line.trim_start_matches("token: ").trim().to_string();
    Demo {
        proc,
        client: TestDaemon::remote(&url, &token),
    }
}

impl Demo {
    async fn stop(mut self) {
        self.proc.signal(libc::SIGTERM);
        assert_eq!(
            self.proc.wait_exit().await,
            Some(0),
            "{}",
            self.proc.output.join("\n")
        );
    }
}

#[tokio::test]
async fn demo_holds_every_referenced_key_old_orphans_old_exports_and_the_vectors() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("upkeep-demo-{}", uuid::Uuid::new_v4().simple()));
    let database = format!("upkeep_t_demo_{}", uuid::Uuid::new_v4().simple());
    let db_url = pg::url_for(&database);
    let demo = start_demo(&database, &dir).await;
    let d = &demo.client;

    let (status, tenants) = d.call(reqwest::Method::GET, "/v1/tenants", None).await;
    assert_eq!(status, 200, "{tenants}");
    let tenants = tenants["items"].as_array().expect("tenants").len() as u64;
    assert_eq!(tenants, 3);
    let storage = dir.join("storage");
    assert!(storage.join(".dify_secret_key").exists());

    let keys = referenced_keys(&db_url).await;
    assert!(keys.len() > 150, "{} keys", keys.len());
    let missing: Vec<&String> = keys.iter().filter(|k| !storage.join(k).is_file()).collect();
    assert!(
        missing.is_empty(),
        "referenced but not in storage: {missing:?}"
    );

    // The README's orphan_files example: 3 old uploads and 1 old tool file per workspace;
    // the upload written just now is too young.
    let plan = run_job(
        d,
        json!({"kind": "orphan_files", "params": {"min_age_hours": 48}}),
    )
    .await;
    assert_eq!(plan["orphans"], 4 * tenants, "{plan}");
    assert_eq!(
        plan["prefixes"]["upload_files"]["orphans"],
        3 * tenants,
        "{plan}"
    );
    assert_eq!(plan["prefixes"]["upload_files"]["too_young"], 1, "{plan}");
    assert_eq!(plan["prefixes"]["tools"]["orphans"], tenants, "{plan}");

    // Uploads nothing references, old enough for orphan_records.
    let plan = run_job(d, json!({"kind": "orphan_records", "params": {}})).await;
    let rows = plan["tables"]["upload_files"]["orphans"]
        .as_u64()
        .expect("count");
    assert!(rows > 0, "{plan}");

    // The README's purge_exports example: exports 200 and 120 days old go, 10 days old stay.
    let exports = run_job(
        d,
        json!({"kind": "purge_exports", "params": {"older_than_days": 90}, "dry_run": true}),
    )
    .await;
    assert_eq!(exports["would_delete"], 2 * 3 * tenants, "{exports}");
    assert_eq!(exports["kept_recent"], 3 * tenants, "{exports}");
    assert_eq!(exports["unrecognised"], 0, "{exports}");

    // The datasets' and annotation replies' records are in the demo's Weaviate: a dry run
    // reads every one (the target need not answer for a dry run).
    let plan = run_job(
        d,
        json!({"kind": "vector_migrate", "dry_run": true,
               "params": {"target": {"type": "qdrant", "url": "http://127.0.0.1:9"}}}),
    )
    .await;
    let units = plan["datasets"].as_array().expect("datasets");
    assert!(units.len() >= 3, "{plan}");
    for unit in units {
        assert!(unit.get("error").is_none(), "{unit}");
        assert!(unit["expected"].as_u64().is_some_and(|n| n > 0), "{unit}");
        assert_eq!(unit["source_points"], unit["expected"], "{unit}");
        assert_eq!(unit["missing_vectors"], 0, "{unit}");
        assert_eq!(unit["dimension"], 1536, "{unit}");
    }

    // Every referenced object is there, so a migration can end safe to switch.
    let target = TempTree::new("demo-target");
    let moved = run_job(
        d,
        json!({"kind": "storage_migrate", "params": {"target": target.config(), "update_db": false}}),
    )
    .await;
    assert_eq!(moved["cross_check"]["missing_on_source"], 0, "{moved}");
    assert_eq!(moved["safe_to_switch"], true, "{moved}");
    demo.stop().await;

    // A database the demo made is the demo's to recreate.
    let pool = sqlx::PgPool::connect(&db_url).await.expect("demo database");
    sqlx::raw_sql("CREATE TABLE public.leftover (v int)")
        .execute(&pool)
        .await
        .expect("a table the next demo drops");
    pool.close().await;
    let demo = start_demo(&database, &dir).await;
    let pool = sqlx::PgPool::connect(&db_url).await.expect("demo database");
    let leftover: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('public.leftover')::text")
            .fetch_one(&pool)
            .await
            .expect("regclass");
    assert_eq!(leftover, None, "the demo database was recreated");
    pool.close().await;
    demo.stop().await;
    drop_database(&database).await;
    let _ = std::fs::remove_dir_all(&dir);
}
