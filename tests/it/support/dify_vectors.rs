//! Dify-shaped vector data for the migration tests: knowledge bases and annotation replies in
//! Dify's tables (the fixture schema), their points in the Weaviate test server as each Dify
//! generation wrote them, the `embeddings` cache, and the checks that a Qdrant collection
//! holds exactly Dify's layout and records.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::pg::TestDb;
use super::vector_servers::{QdrantStandin, WeaviateServer};
use upkeep::vector::store::{Location, VectorSource, VectorTarget};

pub const DIM: usize = 1536;

/// A unit vector, the same for the same seed.
pub fn vector(seed: u64) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let v: Vec<f32> = (0..DIM).map(|_| rng.f32() - 0.5).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// Dify's cache format: `pickle.dumps(list_of_float64, protocol=5)`, without frames.
pub fn pickle(v: &[f32]) -> Vec<u8> {
    let mut out = vec![0x80, 5, b']', b'('];
    for x in v {
        out.push(b'G');
        out.extend_from_slice(&f64::from(*x).to_be_bytes());
    }
    out.extend_from_slice(b"e.");
    out
}

pub fn class_name(id: Uuid) -> String {
    format!("Vector_index_{}_Node", id.to_string().replace('-', "_"))
}

/// Runs `sql` with binds: strings that parse as UUIDs bind as uuid.
pub async fn exec(db: &TestDb, sql: &str, binds: Vec<Value>) {
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

/// One record as Dify stored it: text, vector and metadata (Weaviate's flat properties).
#[derive(Debug, Clone)]
pub struct Rec {
    pub text: String,
    pub vector: Vec<f32>,
    pub metadata: Map<String, Value>,
    /// Metadata keys only the first indexing wrote (extractor keys): a record rebuilt from
    /// Dify's tables (cache, re-embedding) lacks them.
    pub extractor_keys: bool,
}

impl Rec {
    /// The metadata the target must hold: as found, or as Dify's tables rebuild it.
    pub fn expected_metadata(&self, from_source: bool) -> Map<String, Value> {
        let mut m = self.metadata.clone();
        if !from_source && self.extractor_keys {
            m.remove("source");
            m.remove("page");
        }
        m
    }
}

/// A dataset (or an app's annotation replies) and every record Dify's query path can return.
pub struct Ds {
    pub id: Uuid,
    pub records: BTreeMap<String, Rec>,
}

/// A dataset binding (`dataset` or `annotation`) of Dify's default embedding model: its id
/// and shared Qdrant collection.
pub async fn binding(db: &TestDb, kind: &str) -> (Uuid, String) {
    let (id, collection) = (Uuid::new_v4(), class_name(Uuid::new_v4()));
    exec(
        db,
        "INSERT INTO public.dataset_collection_bindings (id, provider_name, model_name, collection_name, type) \
         VALUES ($1, 'langgenius/openai/openai', 'text-embedding-3-small', $2, $3)",
        vec![json!(id), json!(collection), json!(kind)],
    )
    .await;
    (id, collection)
}

/// A dataset on Weaviate with one document of `n` records; `hierarchical` makes them child
/// chunks of one parent segment. Each has the extractor keys `source` and `page`.
pub async fn dataset(
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
        vec![
            json!(id),
            json!(tenant),
            json!(format!(
                "{{\"type\": \"weaviate\", \"vector_store\": {{\"class_prefix\": \"{}\"}}}}",
                class_name(id)
            )),
            json!(binding),
        ],
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
    let mut records = BTreeMap::new();
    for i in 0..n {
        let doc_id = Uuid::new_v4().to_string();
        let text = format!("record {i} of {id}");
        let hash = format!("hash-{i}");
        let sql = if hierarchical {
            "INSERT INTO public.child_chunks (tenant_id, dataset_id, document_id, segment_id, position, content, \
                word_count, index_node_id, index_node_hash, type, created_by) \
             VALUES ($1, $2, $3, $4, 0, $5, 3, $6, $7, 'automatic', $1)"
        } else {
            "INSERT INTO public.document_segments (tenant_id, dataset_id, document_id, position, content, \
                word_count, tokens, hit_count, created_by, index_node_id, index_node_hash, status) \
             VALUES ($1, $2, $3, 0, $4, 3, 3, 0, $1, $5, $6, 'completed')"
        };
        let mut binds = vec![json!(tenant), json!(id), json!(doc)];
        if hierarchical {
            binds.push(json!(parent));
        }
        binds.extend([json!(text), json!(doc_id), json!(hash)]);
        exec(db, sql, binds).await;
        let metadata = json!({"doc_id": doc_id, "doc_hash": hash, "document_id": doc.to_string(),
                              "dataset_id": id.to_string(), "source": "doc.pdf", "page": 3});
        records.insert(
            doc_id,
            Rec {
                text,
                vector: vector(seed * 10_000 + i as u64),
                metadata: metadata.as_object().cloned().unwrap_or_default(),
                extractor_keys: true,
            },
        );
    }
    Ds { id, records }
}

/// Makes `ds` multimodal with `n` image attachments of its first segment, and gives its first
/// `summaries` segments a summary (Dify's summary index): the records each adds.
pub async fn attachments_and_summaries(
    db: &TestDb,
    ds: &mut Ds,
    tenant: Uuid,
    n: usize,
    summaries: usize,
    seed: u64,
) {
    exec(
        db,
        "UPDATE public.datasets SET is_multimodal = true WHERE id = $1",
        vec![json!(ds.id)],
    )
    .await;
    let segments: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT id, document_id, index_node_id FROM public.document_segments \
         WHERE dataset_id = $1 ORDER BY index_node_id",
    )
    .bind(ds.id)
    .fetch_all(&db.pool)
    .await
    .expect("segments");
    let (segment, document, _) = segments[0].clone();
    for i in 0..n {
        let file = Uuid::new_v4();
        let name = format!("figure-{i}.png");
        exec(
            db,
            "INSERT INTO public.upload_files (id, tenant_id, storage_type, key, name, size, extension, created_by) \
             VALUES ($1, $2, 'opendal', $3, $4, 10, 'png', $2)",
            vec![json!(file), json!(tenant), json!(format!("upload_files/{tenant}/{file}.png")), json!(name)],
        )
        .await;
        exec(
            db,
            "INSERT INTO public.segment_attachment_bindings (id, tenant_id, dataset_id, document_id, segment_id, attachment_id) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![json!(Uuid::new_v4()), json!(tenant), json!(ds.id), json!(document), json!(segment), json!(file)],
        )
        .await;
        let metadata = json!({"doc_id": file.to_string(), "doc_hash": "", "document_id": document.to_string(),
                              "dataset_id": ds.id.to_string(), "doc_type": "image"});
        ds.records.insert(
            file.to_string(),
            Rec {
                text: name,
                vector: vector(seed * 10_000 + 5000 + i as u64),
                metadata: metadata.as_object().cloned().unwrap_or_default(),
                extractor_keys: false,
            },
        );
    }
    for (i, (segment, document, _)) in segments.iter().take(summaries).enumerate() {
        let node = Uuid::new_v4().to_string();
        let text = format!("summary {i} of {}", ds.id);
        exec(
            db,
            "INSERT INTO public.document_segment_summaries (id, dataset_id, document_id, chunk_id, summary_content, \
                summary_index_node_id, summary_index_node_hash, status, enabled) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'completed', true)",
            vec![json!(Uuid::new_v4()), json!(ds.id), json!(document), json!(segment), json!(text),
                 json!(node), json!(format!("summary-hash-{i}"))],
        )
        .await;
        let metadata = json!({"doc_id": node, "doc_hash": format!("summary-hash-{i}"),
                              "document_id": document.to_string(), "dataset_id": ds.id.to_string(),
                              "original_chunk_id": segment.to_string(), "doc_type": "text", "is_summary": true});
        ds.records.insert(
            node,
            Rec {
                text,
                vector: vector(seed * 10_000 + 7000 + i as u64),
                metadata: metadata.as_object().cloned().unwrap_or_default(),
                extractor_keys: false,
            },
        );
    }
}

