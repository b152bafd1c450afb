//! `vector_migrate` Weaviate → Qdrant on Dify-shaped data: datasets in both Weaviate layouts
//! sharing one Qdrant binding collection, a parent-child dataset whose Weaviate class also
//! holds parent vectors, a segment only Dify's `embeddings` cache has, and one missing
//! everywhere (that dataset fails and keeps pointing at Weaviate).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::daemon::{Options, TestDaemon};
use crate::support::pg::{self, TestDb};
use crate::support::vector_servers::{QdrantStandin, WeaviateServer};
use upkeep::vector::store::VectorStore;

const DIM: usize = 1536;

fn vector(seed: u64) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let v: Vec<f32> = (0..DIM).map(|_| rng.f32() - 0.5).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// Dify's cache format: `pickle.dumps(list_of_float64, protocol=5)`, without frames.
fn pickle(v: &[f32]) -> Vec<u8> {
    let mut out = vec![0x80, 5, b']', b'('];
    for x in v {
        out.push(b'G');
        out.extend_from_slice(&f64::from(*x).to_be_bytes());
    }
    out.extend_from_slice(b"e.");
    out
}

fn class_name(id: Uuid) -> String {
    format!("Vector_index_{}_Node", id.to_string().replace('-', "_"))
}

async fn exec(db: &TestDb, sql: &str, binds: Vec<Value>) {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_string()));
    for b in binds {
        q = match b {
            Value::String(s) => match Uuid::parse_str(&s) {
                Ok(u) => q.bind(u),
                Err(_) => q.bind(s),
            },
            Value::Bool(b) => q.bind(b),
            other => q.bind(other.to_string()),
        };
    }
    q.execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

struct Ds {
    id: Uuid,
    /// doc_id → (text, vector) of every record Dify's query path can return.
    records: BTreeMap<String, (String, Vec<f32>)>,
}

/// A dataset with one document of `n` records in Postgres; `hierarchical` makes them child
/// chunks of one parent segment.
async fn dataset(
    db: &TestDb,
    tenant: Uuid,
    binding: Uuid,
    n: usize,
    hierarchical: bool,
    seed: u64,
) -> Ds {
    let id = Uuid::new_v4();
    let doc = Uuid::new_v4();
    exec(
        db,
        "INSERT INTO public.datasets (id, tenant_id, name, indexing_technique, index_struct, created_by, \
            embedding_model, embedding_model_provider, collection_binding_id) \
         VALUES ($1, $2, 'kb', 'high_quality', $3, $2, 'text-embedding-3-small', 'langgenius/openai/openai', $4)",
        vec![json!(id), json!(tenant), json!(format!(
            "{{\"type\": \"weaviate\", \"vector_store\": {{\"class_prefix\": \"{}\"}}}}", class_name(id))), json!(binding)],
    )
    .await;
    let form = if hierarchical {
        "hierarchical_model"
    } else {
        "text_model"
    };
    exec(
        db,
        "INSERT INTO public.documents (id, tenant_id, dataset_id, position, data_source_type, batch, name, \
            created_from, created_by, indexing_status, doc_form) \
         VALUES ($1, $2, $3, 1, 'upload_file', 'b', 'doc.pdf', 'web', $2, 'completed', $4)",
        vec![json!(doc), json!(tenant), json!(id), json!(form)],
    )
    .await;
    let mut records = BTreeMap::new();
    let parent = Uuid::new_v4();
    if hierarchical {
        exec(
            db,
            "INSERT INTO public.document_segments (id, tenant_id, dataset_id, document_id, position, content, \
                word_count, tokens, hit_count, created_by, index_node_id, index_node_hash, status) \
             VALUES ($1, $2, $3, $4, 0, 'the parent', 2, 2, 0, $2, $5, 'h', 'completed')",
            vec![json!(parent), json!(tenant), json!(id), json!(doc), json!(Uuid::new_v4().to_string())],
        )
        .await;
    }
    for i in 0..n {
        let doc_id = Uuid::new_v4().to_string();
        let text = format!("record {i} of {id}");
        let sql = if hierarchical {
            "INSERT INTO public.child_chunks (tenant_id, dataset_id, document_id, segment_id, position, content, \
                word_count, index_node_id, index_node_hash, type, created_by) \
             VALUES ($1, $2, $3, $4, 0, $5, 3, $6, 'h', 'automatic', $1)"
        } else {
            "INSERT INTO public.document_segments (tenant_id, dataset_id, document_id, position, content, \
                word_count, tokens, hit_count, created_by, index_node_id, index_node_hash, status) \
             VALUES ($1, $2, $3, 0, $4, 3, 3, 0, $1, $5, 'h', 'completed')"
        };
        let mut binds = vec![json!(tenant), json!(id), json!(doc)];
        if hierarchical {
            binds.push(json!(parent));
        }
        binds.push(json!(text));
        binds.push(json!(doc_id));
        exec(db, sql, binds).await;
        records.insert(doc_id, (text, vector(seed * 10_000 + i as u64)));
    }
    Ds { id, records }
}

