//! `orphan_records` on Dify's schema: every reference Dify's command checks and the ones it
//! misses, case-insensitive ids in text, the grace period, dangling `message_files`, and the
//! plan/confirm cycle with a row that became referenced in between.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::daemon::{Options, TestDaemon};
use crate::support::files::TempTree;
use crate::support::pg::{self, TestDb};
use crate::support::process::{rescuer, submit_to_a_doomed_daemon};

async fn exec(db: &TestDb, sql: &str, binds: &[Uuid]) {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
    for b in binds {
        q = q.bind(*b);
    }
    q.execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// An upload_files row created `days_ago` days back.
async fn upload(db: &TestDb, tenant: Uuid, days_ago: i32) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO public.upload_files (tenant_id, storage_type, key, name, size, extension, created_by, created_at) \
         VALUES ($1, 'opendal', 'upload_files/' || $1 || '/' || gen_random_uuid() || '.pdf', 'f', 1, 'pdf', $1, \
                 (now() AT TIME ZONE 'UTC') - make_interval(days => $2)) RETURNING id",
    )
    .bind(tenant)
    .bind(days_ago)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

async fn tool_file(
    db: &TestDb,
    tree: &TempTree,
    tenant: Uuid,
    object_days_ago: Option<u64>,
) -> Uuid {
    let id = Uuid::new_v4();
    let key = format!("tools/{tenant}/{}.png", id.simple());
    if let Some(days) = object_days_ago {
        tree.write(&key, b"png");
        let f = std::fs::File::options()
            .write(true)
            .open(tree.root.join(&key))
            .unwrap();
        f.set_modified(
            std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400),
        )
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO public.tool_files (id, user_id, tenant_id, file_key, mimetype, name, size) \
         VALUES ($1, $2, $2, $3, 'image/png', 'x', 3)",
    )
    .bind(id)
    .bind(tenant)
    .bind(&key)
    .execute(&db.pool)
    .await
    .unwrap();
    id
}

async fn message(db: &TestDb, app: Uuid, answer: &str) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO public.messages (app_id, conversation_id, inputs, query, message, message_unit_price, \
         answer, answer_unit_price, currency, from_source) \
         VALUES ($1, gen_random_uuid(), '{}', 'q', '[]', 0, $2, 0, 'USD', 'api') RETURNING id",
    )
    .bind(app)
    .bind(answer)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

async fn message_file(db: &TestDb, message: Uuid, file: Uuid, days_ago: i32) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO public.message_files (message_id, type, transfer_method, created_by_role, created_by, upload_file_id, created_at) \
         VALUES ($1, 'image', 'local_file', 'account', $1, $2, (now() AT TIME ZONE 'UTC') - make_interval(days => $3)) RETURNING id",
    )
    .bind(message)
    .bind(file)
    .bind(days_ago)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

pub(crate) async fn exists(db: &TestDb, table: &str, id: Uuid) -> bool {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM public.{table} WHERE id = $1)"
    )))
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

