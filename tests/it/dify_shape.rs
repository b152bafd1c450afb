//! The shape check: a job refuses, before it writes anything, a schema whose tables or
//! columns are not the ones it relies on (a 400 at submit, or a failed job when the schema
//! changed after submit), naming each; tables a release simply lacks are skipped and reported.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::daemon::{Options, TestDaemon};
use crate::support::pg::{self, TestDb};
use upkeep::demo::datagen::{DemoSpec, generate};

fn small() -> DemoSpec {
    DemoSpec {
        tenants: 1,
        conversations_per_app: 6,
        messages_per_conversation: 3,
        workflow_runs_per_app: 6,
        datasets_per_tenant: 1,
        documents_per_dataset: 2,
        segments_per_document: 3,
        upload_files_per_tenant: 5,
        ..DemoSpec::demo()
    }
}

fn api_only() -> Options {
    Options {
        workers: 0,
        ..Options::default()
    }
}

const COUNTED: &[&str] = &[
    "messages",
    "message_chains",
    "message_annotations",
    "conversations",
    "workflow_runs",
    "workflow_node_executions",
    "upload_files",
    "datasets",
];

async fn counts(db: &TestDb) -> BTreeMap<&'static str, i64> {
    let mut out = BTreeMap::new();
    for table in COUNTED {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM public.{table}"
        )))
        .fetch_one(&db.pool)
        .await
        .expect("count");
        out.insert(*table, n);
    }
    out
}

async fn alter(db: &TestDb, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

#[tokio::test]
async fn a_schema_of_another_shape_is_refused_at_submit_naming_what_differs() {
    let db = pg::dify_database().await;
    generate(&db.pool, &small()).await.expect("generate");
    alter(
        &db,
        "ALTER TABLE public.workflow_runs RENAME COLUMN created_at TO created; \
         UPDATE public.message_annotations SET message_id = gen_random_uuid() WHERE message_id IS NULL; \
         ALTER TABLE public.message_annotations ALTER COLUMN message_id SET NOT NULL; \
         ALTER TABLE public.message_files ALTER COLUMN upload_file_id TYPE text; \
         ALTER TABLE public.upload_files RENAME COLUMN storage_type TO backend; \
         DROP TABLE public.dataset_collection_bindings",
    )
    .await;
    let before = counts(&db).await;
    let d = TestDaemon::start(&db, Options::default()).await;
    for (request, problems) in [
        (
            json!({"kind": "purge_logs", "params": {"export": false}}),
            &[
                "column message_annotations.message_id is NOT NULL, but the job sets it to NULL",
                "column workflow_runs.created_at (timestamp without time zone) is missing",
            ][..],
        ),
        (
            json!({"kind": "orphan_records", "params": {}}),
            &["column message_files.upload_file_id is text, expected uuid"][..],
        ),
        (
            json!({"kind": "storage_migrate", "params": {}}),
            &["column upload_files.storage_type (text) is missing"][..],
        ),
        (
            json!({"kind": "vector_migrate", "params": {}}),
            &["table public.dataset_collection_bindings is missing"][..],
        ),
    ] {
        let (status, err) = d.submit(request.clone()).await;
        assert_eq!(status, 400, "{request}: {err}");
        assert_eq!(err["code"], "dify_schema_unsupported", "{err}");
        let message = err["message"].as_str().unwrap_or_default();
        for p in problems {
            assert!(message.contains(p), "{request}: {message:?} lacks {p:?}");
        }
    }
    let (_, jobs) = d.call(Method::GET, "/v1/jobs", None).await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "{jobs}");
    assert_eq!(counts(&db).await, before, "nothing was written");
    d.stop().await;
}

#[tokio::test]
async fn a_schema_changed_after_submit_fails_the_job_before_any_write() {
    let db = pg::dify_database().await;
    generate(&db.pool, &small()).await.expect("generate");
    // Queued while the schema fits; Dify's upgrade renames a column before a worker starts it.
    let api = TestDaemon::start(&db, api_only()).await;
    let (status, job) = api
        .submit(json!({"kind": "purge_logs", "params": {"days": 1, "export": false}}))
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    alter(
        &db,
        "ALTER TABLE public.message_chains RENAME COLUMN message_id TO msg_id",
    )
    .await;
    let before = counts(&db).await;
    let worker = TestDaemon::start(&db, Options::default()).await;
    let done = worker.wait_finished(&id).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "dify_schema_unsupported", "{done}");
    let message = done["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("column message_chains.message_id (uuid) is missing"),
        "{message}"
    );
    assert_eq!(counts(&db).await, before, "nothing was deleted");
    worker.stop().await;
    api.stop().await;
}

#[tokio::test]
async fn tables_a_release_lacks_are_skipped_and_reported() {
    let Some(db) = pg::release_database("1.7.2", "532b3f888abf").await else {
        return;
    };
    generate(&db.pool, &small()).await.expect("generate");
    let d = TestDaemon::start(&db, Options::default()).await;
    let (status, job) = d
        .submit(
            json!({"kind": "purge_logs", "params": {"days": 1, "export": false}, "dry_run": true}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let done = d.wait_finished(job["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let skipped: Vec<&str> = done["result"]["schema"]["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .filter_map(|s| s["table"].as_str())
        .collect();
    assert_eq!(
        skipped,
        [
            "workflow_node_execution_offload",
            "workflow_pauses",
            "workflow_pause_reasons",
            "workflow_trigger_logs"
        ],
        "{done}"
    );
    assert_eq!(
        done["result"]["schema"]["skipped"][0]["why"],
        "Dify 1.7.2 and older have no such table"
    );
    let tables = done["result"]["tables"].as_object().expect("tables");
    assert!(tables.contains_key("workflow_node_executions"), "{done}");
    assert!(!tables.contains_key("workflow_pauses"), "{done}");
    assert!(
        tables["messages"]["would_delete"].as_u64() > Some(0),
        "{done}"
    );
    let _: Value = done;
    d.stop().await;
}
