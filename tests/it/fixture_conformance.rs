//! The project's Dify fixture must be Dify's real schema, table for table, and the data
//! generator must fill both the fixture and the real thing with consistent rows.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use upkeep::demo::datagen::{DemoSpec, GenSummary, generate};
use upkeep::demo::fixture::{DIFY_REVISION, load_dify_fixture};

use crate::support::pg::{REAL_SCHEMA, empty_database, load_real_schema, real_schema};

async fn public_tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_catalog.pg_tables \
         WHERE schemaname = 'public' ORDER BY tablename",
    )
    .fetch_all(pool)
    .await
    .expect("list tables")
}

type ColumnKey = (String, String);

async fn columns(pool: &PgPool, tables: &[String]) -> BTreeMap<ColumnKey, String> {
    let rows = sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text, udt_name::text, \
                character_maximum_length::int, numeric_precision::int, numeric_scale::int, \
                is_nullable::text, column_default::text \
         FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name::text = ANY($1)",
    )
    .bind(tables)
    .fetch_all(pool)
    .await
    .expect("read information_schema.columns");
    rows.iter()
        .map(|r| {
            let key = (r.get::<String, _>(0), r.get::<String, _>(1));
            let shape = format!(
                "{} ({}) len={:?} precision={:?} scale={:?} nullable={} default={:?}",
                r.get::<String, _>(2),
                r.get::<String, _>(3),
                r.get::<Option<i32>, _>(4),
                r.get::<Option<i32>, _>(5),
                r.get::<Option<i32>, _>(6),
                r.get::<String, _>(7),
                r.get::<Option<String>, _>(8),
            );
            (key, shape)
        })
        .collect()
}

async fn indexes(pool: &PgPool, tables: &[String]) -> BTreeMap<ColumnKey, String> {
    let rows = sqlx::query(
        "SELECT tablename::text, indexname::text, indexdef FROM pg_catalog.pg_indexes \
         WHERE schemaname = 'public' AND tablename::text = ANY($1)",
    )
    .bind(tables)
    .fetch_all(pool)
    .await
    .expect("read pg_indexes");
    rows.iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect()
}

/// Every index and constraint definition of the public schema, to show that generating data
/// (which defers indexes during the load) leaves the schema exactly as it found it.
async fn schema_objects(pool: &PgPool) -> BTreeSet<String> {
    sqlx::query_scalar(
        "SELECT indexdef FROM pg_catalog.pg_indexes WHERE schemaname = 'public' \
         UNION ALL \
         SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) \
         FROM pg_catalog.pg_constraint WHERE connamespace = 'public'::regnamespace",
    )
    .fetch_all(pool)
    .await
    .expect("read indexes and constraints")
    .into_iter()
    .collect()
}

/// Lists every way `fixture` differs from `real`, for the entries either side has.
fn differences(
    what: &str,
    fixture: &BTreeMap<ColumnKey, String>,
    real: &BTreeMap<ColumnKey, String>,
) -> Vec<String> {
    let keys: BTreeSet<&ColumnKey> = fixture.keys().chain(real.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let (table, name) = key;
            match (fixture.get(key), real.get(key)) {
                (Some(f), Some(r)) if f == r => None,
                (Some(f), Some(r)) => Some(format!(
                    "{what} {table}.{name}:\n    fixture: {f}\n    dify:    {r}"
                )),
                (Some(_), None) => Some(format!("{what} {table}.{name}: only in the fixture")),
                (None, Some(r)) => Some(format!(
                    "{what} {table}.{name}: missing from the fixture ({r})"
                )),
                (None, None) => None,
            }
        })
        .collect()
}

