//! Secrets in job params (secrets.rs): jobs and a schedule carrying marker secrets in every
//! secret-bearing field of every storage backend and vector store. Nothing in Upkeep's schema,
//! no API answer (views, events, schedules) and no line a daemon logs holds a marker; the job
//! still runs against moto, is killed and resumed by a daemon with the same key, and a daemon
//! with another key fails a job it cannot open, saying so.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::daemon::{Options, SECRET_KEY, TestDaemon};
use crate::support::files::TempTree;
use crate::support::pg::{self, TestDb};
use crate::support::process::{Proc, serve_env};
use crate::support::servers::{Azurite, Moto};

const MARK: &str = "MARKER-5ecr3t-7f3a";

/// Everything in schema `upkeep`, as text.
async fn upkeep_schema_text(db: &TestDb) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'upkeep' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&db.pool)
    .await
    .expect("tables");
    assert!(tables.iter().any(|t| t == "jobs"), "{tables:?}");
    let mut all = String::new();
    for t in tables {
        let text: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT string_agg(t::text, E'\\n') FROM upkeep.\"{t}\" t"
        )))
        .fetch_one(&db.pool)
        .await
        .expect("rows");
        all.push_str(&text.unwrap_or_default());
    }
    all
}

/// Every answer the API gives about these jobs and schedules.
async fn api_text(d: &TestDaemon) -> String {
    let mut all = String::new();
    let (_, jobs) = d.call(Method::GET, "/v1/jobs?limit=200", None).await;
    all.push_str(&jobs.to_string());
    for job in jobs["items"].as_array().expect("items") {
        let id = job["id"].as_str().expect("id");
        for path in [
            format!("/v1/jobs/{id}"),
            format!("/v1/jobs/{id}/events?limit=1000"),
        ] {
            let (status, body) = d.call(Method::GET, &path, None).await;
            assert_eq!(status, 200, "{path}: {body}");
            all.push_str(&body.to_string());
        }
    }
    let (_, schedules) = d.call(Method::GET, "/v1/schedules", None).await;
    all.push_str(&schedules.to_string());
    all
}

fn assert_no_marker(what: &str, text: &str) {
    for marker in [MARK, Azurite::KEY] {
        if let Some(at) = text.find(marker) {
            let from = text[..at]
                .char_indices()
                .rev()
                .nth(200)
                .map_or(0, |(i, _)| i);
            panic!("{what} holds a secret: …{}", &text[from..at]);
        }
    }
}