async fn finished(d: &TestDaemon, params: Value) -> Value {
    let (status, job) = d
        .submit(json!({"kind": "orphan_records", "params": params}))
        .await;
    assert_eq!(status, 202, "{job}");
    let done = d.wait_finished(job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    done
}

async fn dry_run(d: &TestDaemon, params: Value) -> Value {
    let (status, job) = d
        .submit(json!({"kind": "orphan_records", "params": params, "dry_run": true}))
        .await;
    assert_eq!(status, 202, "{job}");
    let done = d.wait_finished(job["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    done
}

#[tokio::test]
async fn every_reference_keeps_its_row_and_only_planned_orphans_go() {
    references_and_cycle(&pg::dify_database().await).await;
}

#[tokio::test]
async fn the_same_on_difys_full_real_schema() {
    if let Some(db) = pg::real_dify_database("orphan_records real schema").await {
        references_and_cycle(&db).await;
    }
}

/// Whether this release's schema has `public.<table>`.
async fn in_public(db: &TestDb, table: &str) -> bool {
    sqlx::query_scalar("SELECT to_regclass('public.' || quote_ident($1)) IS NOT NULL")
        .bind(table)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Every kind of reference keeps its row, then plan and confirm (also on every release's
/// schema: the reference tables a release lacks are left out).
pub(crate) async fn references_and_cycle(db: &TestDb) {
    let tree = TempTree::new("records");
    let tenant = Uuid::new_v4();
    let app: Uuid = sqlx::query_scalar(
        "INSERT INTO public.apps (tenant_id, name, mode, enable_site, enable_api) \
         VALUES ($1, 'a', 'chat', true, true) RETURNING id",
    )
    .bind(tenant)
    .fetch_one(&db.pool)
    .await
    .unwrap();

    let by_message_file = upload(db, tenant, 3).await;
    let live_message = message(db, app, "hello").await;
    message_file(db, live_message, by_message_file, 3).await;
    // A purge removed this message but left its message_files row behind.
    let behind_purge = upload(db, tenant, 3).await;
    let dangling = message_file(db, Uuid::new_v4(), behind_purge, 3).await;
    let in_answer = upload(db, tenant, 3).await;
    let upper = in_answer.to_string().to_uppercase();
    message(db, app, &format!("see ![x](/files/{upper}/file-preview)")).await;
    let mut kept_by_new_tables = Vec::new();
    if in_public(db, "workflow_node_execution_offload").await {
        let offloaded = upload(db, tenant, 3).await;
        exec(db, "INSERT INTO public.workflow_node_execution_offload (tenant_id, app_id, type, file_id) VALUES ($1, $2, 'outputs', $3)", &[tenant, app, offloaded]).await;
        kept_by_new_tables.push(offloaded);
    }
    let avatar = upload(db, tenant, 3).await;
    exec(
        db,
        "INSERT INTO public.accounts (name, email, avatar) VALUES ('n', 'n@x', $1::text)",
        &[avatar],
    )
    .await;
    let icon = upload(db, tenant, 3).await;
    exec(
        db,
        "UPDATE public.apps SET icon = $1::text WHERE id = $2",
        &[icon, app],
    )
    .await;
    if in_public(db, "workflow_draft_variable_files").await {
        let draft = upload(db, tenant, 3).await;
        exec(db, "INSERT INTO public.workflow_draft_variable_files (tenant_id, app_id, user_id, upload_file_id, size, value_type) VALUES ($1, $2, $1, $3, 1, 'string')", &[tenant, app, draft]).await;
        kept_by_new_tables.push(draft);
    }
    let unreferenced = upload(db, tenant, 3).await;
    let young = upload(db, tenant, 0).await;
    let tool_in_answer = tool_file(db, &tree, tenant, Some(3)).await;
    message(db, app, &format!("/files/tools/{tool_in_answer}.png")).await;
    let tool_old = tool_file(db, &tree, tenant, Some(3)).await;
    let tool_young = tool_file(db, &tree, tenant, Some(0)).await;
    let tool_no_object = tool_file(db, &tree, tenant, None).await;

    let d = TestDaemon::start(db, Options::default()).await;
    let storage = tree.config();
    let dry = dry_run(&d, json!({"storage": storage, "min_age_hours": 48})).await;
    assert_eq!(dry["result"]["plan_job_id"], Value::Null, "{dry}");
    let plan = finished(&d, json!({"storage": storage, "min_age_hours": 48})).await;
    let r = &plan["result"];
    assert_eq!(
        r["tables"], dry["result"]["tables"],
        "the dry run found the same"
    );
    assert_eq!(
        r["tables"]["upload_files"],
        json!({"orphans": 2, "too_young": 1}),
        "{r}"
    );
    assert_eq!(
        r["tables"]["tool_files"],
        json!({"orphans": 2, "too_young": 1}),
        "{r}"
    );
    assert_eq!(
        r["tables"]["message_files"],
        json!({"orphans": 1, "too_young": 0}),
        "{r}"
    );
    let mut planned: Vec<String> = r["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    planned.sort();
    let mut expected = vec![
        format!("upload_files:{behind_purge}"),
        format!("upload_files:{unreferenced}"),
        format!("tool_files:{tool_old}"),
        format!("tool_files:{tool_no_object}"),
        format!("message_files:{dangling}"),
    ];
    expected.sort();
    assert_eq!(planned, expected);
    assert!(
        exists(db, "upload_files", unreferenced).await,
        "planning deleted a row"
    );

    // Between plan and confirm, Dify starts using one of them.
    message_file(db, live_message, unreferenced, 0).await;
    let plan_id = plan["id"].as_str().unwrap();
    let preview = dry_run(
        &d,
        json!({"storage": storage, "confirm": true, "plan_job_id": plan_id}),
    )
    .await;
    assert_eq!(preview["result"]["would_check_and_delete"], 5, "{preview}");
    let applied = finished(
        &d,
        json!({"storage": storage, "confirm": true, "plan_job_id": plan_id}),
    )
    .await;
    // The confirm's view shows the grace period it applies: its plan's, not the default.
    assert_eq!(applied["params"]["min_age_hours"], 48, "{applied}");
    let r = &applied["result"];
    assert_eq!(
        r["tables"]["upload_files"],
        json!({"deleted": 1, "referenced": 1}),
        "{r}"
    );
    assert_eq!(r["tables"]["tool_files"], json!({"deleted": 2}), "{r}");
    assert_eq!(r["tables"]["message_files"], json!({"deleted": 1}), "{r}");
    assert_eq!(r["deleted"], 4, "{r}");

    // Confirmed again: this run deleted nothing, and the result says so.
    let again = finished(
        &d,
        json!({"storage": storage, "confirm": true, "plan_job_id": plan_id}),
    )
    .await;
    let r = &again["result"];
    assert_eq!(r["deleted"], 0, "{r}");
    assert_eq!(
        r["tables"],
        json!({
            "message_files": {"handled_by_an_earlier_confirm": 1},
            "tool_files": {"handled_by_an_earlier_confirm": 2},
            "upload_files": {"handled_by_an_earlier_confirm": 2},
        }),
        "{r}"
    );
    for (table, id, kept) in [
        ("upload_files", by_message_file, true),
        ("upload_files", in_answer, true),
        ("upload_files", avatar, true),
        ("upload_files", icon, true),
        ("upload_files", young, true),
        ("upload_files", unreferenced, true),
        ("upload_files", behind_purge, false),
        ("tool_files", tool_in_answer, true),
        ("tool_files", tool_young, true),
        ("tool_files", tool_old, false),
        ("tool_files", tool_no_object, false),
        ("message_files", dangling, false),
    ] {
        assert_eq!(exists(db, table, id).await, kept, "{table} {id}");
    }
    for id in kept_by_new_tables {
        assert!(exists(db, "upload_files", id).await, "{id}");
    }
    d.stop().await;
}

#[tokio::test]
async fn refuses_without_a_referencing_table_and_names_bad_params() {
    let db = pg::dify_database().await;
    let tree = TempTree::new("records");
    let d = TestDaemon::start(&db, Options::default()).await;
    for (params, field) in [
        (json!({"confirm": true}), "params.plan_job_id"),
        (
            json!({"confirm": true, "plan_job_id": Uuid::new_v4()}),
            "params.plan_job_id",
        ),
        (json!({"min_age_hours": "soon"}), "params.min_age_hours"),
        (json!({"storage": {"type": "gcs"}}), "params.storage.type"),
    ] {
        let (status, err) = d
            .submit(json!({"kind": "orphan_records", "params": params}))
            .await;
        assert_eq!(status, 400, "{params} -> {err}");
        assert_eq!(err["field"], field, "{params} -> {err}");
    }
    let orphan = upload(&db, Uuid::new_v4(), 3).await;
    sqlx::query("ALTER TABLE public.message_files RENAME TO message_files_moved")
        .execute(&db.pool)
        .await
        .unwrap();
    let (status, err) = d
        .submit(json!({"kind": "orphan_records", "params": {"storage": tree.config()}}))
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["code"], "dify_schema_unsupported", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("table public.message_files is missing"),
        "{err}"
    );
    assert!(exists(&db, "upload_files", orphan).await);
    d.stop().await;
}

/// 2,500 three-day-old upload rows nothing references, and one a message links to (returned).
pub(crate) async fn orphans_and_a_kept_row(db: &TestDb) -> Uuid {
    let tenant = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO public.upload_files (tenant_id, storage_type, key, name, size, extension, created_by, created_at) \
         SELECT $1, 'opendal', 'upload_files/' || $1 || '/' || g || '.pdf', 'f', 1, 'pdf', $1, \
                (now() AT TIME ZONE 'UTC') - interval '3 days' FROM generate_series(1, 2500) g",
    )
    .bind(tenant)
    .execute(&db.pool)
    .await
    .unwrap();
    let kept = upload(db, tenant, 3).await;
    let app = Uuid::new_v4();
    message(db, app, &format!("/files/{kept}/file-preview")).await;
    kept
}

#[tokio::test]
async fn a_confirm_run_killed_mid_way_resumes_and_deletes_each_row_once() {
    let db = pg::dify_database().await;
    let tree = TempTree::new("records");
    let kept = orphans_and_a_kept_row(&db).await;
    let storage = tree.config();
    let planner = TestDaemon::start(&db, Options::default()).await;
    let plan = finished(&planner, json!({"storage": storage})).await;
    assert_eq!(plan["result"]["tables"]["upload_files"]["orphans"], 2500);
    planner.stop().await;

    // The confirming daemon dies right after its first batch commits, as under kill -9.
    let plan_id = plan["id"].as_str().unwrap();
    let (client, id) = submit_to_a_doomed_daemon(
        &db,
        "orphan_records.batch_committed=abort@1",
        json!({"kind": "orphan_records", "params": {"storage": storage, "confirm": true, "plan_job_id": plan_id}}),
    )
    .await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM public.upload_files")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        left,
        2501 - 1000,
        "one batch of 1000 was deleted before the kill"
    );

    let rescuer = rescuer(&db).await;
    let done = rescuer.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);
    // Every planned row deleted exactly once: none found already gone by the second attempt.
    assert_eq!(
        done["result"]["tables"]["upload_files"],
        json!({"deleted": 2500}),
        "{done}"
    );
    assert!(exists(&db, "upload_files", kept).await);
    rescuer.stop().await;
    client.stop().await;
}

#[tokio::test]
async fn a_plan_run_killed_mid_way_starts_over_and_records_each_row_once() {
    let db = pg::dify_database().await;
    let tree = TempTree::new("records");
    let kept = orphans_and_a_kept_row(&db).await;
    let storage = tree.config();
    // The planning daemon dies right after upload_files' plan commits, as under kill -9: its
    // session (and temporary table) goes with it, the rows it recorded stay.
    let (client, id) = submit_to_a_doomed_daemon(
        &db,
        "orphan_records.table_planned=abort@1",
        json!({"kind": "orphan_records", "params": {"storage": storage}}),
    )
    .await;
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM upkeep.orphan_plan WHERE job_id = $1")
            .bind(Uuid::parse_str(&id).unwrap())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(recorded, 2500, "upload_files was planned before the kill");

    let rescuer = rescuer(&db).await;
    let done = rescuer.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);
    assert_eq!(
        done["result"]["tables"]["upload_files"],
        json!({"orphans": 2500, "too_young": 0}),
        "{done}"
    );
    // The same plan as one clean run: every orphan once, the referenced row not at all.
    let (rows, distinct, with_kept): (i64, i64, bool) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT item), bool_or(item = 'upload_files:' || $2) \
         FROM upkeep.orphan_plan WHERE job_id = $1",
    )
    .bind(Uuid::parse_str(&id).unwrap())
    .bind(kept)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((rows, distinct, with_kept), (2500, 2500, false));
    rescuer.stop().await;
    client.stop().await;
}