#[tokio::test]
async fn fixture_matches_difys_schema() {
    let Some(real_sql) = real_schema("fixture_matches_difys_schema") else {
        return;
    };
    let real = empty_database().await;
    load_real_schema(&real, real_sql).await;
    let fixture = empty_database().await;
    // The fixture loads on a pool's connection and must leave that session as it found it:
    // a one-connection pool makes sure the check below reads the same session.
    let single = PgPoolOptions::new()
        .max_connections(1)
        .connect(&fixture.url)
        .await
        .expect("connect to the fixture database");
    let search_path = || async {
        sqlx::query_scalar::<_, String>("SELECT current_setting('search_path')")
            .fetch_one(&single)
            .await
            .expect("read search_path")
    };
    let before = search_path().await;
    load_dify_fixture(&single)
        .await
        .expect("the fixture loads as one multi-statement string");
    assert_eq!(
        search_path().await,
        before,
        "the fixture changed search_path"
    );
    single.close().await;

    let tables = public_tables(&fixture.pool).await;
    let real_tables: BTreeSet<String> = public_tables(&real.pool).await.into_iter().collect();
    let mut problems: Vec<String> = tables
        .iter()
        .filter(|t| !real_tables.contains(*t))
        .map(|t| format!("table {t}: not in Dify's schema"))
        .collect();
    problems.extend(differences(
        "column",
        &columns(&fixture.pool, &tables).await,
        &columns(&real.pool, &tables).await,
    ));
    problems.extend(differences(
        "index",
        &indexes(&fixture.pool, &tables).await,
        &indexes(&real.pool, &tables).await,
    ));
    assert!(
        problems.is_empty(),
        "the fixture differs from {REAL_SCHEMA} in {} ways:\n{}",
        problems.len(),
        problems.join("\n")
    );

    let revision: String = sqlx::query_scalar("SELECT version_num FROM public.alembic_version")
        .fetch_one(&fixture.pool)
        .await
        .expect("the loader stamps the revision");
    assert_eq!(revision, DIFY_REVISION);
}

/// child.column -> parent.column links (Dify has no foreign keys), with the rows they apply to.
const LINKS: &[(&str, &str, &str, &str, &str)] = &[
    ("apps", "tenant_id", "tenants", "id", "true"),
    ("tenant_account_joins", "tenant_id", "tenants", "id", "true"),
    (
        "tenant_account_joins",
        "account_id",
        "accounts",
        "id",
        "true",
    ),
    ("app_model_configs", "app_id", "apps", "id", "true"),
    (
        "apps",
        "app_model_config_id",
        "app_model_configs",
        "id",
        "app_model_config_id IS NOT NULL",
    ),
    (
        "apps",
        "workflow_id",
        "workflows",
        "id",
        "workflow_id IS NOT NULL",
    ),
    ("sites", "app_id", "apps", "id", "true"),
    ("end_users", "app_id", "apps", "id", "true"),
    ("conversations", "app_id", "apps", "id", "true"),
    (
        "conversations",
        "from_end_user_id",
        "end_users",
        "id",
        "from_end_user_id IS NOT NULL",
    ),
    (
        "conversations",
        "from_account_id",
        "accounts",
        "id",
        "from_account_id IS NOT NULL",
    ),
    ("messages", "conversation_id", "conversations", "id", "true"),
    ("messages", "app_id", "apps", "id", "true"),
    (
        "messages",
        "parent_message_id",
        "messages",
        "id",
        "parent_message_id IS NOT NULL",
    ),
    (
        "messages",
        "workflow_run_id",
        "workflow_runs",
        "id",
        "workflow_run_id IS NOT NULL",
    ),
    ("message_feedbacks", "message_id", "messages", "id", "true"),
    (
        "message_feedbacks",
        "conversation_id",
        "conversations",
        "id",
        "true",
    ),
    ("message_files", "message_id", "messages", "id", "true"),
    (
        "message_files",
        "upload_file_id",
        "upload_files",
        "id",
        "transfer_method = 'local_file'",
    ),
    (
        "message_files",
        "upload_file_id",
        "tool_files",
        "id",
        "transfer_method = 'tool_file'",
    ),
    ("message_chains", "message_id", "messages", "id", "true"),
    (
        "message_agent_thoughts",
        "message_id",
        "messages",
        "id",
        "true",
    ),
    ("saved_messages", "message_id", "messages", "id", "true"),
    (
        "pinned_conversations",
        "conversation_id",
        "conversations",
        "id",
        "true",
    ),
    (
        "message_annotations",
        "message_id",
        "messages",
        "id",
        "message_id IS NOT NULL",
    ),
    (
        "app_annotation_hit_histories",
        "message_id",
        "messages",
        "id",
        "true",
    ),
    (
        "app_annotation_hit_histories",
        "annotation_id",
        "message_annotations",
        "id",
        "true",
    ),
    (
        "app_annotation_settings",
        "collection_binding_id",
        "dataset_collection_bindings",
        "id",
        "true",
    ),
    (
        "dataset_retriever_resources",
        "message_id",
        "messages",
        "id",
        "true",
    ),
    (
        "dataset_retriever_resources",
        "dataset_id",
        "datasets",
        "id",
        "true",
    ),
    (
        "dataset_retriever_resources",
        "document_id",
        "documents",
        "id",
        "true",
    ),
    (
        "dataset_retriever_resources",
        "segment_id",
        "document_segments",
        "id",
        "true",
    ),
    (
        "tool_files",
        "conversation_id",
        "conversations",
        "id",
        "conversation_id IS NOT NULL",
    ),
    ("tool_files", "tenant_id", "tenants", "id", "true"),
    ("workflow_runs", "app_id", "apps", "id", "true"),
    ("workflow_runs", "workflow_id", "workflows", "id", "true"),
    (
        "workflow_node_executions",
        "workflow_run_id",
        "workflow_runs",
        "id",
        "true",
    ),
    (
        "workflow_node_execution_offload",
        "node_execution_id",
        "workflow_node_executions",
        "id",
        "true",
    ),
    (
        "workflow_node_execution_offload",
        "file_id",
        "upload_files",
        "id",
        "true",
    ),
    (
        "workflow_app_logs",
        "workflow_run_id",
        "workflow_runs",
        "id",
        "true",
    ),
    (
        "workflow_pauses",
        "workflow_run_id",
        "workflow_runs",
        "id",
        "true",
    ),
    (
        "workflow_pause_reasons",
        "pause_id",
        "workflow_pauses",
        "id",
        "true",
    ),
    (
        "workflow_trigger_logs",
        "workflow_run_id",
        "workflow_runs",
        "id",
        "true",
    ),
    (
        "workflow_conversation_variables",
        "conversation_id",
        "conversations",
        "id",
        "true",
    ),
    (
        "workflow_draft_variables",
        "file_id",
        "workflow_draft_variable_files",
        "id",
        "file_id IS NOT NULL",
    ),
    (
        "workflow_draft_variable_files",
        "upload_file_id",
        "upload_files",
        "id",
        "true",
    ),
    ("upload_files", "tenant_id", "tenants", "id", "true"),
    ("datasets", "tenant_id", "tenants", "id", "true"),
    (
        "datasets",
        "collection_binding_id",
        "dataset_collection_bindings",
        "id",
        "collection_binding_id IS NOT NULL",
    ),
    ("documents", "dataset_id", "datasets", "id", "true"),
    (
        "documents",
        "dataset_process_rule_id",
        "dataset_process_rules",
        "id",
        "true",
    ),
    (
        "document_segments",
        "document_id",
        "documents",
        "id",
        "true",
    ),
];