/// The dataset's class in Weaviate: `named` is Dify 1.9.2+ (vector `default`, uuid5-style ids),
/// otherwise legacy (unnamed vector, id = doc_id). `extra` objects are stray parent vectors.
async fn load(w: &WeaviateServer, ds: &Ds, named: bool, skip: &[&str], extra: usize) {
    let class = class_name(ds.id);
    let schema = if named {
        json!({"class": class, "properties": [{"name": "text", "dataType": ["text"]}],
               "vectorConfig": {"default": {"vectorizer": {"none": {}}, "vectorIndexType": "hnsw"}}})
    } else {
        json!({"class": class, "properties": [{"name": "text", "dataType": ["text"]}]})
    };
    w.send(reqwest::Method::POST, "/v1/schema", schema).await;
    let mut objects: Vec<Value> = Vec::new();
    let strays = (0..extra).map(|i| {
        (
            Uuid::new_v4().to_string(),
            (format!("parent {i}"), vector(99_000 + i as u64)),
        )
    });
    for (doc_id, (text, v)) in ds.records.clone().into_iter().chain(strays) {
        if skip.contains(&doc_id.as_str()) {
            continue;
        }
        let props = json!({"text": text, "doc_id": doc_id, "document_id": Uuid::nil().to_string(),
                           "dataset_id": ds.id.to_string(), "doc_hash": "h", "source": "doc.pdf", "page": 3});
        let id = if named {
            Uuid::new_v4().to_string()
        } else {
            doc_id.clone()
        };
        let mut o = json!({"class": class, "id": id, "properties": props});
        if named {
            o["vectors"] = json!({"default": v});
        } else {
            o["vector"] = json!(v);
        }
        objects.push(o);
    }
    for chunk in objects.chunks(100) {
        w.send(
            reqwest::Method::POST,
            "/v1/batch/objects",
            json!({"objects": chunk}),
        )
        .await;
    }
}

/// A `dataset` binding of Dify's default embedding model: its id and shared collection.
async fn binding(db: &TestDb) -> (Uuid, String) {
    let (id, collection) = (Uuid::new_v4(), class_name(Uuid::new_v4()));
    exec(
        db,
        "INSERT INTO public.dataset_collection_bindings (id, provider_name, model_name, collection_name, type) \
         VALUES ($1, 'langgenius/openai/openai', 'text-embedding-3-small', $2, 'dataset')",
        vec![json!(id), json!(collection)],
    )
    .await;
    (id, collection)
}

/// Dify's env for a move from the Weaviate server to the Qdrant stand-in.
fn vector_env(w: &WeaviateServer, q: &QdrantStandin) -> Vec<(&'static str, String)> {
    vec![
        ("VECTOR_STORE", "qdrant".into()),
        ("QDRANT_URL", "http://127.0.0.1:6333".into()),
        ("QDRANT_GRPC_PORT", q.grpc_port.to_string()),
        ("WEAVIATE_ENDPOINT", w.url.clone()),
        ("REDIS_HOST", "127.0.0.1".into()),
        ("REDIS_DB", "11".into()),
    ]
}

