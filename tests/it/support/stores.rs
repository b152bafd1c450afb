//! Any vector store of the matrix, as a test needs it: its test server, Dify's variables for
//! it, a dataset's records put where and how Dify keeps them there (as a source), and the
//! checks that a target holds exactly a unit's records and that Dify's search finds them.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::dify_vectors::{Ds, Rec, load, same_direction, vector};
use super::vector_servers::{MilvusServer, QdrantStandin, WeaviateServer};
use upkeep::config::Component;
use upkeep::dify::vector_records::Dataset;
use upkeep::vector::store::{Location, Point, VectorTarget};
use upkeep::vector::{AnyStore, StoreConfig};

pub enum TestStore {
    Weaviate(WeaviateServer),
    Qdrant(QdrantStandin),
    Milvus(MilvusServer),
}

impl TestStore {
    pub async fn start(kind: &str) -> TestStore {
        match kind {
            "weaviate" => TestStore::Weaviate(WeaviateServer::start().await),
            "qdrant" => TestStore::Qdrant(QdrantStandin::start("1.13.0").await),
            "milvus" => TestStore::Milvus(MilvusServer::start().await),
            other => panic!("no test server for {other}"),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            TestStore::Weaviate(_) => "weaviate",
            TestStore::Qdrant(_) => "qdrant",
            TestStore::Milvus(_) => "milvus",
        }
    }

    /// Dify's variables for this store (Dify's docker `.env` values where they matter).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            TestStore::Weaviate(w) => vec![("WEAVIATE_ENDPOINT", w.url.clone())],
            TestStore::Qdrant(q) => vec![
                ("QDRANT_URL", "http://127.0.0.1:6333".into()),
                ("QDRANT_GRPC_PORT", q.grpc_port.to_string()),
            ],
            TestStore::Milvus(m) => vec![
                ("MILVUS_URI", m.uri()),
                ("MILVUS_DATABASE", String::new()),
                ("MILVUS_ENABLE_HYBRID_SEARCH", "false".into()),
            ],
        }
    }

    pub fn config(&self) -> StoreConfig {
        let env = Component {
            kind: self.kind().into(),
            vars: self
                .env()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        };
        StoreConfig::from_env(self.kind(), &env).expect("the store's env")
    }

    pub async fn open(&self) -> AnyStore {
        self.config().open().await.expect("the store answers")
    }

    /// Where Dify keeps `unit` in this store (`binding`: its shared Qdrant collection).
    pub fn locate(&self, unit: &Ds, binding: &str, annotations: bool) -> Location {
        self.config()
            .locate(&dataset(unit.id, binding, annotations), None)
    }

    /// `datasets.index_struct` as Dify writes it for `unit` in this store.
    pub fn index_struct(&self, unit: &Ds, binding: &str) -> String {
        let config = self.config();
        config.index_struct(&self.locate(unit, binding, false))
    }

    /// Puts `unit`'s records (but `skip`) where and how Dify keeps them in this store, with
    /// `strays` points no record names.
    pub async fn seed(&self, unit: &Ds, binding: &str, annotations: bool, skip: &[&str]) {
        if let TestStore::Weaviate(w) = self {
            return load(w, unit, true, skip, 0).await;
        }
        let at = self.locate(unit, binding, annotations);
        let store = self.open().await;
        store
            .ensure(&at, super::dify_vectors::DIM)
            .await
            .expect("collection");
        let points: Vec<Point> = unit
            .records
            .iter()
            .filter(|(id, _)| !skip.contains(&id.as_str()))
            .map(|(id, r)| Point {
                id: id.clone(),
                vector: r.vector.clone(),
                text: r.text.clone(),
                metadata: r.metadata.clone(),
            })
            .collect();
        for chunk in points.chunks(50) {
            store.write(&at, chunk).await.expect("seed");
        }
    }
}

/// The `Dataset` the daemon reads from Dify's tables, for the adapters' location rules.
pub fn dataset(id: Uuid, binding: &str, annotations: bool) -> Dataset {
    Dataset {
        id,
        tenant_id: Uuid::nil(),
        index_struct: None,
        embedding_model: None,
        embedding_model_provider: None,
        binding_collection: Some(binding.to_string()),
        annotations,
        parts: Default::default(),
    }
}

