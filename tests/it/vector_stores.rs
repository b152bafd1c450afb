//! The vector store adapters against the test servers: Weaviate's three Dify layouts read
//! back whole, and Qdrant written exactly as Dify writes it, on a 1.8 server (vectors in
//! `Vector.data`) and on a current one (`Vector.dense`).

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::support::dify_vectors::assert_dify_layout;
use crate::support::vector_servers::{QdrantStandin, WeaviateServer};
use upkeep::vector::store::{Location, Point, VectorSource, VectorStore, VectorTarget};
use upkeep::vector::weaviate::Weaviate;

const DIM: usize = 8;

fn at(collection: &str, group: &str) -> Location {
    Location {
        collection: collection.into(),
        group: group.into(),
    }
}

/// A unit vector (Qdrant normalises cosine vectors; unit ones come back as sent, within f32).
fn unit_vector(seed: u64) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let v: Vec<f32> = (0..DIM).map(|_| rng.f32() - 0.5).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

fn metadata(doc_id: Uuid, dataset: Uuid, i: usize) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("doc_id".into(), json!(doc_id.to_string()));
    m.insert(
        "document_id".into(),
        json!(Uuid::from_u128(i as u128 / 10).to_string()),
    );
    m.insert("dataset_id".into(), json!(dataset.to_string()));
    m.insert("doc_hash".into(), json!(format!("hash{i}")));
    m.insert("source".into(), json!(format!("file{i}.pdf")));
    m.insert("page".into(), json!(i % 7));
    m
}

/// A class as Dify writes it: `legacy` (up to 1.9.1: only `text` declared, unnamed vector,
/// object id = doc_id) or `named` (1.9.2 on: declared properties, vector `default`, object id
/// = uuid5 of the text, here any other uuid).
async fn load_weaviate(w: &WeaviateServer, class: &str, named: bool, n: usize) -> Vec<Point> {
    let schema = if named {
        json!({"class": class, "properties": [
            {"name": "text", "dataType": ["text"]}, {"name": "document_id", "dataType": ["text"]},
            {"name": "doc_id", "dataType": ["text"]}, {"name": "doc_type", "dataType": ["text"]}],
            "vectorConfig": {"default": {"vectorizer": {"none": {}}, "vectorIndexType": "hnsw"}}})
    } else {
        json!({"class": class, "properties": [{"name": "text", "dataType": ["text"]}]})
    };
    w.send(reqwest::Method::POST, "/v1/schema", schema).await;
    let dataset = Uuid::new_v4();
    let points: Vec<Point> = (0..n)
        .map(|i| {
            let doc_id = Uuid::new_v4();
            Point {
                id: if named { Uuid::new_v4() } else { doc_id }.to_string(),
                vector: unit_vector(i as u64),
                text: format!("segment {i} ✓"),
                metadata: metadata(doc_id, dataset, i),
            }
        })
        .collect();
    for chunk in points.chunks(100) {
        let objects: Vec<Value> = chunk
            .iter()
            .map(|p| {
                let mut props = p.metadata.clone();
                props.insert("text".into(), json!(p.text));
                let mut o = json!({"class": class, "id": p.id, "properties": props});
                if named {
                    o["vectors"] = json!({"default": p.vector});
                } else {
                    o["vector"] = json!(p.vector);
                }
                o
            })
            .collect();
        w.send(
            reqwest::Method::POST,
            "/v1/batch/objects",
            json!({ "objects": objects }),
        )
        .await;
    }
    points
}

