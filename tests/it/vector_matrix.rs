//! `vector_migrate` over pairs of stores, one scenario for every pair: two knowledge bases
//! (one with a record only in Dify's cache; one parent-child with image attachments and
//! summaries) and an app's annotation replies, on the source as Dify keeps them there. The
//! dry run writes nothing; a daemon killed at a named point is resumed by another; the target
//! then holds exactly each unit's records in Dify's layout for it, `index_struct` names it,
//! Dify's own filtered search returns the brute-force top 5; a second run adds nothing.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::daemon::{Options, TestDaemon};
use crate::support::dify_vectors::{
    REDIS_DB, annotation_app, attachments_and_summaries, binding, cache, dataset, exec,
    index_struct,
};
use crate::support::pg::{self, TestDb};
use crate::support::process::{rescuer_with, submit_to_a_doomed_daemon_with};
use crate::support::stores::{
    TestStore, assert_analyticdb_layout_is_difys, assert_holds_exactly,
    assert_milvus_layout_is_difys, assert_pgvector_layout_is_difys, assert_search_finds,
};
use upkeep::vector::store::VectorStore;

struct Scenario {
    db: TestDb,
    source: TestStore,
    target: TestStore,
    /// Knowledge bases, then the app.
    units: Vec<crate::support::dify_vectors::Ds>,
    dataset_binding: String,
    annotation_binding: String,
    /// The record only Dify's cache has.
    cached: String,
}

