//! `vector_migrate` Weaviate → Qdrant on Dify-shaped data (`support::dify_vectors`): datasets
//! in both Weaviate layouts sharing one Qdrant binding collection, parent-child with stray
//! parent vectors, multimodal attachments and summaries, annotation replies, records only the
//! `embeddings` cache or an embeddings endpoint has, and one missing everywhere. Kills at each
//! named point, stores failing mid-run, rollback and bad params.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::daemon::{Options, TestDaemon};
use crate::support::dify_vectors::{
    DIM, Ds, REDIS_DB, annotation_app, assert_dify_layout, assert_exactly,
    assert_search_matches_brute_force, at, attachments_and_summaries, binding, cache, class_name,
    dataset, index_struct, load, on_qdrant, vector_env,
};
use crate::support::embeddings_server::{self, EmbeddingsServer};
use crate::support::pg::{self, TestDb};
use crate::support::vector_servers::{QdrantStandin, WeaviateServer};
use upkeep::vector::store::VectorTarget;

async fn daemon(db: &TestDb, w: &WeaviateServer, q: &QdrantStandin) -> TestDaemon {
    TestDaemon::start(
        db,
        Options {
            env: vector_env(w, q),
            ..Options::default()
        },
    )
    .await
}

/// A Dify database, the Weaviate server and a Qdrant stand-in answering as `qdrant`.
async fn stores(qdrant: &str) -> (TestDb, WeaviateServer, QdrantStandin) {
    (
        pg::dify_database().await,
        WeaviateServer::start().await,
        QdrantStandin::start(qdrant).await,
    )
}

