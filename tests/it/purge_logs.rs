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

pub(crate) struct World {
    pub(crate) db: TestDb,
    /// The first workspace, which holds the two runs below.
    tenant: Uuid,
    pub(crate) tenants: Vec<Uuid>,
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

/// Whether this release's schema has `public.<table>` (older ones lack the newer tables).
async fn in_public(db: &TestDb, table: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass('public.' || quote_ident($1)) IS NOT NULL")
        .bind(table)
        .fetch_one(&db.pool)
        .await
        .expect("to_regclass")
}

/// Generated Dify data, plus the two runs the purge must keep, copied into schema `before`.
/// A table this release lacks gets an empty stand-in in `before` with the link columns the
/// rules below read, so the expected selection is the same statement on every release.
pub(crate) async fn world(db: TestDb) -> World {
    let summary = generate(&db.pool, &DemoSpec::demo())
        .await
        .expect("generate");
    let tenant = summary.tenants[0].id;
    let (protected_run, paused_run) = (Uuid::new_v4(), Uuid::new_v4());
    // Up to 1.4.x a run has `sequence_number integer NOT NULL` (no default).
    let sequenced: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' \
         AND table_name = 'workflow_runs' AND column_name = 'sequence_number')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("columns");
    let (seq_col, seq_val) = if sequenced {
        (", sequence_number", ", 1000000 + r.n")
    } else {
        ("", "")
    };
    exec(
        &db,
        &format!(
            "INSERT INTO public.workflow_runs (id, tenant_id, app_id, workflow_id, type, triggered_from, \
                version, graph, status, created_by_role, created_by, created_at{seq_col}) \
             SELECT r.id, $1, a.id, a.id, 'chat', 'app-run', 'v1', '{{}}', r.status, 'account', a.id, \
                    (now() AT TIME ZONE 'UTC') - interval '40 days'{seq_val} \
             FROM (SELECT id FROM public.apps WHERE tenant_id = $1 ORDER BY id LIMIT 1) a, \
                  (VALUES ($2, 'succeeded', 1), ($3, 'paused', 2)) r(id, status, n)"
        ),
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
        let sql = if in_public(&db, table).await {
            format!("CREATE TABLE before.{table} AS TABLE public.{table}")
        } else {
            format!(
                "CREATE TABLE before.{table} (id uuid, node_execution_id uuid, \
                 workflow_run_id uuid, pause_id uuid)"
            )
        };
        exec(&db, &sql, &[]).await;
    }
    World {
        db,
        tenant,
        tenants: summary.tenants.iter().map(|t| t.id).collect(),
        protected_run,
        paused_run,
    }
}

/// Ids `sql` selects, `$1` the tenants purged and `$2` the cutoff.
async fn ids(db: &TestDb, sql: &str, tenants: &[Uuid], cutoff: &str) -> BTreeSet<Uuid> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(tenants)
        .bind(cutoff)
        .fetch_all(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .collect()
}

/// What Dify's `clear-free-plan-tenant-expired-logs` selects for one tenant, from `before`.
async fn difys_selection(
    w: &World,
    tenants: &[Uuid],
    cutoff: &str,
) -> BTreeMap<&'static str, BTreeSet<Uuid>> {
    let messages = "SELECT m.id FROM before.messages m JOIN before.apps a ON a.id = m.app_id \
                    WHERE a.tenant_id = ANY($1) AND m.created_at < $2::timestamp";
    let mut s = BTreeMap::new();
    s.insert("messages", ids(&w.db, messages, tenants, cutoff).await);
    for child in DIFY_MESSAGE_CHILDREN {
        let sql = format!("SELECT id FROM before.{child} WHERE message_id IN ({messages})");
        s.insert(*child, ids(&w.db, &sql, tenants, cutoff).await);
    }
    s.insert(
        "conversations",
        ids(
            &w.db,
            "SELECT id FROM before.conversations WHERE updated_at < $2::timestamp AND app_id IN \
             (SELECT id FROM before.apps WHERE tenant_id = ANY($1))",
            tenants,
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
            "SELECT id FROM before.{table} WHERE tenant_id = ANY($1) AND created_at < $2::timestamp"
        );
        s.insert(table, ids(&w.db, &sql, tenants, cutoff).await);
    }
    s
}