impl Scenario {
    async fn new(source: &str, target: &str) -> Scenario {
        let (db, source, target) = tokio::join!(
            pg::dify_database(),
            TestStore::start(source),
            TestStore::start(target)
        );
        let tenant = Uuid::new_v4();
        let (ds_binding, dataset_binding) = binding(&db, "dataset").await;
        let (app_binding, annotation_binding) = binding(&db, "annotation").await;
        let plain = dataset(&db, tenant, ds_binding, 45, false, 31).await;
        let parent_child = dataset(&db, tenant, ds_binding, 24, true, 32).await;
        let mut multimodal = dataset(&db, tenant, ds_binding, 12, false, 33).await;
        attachments_and_summaries(&db, &mut multimodal, tenant, 2, 3, 33).await;
        let app = annotation_app(&db, tenant, app_binding, 11, 34).await;
        let cached = plain.records.keys().nth(7).cloned().expect("a record");
        cache(&db, &plain.records[&cached], None).await;
        let units = vec![plain, parent_child, multimodal, app];
        for (i, unit) in units.iter().enumerate() {
            let annotations = i == units.len() - 1;
            let binding = if annotations {
                &annotation_binding
            } else {
                &dataset_binding
            };
            let skip: Vec<&str> = if i == 0 {
                vec![cached.as_str()]
            } else {
                vec![]
            };
            source.seed(unit, binding, annotations, &skip).await;
            if !annotations {
                exec(
                    &db,
                    "UPDATE public.datasets SET index_struct = $2 WHERE id = $1",
                    vec![json!(unit.id), json!(source.index_struct(unit, binding))],
                )
                .await;
            }
        }
        Scenario {
            db,
            source,
            target,
            units,
            dataset_binding,
            annotation_binding,
            cached,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = self.source.env();
        env.extend(self.target.env());
        env.extend([
            ("VECTOR_STORE", self.target.kind().to_string()),
            ("REDIS_HOST", "127.0.0.1".into()),
            ("REDIS_DB", REDIS_DB.to_string()),
        ]);
        env
    }

    /// A daemon with two workers and this scenario's env.
    async fn daemon(&self) -> TestDaemon {
        TestDaemon::start(
            &self.db,
            Options {
                env: self.env(),
                ..Options::default()
            },
        )
        .await
    }

    fn binding_of(&self, i: usize) -> (&str, bool) {
        if i == self.units.len() - 1 {
            (&self.annotation_binding, true)
        } else {
            (&self.dataset_binding, false)
        }
    }

    /// The target holds exactly every unit, datasets point at it, Dify's search finds them.
    async fn assert_moved(&self) {
        let store = self.target.open().await;
        for (i, unit) in self.units.iter().enumerate() {
            let (binding, annotations) = self.binding_of(i);
            let at = self.target.locate(unit, binding, annotations);
            let rebuilt: Vec<&str> = if i == 0 {
                vec![self.cached.as_str()]
            } else {
                vec![]
            };
            assert_holds_exactly(&store, &at, unit, &rebuilt).await;
            assert_search_finds(&store, &at, unit).await;
            if !annotations {
                assert_eq!(
                    index_struct(&self.db, unit.id).await,
                    self.target.index_struct(unit, binding),
                    "{} points at {}",
                    unit.id,
                    self.target.kind()
                );
            }
        }
        let at = self
            .target
            .locate(&self.units[0], &self.dataset_binding, false);
        match &self.target {
            TestStore::Milvus(m) => assert_milvus_layout_is_difys(m, &at.collection, false).await,
            TestStore::Pgvector(p) => {
                assert_pgvector_layout_is_difys(
                    p,
                    &at.collection,
                    crate::support::dify_vectors::DIM,
                )
                .await
            }
            TestStore::Analyticdb(a) => assert_analyticdb_layout_is_difys(a, &at.collection).await,
            _ => {}
        }
    }
}

async fn run(d: &TestDaemon, body: Value) -> Value {
    let (status, job) = d.submit(body).await;
    assert_eq!(status, 202, "{job}");
    d.wait_finished(job["id"].as_str().expect("id")).await
}

/// The whole scenario, with the first daemon killed (abort) at `failpoint`.
async fn migrate(source: &str, target: &str, failpoint: &str) {
    let s = Scenario::new(source, target).await;
    let env = s.env();
    let client = TestDaemon::start(
        &s.db,
        Options {
            workers: 1,
            env: env.clone(),
            ..Options::default()
        },
    )
    .await;
    let params = json!({"batch_size": 10, "concurrency": 2});

    // The dry run reads the source and writes nothing.
    let plan = run(
        &client,
        json!({"kind": "vector_migrate", "params": params, "dry_run": true}),
    )
    .await;
    assert_eq!(plan["state"], "succeeded", "{plan}");
    let planned: std::collections::BTreeMap<String, &Value> = plan["result"]["datasets"]
        .as_array()
        .expect("datasets")
        .iter()
        .map(|e| {
            let id = e["dataset_id"].as_str().or(e["app_id"].as_str());
            (id.unwrap_or_default().to_string(), e)
        })
        .collect();
    assert_eq!(planned.len(), s.units.len(), "{plan}");
    for (i, unit) in s.units.iter().enumerate() {
        let entry = planned[&unit.id.to_string()];
        assert_eq!(entry["expected"], unit.records.len(), "{entry}");
        let missing = if i == 0 { 1 } else { 0 };
        assert_eq!(entry["missing_vectors"], missing, "{entry}");
        assert_eq!(entry["missing_in_cache"], missing, "{entry}");
        assert_eq!(
            entry["source_points"],
            unit.records.len() - missing,
            "{entry}"
        );
    }
    let target = s.target.open().await;
    for (i, unit) in s.units.iter().enumerate() {
        let (binding, annotations) = s.binding_of(i);
        let at = s.target.locate(unit, binding, annotations);
        assert_eq!(
            target.describe(&at.collection).await.expect("describe"),
            None,
            "the dry run made {}",
            at.collection
        );
    }
    assert_notes(&s.target, &plan["result"]);
    client.stop().await;

    // A daemon dies at `failpoint`; another takes the job over after its lease.
    let body = json!({"kind": "vector_migrate", "params": params});
    let (client, id) = submit_to_a_doomed_daemon_with(&s.db, failpoint, &env, body).await;
    let rescuer = rescuer_with(&s.db, &env).await;
    let done = rescuer.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["result"]["switched"], s.units.len() - 1, "{done}");
    assert_notes(&s.target, &done["result"]);
    s.assert_moved().await;

    // Again: the datasets are on the target; the annotations are copied over themselves.
    let again = run(
        &rescuer,
        json!({"kind": "vector_migrate", "params": params}),
    )
    .await;
    assert_eq!(again["state"], "succeeded", "{again}");
    let outcomes = again["result"]["datasets"].as_array().expect("datasets");
    assert_eq!(outcomes.len(), 1, "only the app: {again}");
    s.assert_moved().await;
    let switches: i64 = sqlx::query_scalar("SELECT count(*) FROM upkeep.vector_switches")
        .fetch_one(&s.db.pool)
        .await
        .expect("switches");
    assert_eq!(
        switches,
        s.units.len() as i64 - 1,
        "each dataset switched once"
    );
    rescuer.stop().await;
    client.stop().await;
}

/// What the target lacks of Dify's layout is said, in the dry run and the result: the
/// AnalyticDB stand-in is plain Postgres, without `ann`; other targets lack nothing.
fn assert_notes(target: &TestStore, result: &Value) {
    let notes = result["target_notes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let said = |what: &str| {
        notes
            .iter()
            .any(|n| n.as_str().is_some_and(|n| n.contains(what)))
    };
    match target {
        TestStore::Analyticdb(_) => {
            assert!(said("no ann access method"), "{result}");
            assert!(said("plain PostgreSQL"), "{result}");
            assert!(!said("zh_cn"), "the stand-in has zh_cn: {result}");
        }
        _ => assert!(notes.is_empty(), "{result}"),
    }
}

