//! Any vector store of the matrix, as a test needs it: its test server, Dify's variables for
//! it, a dataset's records put where and how Dify keeps them there (as a source), and the
//! checks that a target holds exactly a unit's records and that Dify's search finds them.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::dify_vectors::{Ds, Rec, load, same_direction, vector};
use super::vector_servers::{
    AnalyticdbStandin, MilvusServer, PgvectorDb, QdrantStandin, WeaviateServer,
};
use upkeep::config::Component;
use upkeep::dify::vector_records::Dataset;
use upkeep::vector::store::{Location, Point, VectorTarget};
use upkeep::vector::{AnyStore, StoreConfig};

pub enum TestStore {
    Weaviate(WeaviateServer),
    Qdrant(QdrantStandin),
    Milvus(MilvusServer),
    Pgvector(PgvectorDb),
    Analyticdb(AnalyticdbStandin),
}

impl TestStore {
    pub async fn start(kind: &str) -> TestStore {
        match kind {
            "weaviate" => TestStore::Weaviate(WeaviateServer::start().await),
            "qdrant" => TestStore::Qdrant(QdrantStandin::start("1.13.0").await),
            "milvus" => TestStore::Milvus(MilvusServer::start().await),
            "pgvector" => TestStore::Pgvector(PgvectorDb::start().await),
            "analyticdb" => TestStore::Analyticdb(AnalyticdbStandin::start()),
            other => panic!("no test server for {other}"),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            TestStore::Weaviate(_) => "weaviate",
            TestStore::Qdrant(_) => "qdrant",
            TestStore::Milvus(_) => "milvus",
            TestStore::Pgvector(_) => "pgvector",
            TestStore::Analyticdb(_) => "analyticdb",
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
            // Dify's docker `.env` values, but where the test server is.
            TestStore::Pgvector(p) => vec![
                ("PGVECTOR_HOST", "127.0.0.1".into()),
                ("PGVECTOR_PORT", p.port.to_string()),
                ("PGVECTOR_USER", "postgres".into()),
                ("PGVECTOR_PASSWORD", "difyai123456".into()),
                ("PGVECTOR_DATABASE", p.database.clone()),
            ],
            TestStore::Analyticdb(a) => vec![
                ("ANALYTICDB_HOST", "127.0.0.1".into()),
                ("ANALYTICDB_PORT", a.port.to_string()),
                ("ANALYTICDB_ACCOUNT", "postgres".into()),
                ("ANALYTICDB_PASSWORD", "testpassword".into()),
                ("ANALYTICDB_NAMESPACE", a.namespace.clone()),
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

/// A table's shape as Postgres has it, with `table` (and Dify's index hash `hash`) replaced
/// by placeholders so two tables compare: columns with type, nullability and storage,
/// storage options, and index definitions.
async fn table_shape(
    pool: &sqlx::PgPool,
    schema: &str,
    table: &str,
    hash: &str,
) -> serde_json::Value {
    let columns: Vec<(String, String, bool, String)> = sqlx::query_as(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attstorage::text \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(pool)
    .await
    .expect("columns");
    assert!(!columns.is_empty(), "no table {schema}.{table}");
    let options: Option<Vec<String>> = sqlx::query_scalar(
        "SELECT c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(pool)
    .await
    .expect("options");
    let mut indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(pool)
    .await
    .expect("indexes");
    for i in &mut indexes {
        *i = without_ids(&i.replace(table, "<table>").replace(hash, "<hash>"));
    }
    indexes.sort();
    serde_json::json!({"columns": columns, "options": options, "indexes": indexes})
}

/// `s` with each run of 20 or more hex digits and `_` (a dataset id, whole or cut, in a name
/// Postgres derived from the table's) as `<id>`.
fn without_ids(s: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in s.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_hexdigit() && !c.is_ascii_uppercase() || c == '_' {
            run.push(c);
            continue;
        }
        if run.len() >= 20 {
            out.push_str("<id>");
        } else {
            out.push_str(&run);
        }
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

fn md5_8(s: &str) -> String {
    use md5::Digest;
    md5::Md5::digest(s.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The pgvector table of `collection` is named and shaped exactly as Dify's own SQL makes
/// one (run here for a reference collection in the same database): unquoted name folded and
/// cut to 63 bytes, columns, HNSW index named by Dify's hash.
pub async fn assert_pgvector_layout_is_difys(db: &PgvectorDb, collection: &str, dim: usize) {
    let pool = db.pool().await;
    let reference = upkeep::dify::index_struct::generated_name(Uuid::new_v4());
    let hash = md5_8(&format!("embedding_{reference}"));
    // Dify's statements (dify_vdb_pgvector/pgvector.py), as Dify formats them.
    for statement in [
        format!(
            "CREATE TABLE IF NOT EXISTS embedding_{reference} (\n    id UUID PRIMARY KEY,\n    \
             text TEXT NOT NULL,\n    meta JSONB NOT NULL,\n    embedding vector({dim}) NOT NULL\n) using heap;"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS embedding_cosine_v1_idx_{hash} ON embedding_{reference}\n\
             USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);"
        ),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .expect("Dify's DDL");
    }
    let mut ours = format!("embedding_{collection}").to_lowercase();
    ours.truncate(63);
    let mut theirs = format!("embedding_{reference}").to_lowercase();
    theirs.truncate(63);
    assert_eq!(
        table_shape(
            &pool,
            "public",
            &ours,
            &md5_8(&format!("embedding_{collection}"))
        )
        .await,
        table_shape(&pool, "public", &theirs, &hash).await,
        "{ours} vs Dify's"
    );
}

/// The AnalyticDB table of `collection` is shaped as Dify's SQL mode makes one, but for what
/// the stand-in cannot have (`DISTRIBUTED BY`, the `ann` index), and its rows are as Dify
/// writes them: ids `<uuid4>_<i>`, `ref_doc_id` = `doc_id`, `to_tsvector` from `zh_cn`.
pub async fn assert_analyticdb_layout_is_difys(a: &AnalyticdbStandin, collection: &str) {
    let pool = a.pool().await;
    let ns = &a.namespace;
    let reference = upkeep::dify::index_struct::generated_name(Uuid::new_v4()).to_lowercase();
    for statement in [
        format!(
            "CREATE TABLE IF NOT EXISTS {ns}.{reference}(id text PRIMARY KEY,vector real[], \
             ref_doc_id text, page_content text, metadata_ jsonb, to_tsvector TSVECTOR) WITH (fillfactor=70);"
        ),
        format!("ALTER TABLE {ns}.{reference} ALTER COLUMN vector SET STORAGE PLAIN"),
        format!("CREATE INDEX ON {ns}.{reference} USING gin(to_tsvector)"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&pool)
            .await
            .expect("Dify's DDL");
    }
    let table = collection.to_lowercase();
    assert_eq!(
        table_shape(&pool, ns, &table, "-").await,
        table_shape(&pool, ns, &reference, "-").await,
        "{table} vs Dify's"
    );
    let odd: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {ns}.{table} WHERE id !~ '^[0-9a-f]{{8}}-[0-9a-f-]{{27}}_[0-9]+$' \
         OR ref_doc_id IS DISTINCT FROM metadata_->>'doc_id' \
         OR to_tsvector IS DISTINCT FROM to_tsvector('zh_cn', page_content)"
    )))
    .fetch_one(&pool)
    .await
    .expect("rows");
    assert_eq!(odd, 0, "rows of {table} not as Dify writes them");
}
