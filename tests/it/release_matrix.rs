//! Every supported Dify release, on its real schema (`../shared/dify/schemas/<v>.sql`, made
//! by that release's own migrations): the generator fills what the release has, and
//! `purge_logs` (dry run and real), `orphan_records` and `orphan_files` (plan and confirm)
//! and `vacuum` end as they do on 1.15, with the same assertions; `storage_migrate`'s
//! database cross-check and update; `vector_migrate`'s selection, copy and switch. Preflight
//! names each release. One matrix: each release runs the same five tests.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::daemon::{Options, TestDaemon};
use crate::support::files::TempTree;
use crate::support::pg::{self, TestDb};

#[derive(Clone, Copy)]
struct Release {
    version: &'static str,
    head: &'static str,
    /// What preflight calls it.
    name: &'static str,
}

async fn database(r: Release) -> Option<TestDb> {
    pg::release_database(r.version, r.head).await
}

async fn purge(r: Release) {
    if let Some(db) = database(r).await {
        crate::purge_logs::check_purge(db).await;
    }
}

async fn orphan_records(r: Release) {
    if let Some(db) = database(r).await {
        crate::orphan_records::references_and_cycle(&db).await;
    }
}

/// Orphan files, then a vacuum of every table the release has, and what preflight says.
async fn files_vacuum_preflight(r: Release) {
    let Some(db) = database(r).await else {
        return;
    };
    crate::orphan_files::local_cycle(&db).await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let (_, pf) = d.call(Method::GET, "/v1/preflight", None).await;
    assert_eq!(
        pf["dify"],
        json!({"revision": r.head, "known": true, "release": r.name}),
        "{}",
        r.version
    );
    let (status, job) = d.submit(json!({"kind": "vacuum"})).await;
    assert_eq!(status, 202, "{job}");
    let done = d.wait_finished(job["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&db.pool)
            .await
            .expect("count tables");
    let outcomes = done["result"]["tables"].as_array().expect("tables");
    assert_eq!(outcomes.len() as i64, tables, "{}: every table", r.version);
    assert!(
        outcomes.iter().all(|t| t["status"] == "done"),
        "{}",
        Value::from(outcomes.clone())
    );
    d.stop().await;
}

/// `storage_migrate` of a local tree: its database cross-check and `upload_files.storage_type`
/// update on this release's tables (and its skipping of the key tables a release lacks).
async fn storage_cross_check(r: Release) {
    let Some(db) = database(r).await else {
        return;
    };
    let (source, target) = (TempTree::new("release-src"), TempTree::new("release-dst"));
    let tenant = uuid::Uuid::new_v4();
    let mut keys = Vec::new();
    for i in 0..4 {
        let key = format!("upload_files/{tenant}/{i}.pdf");
        // The last one is referenced but was lost from the source.
        if i < 3 {
            source.write(&key, format!("file {i}").as_bytes());
        }
        sqlx::query(
            "INSERT INTO public.upload_files (tenant_id, storage_type, key, name, size, extension, created_by) \
             VALUES ($1, 's3', $2, 'f', 6, 'pdf', $1)",
        )
        .bind(tenant)
        .bind(&key)
        .execute(&db.pool)
        .await
        .expect("upload_files row");
        keys.push(key);
    }
    let d = TestDaemon::start(&db, Options::default()).await;
    let (status, job) = d
        .submit(json!({"kind": "storage_migrate",
            "params": {"source": source.config(), "target": target.config()}}))
        .await;
    assert_eq!(status, 202, "{job}");
    let done = d.wait_finished(job["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let result = &done["result"];
    assert_eq!(result["cross_check"]["referenced"], 4, "{result}");
    assert_eq!(result["cross_check"]["verified"], 3, "{result}");
    assert_eq!(result["cross_check"]["missing_on_source"], 1, "{result}");
    assert_eq!(result["safe_to_switch"], false, "{result}");
    assert_eq!(result["db"]["rows_updated"], 3, "{result}");
    let new_type = result["db"]["storage_type"].as_str().expect("storage_type");
    let types: Vec<String> =
        sqlx::query_scalar("SELECT storage_type::text FROM public.upload_files ORDER BY key")
            .fetch_all(&db.pool)
            .await
            .expect("types");
    assert_eq!(types, [new_type, new_type, new_type, "s3"], "{}", r.version);
    d.stop().await;
}

/// `vector_migrate` Weaviate → Qdrant: the datasets and annotation replies Dify's tables
/// select, in the Weaviate layout that release wrote, copied, verified and switched; then
/// back into Weaviate, in the layout that release searches.
async fn vectors(r: Release) {
    use crate::support::dify_vectors::{
        annotation_app, assert_exactly, binding, class_name, dataset, index_struct, load,
        on_qdrant, vector_env,
    };
    use crate::support::vector_servers::{QdrantStandin, WeaviateServer};
    let Some(db) = database(r).await else {
        return;
    };
    let (w, q) = (
        WeaviateServer::start().await,
        QdrantStandin::start("1.8.3").await,
    );
    let tenant = uuid::Uuid::new_v4();
    let (bound, shared) = binding(&db, "dataset").await;
    let flat = dataset(&db, tenant, bound, 12, false, 1).await;
    let parent_child = dataset(&db, tenant, bound, 6, true, 2).await;
    // Annotation replies: `message_annotations.question` is nullable up to 1.9.2.
    let (app_binding, app_collection) = binding(&db, "annotation").await;
    let app = annotation_app(&db, tenant, app_binding, 4, 3).await;
    // Where the release allows it, the answer-only annotation has no question at all.
    sqlx::query(
        "UPDATE public.message_annotations SET question = NULL WHERE question = '' AND EXISTS \
         (SELECT 1 FROM information_schema.columns WHERE table_schema = 'public' \
          AND table_name = 'message_annotations' AND column_name = 'question' AND is_nullable = 'YES')",
    )
    .execute(&db.pool)
    .await
    .expect("null question");
    // Dify up to 1.9.1 wrote Weaviate's legacy layout, named vectors after.
    let version: Vec<u32> = r
        .version
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    let named = version >= vec![1, 9, 2];
    load(&w, &flat, named, &[], 0).await;
    load(&w, &parent_child, named, &[], 0).await;
    load(&w, &app, named, &[], 0).await;
    let d = TestDaemon::start(
        &db,
        Options {
            env: vector_env(&w, &q),
            ..Options::default()
        },
    )
    .await;
    for dry_run in [true, false] {
        // Every dataset and annotation app of this database.
        let (status, job) = d
            .submit(json!({"kind": "vector_migrate", "params": {}, "dry_run": dry_run}))
            .await;
        assert_eq!(status, 202, "{job}");
        let done = d.wait_finished(job["id"].as_str().expect("id")).await;
        assert_eq!(done["state"], "succeeded", "{}: {done}", r.version);
        let expected: Vec<i64> = done["result"]["datasets"]
            .as_array()
            .expect("datasets")
            .iter()
            .filter_map(|o| o["expected"].as_i64())
            .collect();
        if dry_run {
            assert_eq!(expected.iter().sum::<i64>(), 18 + 4, "{done}");
            assert!(index_struct(&db, flat.id).await.contains("weaviate"));
        }
    }
    for ds in [&flat, &parent_child] {
        assert_eq!(
            index_struct(&db, ds.id).await,
            on_qdrant(&shared),
            "{}",
            r.version
        );
    }
    assert_exactly(&q, &shared, &[&flat, &parent_child], &[]).await;
    assert_exactly(&q, &app_collection, &[&app], &[]).await;

    // And back into an empty Weaviate: in the layout this release searches.
    let back = WeaviateServer::start().await;
    let (status, job) = d
        .submit(
            json!({"kind": "vector_migrate", "params": {"dataset_ids": [flat.id],
            "target": {"type": "weaviate", "endpoint": back.url}}}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let done = d.wait_finished(job["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "succeeded", "{}: {done}", r.version);
    let class = class_name(flat.id);
    let schema = back.get(&format!("/v1/schema/{class}")).await;
    assert_eq!(
        schema["vectorConfig"]["default"].is_object(),
        named,
        "{}: {schema}",
        r.version
    );
    let notes = done["result"]["target_notes"].to_string();
    assert_eq!(
        notes.contains("legacy layout"),
        !named,
        "{}: {notes}",
        r.version
    );
    let objects = back
        .get(&format!(
            "/v1/objects?class={class}&include=vector&limit=100"
        ))
        .await;
    let objects = objects["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 12, "{}", r.version);
    for o in objects {
        let vector = if named {
            &o["vectors"]["default"]
        } else {
            &o["vector"]
        };
        let id = o["id"].as_str().expect("id");
        let expected = &flat
            .records
            .get(id)
            .expect("a record of the dataset")
            .vector;
        assert_eq!(
            vector.as_array().map(Vec::len),
            Some(expected.len()),
            "{}: {o}",
            r.version
        );
    }
    // A class already there in the other layout is not written into: this Dify could not
    // search it.
    load(&back, &parent_child, !named, &[], 0).await;
    let (status, job) = d
        .submit(
            json!({"kind": "vector_migrate", "params": {"dataset_ids": [parent_child.id],
            "target": {"type": "weaviate", "endpoint": back.url}}}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let done = d.wait_finished(job["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "failed", "{}: {done}", r.version);
    assert!(
        done.to_string()
            .contains("but this Dify release reads only the"),
        "{}: {done}",
        r.version
    );
    assert_eq!(index_struct(&db, parent_child.id).await, on_qdrant(&shared));
    d.stop().await;
}

macro_rules! releases {
    ($($module:ident => $version:literal, $head:literal, $name:literal;)+) => {
        $(mod $module {
            const R: super::Release = super::Release { version: $version, head: $head, name: $name };

            #[tokio::test]
            async fn purge_logs_dry_run_and_real() {
                super::purge(R).await;
            }

            #[tokio::test]
            async fn orphan_records_plan_and_confirm() {
                super::orphan_records(R).await;
            }

            #[tokio::test]
            async fn orphan_files_vacuum_and_preflight() {
                super::files_vacuum_preflight(R).await;
            }

            #[tokio::test]
            async fn storage_migrate_cross_check() {
                super::storage_cross_check(R).await;
            }

            #[tokio::test]
            async fn vector_migrate_selection_and_switch() {
                super::vectors(R).await;
            }
        })+
    };
}

releases! {
    dify_0_15_3 => "0.15.3", "a91b476a53de", "0.15.3 to 0.15.8";
    dify_1_0_1 => "1.0.1", "f051706725cc", "1.0.1";
    dify_1_4_3 => "1.4.3", "4474872b0ee6", "1.4.2 / 1.4.3";
    dify_1_7_2 => "1.7.2", "532b3f888abf", "1.7.2";
    dify_1_9_2 => "1.9.2", "ae662b25d9bc", "1.9.2";
    dify_1_13_3 => "1.13.3", "6b5f9f8b1a2c", "1.13.3";
    dify_1_15_0 => "1.15.0", "d9e8f7a6b5c4", "1.15.0";
}

/// The release knowledge in `dify::shape` (which tables and columns each release lacks)
/// agrees with every release's real schema.
#[test]
fn the_release_tables_and_columns_upkeep_knows_match_the_schemas() {
    use upkeep::dify::shape::{COLUMNS_ABSENT_UP_TO, COLUMNS_DROPPED_AFTER, TABLES_ABSENT_UP_TO};
    fn version(v: &str) -> Vec<u32> {
        v.split('.').filter_map(|p| p.parse().ok()).collect()
    }
    /// The `CREATE TABLE` block of `table`, if the schema has one.
    fn block<'a>(sql: &'a str, table: &str) -> Option<&'a str> {
        let start = sql.find(&format!("CREATE TABLE public.{table} ("))?;
        let rest = &sql[start..];
        Some(&rest[..rest.find("\n);").unwrap_or(rest.len())])
    }
    let mut checked = 0;
    for v in [
        "0.15.3", "1.0.1", "1.4.3", "1.7.2", "1.9.2", "1.13.3", "1.15.0",
    ] {
        let path = format!("{}/{v}.sql", pg::RELEASE_SCHEMAS);
        let Ok(sql) = std::fs::read_to_string(&path) else {
            assert!(std::env::var_os("CI").is_none(), "{path} is required in CI");
            continue;
        };
        for (table, up_to) in TABLES_ABSENT_UP_TO {
            let absent = version(v) <= version(up_to);
            assert_eq!(block(&sql, table).is_none(), absent, "{v}: table {table}");
        }
        for (table, column, up_to) in COLUMNS_ABSENT_UP_TO {
            let Some(b) = block(&sql, table) else {
                continue;
            };
            let absent = version(v) <= version(up_to);
            let has = b.contains(&format!("\n    {column} "));
            assert_eq!(!has, absent, "{v}: column {table}.{column}");
        }
        for (table, column, last) in COLUMNS_DROPPED_AFTER {
            let b = block(&sql, table).unwrap_or_default();
            let has = b.contains(&format!("\n    {column} "));
            assert_eq!(
                has,
                version(v) <= version(last),
                "{v}: column {table}.{column}"
            );
        }
        checked += 1;
    }
    eprintln!("checked {checked} release schemas");
}