// Every pair among Weaviate, Qdrant, Milvus and pgvector at least once each way, and
// AnalyticDB both ways, each killed at one of the three points.

#[tokio::test]
async fn weaviate_to_pgvector_killed_after_a_write() {
    migrate(
        "weaviate",
        "pgvector",
        "vector_migrate.batch_written=abort@4",
    )
    .await;
}

#[tokio::test]
async fn pgvector_to_weaviate_killed_mid_dataset() {
    migrate(
        "pgvector",
        "weaviate",
        "vector_migrate.checkpointed=abort@5",
    )
    .await;
}

#[tokio::test]
async fn qdrant_to_pgvector_killed_after_verification() {
    migrate("qdrant", "pgvector", "vector_migrate.verified=abort@2").await;
}

#[tokio::test]
async fn pgvector_to_qdrant_killed_after_a_write() {
    migrate("pgvector", "qdrant", "vector_migrate.batch_written=abort@4").await;
}

#[tokio::test]
async fn milvus_to_pgvector_killed_mid_dataset() {
    migrate("milvus", "pgvector", "vector_migrate.checkpointed=abort@5").await;
}

#[tokio::test]
async fn pgvector_to_milvus_killed_after_verification() {
    migrate("pgvector", "milvus", "vector_migrate.verified=abort@2").await;
}

#[tokio::test]
async fn qdrant_to_weaviate_killed_after_verification() {
    migrate("qdrant", "weaviate", "vector_migrate.verified=abort@1").await;
}

#[tokio::test]
async fn milvus_to_weaviate_killed_after_a_write() {
    migrate("milvus", "weaviate", "vector_migrate.batch_written=abort@4").await;
}

#[tokio::test]
async fn weaviate_to_qdrant_killed_mid_dataset() {
    migrate("weaviate", "qdrant", "vector_migrate.checkpointed=abort@5").await;
}

#[tokio::test]
async fn weaviate_to_analyticdb_killed_after_a_write() {
    migrate(
        "weaviate",
        "analyticdb",
        "vector_migrate.batch_written=abort@4",
    )
    .await;
}

#[tokio::test]
async fn analyticdb_to_pgvector_killed_mid_dataset() {
    migrate(
        "analyticdb",
        "pgvector",
        "vector_migrate.checkpointed=abort@5",
    )
    .await;
}

#[tokio::test]
async fn weaviate_to_milvus_killed_after_a_write() {
    migrate("weaviate", "milvus", "vector_migrate.batch_written=abort@4").await;
}

#[tokio::test]
async fn weaviate_to_milvus_killed_after_verification() {
    migrate("weaviate", "milvus", "vector_migrate.verified=abort@1").await;
}

#[tokio::test]
async fn weaviate_to_milvus_killed_mid_dataset() {
    migrate("weaviate", "milvus", "vector_migrate.checkpointed=abort@5").await;
}

#[tokio::test]
async fn milvus_to_qdrant_killed_after_verification() {
    migrate("milvus", "qdrant", "vector_migrate.verified=abort@2").await;
}

#[tokio::test]
async fn milvus_to_qdrant_killed_after_a_write() {
    migrate("milvus", "qdrant", "vector_migrate.batch_written=abort@4").await;
}

#[tokio::test]
async fn milvus_to_qdrant_killed_mid_dataset() {
    migrate("milvus", "qdrant", "vector_migrate.checkpointed=abort@5").await;
}

#[tokio::test]
async fn qdrant_to_milvus_killed_mid_dataset() {
    migrate("qdrant", "milvus", "vector_migrate.checkpointed=abort@5").await;
}

#[tokio::test]
async fn qdrant_to_milvus_killed_after_verification() {
    migrate("qdrant", "milvus", "vector_migrate.verified=abort@2").await;
}

#[tokio::test]
async fn qdrant_to_milvus_killed_after_a_write() {
    migrate("qdrant", "milvus", "vector_migrate.batch_written=abort@6").await;
}