async fn index_struct(db: &TestDb, id: Uuid) -> String {
    sqlx::query_scalar("SELECT index_struct FROM public.datasets WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .expect("index_struct")
}

/// The machine's Redis, on a database number of the tests' own (`vector_env`'s).
fn redis_db() -> (String, i64) {
    ("127.0.0.1".into(), 11)
}

#[tokio::test]
async fn weaviate_to_qdrant_copies_verifies_switches_and_fails_only_the_incomplete_dataset() {
    let db = pg::dify_database().await;
    let w = WeaviateServer::start().await;
    let q = QdrantStandin::start("1.8.3").await;
    let tenant = Uuid::new_v4();
    let (binding, shared) = binding(&db).await;
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
    let lost = broken.records.keys().next().cloned().expect("a record");
    load(&w, &broken, false, &[&lost], 0).await;
    // Dify's cache row for the record Weaviate lacks: sha256(text + "None"), plugin provider.
    let (text, v) = &cached.records[&only_in_cache];
    sqlx::query(
        "INSERT INTO public.embeddings (model_name, hash, embedding, provider_name) \
         VALUES ('text-embedding-3-small', encode(sha256(convert_to($1 || 'None', 'UTF8')), 'hex'), $2, 'openai')",
    )
    .bind(text)
    .bind(pickle(v))
    .execute(&db.pool)
    .await
    .expect("cache row");

    let (redis_host, redis_db) = redis_db();
    let redis = redis::Client::open(format!("redis://{redis_host}/{redis_db}")).expect("redis");
    let mut con = redis
        .get_multiplexed_async_connection()
        .await
        .expect("redis up");
    let flag = format!("vector_indexing_{shared}");
    let _: () = redis::cmd("SET")
        .arg(&flag)
        .arg(1)
        .query_async(&mut con)
        .await
        .expect("set");

    let d = TestDaemon::start(
        &db,
        Options {
            env: vector_env(&w, &q),
            ..Options::default()
        },
    )
    .await;

    let all = json!([legacy.id, named.id, parent_child.id, cached.id, broken.id]);
    let (status, plan) = d
        .submit(json!({"kind": "vector_migrate", "params": {"dataset_ids": all}, "dry_run": true}))
        .await;
    assert_eq!(status, 202, "{plan}");
    let plan = d.wait_finished(plan["id"].as_str().expect("id")).await;
    assert_eq!(plan["state"], "succeeded", "{plan}");
    let planned: BTreeMap<String, Value> = plan["result"]["datasets"]
        .as_array()
        .expect("datasets")
        .iter()
        .map(|p| {
            (
                p["dataset_id"].as_str().unwrap_or_default().to_string(),
                p.clone(),
            )
        })
        .collect();
    assert_eq!(planned.len(), 5);
    assert_eq!(planned[&legacy.id.to_string()]["expected"], 120);
    assert_eq!(planned[&legacy.id.to_string()]["dimension"], DIM);
    assert_eq!(planned[&parent_child.id.to_string()]["strays"], 1);
    assert_eq!(planned[&cached.id.to_string()]["missing_vectors"], 1);
    assert!(
        index_struct(&db, legacy.id).await.contains("weaviate"),
        "a dry run switches nothing"
    );

    let (status, job) = d
        .submit(json!({"kind": "vector_migrate", "params": {"dataset_ids": all, "batch_size": 50}}))
        .await;
    assert_eq!(status, 202, "{job}");
    let done = d.wait_finished(job["id"].as_str().expect("id")).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["error"]["code"], "datasets_failed", "{done}");
    let outcomes: BTreeMap<String, Value> = done["result"]["datasets"]
        .as_array()
        .expect("datasets")
        .iter()
        .map(|o| {
            (
                o["dataset_id"].as_str().unwrap_or_default().to_string(),
                o.clone(),
            )
        })
        .collect();

    let store = q.store().await;
    for ds in [&legacy, &named, &parent_child, &cached] {
        let o = &outcomes[&ds.id.to_string()];
        assert_eq!(
            (o["verified"].clone(), o["switched"].clone()),
            (json!(true), json!(true)),
            "{o}"
        );
        assert_eq!(
            index_struct(&db, ds.id).await,
            format!(
                "{{\"type\": \"qdrant\", \"vector_store\": {{\"class_prefix\": \"{shared}\"}}}}"
            )
        );
        let group = ds.id.to_string();
        assert_eq!(
            store.count(&shared, &group).await.expect("count"),
            ds.records.len() as u64
        );
        // Every record under its doc_id, every metadata key carried.
        let ids: Vec<String> = ds.records.keys().cloned().collect();
        let points = store.get(&shared, &ids).await.expect("get");
        assert_eq!(points.len(), ds.records.len());
        for p in &points {
            assert_eq!(p.metadata["doc_id"], json!(p.id));
            assert_eq!(p.text, ds.records[&p.id].0);
            if p.id != only_in_cache {
                assert_eq!(p.metadata["source"], "doc.pdf", "{:?}", p.metadata);
                assert_eq!(p.metadata["page"], 3);
            }
        }
        // Dify's search (group filter) returns what brute force over the source returns.
        let query = vector(777 + ds.records.len() as u64);
        let mut brute: Vec<(f32, &String)> = ds
            .records
            .iter()
            .map(|(id, (_, v))| (v.iter().zip(&query).map(|(a, b)| a * b).sum::<f32>(), id))
            .collect();
        brute.sort_by(|a, b| b.0.total_cmp(&a.0));
        let want: Vec<&String> = brute.iter().take(5).map(|(_, id)| *id).collect();
        let hits = store
            .search(&shared, &group, &query, 5)
            .await
            .expect("search");
        let got: Vec<&String> = hits.iter().map(|h| &h.id).collect();
        assert_eq!(got, want, "top 5 of {}", ds.id);
    }
    assert_eq!(
        outcomes[&parent_child.id.to_string()]["not_copied_strays"],
        1
    );
    assert_eq!(outcomes[&cached.id.to_string()]["from_cache"], 1);

    let o = &outcomes[&broken.id.to_string()];
    assert_eq!(o["switched"], false, "{o}");
    assert!(o["missing"].to_string().contains(&lost), "{o}");
    assert!(index_struct(&db, broken.id).await.contains("weaviate"));

    let layout = q.layout().await;
    assert_eq!(layout[&shared]["create"]["hnsw_config"]["m"], 0);
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
    let before = index_struct(&db, legacy.id).await;
    let rollback = json!({"kind": "vector_rollback", "params": {"dataset_ids": [legacy.id]}});
    for expect in ["restored", "already_restored"] {
        let (status, job) = d.submit(rollback.clone()).await;
        assert_eq!(status, 202, "{job}");
        let done = d.wait_finished(job["id"].as_str().expect("id")).await;
        assert_eq!(done["result"]["datasets"][0]["state"], expect, "{done}");
    }
    assert_ne!(index_struct(&db, legacy.id).await, before);
    assert_eq!(
        index_struct(&db, legacy.id).await,
        format!(
            "{{\"type\": \"weaviate\", \"vector_store\": {{\"class_prefix\": \"{}\"}}}}",
            class_name(legacy.id)
        )
    );
    assert_eq!(
        store
            .count(&shared, &legacy.id.to_string())
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
    let (_, jobs) = d.call(reqwest::Method::GET, "/v1/jobs", None).await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "{jobs}");
    d.stop().await;
}