#[tokio::test]
async fn weaviate_reads_every_object_of_both_layouts_in_pages() {
    let w = WeaviateServer::start().await;
    let store = Weaviate::new(&w.url, None).expect("client");
    assert!(
        store
            .health()
            .await
            .expect("health")
            .version
            .starts_with("1.")
    );
    for (class, named) in [
        ("Vector_index_legacy_Node", false),
        ("Vector_index_named_Node", true),
    ] {
        let written = load_weaviate(&w, class, named, 250).await;
        let info = store
            .describe(class)
            .await
            .expect("describe")
            .expect("exists");
        assert_eq!(info.layout, if named { "named" } else { "legacy" });
        assert_eq!(
            (info.dimension, info.distance.as_str()),
            (Some(DIM), "cosine")
        );
        assert_eq!(store.count(&at(class, "")).await.expect("count"), 250);

        let mut read = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = store
                .read_page(&at(class, ""), cursor.as_deref(), 100, true)
                .await
                .expect("page");
            read.extend(page.points);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(read.len(), 250, "{class}");
        read.sort_by(|a, b| a.id.cmp(&b.id));
        let mut want = written.clone();
        want.sort_by(|a, b| a.id.cmp(&b.id));
        for (got, want) in read.iter().zip(&want) {
            assert_eq!(got.id, want.id);
            assert_eq!(got.vector, want.vector, "vectors come back bit for bit");
            assert_eq!(got.text, want.text);
            // Every metadata key, as found (numbers stay numbers).
            for (k, v) in &want.metadata {
                let found = &got.metadata[k];
                assert!(
                    found == v || found.as_f64() == v.as_f64(),
                    "{k}: {found} vs {v}"
                );
            }
        }
    }
    assert!(
        store
            .describe("Vector_index_none_Node")
            .await
            .expect("describe")
            .is_none()
    );
    assert!(
        store
            .read_page(&at("Vector_index_none_Node", ""), None, 10, true)
            .await
            .is_err()
    );
}

async fn qdrant_roundtrip(version: &str) {
    let q = QdrantStandin::start(version).await;
    let store = q.store().await;
    assert_eq!(store.version(), version);
    let collection = "Vector_index_5e4d_Node";
    store
        .ensure(&at(collection, ""), DIM)
        .await
        .expect("create");
    // Again: it exists as Dify made it, nothing to do.
    store
        .ensure(&at(collection, ""), DIM)
        .await
        .expect("exists");
    assert!(store.ensure(&at(collection, ""), DIM + 1).await.is_err());

    let layout = q.layout().await;
    assert_dify_layout(&layout, collection, DIM);

    // Two datasets share the collection, told apart by group_id.
    let (a, b) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let points: Vec<Point> = (0..300)
        .map(|i| {
            let doc_id = Uuid::new_v4();
            Point {
                id: doc_id.to_string(),
                vector: unit_vector(1000 + i as u64),
                text: format!("chunk {i}"),
                metadata: metadata(doc_id, Uuid::nil(), i),
            }
        })
        .collect();
    for chunk in points.chunks(64) {
        store
            .write(&at(collection, &a), chunk)
            .await
            .expect("upsert");
    }
    store.write(&at(collection, &b), &points[..10]).await.ok();
    assert_eq!(
        store.count(&at(collection, &a)).await.expect("count"),
        300 - 10
    );
    // Writing the same points again overwrites them: no duplicates.
    store
        .write(&at(collection, &a), &points)
        .await
        .expect("upsert again");
    assert_eq!(store.count(&at(collection, &a)).await.expect("count"), 300);
    assert_eq!(store.count(&at(collection, &b)).await.expect("count"), 0);

    let got = store
        .read_back(&at(collection, &a), &[points[7].id.clone()])
        .await
        .expect("get");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].text, points[7].text);
    assert_eq!(got[0].metadata, points[7].metadata);
    let diff = got[0]
        .vector
        .iter()
        .zip(&points[7].vector)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-6, "{diff}");
    let hits = store
        .search(&at(collection, &a), &points[42].vector, 3, &[])
        .await
        .expect("search");
    assert_eq!(hits[0].id, points[42].id);

    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .read_page(&at(collection, &a), cursor.as_deref(), 128, true)
            .await
            .expect("scroll");
        for p in page.points {
            assert!(seen.insert(p.id), "a point twice");
        }
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 300);

    // A wrong dimension is refused as Qdrant refuses it.
    let mut bad = points[0].clone();
    bad.vector.pop();
    let err = store
        .write(&at(collection, &a), &[bad])
        .await
        .expect_err("dimension");
    assert!(err.to_string().contains("expected dim: 8, got 7"), "{err}");

    // A server failing mid-run surfaces as an error of the call.
    q.fail_after(0, "UNAVAILABLE", &["Upsert"]).await;
    assert!(
        store
            .write(&at(collection, &a), &points[..1])
            .await
            .is_err()
    );
    q.heal().await;
    store
        .remove(&at(collection, &a), &[points[0].id.clone()])
        .await
        .expect("delete");
    assert_eq!(store.count(&at(collection, &a)).await.expect("count"), 299);
}

