//! The Milvus adapter against the Milvus test server (milvus-lite made as strict as Milvus
//! 2.6): Dify's layout with and without hybrid search, writes addressed by `doc_id` on a
//! server-generated primary key, paging by primary key, a text too long for
//! `page_content`, a collection that is not loaded, auth, and what preflight says.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::support::daemon::{Options, TestDaemon};
use crate::support::dify_vectors::{DIM, vector};
use crate::support::pg;
use crate::support::stores::assert_milvus_layout_is_difys;
use crate::support::vector_servers::MilvusServer;
use upkeep::config::Component;
use upkeep::vector::store::{Location, Point, VectorSource, VectorStore, VectorTarget};
use upkeep::vector::{AnyStore, StoreConfig};

fn config(m: &MilvusServer, vars: &[(&str, &str)]) -> StoreConfig {
    let mut all = vec![("MILVUS_URI".to_string(), m.uri())];
    all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let env = Component {
        kind: "milvus".into(),
        vars: all,
    };
    StoreConfig::from_env("milvus", &env).expect("config")
}

async fn open(m: &MilvusServer, vars: &[(&str, &str)]) -> AnyStore {
    config(m, vars).open().await.expect("Milvus answers")
}

fn at(collection: &str) -> Location {
    Location {
        collection: collection.into(),
        group: Uuid::new_v4().to_string(),
    }
}

fn points(n: usize, documents: usize) -> Vec<Point> {
    let docs: Vec<String> = (0..documents).map(|_| Uuid::new_v4().to_string()).collect();
    (0..n)
        .map(|i| {
            let doc_id = Uuid::new_v4().to_string();
            let metadata: Map<String, Value> =
                json!({"doc_id": doc_id, "doc_hash": format!("h{i}"),
                "document_id": docs[i % documents], "dataset_id": "d", "page": i})
                .as_object()
                .cloned()
                .unwrap_or_default();
            Point {
                id: doc_id,
                vector: vector(500 + i as u64),
                text: format!("chunk {i} ✓"),
                metadata,
            }
        })
        .collect()
}