/// Facts about the generated data that the jobs' tests rely on; each query counts violations.
const FACTS: &[(&str, &str)] = &[
    (
        "a conversation is updated after it is created",
        "SELECT count(*) FROM public.conversations WHERE updated_at < created_at",
    ),
    (
        "documents name an existing upload file in data_source_info",
        "SELECT count(*) FROM public.documents d WHERE NOT EXISTS \
         (SELECT 1 FROM public.upload_files f \
          WHERE f.id = ((d.data_source_info::json)->>'upload_file_id')::uuid)",
    ),
    (
        "high-quality datasets carry Dify's index_struct for their own collection",
        "SELECT count(*) FROM public.datasets \
         WHERE indexing_technique = 'high_quality' AND index_struct IS DISTINCT FROM \
         '{\"type\": \"weaviate\", \"vector_store\": {\"class_prefix\": \"Vector_index_' \
         || replace(id::text, '-', '_') || '_Node\"}}'",
    ),
    (
        "upload file keys are upload_files/<tenant_id>/<uuid>.<ext>",
        "SELECT count(*) FROM public.upload_files \
         WHERE key NOT LIKE 'upload_files/' || tenant_id || '/%.' || extension",
    ),
    (
        "tool file keys are tools/<tenant_id>/<hex>.<ext>",
        "SELECT count(*) FROM public.tool_files \
         WHERE file_key !~ ('^tools/' || tenant_id || '/[0-9a-f]{32}\\.png$')",
    ),
    (
        "segments are completed with a vector id",
        "SELECT count(*) FROM public.document_segments \
         WHERE status <> 'completed' OR index_node_id IS NULL",
    ),
];