#[tokio::test]
async fn qdrant_1_8_gets_vectors_in_data_and_dify_s_layout() {
    qdrant_roundtrip("1.8.3").await;
}

#[tokio::test]
async fn qdrant_1_13_gets_vectors_in_dense() {
    qdrant_roundtrip("1.13.0").await;
}

/// The test servers are strict where Weaviate, Qdrant and Milvus are: their own self-tests
/// (65: each an answer of the real server's, or a shortcut held to the answer it replaces:
/// `test_weaviate_server.py`, `test_qdrant_standin.py`, `test_milvus_server.py`) pass, so the
/// tests can trust them.
#[tokio::test]
async fn the_vector_test_servers_pass_their_self_tests() {
    let python = std::env::var("UPKEEP_TEST_QDRANT_PY").expect("run through scripts/test");
    let out = tokio::process::Command::new(python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/servers/",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("pytest runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains(" passed"), "{report}");
}

/// The Milvus test server's handle starts each variant and drives its side channel.
#[tokio::test]
async fn the_milvus_test_server_handle_drives_its_side_channel() {
    use crate::support::vector_servers::MilvusServer;
    let m = MilvusServer::start().await;
    assert_eq!(m.uri(), format!("http://127.0.0.1:{}", m.grpc_port));
    assert_eq!(m.token(), None);
    assert_eq!(m.layout().await, serde_json::json!({}));
    assert_eq!(m.calls().await, serde_json::json!({}));
    m.fault("Insert", "UNAVAILABLE", 1, 2).await;
    m.stop_serving().await;
    let authed = MilvusServer::start_with_token("root:Milvus").await;
    assert_eq!(authed.token(), Some("root:Milvus"));
    let old = MilvusServer::start_version("2.5.15").await;
    assert_ne!(old.grpc_port, m.grpc_port);
}

/// A collection Dify made before it added its `metadata.*` and text indexes (or one whose
/// writer stopped between create and index) gets exactly the missing ones, as Dify makes
/// them; `doc_ids` lists a group's points and nothing else.
#[tokio::test]
async fn a_collection_missing_dify_indexes_gets_them() {
    use qdrant_client::qdrant::{
        CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, Distance, FieldType,
        VectorParamsBuilder,
    };
    let q = QdrantStandin::start("1.8.3").await;
    let raw = qdrant_client::Qdrant::from_url(&q.grpc_url())
        .skip_compatibility_check()
        .build()
        .expect("client");
    let collection = "Vector_index_0ld_Node";
    raw.create_collection(
        CreateCollectionBuilder::new(collection)
            .vectors_config(VectorParamsBuilder::new(DIM as u64, Distance::Cosine)),
    )
    .await
    .expect("create");
    raw.create_field_index(
        CreateFieldIndexCollectionBuilder::new(collection, "group_id", FieldType::Keyword)
            .wait(true),
    )
    .await
    .expect("group_id index");
    let store = q.store().await;
    store
        .ensure(&at(collection, ""), DIM)
        .await
        .expect("made sure of");
    let layout = q.layout().await;
    let indexes = layout[collection]["field_indexes"]
        .as_object()
        .expect("indexes");
    let mut fields: Vec<&String> = indexes.keys().collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "group_id",
            "metadata.doc_id",
            "metadata.document_id",
            "page_content"
        ]
    );
    assert_eq!(
        layout[collection]["create"]["hnsw_config"],
        Value::Null,
        "not re-created"
    );

    let (a, b) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let points: Vec<Point> = (0..5)
        .map(|i| {
            let doc_id = Uuid::new_v4();
            Point {
                id: doc_id.to_string(),
                vector: unit_vector(i),
                text: format!("chunk {i}"),
                metadata: metadata(doc_id, Uuid::nil(), i as usize),
            }
        })
        .collect();
    store
        .write(&at(collection, &a), &points[..3])
        .await
        .expect("a");
    store
        .write(&at(collection, &b), &points[3..])
        .await
        .expect("b");
    let (mut ids, next) = store
        .doc_ids(&at(collection, &a), None, 100)
        .await
        .expect("ids");
    assert_eq!(next, None);
    ids.sort();
    let mut want: Vec<String> = points[..3].iter().map(|p| p.id.clone()).collect();
    want.sort();
    assert_eq!(ids, want);
}