/// Runs Python with pymilvus against the server (what Dify or an operator would do to it).
async fn pymilvus(m: &MilvusServer, code: &str) {
    let python = std::env::var("UPKEEP_TEST_MILVUS_PY").expect("run through scripts/test");
    let script = format!(
        "from pymilvus import MilvusClient\nc = MilvusClient(uri={:?})\n{code}\n",
        m.uri()
    );
    let out = tokio::process::Command::new(python)
        .args(["-c", &script])
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn writes_replace_by_doc_id_and_reads_page_by_primary_key() {
    let m = MilvusServer::start().await;
    let store = open(&m, &[("MILVUS_ENABLE_HYBRID_SEARCH", "false")]).await;
    let here = at("Vector_index_m1_Node");
    assert_eq!(
        store.describe(&here.collection).await.expect("describe"),
        None
    );
    store.ensure(&here, DIM).await.expect("create");
    store
        .ensure(&here, DIM)
        .await
        .expect("exists as Dify made it");
    let err = store.ensure(&here, DIM + 1).await.expect_err("dimension");
    assert!(err.to_string().contains("1536-dimensional"), "{err}");
    assert_milvus_layout_is_difys(&m, &here.collection, false).await;
    let info = store
        .describe(&here.collection)
        .await
        .expect("describe")
        .expect("exists");
    assert_eq!(
        (info.dimension, info.distance.as_str(), info.layout.as_str()),
        (Some(DIM), "ip", "dense")
    );

    let all = points(30, 3);
    for chunk in all.chunks(8) {
        store.write(&here, chunk).await.expect("write");
    }
    // Again, with new text for the first ten: each doc_id is still there once, as rewritten.
    let mut edited = all[..10].to_vec();
    for p in &mut edited {
        p.text.push_str(" (edited)");
    }
    store.write(&here, &edited).await.expect("rewrite");
    assert_eq!(store.count(&here).await.expect("count"), 30);
    let ids: Vec<String> = all.iter().map(|p| p.id.clone()).collect();
    let mut present = store.present(&here, &ids).await.expect("present");
    present.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(present, want);
    let back = store.read_back(&here, &ids[..12]).await.expect("read back");
    assert_eq!(back.len(), 12);
    for p in &back {
        let i = ids.iter().position(|id| *id == p.id).expect("a doc_id");
        let want = if i < 10 { &edited[i] } else { &all[i] };
        assert_eq!(
            (&p.text, &p.metadata, &p.vector),
            (&want.text, &want.metadata, &want.vector)
        );
    }

    // As a source: pages by primary key (never by offset), ids are primary keys.
    let (mut seen, mut pks, mut cursor) = (BTreeSet::new(), Vec::new(), None::<String>);
    loop {
        let page = store
            .read_page(&here, cursor.as_deref(), 7, true)
            .await
            .expect("page");
        assert!(page.points.len() <= 7);
        for p in page.points {
            pks.push(p.id.parse::<i64>().expect("a primary key"));
            assert!(
                seen.insert(p.doc_id().expect("doc_id").to_string()),
                "twice"
            );
        }
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 30);
    assert!(pks.windows(2).all(|w| w[0] < w[1]), "in primary key order");
    let requests = m.requests().await;
    assert!(
        requests
            .as_array()
            .expect("requests")
            .iter()
            .filter(|r| r["method"] == "Query")
            .all(|r| r["query_params"]["offset"].is_null()),
        "no offset paging: {requests}"
    );
    let fetched = store
        .fetch(&here, &[pks[3].to_string(), pks[4].to_string()])
        .await
        .expect("fetch");
    assert_eq!(fetched.len(), 2);

    // Dify's search with its document filter finds a point by its own vector, in its document.
    let target = &all[12];
    let document = target.metadata["document_id"]
        .as_str()
        .expect("doc")
        .to_string();
    let hits = store
        .search(&here, &target.vector, 3, std::slice::from_ref(&document))
        .await
        .expect("search");
    assert_eq!(hits[0].id, target.id);
    let in_document: BTreeSet<&str> = all
        .iter()
        .filter(|p| p.metadata["document_id"] == document.as_str())
        .map(|p| p.id.as_str())
        .collect();
    assert!(
        hits.iter().all(|h| in_document.contains(h.id.as_str())),
        "{hits:?}"
    );

    // A text longer than Dify's VARCHAR(65535) fails its batch before anything is written.
    let mut long = points(2, 1);
    long[1].text = "ü".repeat(40_000);
    let err = store.write(&here, &long).await.expect_err("too long");
    assert!(
        err.to_string().contains(&long[1].id),
        "names the record: {err}"
    );
    assert_eq!(
        store.count(&here).await.expect("count"),
        30,
        "nothing written"
    );

    store.remove(&here, &ids[..2]).await.expect("remove");
    assert_eq!(store.count(&here).await.expect("count"), 28);
    assert!(
        store
            .present(&here, &ids[..2])
            .await
            .expect("present")
            .is_empty()
    );
}

/// With `MILVUS_ENABLE_HYBRID_SEARCH` (Dify's default when unset) on a 2.5+ server the collection
/// gets Dify's BM25 field and function; on 2.4 it does not, as in Dify.
#[tokio::test]
async fn hybrid_search_fields_exactly_when_dify_would_make_them() {
    let m = MilvusServer::start().await;
    let store = open(&m, &[]).await;
    let detail = store
        .health()
        .await
        .expect("health")
        .detail
        .unwrap_or_default();
    assert!(detail.contains("hybrid search on"), "{detail}");
    let here = at("Vector_index_hybrid_Node");
    store.ensure(&here, DIM).await.expect("create");
    assert_milvus_layout_is_difys(&m, &here.collection, true).await;
    store.write(&here, &points(5, 1)).await.expect("write");
    assert_eq!(store.count(&here).await.expect("count"), 5);
    assert_eq!(
        store
            .describe(&here.collection)
            .await
            .expect("describe")
            .expect("exists")
            .layout,
        "hybrid"
    );

    let old = MilvusServer::start_version("v2.4.15").await;
    let store = open(&old, &[("MILVUS_ENABLE_HYBRID_SEARCH", "true")]).await;
    let detail = store
        .health()
        .await
        .expect("health")
        .detail
        .unwrap_or_default();
    assert!(detail.contains("needs Milvus 2.5"), "{detail}");
    let here = at("Vector_index_old_Node");
    store.ensure(&here, DIM).await.expect("create");
    assert_milvus_layout_is_difys(&old, &here.collection, false).await;
}

/// A collection Dify made and an operator released is loaded before it is read (a real Milvus
/// refuses queries on it).
#[tokio::test]
async fn a_released_collection_is_loaded_before_it_is_read() {
    let m = MilvusServer::start().await;
    let store = open(&m, &[("MILVUS_ENABLE_HYBRID_SEARCH", "false")]).await;
    let here = at("Vector_index_released_Node");
    store.ensure(&here, DIM).await.expect("create");
    store.write(&here, &points(4, 1)).await.expect("write");
    pymilvus(&m, "c.release_collection('Vector_index_released_Node')").await;
    assert_eq!(
        m.layout().await["Vector_index_released_Node"]["load_state"],
        "NotLoad"
    );
    let fresh = open(&m, &[]).await;
    let page = fresh.read_page(&here, None, 10, true).await.expect("read");
    assert_eq!(page.points.len(), 4);
    assert_eq!(
        m.layout().await["Vector_index_released_Node"]["load_state"],
        "Loaded"
    );
}

/// A collection left without its index (a writer killed between creating the collection and
/// its index) gets Dify's index when it is next read, instead of failing every read.
#[tokio::test]
async fn a_collection_without_its_index_is_indexed_before_it_is_read() {
    let m = MilvusServer::start().await;
    let store = open(&m, &[("MILVUS_ENABLE_HYBRID_SEARCH", "false")]).await;
    let here = at("Vector_index_unindexed_Node");
    store.ensure(&here, DIM).await.expect("create");
    store.write(&here, &points(3, 1)).await.expect("write");
    pymilvus(
        &m,
        "c.release_collection('Vector_index_unindexed_Node')\n\
         c.drop_index('Vector_index_unindexed_Node', index_name='vector')",
    )
    .await;
    let fresh = open(&m, &[("MILVUS_ENABLE_HYBRID_SEARCH", "false")]).await;
    assert_eq!(fresh.count(&here).await.expect("count"), 3);
    let layout = m.layout().await;
    assert_eq!(
        layout["Vector_index_unindexed_Node"]["load_state"],
        "Loaded"
    );
}

#[tokio::test]
async fn credentials_from_difys_env_reach_milvus_and_wrong_ones_fail() {
    let m = MilvusServer::start_with_token("root:Milvus").await;
    let none = config(&m, &[]).open().await;
    assert!(none.is_err(), "no credentials");
    let wrong = config(&m, &[("MILVUS_USER", "root"), ("MILVUS_PASSWORD", "nope")])
        .open()
        .await
        .err()
        .expect("a wrong password");
    assert!(wrong.to_string().contains("milvus"), "{wrong}");
    let store = open(
        &m,
        &[("MILVUS_USER", "root"), ("MILVUS_PASSWORD", "Milvus")],
    )
    .await;
    assert!(store.health().await.is_ok());
    let store = open(&m, &[("MILVUS_TOKEN", "root:Milvus"), ("MILVUS_USER", "x")]).await;
    assert!(store.health().await.is_ok(), "the token wins");
}

#[tokio::test]
async fn preflight_reports_milvus_its_version_and_hybrid_search() {
    let (db, m) = tokio::join!(pg::dify_database(), MilvusServer::start());
    let d = TestDaemon::start(
        &db,
        Options {
            env: vec![
                ("VECTOR_STORE", "milvus".into()),
                ("MILVUS_URI", m.uri()),
                ("MILVUS_ENABLE_HYBRID_SEARCH", "false".into()),
            ],
            ..Options::default()
        },
    )
    .await;
    let (status, pf) = d.call(Method::GET, "/v1/preflight", None).await;
    assert_eq!(status, 200, "{pf}");
    let v = &pf["vector_store"];
    assert_eq!(v["type"], "milvus", "{pf}");
    assert_eq!(v["reachable"], true, "{pf}");
    assert_eq!(v["version"], "v2.6.3", "{pf}");
    assert_eq!(v["location"], format!("milvus at {}", m.uri()), "{pf}");
    assert!(
        v["detail"]
            .as_str()
            .is_some_and(|d| d.contains("hybrid search off (MILVUS_ENABLE_HYBRID_SEARCH is false)")),
        "{pf}"
    );
    m.stop_serving().await;
    let (_, pf) = d.call(Method::GET, "/v1/preflight", None).await;
    assert_eq!(pf["vector_store"]["reachable"], false, "{pf}");
    d.stop().await;
}