#[tokio::test]
async fn pruning_a_plan_job_removes_its_plan_in_batches() {
    let db = pg::dify_database().await;
    let tree = TempTree::new("records");
    orphans_and_a_kept_row(&db).await;
    let storage = tree.config();
    let d = TestDaemon::start(&db, Options::default()).await;
    let old = finished(&d, json!({"storage": storage})).await;
    let recent = finished(&d, json!({"storage": storage})).await;
    d.stop().await;
    let (old, recent) = (
        Uuid::parse_str(old["id"].as_str().unwrap()).unwrap(),
        Uuid::parse_str(recent["id"].as_str().unwrap()).unwrap(),
    );
    // More items than one pruning delete takes (5000), so the rows go in several batches.
    exec(
        &db,
        "INSERT INTO upkeep.orphan_plan (job_id, item) \
         SELECT $1, 'upload_files:' || gen_random_uuid() FROM generate_series(1, 12000)",
        &[old],
    )
    .await;
    exec(
        &db,
        "UPDATE upkeep.jobs SET finished_at = now() - make_interval(days => \
         CASE WHEN id = $1 THEN 31 ELSE 29 END) WHERE id IN ($1, $2)",
        &[old, recent],
    )
    .await;
    let items = |job: Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM upkeep.orphan_plan WHERE job_id = $1",
            )
            .bind(job)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(items(old).await, 14500);
    assert_eq!(
        upkeep::queue::prune_finished(&db.pool, 30).await.unwrap(),
        1
    );
    assert_eq!(items(old).await, 0, "the pruned job's plan went with it");
    assert_eq!(items(recent).await, 2500, "a plan within the TTL stays");
}