/// Milvus failing mid-copy (every insert after the third answers UNAVAILABLE) fails the
/// datasets it was writing after retries; they keep their old store. Once Milvus answers
/// again, `retry` ends exactly like a clean run.
#[tokio::test]
async fn milvus_going_away_mid_copy_fails_datasets_that_keep_their_store_until_a_retry() {
    let s = Scenario::new("weaviate", "milvus").await;
    let TestStore::Milvus(m) = &s.target else {
        panic!("the target is Milvus")
    };
    let d = s.daemon().await;
    m.fault("Insert", "UNAVAILABLE", 3, 1_000_000).await;
    let job = run(
        &d,
        json!({"kind": "vector_migrate", "params": {"batch_size": 10, "concurrency": 4}}),
    )
    .await;
    assert_eq!(job["state"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "datasets_failed", "{job}");
    let failed: Vec<&Value> = job["result"]["datasets"]
        .as_array()
        .expect("datasets")
        .iter()
        .filter(|o| o["error"].is_string())
        .collect();
    assert!(!failed.is_empty(), "{job}");
    for o in &failed {
        let error = o["error"].as_str().unwrap_or_default();
        assert!(error.contains("milvus insert"), "{error}");
        if let Some(id) = o["dataset_id"].as_str() {
            let id = Uuid::parse_str(id).expect("uuid");
            assert!(index_struct(&s.db, id).await.contains("weaviate"), "{o}");
        }
    }
    m.resume_serving().await;
    let id = job["id"].as_str().expect("id");
    let (status, body) = d
        .call(reqwest::Method::POST, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let done = d.wait_finished(id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    s.assert_moved().await;
    d.stop().await;
}

/// A source holding one record twice (two Weaviate objects with the same `doc_id`, as a
/// failed Dify re-index can leave): Milvus, whose writes are not keyed by `doc_id`, still
/// ends with it once, on the uninterrupted first pass that skips look-ups.
#[tokio::test]
async fn a_record_twice_in_the_source_lands_once_in_milvus() {
    let s = Scenario::new("weaviate", "milvus").await;
    let TestStore::Weaviate(w) = &s.source else {
        panic!("the source is Weaviate")
    };
    let unit = &s.units[1];
    let rec = unit.records.values().nth(3).expect("a record");
    let mut props = rec.metadata.clone();
    props.insert("text".into(), json!(rec.text));
    let object = json!({"class": crate::support::dify_vectors::class_name(unit.id),
                        "id": Uuid::new_v4(), "properties": props,
                        "vectors": {"default": rec.vector}});
    w.send(
        reqwest::Method::POST,
        "/v1/batch/objects",
        json!({"objects": [object]}),
    )
    .await;
    let d = s.daemon().await;
    // One page holds both copies: the hardest case, Milvus keeping both rows of one insert.
    let job = run(
        &d,
        json!({"kind": "vector_migrate", "params": {"batch_size": 100}}),
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    s.assert_moved().await;
    d.stop().await;
}

/// The same record twice in the source, in two pages written at once (pages of one object,
/// the copy's id right after the original's): the second page waits for the first, so
/// Milvus's look-up finds the first row and replaces it; the record lands once.
#[tokio::test]
async fn a_record_twice_in_pages_in_flight_together_lands_once_in_milvus() {
    let s = Scenario::new("weaviate", "milvus").await;
    let TestStore::Weaviate(w) = &s.source else {
        panic!("the source is Weaviate")
    };
    let unit = &s.units[1];
    let (doc_id, rec) = unit.records.iter().nth(3).expect("a record");
    let class = crate::support::dify_vectors::class_name(unit.id);
    let listed = w
        .get(&format!("/v1/objects?class={class}&limit=1000"))
        .await;
    let original = listed["objects"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["properties"]["doc_id"] == json!(doc_id))
        .and_then(|o| o["id"].as_str())
        .and_then(|id| Uuid::parse_str(id).ok())
        .expect("the record's object");
    let next = Uuid::from_u128(original.as_u128() + 1);
    let mut props = rec.metadata.clone();
    props.insert("text".into(), json!(rec.text));
    let object = json!({"class": class, "id": next, "properties": props,
                        "vectors": {"default": rec.vector}});
    w.send(
        reqwest::Method::POST,
        "/v1/batch/objects",
        json!({"objects": [object]}),
    )
    .await;
    let d = s.daemon().await;
    let job = run(
        &d,
        json!({"kind": "vector_migrate", "params": {"batch_size": 1}}),
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    s.assert_moved().await;
    d.stop().await;
}

/// Milvus writes a page of the fast first pass but its answer is lost (UNAVAILABLE after the
/// insert landed): the retry looks the page's `doc_id`s up and replaces what landed, so each
/// record is there once.
#[tokio::test]
async fn a_lost_answer_to_a_milvus_insert_duplicates_nothing() {
    let s = Scenario::new("weaviate", "milvus").await;
    let TestStore::Milvus(m) = &s.target else {
        panic!("the target is Milvus")
    };
    m.fault_after_writing("Insert", "UNAVAILABLE", 2, 2).await;
    let d = s.daemon().await;
    let job = run(
        &d,
        json!({"kind": "vector_migrate", "params": {"batch_size": 10}}),
    )
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    s.assert_moved().await;
    d.stop().await;
}