/// An app with annotation reply on (its `app_annotation_settings` row, bound to `binding`)
/// and `n` annotations; one has an empty question, so its answer is the text.
pub async fn annotation_app(db: &TestDb, tenant: Uuid, binding: Uuid, n: usize, seed: u64) -> Ds {
    let app = Uuid::new_v4();
    exec(
        db,
        "INSERT INTO public.apps (id, tenant_id, name, mode, enable_site, enable_api, status) \
         VALUES ($1, $2, 'bot', 'chat', true, true, 'normal')",
        vec![json!(app), json!(tenant)],
    )
    .await;
    exec(
        db,
        "INSERT INTO public.app_annotation_settings (app_id, score_threshold, collection_binding_id, \
            created_user_id, updated_user_id) VALUES ($1, 0.8, $2, $3, $3)",
        vec![json!(app), json!(binding), json!(tenant)],
    )
    .await;
    let mut records = BTreeMap::new();
    for i in 0..n {
        let id = Uuid::new_v4();
        let (question, answer) = if i == 0 {
            (String::new(), format!("answer only {i}"))
        } else {
            (format!("question {i} of {app}"), format!("answer {i}"))
        };
        exec(
            db,
            "INSERT INTO public.message_annotations (id, app_id, question, content, account_id) \
             VALUES ($1, $2, $3, $4, $5)",
            vec![
                json!(id),
                json!(app),
                json!(question),
                json!(answer),
                json!(tenant),
            ],
        )
        .await;
        let text = if question.is_empty() {
            answer
        } else {
            question
        };
        let metadata = json!({"annotation_id": id.to_string(), "app_id": app.to_string(),
                              "doc_id": id.to_string()});
        records.insert(
            id.to_string(),
            Rec {
                text,
                vector: vector(seed * 10_000 + i as u64),
                metadata: metadata.as_object().cloned().unwrap_or_default(),
                extractor_keys: false,
            },
        );
    }
    Ds { id: app, records }
}

