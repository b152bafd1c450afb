//! The `vacuum` job on real tables: sizes, table lists, busy locks, dry runs.

use serde_json::json;

use crate::support::daemon::{Options, TestDaemon};
use crate::support::pg;

/// Fills `message_chains` and deletes most of it, leaving dead tuples to reclaim (with
/// autovacuum off for the table, so only the job under test vacuums it).
async fn make_dead_rows(db: &pg::TestDb) {
    sqlx::raw_sql(
        "ALTER TABLE public.message_chains SET (autovacuum_enabled = false); \
         INSERT INTO public.message_chains (message_id, type, input, output) \
         SELECT gen_random_uuid(), 'system', repeat('x', 500), repeat('y', 500) FROM generate_series(1, 20000); \
         DELETE FROM public.message_chains WHERE random() < 0.9; ANALYZE public.message_chains; \
         SELECT pg_stat_force_next_flush();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn full_vacuum_reclaims_and_reports_sizes() {
    let db = pg::dify_database().await;
    make_dead_rows(&db).await;
    let before: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('public.message_chains')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let file_before: i64 =
        sqlx::query_scalar("SELECT pg_relation_filenode('public.message_chains')::bigint")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let d = TestDaemon::start(&db, Options::default()).await;
    let (status, job) = d
        .submit(json!({"kind": "vacuum", "params": {"tables": ["message_chains", "tenants"], "mode": "full"}}))
        .await;
    assert_eq!(status, 202);
    let id = job["id"].as_str().unwrap();
    let done = d.wait_finished(id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = &done["result"];
    assert_eq!(r["mode"], "full");
    assert_eq!(
        (r["vacuumed"].as_u64(), r["failed"].as_u64()),
        (Some(2), Some(0))
    );
    let t = &r["tables"][0];
    assert_eq!(
        (t["table"].as_str(), t["status"].as_str()),
        (Some("message_chains"), Some("done"))
    );
    assert_eq!(t["size_before_bytes"], before);
    let after: i64 = sqlx::query_scalar("SELECT pg_total_relation_size('public.message_chains')")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(t["size_after_bytes"], after);
    // FULL rewrote the table into a new file. (How much it gives back depends on the oldest
    // snapshot anywhere on the server, which other tests running beside this one can hold.)
    let file_after: i64 =
        sqlx::query_scalar("SELECT pg_relation_filenode('public.message_chains')::bigint")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_ne!(file_before, file_after);
    assert!(after <= before, "{before} -> {after}");
    assert!(t["dead_tuples_before"].as_i64().unwrap() > 10_000, "{t}");
    assert_eq!(
        r["reclaimed_bytes"],
        r["size_before_bytes"].as_i64().unwrap() - r["size_after_bytes"].as_i64().unwrap()
    );
    assert_eq!(r["tables"][1]["table"], "tenants");
    // FULL warned up front that free space is needed and not known.
    let (_, events) = d
        .call(reqwest::Method::GET, &format!("/v1/jobs/{id}/events"), None)
        .await;
    let warning = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "warning")
        .expect("a warning");
    assert_eq!(warning["data"]["data"]["largest_table"], "message_chains");
    d.stop().await;
}

#[tokio::test]
async fn without_tables_it_vacuums_every_dify_table() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let (_, job) = d
        .submit(json!({"kind": "vacuum", "params": {"mode": "plain"}}))
        .await;
    let done = d.wait_finished(job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let expected: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let got: Vec<String> = done["result"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, expected);
    assert!(got.len() > 20);
    // Upkeep's own schema is not Dify's: never in the list.
    assert!(!got.iter().any(|t| t == "jobs" || t == "job_events"));
    d.stop().await;
}

#[tokio::test]
async fn a_held_lock_is_a_clean_per_table_failure() {
    let db = pg::dify_database().await;
    let holder = pg::hold_lock(&db, "apps").await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let (_, job) = d
        .submit(json!({"kind": "vacuum", "params": {"tables": ["accounts", "apps", "tenants"], "lock_timeout_ms": 200}}))
        .await;
    let id = job["id"].as_str().unwrap();
    let done = d.wait_finished(id).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(
        done["error"],
        json!({"code": "tables_failed", "message":
        "1 of 3 tables were not vacuumed: apps (lock_timeout); retry the job to try them again"})
    );
    let statuses: Vec<(String, String)> = done["result"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().into(),
                t["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("accounts".into(), "done".into()),
            ("apps".into(), "lock_timeout".into()),
            ("tenants".into(), "done".into())
        ]
    );
    assert_eq!(
        done["result"]["tables"][1]["message"],
        "lock not available within 200 ms (another session holds it)"
    );

    // Once the lock is gone, a retry vacuums only the table that failed.
    holder.rollback().await.unwrap();
    let (status, _) = d
        .call(reqwest::Method::POST, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_eq!(status, 202);
    let done = d.wait_finished(id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let attempts: Vec<(String, i64)> = done["result"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["table"].as_str().unwrap().into(),
                t["attempt"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            ("accounts".into(), 1),
            ("apps".into(), 2),
            ("tenants".into(), 1)
        ]
    );
    d.stop().await;
}

#[tokio::test]
async fn a_cancelled_vacuum_keeps_the_tables_it_did() {
    let db = pg::dify_database().await;
    let holder = pg::hold_lock(&db, "apps").await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let (_, job) = d
        .submit(json!({"kind": "vacuum", "params": {"tables": ["accounts", "apps", "tenants"], "lock_timeout_ms": 600000}}))
        .await;
    let id = job["id"].as_str().unwrap();
    // accounts is done; the VACUUM of apps waits for the lock.
    pg::wait_until(
        &db,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'VACUUM%apps%' AND wait_event_type = 'Lock')",
        std::time::Duration::from_secs(30),
    )
    .await;
    let (status, _) = d
        .call(
            reqwest::Method::POST,
            &format!("/v1/jobs/{id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let done = d.wait_finished(id).await;
    holder.rollback().await.unwrap();
    assert_eq!(done["state"], "cancelled", "{done}");
    let result = &done["result"];
    let tables: Vec<(&str, &str)> = result["tables"]
        .as_array()
        .unwrap_or_else(|| panic!("a partial result: {done}"))
        .iter()
        .map(|t| (t["table"].as_str().unwrap(), t["status"].as_str().unwrap()))
        .collect();
    assert_eq!(tables, [("accounts", "done")], "{result}");
    assert_eq!(result["vacuumed"], 1, "{result}");
    assert_eq!(
        result["not_reached"],
        json!(["apps", "tenants"]),
        "{result}"
    );
    d.stop().await;
}

#[tokio::test]
async fn dry_run_lists_tables_with_sizes_and_touches_nothing() {
    let db = pg::dify_database().await;
    make_dead_rows(&db).await;
    let vacuums_before: i64 = sqlx::query_scalar(
        "SELECT vacuum_count + autovacuum_count FROM pg_stat_user_tables WHERE relname = 'message_chains'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let d = TestDaemon::start(&db, Options::default()).await;
    let (_, job) = d
        .submit(json!({"kind": "vacuum", "dry_run": true, "params": {"tables": ["message_chains", "tenants"], "mode": "full"}}))
        .await;
    let done = d.wait_finished(job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded");
    let plan = &done["result"];
    let chains = &plan["tables"][0];
    assert_eq!(chains["table"], "message_chains");
    assert!(chains["dead_tuples"].as_i64().unwrap() > 10_000, "{chains}");
    assert!(chains["dead_ratio"].as_f64().unwrap() > 0.5);
    assert!(chains["total_bytes"].as_i64().unwrap() > 0);
    assert_eq!(plan["full_peak_free_space_bytes"], chains["total_bytes"]);
    assert_eq!(plan["tables"].as_array().unwrap().len(), 2);
    assert_eq!(plan["sizes"], "exact");
    let vacuums_after: i64 = sqlx::query_scalar(
        "SELECT vacuum_count + autovacuum_count FROM pg_stat_user_tables WHERE relname = 'message_chains'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(vacuums_before, vacuums_after);
    d.stop().await;
}

#[tokio::test]
async fn a_locked_table_does_not_stall_the_plan() {
    let db = pg::dify_database().await;
    let holder = pg::hold_lock(&db, "apps").await;
    let d = TestDaemon::start(&db, Options::default()).await;
    // Submitting validates names from the catalogue alone: no wait on the lock.
    let (status, job) = d
        .submit(
            json!({"kind": "vacuum", "dry_run": true, "params": {"tables": ["apps", "tenants"]}}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let done = d.wait_finished(job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    // Measuring would have waited on the lock, so the plan says its sizes are estimates.
    assert_eq!(done["result"]["sizes"], "estimated");
    assert_eq!(done["result"]["tables"][0]["table"], "apps");
    assert!(done["result"]["tables"][0]["total_bytes"].as_i64().unwrap() > 0);
    holder.rollback().await.unwrap();
    d.stop().await;
}