async fn count(pool: &PgPool, sql: String) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.clone()))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Checks the summary against the tables and the links between them.
async fn check_generated(pool: &PgPool, summary: &GenSummary) {
    let mut problems = Vec::new();
    for (table, &expected) in &summary.rows {
        let actual = count(pool, format!("SELECT count(*) FROM public.{table}")).await;
        if u64::try_from(actual).ok() != Some(expected) {
            problems.push(format!(
                "{table}: summary says {expected} rows, table has {actual}"
            ));
        }
    }
    for &(child, column, parent, parent_column, filter) in LINKS {
        let dangling = count(
            pool,
            format!(
                "SELECT count(*) FROM public.{child} c WHERE ({filter}) AND NOT EXISTS \
                 (SELECT 1 FROM public.{parent} p WHERE p.{parent_column} = c.{column})"
            ),
        )
        .await;
        if dangling > 0 {
            problems.push(format!(
                "{dangling} {child}.{column} without a {parent}.{parent_column}"
            ));
        }
    }
    for &(fact, sql) in FACTS {
        let violations = count(pool, sql.to_owned()).await;
        if violations > 0 {
            problems.push(format!("{violations} rows break: {fact}"));
        }
    }
    assert!(
        problems.is_empty(),
        "generated data is inconsistent:\n{}",
        problems.join("\n")
    );

    for table in [
        "messages",
        "conversations",
        "workflow_runs",
        "workflow_node_executions",
    ] {
        assert!(
            summary.rows.get(table).copied().unwrap_or(0) > 0,
            "{table} is empty"
        );
    }
    // A 30-day purge must find work, and also leave rows behind.
    let old = count(
        pool,
        "SELECT count(*) FROM public.conversations \
         WHERE updated_at < now() AT TIME ZONE 'UTC' - interval '30 days'"
            .to_owned(),
    )
    .await;
    let recent = count(
        pool,
        "SELECT count(*) FROM public.messages \
         WHERE created_at >= now() AT TIME ZONE 'UTC' - interval '30 days'"
            .to_owned(),
    )
    .await;
    assert!(
        old > 0 && recent > 0,
        "old conversations {old}, recent messages {recent}"
    );
    let modes = count(
        pool,
        "SELECT count(DISTINCT mode) FROM public.apps".to_owned(),
    )
    .await;
    assert_eq!(modes, 5, "every app mode is generated");
}

/// Dead tuples as the statistics system reports them; ANALYZE refreshes the estimate if the
/// counters have not arrived.
async fn dead_tuples(pool: &PgPool, table: &str) -> i64 {
    let query = "SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_catalog.pg_stat_user_tables \
                 WHERE schemaname = 'public' AND relname = $1";
    let n: i64 = sqlx::query_scalar(query)
        .bind(table)
        .fetch_one(pool)
        .await
        .expect("read pg_stat_user_tables");
    if n > 0 {
        return n;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("ANALYZE public.{table}")))
        .execute(pool)
        .await
        .expect("analyze");
    sqlx::query_scalar(query)
        .bind(table)
        .fetch_one(pool)
        .await
        .expect("read pg_stat_user_tables")
}

#[tokio::test]
async fn generator_fills_the_fixture_consistently() {
    let db = empty_database().await;
    load_dify_fixture(&db.pool).await.expect("load the fixture");
    // The test server's autovacuum could reclaim the dead rows before they are counted; the
    // generator itself leaves table options alone.
    for table in ["message_chains", "conversations", "message_feedbacks"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER TABLE public.{table} SET (autovacuum_enabled = false)"
        )))
        .execute(&db.pool)
        .await
        .expect("pause autovacuum on the test table");
    }

    let spec = DemoSpec::demo();
    let schema = schema_objects(&db.pool).await;
    let summary = generate(&db.pool, &spec)
        .await
        .expect("generate the demo data");
    assert_eq!(
        schema_objects(&db.pool).await,
        schema,
        "generation changed the schema"
    );
    eprintln!(
        "demo data: {} rows ({} messages) in {} ms",
        summary.total_rows(),
        summary.rows.get("messages").copied().unwrap_or(0),
        summary.elapsed_ms
    );
    assert_eq!(summary.tenants.len(), spec.tenants);
    assert!(summary.tenants.iter().any(|t| t.name == "Acme's Workspace"));
    assert!(summary.tenants.iter().any(|t| t.status == "archive"));
    check_generated(&db.pool, &summary).await;

    for table in ["message_chains", "conversations", "message_feedbacks"] {
        let made = summary.dead_rows.get(table).copied().unwrap_or(0);
        assert!(made > 0, "the generator made no dead rows in {table}");
        let dead = dead_tuples(&db.pool, table).await;
        assert!(
            dead > 0,
            "{table}: {made} rows updated or deleted, but n_dead_tup is {dead}"
        );
    }
}