/// `at` holds exactly `unit`'s records under their `doc_id`s, each once: text, every
/// metadata key and the vector. `not_in_source` records were rebuilt from Dify's tables.
pub async fn assert_holds_exactly(
    store: &AnyStore,
    at: &Location,
    unit: &Ds,
    not_in_source: &[&str],
) {
    let mut ids: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (page, next) = store
            .doc_ids(at, cursor.as_deref(), 100)
            .await
            .expect("doc ids");
        ids.extend(page);
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "a record twice in {at:?}");
    let want: BTreeSet<&String> = unit.records.keys().collect();
    assert_eq!(distinct, want, "the records of {}", unit.id);
    assert_eq!(
        store.count(at).await.expect("count"),
        unit.records.len() as u64,
        "nothing else in {at:?}"
    );
    let mut got: BTreeMap<String, Point> = BTreeMap::new();
    for chunk in ids.chunks(64) {
        for p in store.read_back(at, chunk).await.expect("read back") {
            got.insert(p.id.clone(), p);
        }
    }
    for (id, rec) in &unit.records {
        let p = &got[id];
        let from_source = !not_in_source.contains(&id.as_str());
        assert_eq!(p.text, rec.text, "{id}");
        assert_eq!(p.metadata, rec.expected_metadata(from_source), "{id}");
        assert!(same_direction(&p.vector, &rec.vector), "{id}: vector");
    }
}

/// Dify's own search at `at` (its filter on the unit's documents, where it has documents)
/// returns the same top 5 as brute force over the records.
pub async fn assert_search_finds(store: &AnyStore, at: &Location, unit: &Ds) {
    let query = vector(777 + unit.records.len() as u64);
    let mut brute: Vec<(f32, &String)> = unit
        .records
        .iter()
        .map(|(id, r)| (dot(&r.vector, &query), id))
        .collect();
    brute.sort_by(|a, b| b.0.total_cmp(&a.0));
    let want: Vec<&String> = brute.iter().take(5).map(|(_, id)| *id).collect();
    let documents: BTreeSet<String> = unit
        .records
        .values()
        .filter_map(|r: &Rec| r.metadata.get("document_id")?.as_str().map(str::to_string))
        .collect();
    let documents: Vec<String> = documents.into_iter().collect();
    let hits = store
        .search(at, &query, 5, &documents)
        .await
        .expect("search");
    let got: Vec<&String> = hits.iter().map(|h| &h.id).collect();
    assert_eq!(got, want, "top 5 of {}", unit.id);
}

/// The Milvus collection `collection` is what Dify's own code makes (pymilvus, as Dify calls
/// it, run against the same server): the schema as sent, consistency level, shards, and the
/// index requests.
pub async fn assert_milvus_layout_is_difys(m: &MilvusServer, collection: &str, hybrid: bool) {
    let reference = format!("Dify_made_{}", Uuid::new_v4().simple());
    let python = std::env::var("UPKEEP_TEST_MILVUS_PY").expect("run through scripts/test");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/servers/dify_milvus_collection.py"
    );
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(script)
        .args([m.uri().as_str(), reference.as_str()])
        .arg(super::dify_vectors::DIM.to_string());
    if hybrid {
        cmd.arg("--hybrid");
    }
    let out = cmd.output().await.expect("pymilvus runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layout = m.layout().await;
    let shape = |name: &str| {
        let c = &layout[name];
        assert!(c.is_object(), "no collection {name} in {layout}");
        let mut schema = c["schema_received"].clone();
        schema["name"] = serde_json::Value::Null;
        let mut indexes: Vec<serde_json::Value> = c["indexes"]
            .as_array()
            .expect("indexes")
            .iter()
            .map(|i| {
                serde_json::json!([
                    i["field_name"],
                    i["extra_params"],
                    i["index_name_requested"]
                ])
            })
            .collect();
        indexes.sort_by_key(|i| i.to_string());
        serde_json::json!({
            "schema": schema, "indexes": indexes, "shards_num": c["shards_num"],
            "consistency_level": c["consistency_level"], "properties": c["properties"],
            "load_state": c["load_state"],
        })
    };
    assert_eq!(
        shape(collection),
        shape(&reference),
        "{collection} vs Dify's"
    );
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
