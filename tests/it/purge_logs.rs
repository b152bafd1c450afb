//! `purge_logs` on generated Dify data: the selection is Dify's (with the documented
//! differences), dependents go with their parents, every deleted row is in exactly one export
//! file, and the exports restore the database exactly. Kill points, a storage failure, busy
//! locks and bad params.

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;
use uuid::Uuid;

use crate::support::daemon::{Options, TestDaemon};
use crate::support::files::{TempTree, read_all};
use crate::support::pg::{self, TestDb};
use crate::support::process::{rescuer, submit_to_a_doomed_daemon};
use crate::support::servers::{Azurite, Moto};
use upkeep::demo::datagen::{DemoSpec, generate};

/// Every table a purge touches.
const TABLES: &[&str] = &[
    "apps",
    "messages",
    "dataset_retriever_resources",
    "message_feedbacks",
    "message_files",
    "message_agent_thoughts",
    "message_chains",
    "app_annotation_hit_histories",
    "saved_messages",
    "message_annotations",
    "conversations",
    "pinned_conversations",
    "workflow_conversation_variables",
    "workflow_runs",
    "workflow_node_executions",
    "workflow_node_execution_offload",
    "workflow_app_logs",
    "workflow_pauses",
    "workflow_pause_reasons",
    "workflow_trigger_logs",
];

/// The dependents Dify's command deletes with a message.
const DIFY_MESSAGE_CHILDREN: &[&str] = &[
    "message_feedbacks",
    "message_files",
    "message_annotations",
    "message_chains",
    "message_agent_thoughts",
    "app_annotation_hit_histories",
    "saved_messages",
];

struct World {
    db: TestDb,
    tenant: Uuid,
    /// A 40-day-old finished run a 5-day-old message points at, and a 40-day-old paused run.
    protected_run: Uuid,
    paused_run: Uuid,
}

async fn exec(db: &TestDb, sql: &str, binds: &[Uuid]) {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
    for b in binds {
        q = q.bind(b);
    }
    q.execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Generated Dify data, plus the two runs the purge must keep, copied into schema `before`.
async fn world(db: TestDb) -> World {
    let summary = generate(&db.pool, &DemoSpec::demo())
        .await
        .expect("generate");
    let tenant = summary.tenants[0].id;
    let (protected_run, paused_run) = (Uuid::new_v4(), Uuid::new_v4());
    exec(
        &db,
        "INSERT INTO public.workflow_runs (id, tenant_id, app_id, workflow_id, type, triggered_from, \
            version, graph, status, created_by_role, created_by, created_at) \
         SELECT r.id, $1, a.id, a.id, 'chat', 'app-run', 'v1', '{}', r.status, 'account', a.id, \
                (now() AT TIME ZONE 'UTC') - interval '40 days' \
         FROM (SELECT id FROM public.apps WHERE tenant_id = $1 ORDER BY id LIMIT 1) a, \
              (VALUES ($2, 'succeeded'), ($3, 'paused')) r(id, status)",
        &[tenant, protected_run, paused_run],
    )
    .await;
    for run in [protected_run, paused_run] {
        exec(
            &db,
            "INSERT INTO public.workflow_node_executions (tenant_id, app_id, workflow_id, \
                triggered_from, workflow_run_id, index, node_id, node_type, title, status, \
                created_by_role, created_by, created_at, elapsed_time) \
             SELECT tenant_id, app_id, workflow_id, 'workflow-run', id, 1, 'start', 'start', 'Start', \
                    'succeeded', 'account', created_by, created_at, 0 FROM public.workflow_runs WHERE id = $1",
            &[run],
        )
        .await;
    }
    // A young message of an old conversation-less run keeps that run.
    exec(
        &db,
        "INSERT INTO public.messages (app_id, conversation_id, inputs, query, message, \
            message_unit_price, answer, answer_unit_price, currency, from_source, workflow_run_id, created_at) \
         SELECT app_id, gen_random_uuid(), '{}', 'q', '[]', 0, 'a', 0, 'USD', 'api', id, \
                (now() AT TIME ZONE 'UTC') - interval '5 days' FROM public.workflow_runs WHERE id = $1",
        &[protected_run],
    )
    .await;
    sqlx::raw_sql("CREATE SCHEMA before")
        .execute(&db.pool)
        .await
        .expect("schema before");
    for table in TABLES {
        exec(
            &db,
            &format!("CREATE TABLE before.{table} AS TABLE public.{table}"),
            &[],
        )
        .await;
    }
    World {
        db,
        tenant,
        protected_run,
        paused_run,
    }
}

async fn ids(db: &TestDb, sql: &str, tenant: Uuid, cutoff: &str) -> BTreeSet<Uuid> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(tenant)
        .bind(cutoff)
        .fetch_all(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .collect()
}

/// What Dify's `clear-free-plan-tenant-expired-logs` selects for one tenant, from `before`.
async fn difys_selection(w: &World, cutoff: &str) -> BTreeMap<&'static str, BTreeSet<Uuid>> {
    let messages = "SELECT m.id FROM before.messages m JOIN before.apps a ON a.id = m.app_id \
                    WHERE a.tenant_id = $1 AND m.created_at < $2::timestamp";
    let mut s = BTreeMap::new();
    s.insert("messages", ids(&w.db, messages, w.tenant, cutoff).await);
    for child in DIFY_MESSAGE_CHILDREN {
        let sql = format!("SELECT id FROM before.{child} WHERE message_id IN ({messages})");
        s.insert(*child, ids(&w.db, &sql, w.tenant, cutoff).await);
    }
    s.insert(
        "conversations",
        ids(
            &w.db,
            "SELECT id FROM before.conversations WHERE updated_at < $2::timestamp AND app_id IN \
             (SELECT id FROM before.apps WHERE tenant_id = $1)",
            w.tenant,
            cutoff,
        )
        .await,
    );
    for table in [
        "workflow_node_executions",
        "workflow_runs",
        "workflow_app_logs",
    ] {
        let sql = format!(
            "SELECT id FROM before.{table} WHERE tenant_id = $1 AND created_at < $2::timestamp"
        );
        s.insert(table, ids(&w.db, &sql, w.tenant, cutoff).await);
    }
    s
}