/// Rows of each table present before the purge and gone after it.
async fn deleted(db: &TestDb) -> BTreeMap<&'static str, BTreeSet<Uuid>> {
    let mut out = BTreeMap::new();
    for table in TABLES {
        if !in_public(db, table).await {
            out.insert(*table, BTreeSet::new());
            continue;
        }
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
        let mut sql = format!(
            "INSERT INTO public.{table} SELECT * FROM json_populate_recordset(NULL::public.{table}, $1::json)"
        );
        if table == "message_annotations" {
            // Kept annotations are still there, unlinked: the export gives back their links.
            sql.push_str(
                " ON CONFLICT (id) DO UPDATE SET message_id = EXCLUDED.message_id, \
                 conversation_id = EXCLUDED.conversation_id",
            );
        }
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(String::from_utf8(body.clone()).expect("utf-8"))
            .execute(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("restoring {key}: {e}"));
    }
    for table in TABLES {
        if !in_public(db, table).await {
            continue;
        }
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

/// Our selection, stated as rules over `before` for one tenant: Dify's, except that live
/// runs (not ended, or pointed at by a younger message) stay with everything under them, a
/// conversation stays while it has younger messages, and the dependents Dify forgets go too.
async fn expected(
    w: &World,
    tenants: &[Uuid],
    cutoff: &str,
) -> BTreeMap<&'static str, BTreeSet<Uuid>> {
    let dify = difys_selection(w, tenants, cutoff).await;
    let mut e: BTreeMap<&'static str, BTreeSet<Uuid>> = BTreeMap::new();
    let msgs = "SELECT m.id FROM before.messages m JOIN before.apps a ON a.id = m.app_id \
                WHERE a.tenant_id = ANY($1) AND m.created_at < $2::timestamp";
    e.insert("messages", dify["messages"].clone());
    for child in DIFY_MESSAGE_CHILDREN
        .iter()
        .chain(&["dataset_retriever_resources"])
    {
        let sql = format!("SELECT id FROM before.{child} WHERE message_id IN ({msgs})");
        e.insert(child, ids(&w.db, &sql, tenants, cutoff).await);
    }
    let convs = "SELECT c.id FROM before.conversations c WHERE c.updated_at < $2::timestamp \
                 AND c.app_id IN (SELECT id FROM before.apps WHERE tenant_id = ANY($1)) \
                 AND NOT EXISTS (SELECT 1 FROM before.messages m WHERE m.conversation_id = c.id \
                                 AND m.created_at >= $2::timestamp)";
    e.insert("conversations", ids(&w.db, convs, tenants, cutoff).await);
    for (table, col) in [
        ("pinned_conversations", "conversation_id"),
        ("workflow_conversation_variables", "conversation_id"),
    ] {
        let sql = format!("SELECT id FROM before.{table} WHERE {col} IN ({convs})");
        e.insert(table, ids(&w.db, &sql, tenants, cutoff).await);
    }
    let runs = "SELECT r.id FROM before.workflow_runs r WHERE r.tenant_id = ANY($1) \
                AND r.created_at < $2::timestamp \
                AND r.status IN ('succeeded', 'failed', 'partial-succeeded', 'stopped') \
                AND r.id NOT IN (SELECT workflow_run_id FROM before.messages \
                                 WHERE created_at >= $2::timestamp AND workflow_run_id IS NOT NULL)";
    e.insert("workflow_runs", ids(&w.db, runs, tenants, cutoff).await);
    let nodes = format!(
        "SELECT n.id FROM before.workflow_node_executions n WHERE n.workflow_run_id IN ({runs}) \
         OR (n.tenant_id = ANY($1) AND n.created_at < $2::timestamp AND (n.workflow_run_id IS NULL \
             OR n.workflow_run_id NOT IN (SELECT id FROM before.workflow_runs)))"
    );
    e.insert(
        "workflow_node_executions",
        ids(&w.db, &nodes, tenants, cutoff).await,
    );
    let sql = format!(
        "SELECT id FROM before.workflow_node_execution_offload WHERE node_execution_id IN ({nodes})"
    );
    e.insert(
        "workflow_node_execution_offload",
        ids(&w.db, &sql, tenants, cutoff).await,
    );
    let sql = format!(
        "SELECT id FROM before.workflow_app_logs l WHERE l.workflow_run_id IN ({runs}) \
         OR (l.tenant_id = ANY($1) AND l.created_at < $2::timestamp \
             AND l.workflow_run_id NOT IN (SELECT id FROM before.workflow_runs))"
    );
    e.insert("workflow_app_logs", ids(&w.db, &sql, tenants, cutoff).await);
    let pauses = format!("SELECT id FROM before.workflow_pauses WHERE workflow_run_id IN ({runs})");
    e.insert(
        "workflow_pauses",
        ids(&w.db, &pauses, tenants, cutoff).await,
    );
    let sql = format!("SELECT id FROM before.workflow_pause_reasons WHERE pause_id IN ({pauses})");
    e.insert(
        "workflow_pause_reasons",
        ids(&w.db, &sql, tenants, cutoff).await,
    );
    let sql =
        format!("SELECT id FROM before.workflow_trigger_logs WHERE workflow_run_id IN ({runs})");
    e.insert(
        "workflow_trigger_logs",
        ids(&w.db, &sql, tenants, cutoff).await,
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

/// The end state of a finished purge of `tenants`, whatever interrupted it on the way: the
/// rows gone are exactly the selection, annotations kept unlinked (unless deleted), every
/// changed row in exactly one export file, one file name per batch, and the exports restore
/// the database to what it was.
pub(crate) async fn check_end_state(
    w: &World,
    tenants: &[Uuid],
    done: &Value,
    storage: &Value,
    keep_annotations: bool,
) {
    assert_eq!(done["state"], "succeeded", "{done}");
    let result = &done["result"];
    let cutoff = result["cutoff"].as_str().expect("cutoff").to_string();
    let mut expected = expected(w, tenants, &cutoff).await;
    let detached = if keep_annotations {
        expected.remove("message_annotations").unwrap_or_default()
    } else {
        BTreeSet::new()
    };
    let gone = deleted(&w.db).await;
    for table in TABLES {
        let want = expected.get(table).cloned().unwrap_or_default();
        assert_eq!(gone[table].len(), want.len(), "{table}: rows deleted");
        assert_eq!(gone[table], want, "{table}: the rows deleted");
        if !want.is_empty() {
            assert_eq!(
                result["tables"][table]["deleted"],
                want.len(),
                "{table}: {result}"
            );
            assert_eq!(
                result["tables"][table]["exported"],
                want.len(),
                "{table}: {result}"
            );
        }
    }
    assert!(!gone["messages"].is_empty());
    if in_public(&w.db, "workflow_node_execution_offload").await {
        assert!(!gone["workflow_node_execution_offload"].is_empty());
    }
    if keep_annotations {
        assert!(
            !detached.is_empty(),
            "the data has annotations of purged messages"
        );
        let still_linked: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM public.message_annotations WHERE id = ANY($1) \
             AND (message_id IS NOT NULL OR conversation_id IS NOT NULL)",
        )
        .bind(detached.iter().copied().collect::<Vec<_>>())
        .fetch_one(&w.db.pool)
        .await
        .expect("annotations");
        assert_eq!(still_linked, 0);
        assert_eq!(
            result["tables"]["message_annotations"]["detached"],
            detached.len()
        );
    }

    let files = read_all(storage, "").await;
    let prefixes: Vec<String> = tenants
        .iter()
        .map(|t| format!("free_plan_tenant_expired_logs/{t}/"))
        .collect();
    assert!(
        files
            .keys()
            .all(|k| prefixes.iter().any(|p| k.starts_with(p)))
    );
    let mut seen: BTreeMap<String, BTreeSet<Uuid>> = BTreeMap::new();
    for (table, rows) in exported(&files) {
        let unique: BTreeSet<Uuid> = rows.iter().copied().collect();
        assert_eq!(unique.len(), rows.len(), "{table}: a row exported twice");
        seen.insert(table, unique);
    }
    for table in TABLES {
        let mut changed = gone[table].clone();
        if *table == "message_annotations" {
            changed.extend(&detached);
        }
        let got = seen.get(*table).cloned().unwrap_or_default();
        assert_eq!(got, changed, "{table}: exported = deleted or detached");
    }
    assert_eq!(result["export"]["files"], files.len());
    // One name per batch: the file names carry the batch's time.
    let stamps: BTreeSet<&str> = files.keys().filter_map(|k| k.rsplit('/').next()).collect();
    assert_eq!(result["batches"], stamps.len(), "{stamps:?}");
    restore_and_compare(&w.db, &files).await;
}

/// Checks that every row deleted so far is in one of the export `files` (keys from the
/// storage root); says whether any row was deleted. What a purge that stopped on a failure
/// must leave: nothing deleted that was not exported first.
pub(crate) async fn every_deleted_row_is_exported(
    w: &World,
    files: &BTreeMap<String, Vec<u8>>,
) -> bool {
    let gone = deleted(&w.db).await;
    let saved = exported(files);
    let mut some_gone = false;
    for table in TABLES {
        let saved: BTreeSet<Uuid> = saved.get(*table).into_iter().flatten().copied().collect();
        let lost: Vec<&Uuid> = gone[table].difference(&saved).collect();
        assert!(
            lost.is_empty(),
            "{table}: deleted without an export: {lost:?}"
        );
        some_gone |= !gone[table].is_empty();
    }
    some_gone
}

/// A dry run, then the purge of one workspace: the dry run's counts are what the purge
/// removed, and the end state is the rules' (also run on every release's schema).
pub(crate) async fn check_purge(db: TestDb) {
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
    let cutoff = done["result"]["cutoff"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The same cutoff rule, moments later (not the same minute: the two runs may straddle one).
    let at = |c: &str| {
        chrono::NaiveDateTime::parse_from_str(c.get(..19).unwrap_or(c), "%Y-%m-%dT%H:%M:%S")
            .unwrap_or_else(|e| panic!("cutoff {c:?}: {e}"))
    };
    let later = at(&cutoff) - at(plan["result"]["cutoff"].as_str().unwrap_or_default());
    assert!(
        later >= chrono::Duration::zero() && later < chrono::Duration::minutes(2),
        "dry run's cutoff {} and the purge's {cutoff}",
        plan["result"]["cutoff"]
    );
    // The dry run counted exactly what the run then removed, per table and per tenant.
    for (table, counted) in plan["result"]["tables"].as_object().expect("tables") {
        let removed = done["result"]["tables"][table]["deleted"]
            .as_u64()
            .unwrap_or(0);
        assert_eq!(counted["would_delete"], removed, "{table}");
        let per_tenant = &plan["result"]["per_tenant"][w.tenant.to_string()][table];
        assert_eq!(per_tenant.as_u64().unwrap_or(0), removed, "{table}");
    }
    check_end_state(&w, &[w.tenant], &done, &tree.config(), false).await;
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

/// A purge of every workspace whose daemon dies at `failpoint`, finished by another daemon.
async fn killed_and_resumed(failpoint: &str) {
    let w = world(pg::dify_database().await).await;
    let tree = TempTree::new("exports");
    let (client, id) = submit_to_a_doomed_daemon(
        &w.db,
        failpoint,
        json!({"kind": "purge_logs", "params": {"days": 30, "batch": 50, "storage": tree.config()}}),
    )
    .await;
    let rescuer = rescuer(&w.db).await;
    let done = rescuer.wait_finished(&id).await;
    assert_eq!(done["attempts"], 2, "{done}");
    check_end_state(&w, &w.tenants, &done, &tree.config(), true).await;
    rescuer.stop().await;
    client.stop().await;
}

#[tokio::test]
async fn killed_after_an_export_before_its_delete_the_rerun_reuses_the_names() {
    killed_and_resumed("purge_logs.exported=abort@3").await;
}

#[tokio::test]
async fn killed_mid_delete_the_batch_rolls_back_and_is_redone() {
    killed_and_resumed("purge_logs.mid_delete=abort@4").await;
}

#[tokio::test]
async fn a_storage_failure_stops_the_purge_with_every_unexported_row_in_place() {
    let w = world(pg::dify_database().await).await;
    let tree = TempTree::new("exports");
    let d = TestDaemon::start(&w.db, Options::default()).await;
    let (status, job) = d
        .submit(json!({"kind": "purge_logs", "params": {"days": 30, "batch": 5, "storage": tree.config()}}))
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    d.wait_event(&id, |e| {
        e["type"] == "progress" && e["data"]["done"].as_u64() > Some(0)
    })
    .await;
    // The export directory turns into a file: every later write fails, as on a full or
    // unmounted volume.
    let root = std::path::Path::new(tree.path());
    let (exports, moved) = (
        root.join("free_plan_tenant_expired_logs"),
        root.join("moved"),
    );
    std::fs::rename(&exports, &moved).expect("move the exports away");
    std::fs::write(&exports, b"not a directory").expect("block the export path");
    let failed = d.wait_finished(&id).await;
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["error"]["code"], "export_failed", "{failed}");

    let tree_moved = json!({"type": "local", "root": moved.to_string_lossy()});
    let files = read_all(&tree_moved, "").await;
    let saved = files
        .into_iter()
        .map(|(k, v)| (format!("free_plan_tenant_expired_logs/{k}"), v))
        .collect();
    assert!(
        every_deleted_row_is_exported(&w, &saved).await,
        "batches before the failure were purged"
    );
    let messages_left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM public.messages WHERE created_at < $1::timestamp")
            .bind(failed["result"]["cutoff"].as_str().unwrap_or("2100-01-01"))
            .fetch_one(&w.db.pool)
            .await
            .expect("count");
    assert!(messages_left > 0, "the purge stopped at the failure");

    // Storage repaired: a retry finishes, rewriting the batch in flight under its names.
    std::fs::remove_file(&exports).expect("unblock");
    std::fs::rename(&moved, &exports).expect("move the exports back");
    let (status, _) = d
        .call(Method::POST, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_eq!(status, 202);
    let done = d.wait_finished(&id).await;
    check_end_state(&w, &w.tenants, &done, &tree.config(), true).await;
    d.stop().await;
}

#[tokio::test]
async fn a_row_lock_held_by_dify_makes_a_batch_wait_and_retry_not_stall() {
    let w = world(pg::dify_database().await).await;
    let d = TestDaemon::start(&w.db, Options::default()).await;
    // Dify holds a lock on the oldest message (an update in a long transaction).
    let mut dify = w.db.pool.begin().await.expect("begin");
    sqlx::query("SELECT id FROM public.messages ORDER BY created_at, id LIMIT 1 FOR UPDATE")
        .execute(&mut *dify)
        .await
        .expect("lock a message");
    let (status, job) = d
        .submit(json!({"kind": "purge_logs", "params": {"days": 30, "batch": 100, "export": false, "lock_timeout_ms": 100}}))
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    d.wait_event(&id, |e| {
        e["type"] == "warning"
            && e["data"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("lock on messages is busy"))
    })
    .await;
    // Meanwhile Dify's own writes to other rows go through.
    sqlx::query("UPDATE public.messages SET status = status WHERE id = (SELECT id FROM public.messages ORDER BY created_at DESC LIMIT 1)")
        .execute(&w.db.pool)
        .await
        .expect("Dify writes");
    dify.commit().await.expect("release");
    let done = d.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(
        done["result"]["retried_batches"].as_u64() >= Some(1),
        "{done}"
    );
    assert!(done["result"]["export"].is_null());
    let cutoff = done["result"]["cutoff"]
        .as_str()
        .expect("cutoff")
        .to_string();
    let expected = expected(&w, &w.tenants, &cutoff).await;
    assert_eq!(deleted(&w.db).await["messages"], expected["messages"]);
    d.stop().await;
}

#[tokio::test]
async fn exports_land_on_s3_and_azure_blob_and_vacuum_follows() {
    let w = world(pg::dify_database().await).await;
    let moto = Moto::start().await;
    moto.create_bucket("dify").await;
    let azurite = Azurite::start().await;
    azurite.create_container("dify").await;
    let s3 = json!({"type": "s3", "bucket_name": "dify", "endpoint": moto.endpoint(),
           "access_key": "test", "secret_key": "test", "address_style": "path"});
    let azure = json!({"type": "azure-blob", "account_name": Azurite::ACCOUNT,
        "account_key": Azurite::KEY, "container_name": "dify", "account_url": azurite.endpoint()});
    let d = TestDaemon::start(&w.db, Options::default()).await;
    for (tenant, storage) in [(w.tenants[1], &s3), (w.tenants[2], &azure)] {
        let before = deleted(&w.db).await;
        let done = finished(
            &d,
            json!({"days": 30, "batch": 200, "tenant_ids": [tenant], "storage": storage, "vacuum_after": true}),
            false,
        )
        .await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let files = read_all(storage, "free_plan_tenant_expired_logs/").await;
        assert!(
            files
                .keys()
                .all(|k| k.starts_with(&format!("free_plan_tenant_expired_logs/{tenant}/")))
        );
        let saved = exported(&files);
        let after = deleted(&w.db).await;
        let gone: BTreeSet<Uuid> = after["messages"]
            .difference(&before["messages"])
            .copied()
            .collect();
        assert!(!gone.is_empty());
        let saved_messages: BTreeSet<Uuid> = saved["messages"].iter().copied().collect();
        assert_eq!(saved_messages, gone, "{storage}");

        // The vacuum it queued covers the tables it shrank.
        let vacuum = done["result"]["vacuum"]["queued_job_id"]
            .as_str()
            .expect("vacuum queued")
            .to_string();
        let v = d.wait_finished(&vacuum).await;
        assert_eq!(v["kind"], "vacuum");
        let tables: Vec<&str> = v["params"]["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            tables.contains(&"messages") && tables.contains(&"workflow_runs"),
            "{tables:?}"
        );
        assert_eq!(v["state"], "succeeded", "{v}");
    }
    d.stop().await;
}

#[tokio::test]
async fn bad_params_are_refused_naming_the_field_and_queue_nothing() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let tree = TempTree::new("exports");
    let unknown = Uuid::new_v4();
    for (params, field) in [
        (json!({"days": 0}), "params.days"),
        (json!({"days": -3}), "params.days"),
        (json!({"batch": 0}), "params.batch"),
        (json!({"batch": 10001}), "params.batch"),
        (json!({"batch": 1e12}), "params.batch"),
        (
            json!({"tenant_ids": ["not-a-uuid"]}),
            "params.tenant_ids[0]",
        ),
        (json!({"tenant_ids": []}), "params.tenant_ids"),
        (json!({"tenant_ids": [unknown]}), "params.tenant_ids[0]"),
        (
            json!({"export": false, "storage": tree.config()}),
            "params.storage",
        ),
        (
            json!({"storage": {"type": "s3"}}),
            "params.storage.bucket_name",
        ),
        (json!({"lock_timeout_ms": 0}), "params.lock_timeout_ms"),
        (json!({"days": 30, "tenant": unknown}), "params.tenant"),
    ] {
        let mut params = params;
        if params.get("storage").is_none() && params.get("export").is_none() {
            params["storage"] = tree.config();
        }
        let (status, body) = d
            .submit(json!({"kind": "purge_logs", "params": params}))
            .await;
        assert_eq!(status, 400, "{params}: {body}");
        assert_eq!(body["field"], field, "{params}: {body}");
    }
    let (_, jobs) = d.call(Method::GET, "/v1/jobs", None).await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "{jobs}");
    d.stop().await;
}