#[tokio::test]
async fn generator_fills_difys_real_schema() {
    let Some(real_sql) = real_schema("generator_fills_difys_real_schema") else {
        return;
    };
    let db = empty_database().await;
    load_real_schema(&db, real_sql).await;
    let schema = schema_objects(&db.pool).await;
    let summary = generate(&db.pool, &DemoSpec::demo())
        .await
        .expect("generate into Dify's own schema");
    assert_eq!(
        schema_objects(&db.pool).await,
        schema,
        "generation changed the schema"
    );
    check_generated(&db.pool, &summary).await;
}

/// Type, length and nullability of each column (defaults left out: Dify changed id defaults
/// across releases, which no job relies on).
async fn column_types(pool: &PgPool, tables: &[String]) -> BTreeMap<ColumnKey, String> {
    columns(pool, tables)
        .await
        .into_iter()
        .map(|(k, v)| {
            let kept = v.split(" default=").next().unwrap_or_default().to_string();
            (k, kept)
        })
        .collect()
}

/// The fixture (Dify main's tables Upkeep uses) on each supported release: every difference
/// is one `dify::shape` knows (a table or column the release lacks or dropped since, a type
/// or nullability it has otherwise), so the jobs' shape checks and the generator work from
/// the truth.
#[tokio::test]
async fn the_fixture_on_each_release_differs_only_as_upkeep_knows() {
    use upkeep::dify::shape::{
        COLUMNS_ABSENT_UP_TO, COLUMNS_DROPPED_AFTER, COLUMNS_TYPED_OTHERWISE_UP_TO,
        TABLES_ABSENT_UP_TO,
    };
    fn version(v: &str) -> Vec<u32> {
        v.split('.').filter_map(|p| p.parse().ok()).collect()
    }
    let at_or_before = |v: &str, up_to: &str| version(v) <= version(up_to);
    let fixture = empty_database().await;
    load_dify_fixture(&fixture.pool).await.expect("fixture");
    let tables = public_tables(&fixture.pool).await;
    let fixture_columns = column_types(&fixture.pool, &tables).await;
    for v in [
        "0.15.3", "1.0.1", "1.4.3", "1.7.2", "1.9.2", "1.13.3", "1.15.0",
    ] {
        let Some(db) = crate::support::pg::release_database(v, "0").await else {
            continue;
        };
        let release_tables: BTreeSet<String> = public_tables(&db.pool).await.into_iter().collect();
        let release_columns = column_types(&db.pool, &tables).await;
        let mut problems = Vec::new();
        for t in tables.iter().filter(|t| !release_tables.contains(*t)) {
            let known = TABLES_ABSENT_UP_TO
                .iter()
                .any(|(k, up_to)| k == t && at_or_before(v, up_to));
            if !known && t != "alembic_version" {
                problems.push(format!("table {t}: absent, not known to be"));
            }
        }
        let keys: BTreeSet<&ColumnKey> = fixture_columns
            .keys()
            .chain(release_columns.keys())
            .collect();
        for key @ (t, c) in keys {
            let known = |list: &[(&str, &str, &str)]| {
                list.iter()
                    .any(|(kt, kc, up_to)| kt == t && kc == c && at_or_before(v, up_to))
            };
            match (fixture_columns.get(key), release_columns.get(key)) {
                (Some(_), None) if !release_tables.contains(t) => {}
                (Some(_), None) if known(COLUMNS_ABSENT_UP_TO) => {}
                (None, Some(_)) if known(COLUMNS_DROPPED_AFTER) => {}
                (Some(f), Some(r)) if f == r => {}
                (Some(_), Some(_))
                    if COLUMNS_TYPED_OTHERWISE_UP_TO
                        .iter()
                        .any(|(kt, kc, up_to, _)| kt == t && kc == c && at_or_before(v, up_to)) => {
                }
                (f, r) => problems.push(format!("column {t}.{c}: main {f:?}, {v} {r:?}")),
            }
        }
        assert!(
            problems.is_empty(),
            "Dify {v} differs from the fixture in ways dify::shape does not know:\n{}",
            problems.join("\n")
        );
    }
}
