//! The purge's access paths on releases that lack 1.15's indexes: the dry run says which
//! index each lookup takes and why; leading columns of another index where one exists, a
//! temporary index (built `CONCURRENTLY`, dropped after) only when params allow it.

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

async fn purge(d: &TestDaemon, params: Value, dry_run: bool) -> Value {
    let (status, job) = d
        .submit(json!({"kind": "purge_logs", "params": params, "dry_run": dry_run}))
        .await;
    assert_eq!(status, 202, "{job}");
    let done = d.wait_finished(job["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    done
}

/// The path of `table` by `by` in a result, as (path, index).
fn path_of(result: &Value, table: &str, by: &str) -> (String, String) {
    let paths = result["access_paths"].as_array().expect("access_paths");
    let p = paths
        .iter()
        .find(|p| p["table"] == table && p["by"] == by)
        .unwrap_or_else(|| panic!("no path for {table} ({by}) in {result}"));
    assert!(
        p["why"].as_str().is_some_and(|w| !w.is_empty()),
        "{p}: says why"
    );
    (
        p["path"].as_str().unwrap_or_default().to_string(),
        p["index"].as_str().unwrap_or_default().to_string(),
    )
}

async fn temporary_indexes(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' \
         AND indexname LIKE 'upkeep\\_tmp\\_%' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("indexes")
}

#[tokio::test]
async fn on_1_9_2_the_dry_run_names_each_tables_path_and_why() {
    let Some(db) = pg::release_database("1.9.2", "ae662b25d9bc").await else {
        return;
    };
    generate(&db.pool, &small()).await.expect("generate");
    let d = TestDaemon::start(&db, Options::default()).await;
    let plan = purge(&d, json!({"days": 1, "export": false}), true).await;
    let r = &plan["result"];
    for (table, by, path, index) in [
        (
            "workflow_node_executions",
            "workflow_run_id",
            "leading_columns",
            "workflow_node_execution_workflow_run_idx",
        ),
        (
            "saved_messages",
            "message_id",
            "leading_columns",
            "saved_message_message_idx",
        ),
        (
            "workflow_app_logs",
            "workflow_run_id",
            "index",
            "workflow_app_log_workflow_run_id_idx",
        ),
        ("messages", "created_at", "index", "message_created_at_idx"),
        // No index on its time: walked once by primary key instead of scanned per batch.
        ("workflow_runs", "id", "index", "workflow_run_pkey"),
        (
            "message_feedbacks",
            "message_id",
            "index",
            "message_feedback_message_idx",
        ),
    ] {
        assert_eq!(
            path_of(r, table, by),
            (path.to_string(), index.to_string()),
            "{table} ({by})"
        );
    }
    // With temporary indexes allowed, the walk that has no index gets one; the others keep
    // theirs. The dry run builds nothing.
    let plan = purge(
        &d,
        json!({"days": 1, "export": false, "temporary_indexes": true}),
        true,
    )
    .await;
    assert_eq!(
        path_of(&plan["result"], "workflow_runs", "created_at, id"),
        (
            "temporary_index".to_string(),
            "upkeep_tmp_workflow_runs_created_at_id".to_string()
        )
    );
    assert_eq!(
        path_of(
            &plan["result"],
            "workflow_node_executions",
            "workflow_run_id"
        )
        .0,
        "leading_columns"
    );
    assert!(temporary_indexes(&db).await.is_empty());
    d.stop().await;
}

#[tokio::test]
async fn on_1_7_2_a_temporary_index_is_built_only_when_allowed_and_dropped_after() {
    let Some(db) = pg::release_database("1.7.2", "532b3f888abf").await else {
        return;
    };
    generate(&db.pool, &small()).await.expect("generate");
    let d = TestDaemon::start(&db, Options::default()).await;
    let plan = purge(&d, json!({"days": 1, "export": false}), true).await;
    // Only the per-app index: said so, and what would do better.
    assert_eq!(
        path_of(&plan["result"], "workflow_app_logs", "workflow_run_id"),
        (
            "leading_columns".to_string(),
            "workflow_app_log_app_idx".to_string()
        )
    );
    let logs_before: i64 = sqlx::query_scalar("SELECT count(*) FROM public.workflow_app_logs")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    let done = purge(
        &d,
        json!({"days": 1, "export": false, "temporary_indexes": true}),
        false,
    )
    .await;
    assert_eq!(
        path_of(&done["result"], "workflow_app_logs", "workflow_run_id"),
        (
            "temporary_index".to_string(),
            "upkeep_tmp_workflow_app_logs_workflow_run_id".to_string()
        )
    );
    assert!(
        done["result"]["tables"]["workflow_app_logs"]["deleted"].as_i64() > Some(0),
        "{done}"
    );
    let logs_after: i64 = sqlx::query_scalar("SELECT count(*) FROM public.workflow_app_logs")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert!(logs_after < logs_before);
    // No dependent outlived its run.
    let stranded: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM public.workflow_app_logs l WHERE NOT EXISTS \
                 (SELECT 1 FROM public.workflow_runs r WHERE r.id = l.workflow_run_id)) \
              + (SELECT count(*) FROM public.workflow_node_executions n WHERE n.workflow_run_id IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM public.workflow_runs r WHERE r.id = n.workflow_run_id))",
    )
    .fetch_one(&db.pool)
    .await
    .expect("stranded");
    assert_eq!(stranded, 0);
    assert_eq!(
        temporary_indexes(&db).await,
        Vec::<String>::new(),
        "dropped after"
    );
    d.stop().await;
}