/// Rows of each table present before the purge and gone after it.
async fn deleted(db: &TestDb) -> BTreeMap<&'static str, BTreeSet<Uuid>> {
    let mut out = BTreeMap::new();
    for table in TABLES {
        let sql = format!("SELECT id FROM before.{table} EXCEPT SELECT id FROM public.{table}");
        let gone: BTreeSet<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(&db.pool)
            .await
            .expect("deleted ids")
            .into_iter()
            .collect();
        out.insert(*table, gone);
    }
    out
}

/// Export files of `tenant`, parsed: table → (file count, row ids with repeats, raw files).
fn exported(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<Uuid>> {
    let mut out: BTreeMap<String, Vec<Uuid>> = BTreeMap::new();
    for (key, body) in files {
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 4, "{key}");
        assert_eq!(parts[0], "free_plan_tenant_expired_logs");
        assert!(
            body.iter().all(u8::is_ascii),
            "{key}: exports are ASCII, as Python's json.dumps writes them"
        );
        let rows: Vec<Value> =
            serde_json::from_slice(body).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(!rows.is_empty(), "{key}: no empty files");
        for row in rows {
            let id = row["id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
            out.entry(parts[2].to_string())
                .or_default()
                .push(id.unwrap_or_else(|| panic!("{key}: row without id")));
        }
    }
    out
}

/// Puts every exported row back and checks each table equals its `before` copy, row for row.
async fn restore_and_compare(db: &TestDb, files: &BTreeMap<String, Vec<u8>>) {
    for (key, body) in files {
        let table = key.split('/').nth(2).expect("table in key");
        let sql = format!(
            "INSERT INTO public.{table} SELECT * FROM json_populate_recordset(NULL::public.{table}, $1::json)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(String::from_utf8(body.clone()).expect("utf-8"))
            .execute(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("restoring {key}: {e}"));
    }
    for table in TABLES {
        let sql = format!(
            "SELECT (SELECT count(*) FROM (SELECT to_jsonb(b) FROM before.{table} b \
                     EXCEPT ALL SELECT to_jsonb(p) FROM public.{table} p) d), \
                    (SELECT count(*) FROM (SELECT to_jsonb(p) FROM public.{table} p \
                     EXCEPT ALL SELECT to_jsonb(b) FROM before.{table} b) d)"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(&db.pool)
            .await
            .expect("compare");
        let (missing, extra): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(
            (missing, extra),
            (0, 0),
            "{table} after restoring the exports"
        );
    }
}

async fn finished(d: &TestDaemon, params: Value, dry_run: bool) -> Value {
    let (status, job) = d
        .submit(json!({"kind": "purge_logs", "params": params, "dry_run": dry_run}))
        .await;
    assert_eq!(status, 202, "{job}");
    d.wait_finished(job["id"].as_str().expect("id")).await
}

fn set(v: &BTreeSet<Uuid>) -> usize {
    v.len()
}

/// Our selection, stated as rules over `before` for one tenant: Dify's, except that live
/// runs (not ended, or pointed at by a younger message) stay with everything under them, a
/// conversation stays while it has younger messages, and the dependents Dify forgets go too.
async fn expected(w: &World, cutoff: &str) -> BTreeMap<&'static str, BTreeSet<Uuid>> {
    let dify = difys_selection(w, cutoff).await;
    let mut e: BTreeMap<&'static str, BTreeSet<Uuid>> = BTreeMap::new();
    let msgs = "SELECT m.id FROM before.messages m JOIN before.apps a ON a.id = m.app_id \
                WHERE a.tenant_id = $1 AND m.created_at < $2::timestamp";
    e.insert("messages", dify["messages"].clone());
    for child in DIFY_MESSAGE_CHILDREN
        .iter()
        .chain(&["dataset_retriever_resources"])
    {
        let sql = format!("SELECT id FROM before.{child} WHERE message_id IN ({msgs})");
        e.insert(child, ids(&w.db, &sql, w.tenant, cutoff).await);
    }
    let convs = "SELECT c.id FROM before.conversations c WHERE c.updated_at < $2::timestamp \
                 AND c.app_id IN (SELECT id FROM before.apps WHERE tenant_id = $1) \
                 AND NOT EXISTS (SELECT 1 FROM before.messages m WHERE m.conversation_id = c.id \
                                 AND m.created_at >= $2::timestamp)";
    e.insert("conversations", ids(&w.db, convs, w.tenant, cutoff).await);
    for (table, col) in [
        ("pinned_conversations", "conversation_id"),
        ("workflow_conversation_variables", "conversation_id"),
    ] {
        let sql = format!("SELECT id FROM before.{table} WHERE {col} IN ({convs})");
        e.insert(table, ids(&w.db, &sql, w.tenant, cutoff).await);
    }
    let runs = "SELECT r.id FROM before.workflow_runs r WHERE r.tenant_id = $1 \
                AND r.created_at < $2::timestamp \
                AND r.status IN ('succeeded', 'failed', 'partial-succeeded', 'stopped') \
                AND r.id NOT IN (SELECT workflow_run_id FROM before.messages \
                                 WHERE created_at >= $2::timestamp AND workflow_run_id IS NOT NULL)";
    e.insert("workflow_runs", ids(&w.db, runs, w.tenant, cutoff).await);
    let nodes = format!(
        "SELECT n.id FROM before.workflow_node_executions n WHERE n.workflow_run_id IN ({runs}) \
         OR (n.tenant_id = $1 AND n.created_at < $2::timestamp AND (n.workflow_run_id IS NULL \
             OR n.workflow_run_id NOT IN (SELECT id FROM before.workflow_runs)))"
    );
    e.insert(
        "workflow_node_executions",
        ids(&w.db, &nodes, w.tenant, cutoff).await,
    );
    let sql = format!(
        "SELECT id FROM before.workflow_node_execution_offload WHERE node_execution_id IN ({nodes})"
    );
    e.insert(
        "workflow_node_execution_offload",
        ids(&w.db, &sql, w.tenant, cutoff).await,
    );
    let sql = format!(
        "SELECT id FROM before.workflow_app_logs l WHERE l.workflow_run_id IN ({runs}) \
         OR (l.tenant_id = $1 AND l.created_at < $2::timestamp \
             AND l.workflow_run_id NOT IN (SELECT id FROM before.workflow_runs))"
    );
    e.insert(
        "workflow_app_logs",
        ids(&w.db, &sql, w.tenant, cutoff).await,
    );
    let pauses = format!("SELECT id FROM before.workflow_pauses WHERE workflow_run_id IN ({runs})");
    e.insert(
        "workflow_pauses",
        ids(&w.db, &pauses, w.tenant, cutoff).await,
    );
    let sql = format!("SELECT id FROM before.workflow_pause_reasons WHERE pause_id IN ({pauses})");
    e.insert(
        "workflow_pause_reasons",
        ids(&w.db, &sql, w.tenant, cutoff).await,
    );
    let sql =
        format!("SELECT id FROM before.workflow_trigger_logs WHERE workflow_run_id IN ({runs})");
    e.insert(
        "workflow_trigger_logs",
        ids(&w.db, &sql, w.tenant, cutoff).await,
    );

    // Where ours and Dify's differ, the difference is exactly the rule above.
    for table in [
        "messages",
        "message_feedbacks",
        "message_files",
        "message_chains",
        "message_agent_thoughts",
        "app_annotation_hit_histories",
        "saved_messages",
    ] {
        assert_eq!(e[table], dify[table], "{table}: same selection as Dify");
    }
    assert!(e["conversations"].is_subset(&dify["conversations"]));
    let kept_runs: BTreeSet<Uuid> = dify["workflow_runs"]
        .difference(&e["workflow_runs"])
        .copied()
        .collect();
    assert!(kept_runs.contains(&w.protected_run) && kept_runs.contains(&w.paused_run));
    let statuses: Vec<String> = sqlx::query_scalar(
        "SELECT status FROM before.workflow_runs WHERE id = ANY($1) AND id <> $2",
    )
    .bind(kept_runs.iter().copied().collect::<Vec<_>>())
    .bind(w.protected_run)
    .fetch_all(&w.db.pool)
    .await
    .expect("statuses");
    assert!(
        statuses.iter().all(|s| s == "running" || s == "paused"),
        "{statuses:?}"
    );
    e
}

async fn check_purge(db: TestDb) {
    let w = world(db).await;
    let tree = TempTree::new("exports");
    let d = TestDaemon::start(&w.db, Options::default()).await;
    let params = json!({"days": 30, "batch": 37, "tenant_ids": [w.tenant], "storage": tree.config(), "keep_annotations": false});

    let plan = finished(&d, params.clone(), true).await;
    assert_eq!(plan["state"], "succeeded", "{plan}");
    assert!(
        deleted(&w.db).await.values().all(BTreeSet::is_empty),
        "a dry run deletes nothing"
    );
    assert!(
        read_all(&tree.config(), "").await.is_empty(),
        "a dry run writes nothing"
    );

    let done = finished(&d, params, false).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let cutoff = done["result"]["cutoff"]
        .as_str()
        .expect("cutoff")
        .to_string();
    assert_eq!(
        plan["result"]["cutoff"].as_str().map(|c| &c[..16]),
        Some(&cutoff[..16])
    );
    let expected = expected(&w, &cutoff).await;
    let gone = deleted(&w.db).await;
    for table in TABLES {
        let want = expected.get(table).cloned().unwrap_or_default();
        assert_eq!(set(&gone[table]), set(&want), "{table}: rows deleted");
        assert_eq!(gone[table], want, "{table}: the rows deleted");
        let result = &done["result"]["tables"][table];
        if !want.is_empty() {
            assert_eq!(result["deleted"], want.len(), "{table}: {result}");
            assert_eq!(result["exported"], want.len(), "{table}: {result}");
            // The dry run counted exactly what the run then removed.
            assert_eq!(
                plan["result"]["tables"][table]["would_delete"],
                want.len(),
                "{table}: dry run {}",
                plan["result"]["tables"][table]
            );
            assert_eq!(
                plan["result"]["per_tenant"][w.tenant.to_string()][table],
                want.len()
            );
        }
    }
    assert!(!gone["messages"].is_empty() && !gone["workflow_node_execution_offload"].is_empty());

    let files = read_all(&tree.config(), "").await;
    assert!(
        files
            .keys()
            .all(|k| k.starts_with(&format!("free_plan_tenant_expired_logs/{}/", w.tenant)))
    );
    for (table, rows) in exported(&files) {
        let unique: BTreeSet<Uuid> = rows.iter().copied().collect();
        assert_eq!(unique.len(), rows.len(), "{table}: a row exported twice");
        assert_eq!(
            &unique,
            &gone[table.as_str()],
            "{table}: exported = deleted"
        );
    }
    assert_eq!(done["result"]["export"]["files"], files.len());
    restore_and_compare(&w.db, &files).await;
    d.stop().await;
}

#[tokio::test]
async fn selection_is_difys_dependents_go_first_and_exports_restore_every_row() {
    check_purge(pg::dify_database().await).await;
}

#[tokio::test]
async fn the_same_on_difys_full_real_schema() {
    if let Some(db) = pg::real_dify_database("purge_logs real schema").await {
        check_purge(db).await;
    }
}