/// The unit's class in Weaviate. `named` is Dify 1.9.2+ (declared properties, vector
/// `default`, uuid5-style ids: random here); otherwise Dify's legacy class (only `text`
/// declared, unnamed vector, id = doc_id). `skip` records are not written; `strays` are
/// objects no record names (parent vectors `vdb-migrate` wrote).
pub async fn load(w: &WeaviateServer, ds: &Ds, named: bool, skip: &[&str], strays: usize) {
    let class = class_name(ds.id);
    let text = |name: &str| json!({"name": name, "dataType": ["text"]});
    let schema = if named {
        json!({"class": class, "properties": [
                   {"name": "text", "dataType": ["text"], "tokenization": "word"},
                   text("document_id"), text("doc_id"), text("doc_type"),
                   {"name": "chunk_index", "dataType": ["int"]},
                   {"name": "is_summary", "dataType": ["boolean"]},
                   text("original_chunk_id")],
               "vectorConfig": {"default": {"vectorizer": {"none": {}}, "vectorIndexType": "hnsw"}}})
    } else {
        json!({"class": class, "properties": [text("text")]})
    };
    w.send(reqwest::Method::POST, "/v1/schema", schema).await;
    let strays = (0..strays).map(|i| {
        let doc_id = Uuid::new_v4().to_string();
        let metadata = json!({"doc_id": doc_id, "dataset_id": ds.id.to_string()});
        (
            doc_id,
            Rec {
                text: format!("parent {i}"),
                vector: vector(99_000 + i as u64),
                metadata: metadata.as_object().cloned().unwrap_or_default(),
                extractor_keys: false,
            },
        )
    });
    let mut objects: Vec<Value> = Vec::new();
    for (doc_id, rec) in ds.records.clone().into_iter().chain(strays) {
        if skip.contains(&doc_id.as_str()) {
            continue;
        }
        let mut props = rec.metadata.clone();
        props.insert("text".into(), json!(rec.text));
        let id = if named {
            Uuid::new_v4().to_string()
        } else {
            doc_id.clone()
        };
        let mut o = json!({"class": class, "id": id, "properties": props});
        if named {
            o["vectors"] = json!({"default": rec.vector});
        } else {
            o["vector"] = json!(rec.vector);
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

/// Dify's cache row for `rec`: `sha256(text + "None")`, short provider name (pre-1.0 rows).
pub async fn cache(db: &TestDb, rec: &Rec, hash: Option<&str>) {
    let sql = "INSERT INTO public.embeddings (model_name, hash, embedding, provider_name) \
               VALUES ('text-embedding-3-small', \
                       COALESCE($3, encode(sha256(convert_to($1 || 'None', 'UTF8')), 'hex')), $2, 'openai')";
    sqlx::query(sql)
        .bind(&rec.text)
        .bind(pickle(&rec.vector))
        .bind(hash)
        .execute(&db.pool)
        .await
        .expect("cache row");
}

/// Dify's env for a move from the Weaviate server to the Qdrant stand-in; Redis on a
/// database number of the tests' own.
pub fn vector_env(w: &WeaviateServer, q: &QdrantStandin) -> Vec<(&'static str, String)> {
    vec![
        ("VECTOR_STORE", "qdrant".into()),
        ("QDRANT_URL", "http://127.0.0.1:6333".into()),
        ("QDRANT_GRPC_PORT", q.grpc_port.to_string()),
        ("WEAVIATE_ENDPOINT", w.url.clone()),
        ("REDIS_HOST", "127.0.0.1".into()),
        ("REDIS_DB", REDIS_DB.to_string()),
    ]
}

pub const REDIS_DB: i64 = 11;

pub async fn index_struct(db: &TestDb, id: Uuid) -> String {
    sqlx::query_scalar("SELECT index_struct FROM public.datasets WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .expect("index_struct")
}

/// `index_struct` naming Qdrant and `collection`, as Dify writes it.
pub fn on_qdrant(collection: &str) -> String {
    format!("{{\"type\": \"qdrant\", \"vector_store\": {{\"class_prefix\": \"{collection}\"}}}}")
}

/// Unit length, then equal to float32 precision.
pub fn same_direction(a: &[f32], b: &[f32]) -> bool {
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let (na, nb) = (norm(a), norm(b));
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (f64::from(*x) / na - f64::from(*y) / nb).abs() <= 1e-6)
}

/// The collection was created as Dify creates it: the CreateCollection request and the four
/// payload indexes.
pub fn assert_dify_layout(layout: &Value, collection: &str, dim: usize) {
    let c = &layout[collection];
    let create = &c["create"];
    assert_eq!(create["hnsw_config"]["m"], 0, "{create}");
    assert_eq!(create["hnsw_config"]["payload_m"], 16, "{create}");
    assert_eq!(create["hnsw_config"]["ef_construct"], 100);
    assert_eq!(create["hnsw_config"]["full_scan_threshold"], 10000);
    assert_eq!(create["hnsw_config"]["on_disk"], false);
    assert_eq!(create["vectors_config"]["params"]["size"], dim);
    assert_eq!(create["vectors_config"]["params"]["distance"], "Cosine");
    assert_eq!(create["replication_factor"], 1);
    assert_eq!(create["write_consistency_factor"], 1);
    let indexes = c["field_indexes"].as_object().expect("indexes");
    assert_eq!(indexes.len(), 4, "exactly Dify's indexes: {indexes:?}");
    for (field, kind) in [
        ("group_id", "Keyword"),
        ("metadata.doc_id", "Keyword"),
        ("metadata.document_id", "Keyword"),
        ("page_content", "Text"),
    ] {
        assert_eq!(
            indexes[field]["field_type"],
            format!("FieldType{kind}"),
            "{field}: {}",
            indexes[field]
        );
    }
    let text = indexes["page_content"]["params"].to_string();
    for want in [
        "Multilingual",
        "\"min_token_len\":2",
        "\"max_token_len\":20",
        "\"lowercase\":true",
    ] {
        assert!(
            text.contains(want),
            "page_content index params {text} lack {want}"
        );
    }
}

pub fn at(collection: &str, group: &str) -> Location {
    Location {
        collection: collection.into(),
        group: group.into(),
    }
}

/// `collection` holds exactly the records of `units` under their groups: each under its
/// `doc_id` with its text, metadata and vector, nothing else, nothing twice. `not_in_source`
/// records were rebuilt from Dify's tables (no extractor keys).
pub async fn assert_exactly(
    q: &QdrantStandin,
    collection: &str,
    units: &[&Ds],
    not_in_source: &[&str],
) {
    let store = q.store().await;
    let mut total = 0;
    for ds in units {
        let group = ds.id.to_string();
        let mut got = BTreeMap::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = store
                .read_page(&at(collection, &group), cursor.as_deref(), 200, true)
                .await
                .expect("scroll");
            for p in page.points {
                assert!(got.insert(p.id.clone(), p).is_none(), "a point twice");
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        let want: Vec<&String> = ds.records.keys().collect();
        let have: Vec<&String> = got.keys().collect();
        assert_eq!(have, want, "the points of {group}");
        for (id, p) in &got {
            let rec = &ds.records[id];
            let from_source = !not_in_source.contains(&id.as_str());
            assert_eq!(p.text, rec.text, "{id}");
            assert_eq!(p.metadata, rec.expected_metadata(from_source), "{id}");
            assert!(same_direction(&p.vector, &rec.vector), "{id}: vector");
        }
        total += got.len();
    }
    let layout = q.layout().await;
    assert_eq!(
        layout[collection]["points_count"],
        json!(total),
        "no point outside the groups"
    );
}

/// What Dify's search (group filter, top k) returns equals brute force over the source.
pub async fn assert_search_matches_brute_force(q: &QdrantStandin, collection: &str, ds: &Ds) {
    let store = q.store().await;
    let query = vector(777 + ds.records.len() as u64);
    let mut brute: Vec<(f32, &String)> = ds
        .records
        .iter()
        .map(|(id, r)| {
            (
                r.vector.iter().zip(&query).map(|(a, b)| a * b).sum::<f32>(),
                id,
            )
        })
        .collect();
    brute.sort_by(|a, b| b.0.total_cmp(&a.0));
    let want: Vec<&String> = brute.iter().take(5).map(|(_, id)| *id).collect();
    let hits = store
        .search(&at(collection, &ds.id.to_string()), &query, 5, &[])
        .await
        .expect("search");
    let got: Vec<&String> = hits.iter().map(|h| &h.id).collect();
    assert_eq!(got, want, "top 5 of {}", ds.id);
}