/// pgvector as a target, beyond the matrix: a role that may not create the extension is told
/// what to ask for, and nothing is created; once a superuser has, writes are keyed by
/// `doc_id` (a rerun replaces), a record that is not a UUID and a second dimension are
/// refused by name.
#[tokio::test]
async fn pgvector_refuses_what_dify_s_layout_cannot_hold_and_says_why() {
    use crate::support::vector_servers::PgvectorDb;
    use upkeep::vector::StoreConfig;

    let db = PgvectorDb::start().await;
    let admin = db.pool().await;
    let role = format!("dify_{}", &Uuid::new_v4().simple().to_string()[..8]);
    for statement in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("GRANT CREATE ON SCHEMA public TO {role}"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&admin)
            .await
            .expect("role");
    }
    let config = StoreConfig::from_value(&json!({
        "type": "pgvector", "host": "127.0.0.1", "port": db.port,
        "user": role, "database": db.database,
    }))
    .expect("config");
    let store = config.open().await.expect("connects");
    let health = store.health().await.expect("health");
    assert!(
        health
            .detail
            .as_deref()
            .unwrap_or_default()
            .contains("not yet created"),
        "{health:?}"
    );
    let dataset = Uuid::new_v4();
    let here = at(
        &upkeep::dify::index_struct::generated_name(dataset),
        &dataset.to_string(),
    );
    let err = store.ensure(&here, 8).await.expect_err("may not create it");
    let message = err.to_string();
    assert!(
        message.contains("CREATE EXTENSION vector") && message.contains(&role),
        "{message}"
    );
    assert_eq!(
        store.describe(&here.collection).await.expect("describe"),
        None
    );

    sqlx::query("CREATE EXTENSION vector")
        .execute(&admin)
        .await
        .expect("a superuser creates it");
    store.ensure(&here, 8).await.expect("now it can");
    let points: Vec<Point> = (0..3)
        .map(|i| {
            let doc_id = Uuid::new_v4();
            Point {
                id: doc_id.to_string(),
                vector: unit_vector(i as u64)[..8].to_vec(),
                text: format!("chunk {i}"),
                metadata: metadata(doc_id, dataset, i),
            }
        })
        .collect();
    store.write(&here, &points).await.expect("write");
    let mut changed = points.clone();
    changed[0].text = "edited".into();
    store
        .write(&here, &changed)
        .await
        .expect("a rerun replaces");
    assert_eq!(store.count(&here).await.expect("count"), 3);
    let ids: Vec<String> = points.iter().map(|p| p.id.clone()).collect();
    let mut back = store.read_back(&here, &ids).await.expect("read back");
    back.sort_by_key(|p| ids.iter().position(|i| *i == p.id));
    assert_eq!(back, changed);

    let mut odd = points[1].clone();
    odd.id = "not-a-uuid".into();
    let err = store.write(&here, &[odd]).await.expect_err("not a uuid");
    assert!(
        err.to_string().contains("\"not-a-uuid\" is not a UUID"),
        "{err}"
    );
    let err = store
        .ensure(&here, 16)
        .await
        .expect_err("another dimension");
    assert!(err.to_string().contains("8-dimensional"), "{err}");
    assert_eq!(store.count(&here).await.expect("count"), 3);
}