#[tokio::test]
async fn killed_after_a_write_before_its_checkpoint_the_rerun_ends_the_same_without_duplicates() {
    use crate::support::process::{Proc, serve_env};
    let db = pg::dify_database().await;
    let w = WeaviateServer::start().await;
    let q = QdrantStandin::start("1.8.3").await;
    let tenant = Uuid::new_v4();
    let (binding, shared) = binding(&db).await;
    let first = dataset(&db, tenant, binding, 130, false, 7).await;
    let second = dataset(&db, tenant, binding, 70, true, 8).await;
    load(&w, &first, false, &[], 0).await;
    load(&w, &second, true, &[], 0).await;
    let vector_env = vector_env(&w, &q);

    // The daemon dies (as under kill -9) right after its third batch reached Qdrant, before
    // that batch's checkpoint.
    let mut env: Vec<(&str, &str)> = serve_env(&db, "vector_migrate.batch_written=abort@3", "3");
    env.extend(vector_env.iter().map(|(k, v)| (*k, v.as_str())));
    let mut proc = Proc::spawn(&["serve"], &env);
    proc.listening_addr().await;
    let client = TestDaemon::start(
        &db,
        Options {
            workers: 0,
            env: vector_env.clone(),
            ..Options::default()
        },
    )
    .await;
    let all = json!([first.id, second.id]);
    let (status, job) = client
        .submit(json!({"kind": "vector_migrate", "params": {"dataset_ids": all, "batch_size": 50}}))
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(proc.wait_exit().await, None, "killed by abort()");
    let id = job["id"].as_str().expect("id").to_string();

    let rescuer = TestDaemon::start(
        &db,
        Options {
            workers: 1,
            lease_secs: 3,
            name: "rescuer",
            env: vector_env.clone(),
            ..Options::default()
        },
    )
    .await;
    let done = rescuer.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 2);
    let store = q.store().await;
    for ds in [&first, &second] {
        // Exactly the dataset's records: the batch written twice overwrote itself.
        assert_eq!(
            store
                .count(&shared, &ds.id.to_string())
                .await
                .expect("count"),
            ds.records.len() as u64
        );
        assert!(index_struct(&db, ds.id).await.contains("qdrant"));
    }
    rescuer.stop().await;
    client.stop().await;
}

#[tokio::test]
async fn qdrant_failing_mid_run_fails_that_dataset_which_keeps_weaviate_until_a_retry() {
    let db = pg::dify_database().await;
    let w = WeaviateServer::start().await;
    let q = QdrantStandin::start("1.8.3").await;
    let (binding, shared) = binding(&db).await;
    let ds = dataset(&db, Uuid::new_v4(), binding, 120, false, 9).await;
    load(&w, &ds, true, &[], 0).await;
    let d = TestDaemon::start(
        &db,
        Options {
            env: vector_env(&w, &q),
            ..Options::default()
        },
    )
    .await;
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
        outcome["error"].to_string().contains("UNAVAILABLE")
            || outcome["error"].to_string().contains("Unavailable"),
        "{outcome}"
    );
    assert_eq!(outcome["switched"], false);
    assert!(
        index_struct(&db, ds.id).await.contains("weaviate"),
        "still on Weaviate"
    );

    q.heal().await;
    let (status, _) = d
        .call(reqwest::Method::POST, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_eq!(status, 202);
    // The retry tries the failed dataset again and finishes it.
    let done = d.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["switched"], 1, "{done}");
    let store = q.store().await;
    assert_eq!(
        store
            .count(&shared, &ds.id.to_string())
            .await
            .expect("count"),
        120
    );
    assert!(index_struct(&db, ds.id).await.contains("qdrant"));
    d.stop().await;
}