#[tokio::test]
async fn secrets_never_rest_or_show_in_plain_text_and_jobs_resume_where_the_key_is() {
    let db = pg::dify_database().await;
    let (moto, azurite) = tokio::join!(Moto::start(), Azurite::start());
    moto.create_bucket("dify").await;
    azurite.create_container("dify").await;
    let src = TempTree::new("src");
    for i in 0..600u32 {
        src.write(
            &format!("upload_files/t/{i}.bin"),
            &i.to_le_bytes().repeat(40),
        );
    }
    let s3 = json!({"type": "s3", "bucket_name": "dify", "endpoint": moto.endpoint(),
                    "access_key": format!("AKIA{MARK}"), "secret_key": MARK, "address_style": "path"});
    let azure = json!({"type": "azure-blob", "account_name": Azurite::ACCOUNT,
                       "account_key": Azurite::KEY, "container_name": "dify",
                       "account_url": azurite.endpoint()});
    let client = TestDaemon::start(
        &db,
        Options {
            workers: 0,
            ..Options::default()
        },
    )
    .await;

    // A daemon dies mid-copy to S3.
    let mut doomed = Proc::spawn(
        &["serve"],
        &serve_env(&db, "storage_migrate.flushed=abort@2", "3"),
    );
    doomed.listening_addr().await;
    let (status, copy) = client
        .submit(json!({"kind": "storage_migrate",
                       "params": {"source": src.config(), "target": s3}}))
        .await;
    assert_eq!(status, 202, "{copy}");
    assert_eq!(doomed.wait_exit().await, None, "killed mid-copy");
    let copy_id = copy["id"].as_str().expect("id").to_string();

    // Jobs carrying every other kind of secret: dry runs, so none waits for another.
    let stores = [
        json!({"type": "qdrant", "url": "http://127.0.0.1:1", "api_key": MARK}),
        json!({"type": "weaviate", "endpoint": "http://127.0.0.1:1", "api_key": MARK}),
        json!({"type": "milvus", "uri": format!("http://root:{MARK}@127.0.0.1:1"), "token": MARK,
               "password": MARK}),
        json!({"type": "pgvector", "host": "127.0.0.1", "port": 1, "password": MARK}),
        json!({"type": "analyticdb", "host": "127.0.0.1", "port": 1, "account": "a", "password": MARK}),
    ];
    let mut others = Vec::new();
    for store in stores {
        let (status, job) = client
            .submit(json!({"kind": "vector_migrate", "dry_run": true,
                           "params": {"target": store, "scope": "knowledge"}}))
            .await;
        assert_eq!(status, 202, "{job}");
        others.push(job["id"].as_str().expect("id").to_string());
    }
    let (status, job) = client
        .submit(json!({"kind": "storage_migrate", "dry_run": true,
                       "params": {"source": src.config(), "target": azure}}))
        .await;
    assert_eq!(status, 202, "{job}");
    others.push(job["id"].as_str().expect("id").to_string());
    let (status, schedule) = client
        .call(
            Method::POST,
            "/v1/schedules",
            Some(
                json!({"kind": "purge_exports", "dry_run": true, "cron": "0 3 * * *",
                        "params": {"older_than_days": 30,
                                   "storage": {"type": "s3", "bucket_name": "dify",
                                               "endpoint": moto.endpoint(),
                                               "access_key": MARK, "secret_key": MARK}}}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{schedule}");
    assert_eq!(schedule["params"]["storage"]["secret_key"], "***");

    // Another daemon with the same key resumes the copy and runs the rest.
    let mut rescuer = Proc::spawn(&["serve"], &serve_env(&db, "", "3"));
    rescuer.listening_addr().await;
    let done = client.wait_finished(&copy_id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["params"]["target"]["secret_key"], "***", "{done}");
    assert_eq!(done["params"]["target"]["access_key"], "***", "{done}");
    let r = &done["result"];
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    assert_eq!(n("copied") + n("replaced") + n("already_there"), 600, "{r}");
    for id in &others {
        let job = client.wait_finished(id).await;
        assert_ne!(job["state"], "running", "{job}");
    }
    rescuer.signal(libc::SIGTERM);
    assert_eq!(rescuer.wait_exit().await, Some(0));

    // A daemon with another key cannot open a job's secrets: the job fails and says why.
    let (status, lost) = client
        .submit(json!({"kind": "storage_migrate", "dry_run": true,
                       "params": {"source": src.config(), "target": s3}}))
        .await;
    assert_eq!(status, 202, "{lost}");
    let stranger = TestDaemon::start(
        &db,
        Options {
            workers: 1,
            name: "stranger",
            env: vec![("SECRET_KEY", format!("{SECRET_KEY}-another"))],
            ..Options::default()
        },
    )
    .await;
    let failed = stranger
        .wait_finished(lost["id"].as_str().expect("id"))
        .await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "secret_key_mismatch", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("UPKEEP_SECRET_KEY"), "{failed}");

    assert_no_marker("schema upkeep", &upkeep_schema_text(&db).await);
    assert_no_marker("the API", &api_text(&client).await);
    let logs = [doomed.output.join("\n"), rescuer.output.join("\n")].join("\n");
    assert!(logs.contains(&copy_id), "the logs are the daemons' own");
    assert_no_marker("the daemons' logs", &logs);
    stranger.stop().await;
    client.stop().await;
}

/// Without a key, a job carrying a secret is refused, naming the field; one without is not.
#[tokio::test]
async fn a_daemon_without_a_key_refuses_secrets_it_could_not_seal() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(
        &db,
        Options {
            env: vec![("SECRET_KEY", String::new())],
            ..Options::default()
        },
    )
    .await;
    let (status, body) = d
        .submit(json!({"kind": "purge_exports", "dry_run": true,
                       "params": {"older_than_days": 30,
                                  "storage": {"type": "s3", "bucket_name": "dify",
                                              "endpoint": "http://127.0.0.1:1",
                                              "access_key": "a", "secret_key": MARK}}}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "params.storage.access_key", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("UPKEEP_SECRET_KEY"),
        "{body}"
    );
    let (status, body) = d
        .submit(json!({"kind": "vacuum", "dry_run": true, "params": {}}))
        .await;
    assert_eq!(status, 202, "{body}");
    let (_, jobs) = d.call(Method::GET, "/v1/jobs", None).await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(1), "{jobs}");
    d.stop().await;
}

/// `upkeep rekey` re-encrypts stored secrets from the old key to the new one; a second run
/// finds nothing to do; a value neither key opens stops it before anything changes.
#[tokio::test]
async fn rekey_moves_stored_secrets_to_the_new_key() {
    use upkeep::secrets::Sealer;
    let db = pg::dify_database().await;
    let idle = Options {
        workers: 0,
        ..Options::default()
    };
    let d = TestDaemon::start(&db, idle).await;
    let storage = json!({"type": "s3", "bucket_name": "dify", "endpoint": "http://127.0.0.1:1",
                         "access_key": MARK, "secret_key": MARK});
    let (status, job) = d
        .submit(json!({"kind": "purge_exports", "dry_run": true,
                       "params": {"older_than_days": 30, "storage": storage}}))
        .await;
    assert_eq!(status, 202, "{job}");
    let (status, schedule) = d
        .call(
            Method::POST,
            "/v1/schedules",
            Some(json!({"kind": "purge_exports", "cron": "0 3 * * *",
                        "params": {"older_than_days": 30, "storage": storage}})),
        )
        .await;
    assert_eq!(status, 201, "{schedule}");
    let new_key = "sk-the-new-key-0123456789";
    let rekey = |old: &'static str| {
        let url = db.url.clone();
        async move {
            let mut p = Proc::spawn(
                &["rekey"],
                &[
                    ("UPKEEP_DATABASE_URL", url.as_str()),
                    ("SECRET_KEY", new_key),
                    ("UPKEEP_OLD_SECRET_KEY", old),
                ],
            );
            let code = p.wait_exit().await;
            (code, p.output.join("\n"))
        }
    };
    let (code, out) = rekey(SECRET_KEY).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 jobs and 1 schedules"), "{out}");
    let stored: Vec<Value> = sqlx::query_scalar(
        "SELECT params FROM upkeep.jobs UNION ALL SELECT params FROM upkeep.schedules",
    )
    .fetch_all(&db.pool)
    .await
    .expect("params");
    for params in &stored {
        assert!(Sealer::new(Some(SECRET_KEY)).open(params.clone()).is_err());
        let opened = Sealer::new(Some(new_key))
            .open(params.clone())
            .expect("new key");
        assert_eq!(opened["storage"]["secret_key"], MARK);
    }
    let (code, out) = rekey(SECRET_KEY).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("0 jobs and 0 schedules"), "{out}");

    // A job sealed with a third key: neither opens it, nothing changes.
    sqlx::query("UPDATE upkeep.jobs SET params = $1 WHERE id = $2::uuid")
        .bind(
            Sealer::new(Some("sk-a-third-key"))
                .seal(json!({"storage": storage}))
                .expect("seal"),
        )
        .bind(job["id"].as_str().expect("id"))
        .execute(&db.pool)
        .await
        .expect("update");
    let before: Vec<Value> = sqlx::query_scalar("SELECT params FROM upkeep.schedules")
        .fetch_all(&db.pool)
        .await
        .expect("params");
    let (code, out) = rekey("sk-not-it").await;
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("nothing changed"), "{out}");
    let after: Vec<Value> = sqlx::query_scalar("SELECT params FROM upkeep.schedules")
        .fetch_all(&db.pool)
        .await
        .expect("params");
    assert_eq!(before, after);
    d.stop().await;
}