/// Retries the job and waits for its end.
async fn retry(d: &TestDaemon, id: &str) -> Value {
    let (status, body) = d
        .call(reqwest::Method::POST, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    d.wait_finished(id).await
}

/// Submits, waits, returns the finished job.
async fn run(d: &TestDaemon, body: Value) -> Value {
    let (status, job) = d.submit(body).await;
    assert_eq!(status, 202, "{job}");
    d.wait_finished(job["id"].as_str().expect("id")).await
}

/// The job's outcomes by dataset (or app) id.
fn outcomes(job: &Value) -> BTreeMap<String, Value> {
    job["result"]["datasets"]
        .as_array()
        .expect("datasets")
        .iter()
        .map(|o| {
            let id = o["dataset_id"].as_str().or(o["app_id"].as_str());
            (id.unwrap_or_default().to_string(), o.clone())
        })
        .collect()
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1/{REDIS_DB}"))
        .expect("redis")
        .get_multiplexed_async_connection()
        .await
        .expect("redis up")
}

#[tokio::test]
async fn weaviate_to_qdrant_copies_verifies_switches_and_fails_only_the_incomplete_dataset() {
    let (db, w, q) = stores("1.8.3").await;
    let tenant = Uuid::new_v4();
    let (binding, shared) = binding(&db, "dataset").await;
    let legacy = dataset(&db, tenant, binding, 120, false, 1).await;
    let named = dataset(&db, tenant, binding, 80, false, 2).await;
    let parent_child = dataset(&db, tenant, binding, 40, true, 3).await;
    let cached = dataset(&db, tenant, binding, 30, false, 4).await;
    let broken = dataset(&db, tenant, binding, 20, false, 5).await;
    load(&w, &legacy, false, &[], 0).await;
    load(&w, &named, true, &[], 0).await;
    load(&w, &parent_child, false, &[], 1).await;
    let only_in_cache = cached.records.keys().next().cloned().expect("a record");
    load(&w, &cached, false, &[&only_in_cache], 0).await;
    cache(&db, &cached.records[&only_in_cache], None).await;
    let lost = broken.records.keys().next().cloned().expect("a record");
    load(&w, &broken, false, &[&lost], 0).await;

    let mut con = redis().await;
    let flag = format!("vector_indexing_{shared}");
    let _: () = redis::cmd("SET")
        .arg(&flag)
        .arg(1)
        .query_async(&mut con)
        .await
        .expect("set");

    let d = daemon(&db, &w, &q).await;
    let all = json!([legacy.id, named.id, parent_child.id, cached.id, broken.id]);
    let plan = run(
        &d,
        json!({"kind": "vector_migrate", "params": {"dataset_ids": all}, "dry_run": true}),
    )
    .await;
    assert_eq!(plan["state"], "succeeded", "{plan}");
    let planned = outcomes(&plan);
    assert_eq!(planned.len(), 5);
    let p = &planned[&legacy.id.to_string()];
    assert_eq!(
        (p["expected"].clone(), p["dimension"].clone()),
        (json!(120), json!(DIM))
    );
    assert_eq!(p["source_points"], 120);
    assert!(
        p["estimated_bytes"].as_u64().unwrap_or(0) > 120 * DIM as u64 * 4,
        "{p}"
    );
    assert_eq!(planned[&parent_child.id.to_string()]["strays"], 1);
    let p = &planned[&cached.id.to_string()];
    assert_eq!(
        (p["missing_vectors"].clone(), p["missing_in_cache"].clone()),
        (json!(1), json!(1))
    );
    let p = &planned[&broken.id.to_string()];
    assert_eq!(
        (p["missing_vectors"].clone(), p["missing_in_cache"].clone()),
        (json!(1), json!(0))
    );
    assert!(
        index_struct(&db, legacy.id).await.contains("weaviate"),
        "a dry run switches nothing"
    );
    assert_eq!(q.layout().await, json!({}), "a dry run writes nothing");

    let done = run(
        &d,
        json!({"kind": "vector_migrate", "params": {"dataset_ids": all, "batch_size": 50, "concurrency": 3}}),
    )
    .await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "datasets_failed", "{done}");
    let got = outcomes(&done);
    for ds in [&legacy, &named, &parent_child, &cached] {
        let o = &got[&ds.id.to_string()];
        assert_eq!(
            (o["verified"].clone(), o["switched"].clone()),
            (json!(true), json!(true)),
            "{o}"
        );
        assert_eq!(index_struct(&db, ds.id).await, on_qdrant(&shared));
        assert_search_matches_brute_force(&q, &shared, ds).await;
    }
    assert_eq!(got[&parent_child.id.to_string()]["not_copied_strays"], 1);
    assert_eq!(got[&cached.id.to_string()]["from_cache"], 1);
    let o = &got[&broken.id.to_string()];
    assert_eq!(o["switched"], false, "{o}");
    assert!(o["missing"].to_string().contains(&lost), "{o}");
    assert!(index_struct(&db, broken.id).await.contains("weaviate"));
    // Progress in points: every record of the verified datasets and all but one of the other.
    let total: usize = [&legacy, &named, &parent_child, &cached, &broken]
        .iter()
        .map(|d| d.records.len())
        .sum();
    assert_eq!(done["progress"]["unit"], "points", "{}", done["progress"]);
    assert_eq!(done["progress"]["total"], total, "{}", done["progress"]);
    assert_eq!(done["progress"]["done"], total - 1, "{}", done["progress"]);
    let rate = done["progress"]["rate_per_s"].as_f64().unwrap_or(0.0);
    assert!(rate > 0.0, "a rate: {}", done["progress"]);
    // Three datasets at a time: some copied while another was being copied.
    let spans: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> = got
        .values()
        .map(|o| {
            let at = |k: &str| {
                serde_json::from_value(o[k].clone()).unwrap_or_else(|e| panic!("{k}: {e} in {o}"))
            };
            (at("started_at"), at("finished_at"))
        })
        .collect();
    let overlapping = spans
        .iter()
        .enumerate()
        .any(|(i, a)| spans.iter().skip(i + 1).any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(overlapping, "datasets ran one after another: {spans:?}");

    // The failed dataset's copied points stay (Upkeep wrote them; a retry finishes them), so
    // the collection is checked group by group, the broken one among them.
    let mut broken_copied = Ds {
        id: broken.id,
        records: broken.records.clone(),
    };
    broken_copied.records.remove(&lost);
    assert_exactly(
        &q,
        &shared,
        &[&legacy, &named, &parent_child, &cached, &broken_copied],
        &[&only_in_cache],
    )
    .await;
    let layout = q.layout().await;
    assert_dify_layout(&layout, &shared, DIM);
    assert_eq!(
        layout.as_object().map(|m| m.len()),
        Some(1),
        "one shared collection: {layout}"
    );
    let exists: bool = redis::cmd("EXISTS")
        .arg(&flag)
        .query_async(&mut con)
        .await
        .expect("exists");
    assert!(!exists, "Dify's collection flag is cleared");
    let switches: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM upkeep.vector_switches WHERE previous LIKE '%weaviate%'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("switches");
    assert_eq!(switches, 4);

    // Rollback: back to exactly the old index_struct, no data touched in either store.
    let rollback = json!({"kind": "vector_rollback", "params": {"dataset_ids": [legacy.id]}});
    let mut preview = rollback.clone();
    preview["dry_run"] = json!(true);
    let preview = run(&d, preview).await;
    assert_eq!(
        preview["result"]["datasets"][0]["dataset_id"],
        legacy.id.to_string(),
        "{preview}"
    );
    assert!(
        preview["result"]["datasets"][0]["back_to"]
            .as_str()
            .is_some_and(|s| s.contains("weaviate")),
        "{preview}"
    );
    for expect in ["restored", "already_restored"] {
        let done = run(&d, rollback.clone()).await;
        assert_eq!(done["result"]["datasets"][0]["state"], expect, "{done}");
    }
    assert_eq!(
        index_struct(&db, legacy.id).await,
        format!(
            "{{\"type\": \"weaviate\", \"vector_store\": {{\"class_prefix\": \"{}\"}}}}",
            class_name(legacy.id)
        )
    );
    let store = q.store().await;
    assert_eq!(
        store
            .count(&at(&shared, &legacy.id.to_string()))
            .await
            .expect("count"),
        120
    );
    let (status, body) = d
        .submit(json!({"kind": "vector_rollback", "params": {"dataset_ids": [broken.id]}}))
        .await;
    assert_eq!(
        (status, body["field"].clone()),
        (400, json!("params.dataset_ids[0]")),
        "{body}"
    );
    d.stop().await;
}

#[tokio::test]
async fn annotations_attachments_and_summaries_move_with_every_metadata_key() {
    let (db, w, q) = stores("1.13.0").await;
    let tenant = Uuid::new_v4();
    let (kb_binding, kb_collection) = binding(&db, "dataset").await;
    let (app_binding, app_collection) = binding(&db, "annotation").await;
    let mut multimodal = dataset(&db, tenant, kb_binding, 30, false, 11).await;
    attachments_and_summaries(&db, &mut multimodal, tenant, 3, 5, 11).await;
    load(&w, &multimodal, true, &[], 0).await;
    let app = annotation_app(&db, tenant, app_binding, 25, 12).await;
    // One annotation was added while Weaviate was down: only Dify's cache has it.
    let cached_annotation = app.records.keys().nth(3).cloned().expect("an annotation");
    load(&w, &app, false, &[&cached_annotation], 0).await;
    cache(&db, &app.records[&cached_annotation], None).await;
    // An attachment only the cache has: its key is the upload file id.
    let (image, image_rec) = multimodal
        .records
        .iter()
        .find(|(_, r)| r.metadata.get("doc_type") == Some(&json!("image")))
        .map(|(k, r)| (k.clone(), r.clone()))
        .expect("an image");
    let store_id = weaviate_id_of(&w, &multimodal, &image).await;
    delete_object(&w, &multimodal, &store_id).await;
    cache(&db, &image_rec, Some(&image)).await;

    let d = daemon(&db, &w, &q).await;
    let plan = run(
        &d,
        json!({"kind": "vector_migrate", "params": {}, "dry_run": true}),
    )
    .await;
    let planned = outcomes(&plan);
    assert_eq!(planned.len(), 2, "{plan}");
    assert_eq!(planned[&app.id.to_string()]["expected"], 25);
    assert_eq!(
        planned[&app.id.to_string()]["source"],
        format!("weaviate {}", class_name(app.id))
    );
    assert_eq!(
        planned[&app.id.to_string()]["target"],
        format!("qdrant {app_collection}")
    );
    assert_eq!(planned[&multimodal.id.to_string()]["expected"], 38);
    assert_eq!(planned[&multimodal.id.to_string()]["missing_in_cache"], 1);

    let done = run(
        &d,
        json!({"kind": "vector_migrate", "params": {"batch_size": 7}}),
    )
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let got = outcomes(&done);
    let o = &got[&app.id.to_string()];
    assert_eq!(
        (
            o["verified"].clone(),
            o["switched"].clone(),
            o["from_cache"].clone()
        ),
        (json!(true), json!(false), json!(1)),
        "{o}"
    );
    assert!(
        done["result"]["annotations"]
            .as_str()
            .unwrap_or_default()
            .contains("VECTOR_STORE=qdrant")
    );
    assert_eq!(got[&multimodal.id.to_string()]["from_cache"], 1);
    assert_eq!(
        index_struct(&db, multimodal.id).await,
        on_qdrant(&kb_collection)
    );
    assert_exactly(&q, &kb_collection, &[&multimodal], &[&image]).await;
    assert_exactly(&q, &app_collection, &[&app], &[&cached_annotation]).await;
    assert_search_matches_brute_force(&q, &app_collection, &app).await;
    assert_search_matches_brute_force(&q, &kb_collection, &multimodal).await;
    let layout = q.layout().await;
    assert_dify_layout(&layout, &kb_collection, DIM);
    assert_dify_layout(&layout, &app_collection, DIM);
    // Qdrant 1.13 reads `dense`; the stand-in would have stored empty vectors otherwise.
    assert_eq!(
        layout[&app_collection]["async_errors"],
        json!([]),
        "{layout}"
    );

    // Run again: everything is on the target, nothing to do.
    let again = run(
        &d,
        json!({"kind": "vector_migrate", "params": {"scope": "knowledge"}}),
    )
    .await;
    assert_eq!(again["result"]["datasets"], json!([]), "{again}");
    d.stop().await;
}

/// The Weaviate object id of a record of a named-layout class (ids are not doc ids there).
async fn weaviate_id_of(w: &WeaviateServer, ds: &Ds, doc_id: &str) -> String {
    let query = format!(
        "{{ Get {{ {}(where: {{path: [\"doc_id\"], operator: Equal, valueText: \"{doc_id}\"}}) {{ _additional {{ id }} }} }} }}",
        class_name(ds.id)
    );
    let answer = w
        .send(
            reqwest::Method::POST,
            "/v1/graphql",
            json!({ "query": query }),
        )
        .await;
    answer["data"]["Get"][class_name(ds.id)][0]["_additional"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no object for {doc_id}: {answer}"))
        .to_string()
}

async fn delete_object(w: &WeaviateServer, ds: &Ds, id: &str) {
    let url = format!("{}/v1/objects/{}/{id}", w.url, class_name(ds.id));
    let status = reqwest::Client::new()
        .delete(url)
        .send()
        .await
        .expect("delete")
        .status();
    assert_eq!(status, 204);
}

#[tokio::test]
async fn reembeds_what_neither_the_source_nor_the_cache_has_and_an_endpoint_outage_fails_the_dataset()
 {
    let (db, w, q) = stores("1.8.3").await;
    let (binding, shared) = binding(&db, "dataset").await;
    let ds = dataset(&db, Uuid::new_v4(), binding, 40, false, 21).await;
    let lost: Vec<String> = ds.records.keys().skip(5).take(3).cloned().collect();
    let skip: Vec<&str> = lost.iter().map(String::as_str).collect();
    load(&w, &ds, false, &skip, 0).await;
    let endpoint = EmbeddingsServer::start(
        lost.iter()
            .map(|id| (ds.records[id].text.clone(), ds.records[id].vector.clone()))
            .collect::<HashMap<_, _>>(),
    )
    .await;
    let d = daemon(&db, &w, &q).await;
    endpoint.fail(true);
    let params = json!({"kind": "vector_migrate", "params": {
        "dataset_ids": [ds.id], "missing_vectors": "reembed",
        "embedding_endpoint": {"url": endpoint.url, "api_key": embeddings_server::KEY}}});
    let (status, job) = d.submit(params).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(
        job["params"]["embedding_endpoint"]["api_key"], "***",
        "{job}"
    );
    let id = job["id"].as_str().expect("id").to_string();
    let failed = d.wait_finished(&id).await;
    assert_eq!(failed["error"]["code"], "datasets_failed", "{failed}");
    let o = &failed["result"]["datasets"][0];
    assert!(o["error"].to_string().contains("overloaded"), "{o}");
    assert!(
        index_struct(&db, ds.id).await.contains("weaviate"),
        "still on Weaviate"
    );
    assert!(endpoint.requests() >= 2, "retried");

    endpoint.fail(false);
    let done = retry(&d, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["datasets"][0]["reembedded"], 3, "{done}");
    assert_eq!(index_struct(&db, ds.id).await, on_qdrant(&shared));
    assert_exactly(&q, &shared, &[&ds], &skip).await;
    d.stop().await;
}

/// A daemon process killed (abort, as kill -9) at `failpoint`, then a rescuer: the end state
/// is exactly a clean run's.
async fn killed_at(failpoint: &str) {
    use crate::support::process::{rescuer_with, submit_to_a_doomed_daemon_with};
    let (db, w, q) = stores("1.8.3").await;
    let tenant = Uuid::new_v4();
    let (binding, shared) = binding(&db, "dataset").await;
    let first = dataset(&db, tenant, binding, 130, false, 7).await;
    let second = dataset(&db, tenant, binding, 70, true, 8).await;
    let third = dataset(&db, tenant, binding, 60, false, 9).await;
    load(&w, &first, false, &[], 0).await;
    load(&w, &second, true, &[], 2).await;
    let only_in_cache = third.records.keys().nth(10).cloned().expect("a record");
    load(&w, &third, true, &[&only_in_cache], 0).await;
    cache(&db, &third.records[&only_in_cache], None).await;
    let vector_env = vector_env(&w, &q);
    let body = json!({"kind": "vector_migrate", "params": {"batch_size": 20, "concurrency": 2}});
    let (client, id) = submit_to_a_doomed_daemon_with(&db, failpoint, &vector_env, body).await;
    assert!(
        index_struct(&db, first.id).await.contains("weaviate")
            || index_struct(&db, second.id).await.contains("weaviate")
            || index_struct(&db, third.id).await.contains("weaviate"),
        "the kill came before the last switch"
    );
    let rescuer = rescuer_with(&db, &vector_env).await;
    let done = rescuer.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["result"]["switched"], 3, "{done}");
    assert_eq!(
        outcomes(&done)[&third.id.to_string()]["from_cache"],
        1,
        "{done}"
    );
    assert_exactly(&q, &shared, &[&first, &second, &third], &[&only_in_cache]).await;
    for ds in [&first, &second, &third] {
        assert_eq!(index_struct(&db, ds.id).await, on_qdrant(&shared));
    }
    let switches: i64 = sqlx::query_scalar("SELECT count(*) FROM upkeep.vector_switches")
        .fetch_one(&db.pool)
        .await
        .expect("switches");
    assert_eq!(switches, 3, "each dataset switched once");
    rescuer.stop().await;
    client.stop().await;
}

#[tokio::test]
async fn killed_after_a_write_before_its_checkpoint_the_rerun_ends_like_a_clean_run() {
    killed_at("vector_migrate.batch_written=abort@5").await;
}

#[tokio::test]
async fn killed_mid_dataset_after_a_checkpoint_the_rerun_ends_like_a_clean_run() {
    killed_at("vector_migrate.checkpointed=abort@4").await;
}

#[tokio::test]
async fn killed_after_verification_before_the_switch_the_rerun_ends_like_a_clean_run() {
    killed_at("vector_migrate.verified=abort@1").await;
}

#[tokio::test]
async fn qdrant_failing_mid_run_fails_that_dataset_which_keeps_weaviate_until_a_retry() {
    let (db, w, q) = stores("1.8.3").await;
    let (binding, shared) = binding(&db, "dataset").await;
    let ds = dataset(&db, Uuid::new_v4(), binding, 120, false, 9).await;
    load(&w, &ds, true, &[], 0).await;
    let d = daemon(&db, &w, &q).await;
    // Qdrant takes the first batch, then answers UNAVAILABLE to every write.
    q.fail_after(1, "UNAVAILABLE", &["Upsert"]).await;
    let params =
        json!({"kind": "vector_migrate", "params": {"dataset_ids": [ds.id], "batch_size": 50}});
    let (status, job) = d.submit(params).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    let failed = d.wait_finished(&id).await;
    assert_eq!(failed["error"]["code"], "datasets_failed", "{failed}");
    let outcome = &failed["result"]["datasets"][0];
    assert!(
        outcome["error"]
            .to_string()
            .to_lowercase()
            .contains("unavailable"),
        "{outcome}"
    );
    assert_eq!(outcome["switched"], false);
    assert!(
        index_struct(&db, ds.id).await.contains("weaviate"),
        "still on Weaviate"
    );

    q.heal().await;
    // The retry tries the failed dataset again and finishes it.
    let done = retry(&d, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["switched"], 1, "{done}");
    assert_exactly(&q, &shared, &[&ds], &[]).await;
    assert_eq!(index_struct(&db, ds.id).await, on_qdrant(&shared));
    d.stop().await;
}

#[tokio::test]
async fn weaviate_going_away_mid_copy_fails_the_dataset_and_the_retry_resumes_at_its_cursor() {
    let (db, w, q) = stores("1.8.3").await;
    let (binding, shared) = binding(&db, "dataset").await;
    let ds = dataset(&db, Uuid::new_v4(), binding, 300, false, 31).await;
    load(&w, &ds, false, &[], 0).await;
    let d = daemon(&db, &w, &q).await;
    // Three listings answer, then every one is a 503: the server went away mid-copy.
    w.send(
        reqwest::Method::POST,
        "/__fault",
        json!({"fail_after": 3, "status": 503, "paths": ["/v1/objects"], "methods": ["GET"]}),
    )
    .await;
    let params =
        json!({"kind": "vector_migrate", "params": {"dataset_ids": [ds.id], "batch_size": 50}});
    let (status, job) = d.submit(params).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_string();
    let failed = d.wait_finished(&id).await;
    assert_eq!(failed["error"]["code"], "datasets_failed", "{failed}");
    let o = &failed["result"]["datasets"][0];
    assert!(o["error"].to_string().contains("503"), "{o}");
    assert!(index_struct(&db, ds.id).await.contains("weaviate"));
    let checkpoint: Value = sqlx::query_scalar("SELECT checkpoint FROM upkeep.jobs WHERE id = $1")
        .bind(Uuid::parse_str(&id).expect("uuid"))
        .fetch_one(&db.pool)
        .await
        .expect("checkpoint");
    let copied = checkpoint["current"][ds.id.to_string()]["copied"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        copied >= 50,
        "pages before the outage are checkpointed: {checkpoint}"
    );

    w.send(reqwest::Method::POST, "/__fault/clear", json!({}))
        .await;
    let before: Value = w.send(reqwest::Method::GET, "/__calls", Value::Null).await;
    let done = retry(&d, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let after: Value = w.send(reqwest::Method::GET, "/__calls", Value::Null).await;
    let listings = |calls: &Value| calls["calls"]["GET /v1/objects"].as_u64().unwrap_or(0);
    // 300 records in pages of 50: 7 listings (the last one empty) and one to look at the
    // class. Resumed at the cursor, the checkpointed pages are not listed again.
    let resumed = listings(&after) - listings(&before);
    assert!(
        resumed <= 8 - copied / 50,
        "{resumed} listings after {copied} points were checkpointed"
    );
    assert_exactly(&q, &shared, &[&ds], &[]).await;
    assert_eq!(index_struct(&db, ds.id).await, on_qdrant(&shared));
    d.stop().await;
}

#[tokio::test]
async fn what_dify_adds_edits_and_deletes_during_the_copy_is_brought_along() {
    use crate::support::dify_vectors::{Rec, exec, vector};
    let (db, w, q) = stores("1.8.3").await;
    let (binding, shared) = binding(&db, "dataset").await;
    let mut ds = dataset(&db, Uuid::new_v4(), binding, 200, false, 51).await;
    load(&w, &ds, false, &[], 0).await;
    let d = daemon(&db, &w, &q).await;
    // The fourth listing (the third page) stalls 5 s: Dify's edits land in the middle.
    w.send(
        reqwest::Method::POST,
        "/__fault",
        json!({"fail_after": 3, "stall_ms": 5000, "paths": ["/v1/objects"], "methods": ["GET"], "times": 1}),
    )
    .await;
    let params =
        json!({"kind": "vector_migrate", "params": {"dataset_ids": [ds.id], "batch_size": 20}});
    let (status, job) = d.submit(params).await;
    assert_eq!(status, 202, "{job}");
    pg::wait_until(
        &db,
        "SELECT EXISTS (SELECT 1 FROM upkeep.jobs j, jsonb_each(j.checkpoint->'current') c          WHERE (c.value->>'copied')::int >= 20)",
        std::time::Duration::from_secs(30),
    )
    .await;
    // The first two records (by doc_id) are copied by now: one is edited, one deleted, and
    // one segment is added, each as Dify does it (tables, cache, and the store in use).
    let mut ids = ds.records.keys().cloned();
    let (edited, deleted) = (ids.next().expect("a record"), ids.next().expect("another"));
    let class = class_name(ds.id);
    let document = ds.records[&edited].metadata["document_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let rec = ds.records.get_mut(&edited).expect("edited");
    rec.text = format!("edited during the copy {edited}");
    rec.vector = vector(515_151);
    rec.metadata.insert("doc_hash".into(), json!("hash-edited"));
    exec(
        &db,
        "UPDATE public.document_segments SET content = $2, index_node_hash = 'hash-edited'          WHERE index_node_id = $1::text",
        vec![json!(edited), json!(rec.text)],
    )
    .await;
    cache(&db, rec, None).await;
    let mut props = rec.metadata.clone();
    props.insert("text".into(), json!(rec.text));
    w.send(
        reqwest::Method::POST,
        "/v1/batch/objects",
        json!({"objects": [{"class": class, "id": edited, "properties": props, "vector": rec.vector}]}),
    )
    .await;
    exec(
        &db,
        "DELETE FROM public.document_segments WHERE index_node_id = $1::text",
        vec![json!(deleted)],
    )
    .await;
    ds.records.remove(&deleted);
    delete_object(&w, &ds, &deleted).await;
    let added = Uuid::new_v4().to_string();
    let metadata = json!({"doc_id": added, "doc_hash": "hash-added", "document_id": document,
                          "dataset_id": ds.id.to_string()});
    let new = Rec {
        text: "added during the copy".into(),
        vector: vector(616_161),
        metadata: metadata.as_object().cloned().unwrap_or_default(),
        extractor_keys: false,
    };
    exec(
        &db,
        "INSERT INTO public.document_segments (tenant_id, dataset_id, document_id, position, content,             word_count, tokens, hit_count, created_by, index_node_id, index_node_hash, status)          SELECT tenant_id, dataset_id, document_id, 9, $2, 4, 4, 0, created_by, $1::text, 'hash-added', 'completed'          FROM public.document_segments WHERE dataset_id = $3 LIMIT 1",
        vec![json!(added), json!(new.text), json!(ds.id)],
    )
    .await;
    cache(&db, &new, None).await;
    ds.records.insert(added.clone(), new);

    let done = d.wait_finished(job["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let o = &done["result"]["datasets"][0];
    assert_eq!(
        (
            o["changed_during_copy"].clone(),
            o["removed_during_copy"].clone()
        ),
        (json!(2), json!(1)),
        "{o}"
    );
    assert_eq!(o["expected"], 200, "{o}");
    assert_exactly(&q, &shared, &[&ds], &[&edited, &added]).await;
    assert_eq!(index_struct(&db, ds.id).await, on_qdrant(&shared));
    d.stop().await;
}

#[tokio::test]
async fn api_keys_reach_both_stores_and_a_wrong_one_fails_naming_the_store() {
    let db = pg::dify_database().await;
    let w = WeaviateServer::start_with_key(Some("weaviate-key")).await;
    let q = QdrantStandin::start_with_key("1.8.3", Some("qdrant-key")).await;
    let (binding, shared) = binding(&db, "dataset").await;
    let ds = dataset(&db, Uuid::new_v4(), binding, 30, false, 61).await;
    load(&w, &ds, true, &[], 0).await;
    let with_keys = |weaviate: &str, qdrant: &str| {
        let mut env = vector_env(&w, &q);
        env.push(("WEAVIATE_API_KEY", weaviate.to_string()));
        env.push(("QDRANT_API_KEY", qdrant.to_string()));
        Options {
            env,
            ..Options::default()
        }
    };
    let params = json!({"kind": "vector_migrate", "params": {"dataset_ids": [ds.id]}});

    let d = TestDaemon::start(&db, with_keys("weaviate-key", "wrong")).await;
    let failed = run(&d, params.clone()).await;
    assert_eq!(failed["error"]["code"], "target_unreachable", "{failed}");
    assert!(
        failed["error"]["message"].to_string().contains("qdrant"),
        "{failed}"
    );
    d.stop().await;

    let d = TestDaemon::start(&db, with_keys("wrong", "qdrant-key")).await;
    let failed = run(&d, params.clone()).await;
    assert_eq!(failed["error"]["code"], "datasets_failed", "{failed}");
    let o = &failed["result"]["datasets"][0];
    assert!(o["error"].to_string().contains("401"), "{o}");
    assert!(index_struct(&db, ds.id).await.contains("weaviate"));
    d.stop().await;

    let d = TestDaemon::start(&db, with_keys("weaviate-key", "qdrant-key")).await;
    let done = run(&d, params).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_exactly(&q, &shared, &[&ds], &[]).await;
    assert_eq!(index_struct(&db, ds.id).await, on_qdrant(&shared));
    d.stop().await;
}

#[tokio::test]
async fn points_upkeep_did_not_write_fail_verification_and_stay() {
    let (db, w, q) = stores("1.8.3").await;
    let (binding, shared) = binding(&db, "dataset").await;
    let ds = dataset(&db, Uuid::new_v4(), binding, 30, false, 41).await;
    load(&w, &ds, false, &[], 0).await;
    // A half-finished `flask vdb-migrate` left a parent vector in the dataset's group.
    let store = q.store().await;
    store
        .ensure(&at(&shared, ""), DIM)
        .await
        .expect("collection");
    let leftover = Uuid::new_v4().to_string();
    let point = upkeep::vector::store::Point {
        id: leftover.clone(),
        vector: crate::support::dify_vectors::vector(4242),
        text: "a parent segment".into(),
        metadata: json!({"doc_id": leftover})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    store
        .write(&at(&shared, &ds.id.to_string()), &[point])
        .await
        .expect("leftover");
    let d = daemon(&db, &w, &q).await;
    let failed = run(
        &d,
        json!({"kind": "vector_migrate", "params": {"dataset_ids": [ds.id]}}),
    )
    .await;
    assert_eq!(failed["error"]["code"], "datasets_failed", "{failed}");
    let o = &failed["result"]["datasets"][0];
    assert!(o["error"].to_string().contains(&leftover), "{o}");
    assert_eq!(
        (o["verified"].clone(), o["switched"].clone()),
        (json!(false), json!(false))
    );
    assert!(index_struct(&db, ds.id).await.contains("weaviate"));
    let kept = store
        .read_back(&at(&shared, ""), std::slice::from_ref(&leftover))
        .await
        .expect("get");
    assert_eq!(kept.len(), 1, "the leftover stays");
    assert_eq!(
        store
            .count(&at(&shared, &ds.id.to_string()))
            .await
            .expect("count"),
        31
    );
    d.stop().await;
}

#[tokio::test]
async fn bad_params_name_the_field_and_queue_nothing() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(
        &db,
        Options {
            env: vec![
                ("VECTOR_STORE", "qdrant".into()),
                ("QDRANT_URL", "http://127.0.0.1:6333".into()),
            ],
            ..Options::default()
        },
    )
    .await;
    // An app with annotation reply on, and no other store in use to read it from.
    let tenant = Uuid::new_v4();
    let (app_binding, _) = binding(&db, "annotation").await;
    annotation_app(&db, tenant, app_binding, 1, 1).await;
    let unknown = Uuid::new_v4();
    for (params, field) in [
        (json!({"batch_size": 0}), "params.batch_size"),
        (json!({"batch_size": 5000}), "params.batch_size"),
        (json!({"dataset_ids": ["x"]}), "params.dataset_ids[0]"),
        (json!({"dataset_ids": [unknown]}), "params.dataset_ids[0]"),
        (json!({"tenant_ids": []}), "params.tenant_ids"),
        (
            json!({"missing_vectors": "guess"}),
            "params.missing_vectors",
        ),
        (
            json!({"target": {"type": "pinecone"}}),
            "params.target.type",
        ),
        (json!({"target": {"type": "qdrant"}}), "params.target"),
        // AnalyticDB's OpenAPI mode: refused, saying SQL access is needed.
        (
            json!({"target": {"type": "analyticdb", "key_id": "ak", "instance_id": "gp-1"}}),
            "params.target.host",
        ),
        (
            json!({"target": {"type": "analyticdb", "host": "gp-test.aliyuncs.com"}}),
            "params.target.account",
        ),
        (
            json!({"source": {"type": "qdrant", "url": "http://127.0.0.1:6333"}}),
            "params.source",
        ),
        (json!({"scope": "everything"}), "params.scope"),
        (
            json!({"scope": "annotation", "dataset_ids": [unknown]}),
            "params.dataset_ids",
        ),
        (
            json!({"scope": "knowledge", "app_ids": [unknown]}),
            "params.app_ids",
        ),
        (json!({"app_ids": [unknown]}), "params.app_ids[0]"),
        // Annotation replies have no index_struct and only the target is in use.
        (json!({"scope": "annotation"}), "params.source"),
        (json!({"concurrency": 0}), "params.concurrency"),
        (json!({"concurrency": 33}), "params.concurrency"),
        (
            json!({"missing_vectors": "reembed"}),
            "params.embedding_endpoint",
        ),
        (
            json!({"missing_vectors": "reembed", "embedding_endpoint": {"url": "ftp://x"}}),
            "params.embedding_endpoint.url",
        ),
        (
            json!({"embedding_endpoint": {"url": "http://127.0.0.1:1/v1"}}),
            "params.embedding_endpoint",
        ),
        (
            json!({"missing_vectors": "reembed", "embedding_endpoint": {"url": "http://x", "key": "k"}}),
            "params.embedding_endpoint.key",
        ),
    ] {
        let (status, body) = d
            .submit(json!({"kind": "vector_migrate", "params": params}))
            .await;
        assert_eq!(status, 400, "{params}: {body}");
        assert_eq!(body["field"], field, "{params}: {body}");
    }
    let openapi = json!({"target": {"type": "analyticdb", "instance_id": "gp-1"}});
    let (_, body) = d
        .submit(json!({"kind": "vector_migrate", "params": openapi}))
        .await;
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("OpenAPI mode") && message.contains("ANALYTICDB_HOST"),
        "{body}"
    );
    let (_, jobs) = d.call(reqwest::Method::GET, "/v1/jobs", None).await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "{jobs}");
    d.stop().await;
}
