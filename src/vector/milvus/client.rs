//! The calls the Milvus adapter makes, each one gRPC request and its status checked: a
//! collection's schema, indexes and load state, strongly consistent queries, inserts and
//! deletes by primary key.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::transport::{ClientTlsConfig, Endpoint};

use super::columns::{Row, insert_columns, metadata_in, pks_in, rows};
use super::proto::{
    self, BoolResponse, ConsistencyLevel, CreateIndexRequest, DeleteRequest,
    DescribeCollectionRequest, DescribeCollectionResponse, DescribeIndexRequest,
    DescribeIndexResponse, GetLoadStateRequest, GetLoadStateResponse, GetVersionRequest,
    GetVersionResponse, HasCollectionRequest, IndexState, InsertRequest, KeyValuePair,
    LoadCollectionRequest, LoadState, MutationResult, QueryRequest, QueryResults, Rpc, Status,
};
use super::{MilvusConfig, MilvusStore, NAME, minor_version, schema};
use crate::vector::store::{Location, Point, VectorError};

/// How long an index build or a load may take before the call fails.
const WAIT: Duration = Duration::from_secs(300);

pub(super) fn grpc_failed(call: &'static str, e: tonic::Status) -> VectorError {
    VectorError::store(NAME, call, format!("{:?}: {}", e.code(), e.message()))
}

/// Milvus answers most failures inside the reply: code 0 is success.
pub(super) fn ok(call: &'static str, status: Option<Status>) -> Result<(), VectorError> {
    match status {
        Some(s) if !s.is_success() => Err(VectorError::store(
            NAME,
            call,
            format!("{} (code {})", s.reason, s.code),
        )),
        _ => Ok(()),
    }
}

pub(super) fn kv(key: &str, value: impl Into<String>) -> KeyValuePair {
    KeyValuePair::new(key, value)
}

impl MilvusStore {
    pub(super) async fn connect(config: &MilvusConfig) -> Result<Self, VectorError> {
        let uri = config.uri.trim_end_matches('/');
        let tls = match uri.split_once("://") {
            Some(("http", _)) => false,
            Some(("https", _)) => true,
            _ => {
                return Err(VectorError::Config(format!(
                    "MILVUS_URI {uri:?} is not an http(s):// URL (a Milvus Lite file has no server)"
                )));
            }
        };
        let mut endpoint = Endpoint::from_shared(uri.to_string())
            .map_err(|e| VectorError::Config(format!("MILVUS_URI {uri:?}: {e}")))?;
        if tls {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|e| VectorError::Config(format!("MILVUS_URI {uri:?}: {e}")))?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| VectorError::store(NAME, "connect", format!("{uri}: {e}")))?;
        let token = match (&config.token, &config.user, &config.password) {
            (Some(t), _, _) if !t.is_empty() => Some(t.clone()),
            (_, Some(u), Some(p)) if !u.is_empty() => Some(format!("{u}:{p}")),
            _ => None,
        };
        let rpc =
            Rpc::new(channel, token.as_deref(), &config.database).map_err(VectorError::Config)?;
        let reply: GetVersionResponse = rpc
            .call("GetVersion", GetVersionRequest {})
            .await
            .map_err(|e| grpc_failed("get version", e))?;
        ok("get version", reply.status)?;
        let new_enough = minor_version(&reply.version).is_some_and(|v| v >= (2, 5));
        Ok(MilvusStore {
            rpc,
            hybrid: config.enable_hybrid_search && new_enough,
            hybrid_wanted: config.enable_hybrid_search,
            analyzer_params: config.analyzer_params.clone(),
            loaded: Mutex::new(HashSet::new()),
        })
    }

    pub(super) async fn has(&self, collection: &str) -> Result<bool, VectorError> {
        let reply: BoolResponse = self
            .rpc
            .call(
                "HasCollection",
                HasCollectionRequest {
                    collection_name: collection.into(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| grpc_failed("has collection", e))?;
        ok("has collection", reply.status)?;
        Ok(reply.value)
    }

    pub(super) async fn schema(
        &self,
        collection: &str,
    ) -> Result<DescribeCollectionResponse, VectorError> {
        let reply: DescribeCollectionResponse = self
            .rpc
            .call(
                "DescribeCollection",
                DescribeCollectionRequest {
                    collection_name: collection.into(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| grpc_failed("describe collection", e))?;
        ok("describe collection", reply.status.clone())?;
        Ok(reply)
    }

    /// The indexes of `collection` (none: an empty list; Milvus says "index not found").
    pub(super) async fn indexes(
        &self,
        collection: &str,
    ) -> Result<DescribeIndexResponse, VectorError> {
        let reply: DescribeIndexResponse = self
            .rpc
            .call(
                "DescribeIndex",
                DescribeIndexRequest {
                    collection_name: collection.into(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| grpc_failed("describe index", e))?;
        match &reply.status {
            // 700: IndexNotExist.
            Some(s) if s.code == 700 => Ok(DescribeIndexResponse::default()),
            _ => {
                ok("describe index", reply.status.clone())?;
                Ok(reply)
            }
        }
    }

    /// Builds the index `params` on `field` unless it has one, and waits until it is built.
    pub(super) async fn index(
        &self,
        collection: &str,
        field: &str,
        params: Vec<KeyValuePair>,
    ) -> Result<(), VectorError> {
        let has = |r: &DescribeIndexResponse| {
            r.index_descriptions
                .iter()
                .find(|d| d.field_name == field)
                .cloned()
        };
        if has(&self.indexes(collection).await?).is_none() {
            let status: Status = self
                .rpc
                .call(
                    "CreateIndex",
                    CreateIndexRequest {
                        collection_name: collection.into(),
                        field_name: field.into(),
                        extra_params: params,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| grpc_failed("create index", e))?;
            ok("create index", Some(status))?;
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let index = has(&self.indexes(collection).await?);
            match index.map(|d| d.state) {
                Some(s) if s == IndexState::Finished as i32 => return Ok(()),
                Some(s) if s == IndexState::Failed as i32 => {
                    return Err(VectorError::Layout(format!(
                        "Milvus could not build the index on {collection}.{field}"
                    )));
                }
                _ if Instant::now() > deadline => {
                    return Err(VectorError::store(
                        NAME,
                        "create index",
                        format!("{collection}.{field} not built within {WAIT:?}"),
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    pub(super) async fn load_state(&self, collection: &str) -> Result<i32, VectorError> {
        let reply: GetLoadStateResponse = self
            .rpc
            .call(
                "GetLoadState",
                GetLoadStateRequest {
                    collection_name: collection.into(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| grpc_failed("get load state", e))?;
        ok("get load state", reply.status)?;
        Ok(reply.state)
    }

    async fn load(&self, collection: &str) -> Result<Status, VectorError> {
        self.rpc
            .call(
                "LoadCollection",
                LoadCollectionRequest {
                    collection_name: collection.into(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| grpc_failed("load collection", e))
    }

    /// Loads `collection` unless loaded: a real Milvus answers queries and searches only on
    /// loaded collections (Dify's client loads them when it creates them).
    pub(super) async fn ready(&self, collection: &str) -> Result<(), VectorError> {
        let known = |c: &str| {
            self.loaded
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains(c)
        };
        if known(collection) {
            return Ok(());
        }
        let mut asked = false;
        let deadline = Instant::now() + WAIT;
        loop {
            let state = self.load_state(collection).await?;
            if state == LoadState::Loaded as i32 {
                break;
            }
            if state == LoadState::NotExist as i32 {
                return Err(VectorError::Layout(format!(
                    "Milvus has no collection {collection}"
                )));
            }
            if state == LoadState::NotLoad as i32 && !asked {
                let mut status = self.load(collection).await?;
                // 700: no index. A writer killed between creating the collection and its index
                // (an earlier attempt of this job) leaves one behind; build Dify's index on it.
                if status.code == 700 {
                    self.index(collection, schema::VECTOR, schema::vector_index())
                        .await?;
                    let described = self.schema(collection).await?.schema.unwrap_or_default();
                    if schema::is_hybrid(&described) {
                        self.index(collection, schema::SPARSE, schema::sparse_index())
                            .await?;
                    }
                    status = self.load(collection).await?;
                }
                ok("load collection", Some(status))?;
                asked = true;
            }
            if Instant::now() > deadline {
                return Err(VectorError::store(
                    NAME,
                    "load collection",
                    format!("{collection} not loaded within {WAIT:?}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(collection.to_string());
        Ok(())
    }

    /// A strongly consistent query: what this client wrote is seen.
    pub(super) async fn query(
        &self,
        collection: &str,
        expr: String,
        output: &[&str],
        limit: Option<usize>,
    ) -> Result<Vec<proto::FieldData>, VectorError> {
        self.ready(collection).await?;
        let reply: QueryResults = self
            .rpc
            .call(
                "Query",
                QueryRequest {
                    collection_name: collection.into(),
                    expr,
                    output_fields: output.iter().map(|s| s.to_string()).collect(),
                    query_params: limit
                        .map(|l| vec![kv("limit", l.to_string())])
                        .unwrap_or_default(),
                    consistency_level: ConsistencyLevel::Strong as i32,
                    use_default_consistency: false,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| grpc_failed("query", e))?;
        ok("query", reply.status)?;
        Ok(reply.fields_data)
    }

    pub(super) async fn rows(
        &self,
        collection: &str,
        expr: String,
        output: &[&str],
        limit: Option<usize>,
    ) -> Result<Vec<Row>, VectorError> {
        rows(self.query(collection, expr, output, limit).await?)
    }

    /// Rows by primary key order after `cursor` (a primary key), a page at a time.
    pub(super) async fn page(
        &self,
        collection: &str,
        cursor: Option<&str>,
        limit: usize,
        output: &[&str],
    ) -> Result<(Vec<Row>, Option<String>), VectorError> {
        let expr = match cursor {
            None => String::new(),
            Some(c) => {
                let pk: i64 = c.parse().map_err(|_| {
                    VectorError::Layout(format!("{c:?} is not a Milvus primary key"))
                })?;
                format!("{} > {pk}", schema::PK)
            }
        };
        let mut rows = self.rows(collection, expr, output, Some(limit)).await?;
        rows.sort_by_key(|r| r.pk);
        let next = (rows.len() == limit)
            .then(|| rows.last().map(|r| r.pk.to_string()))
            .flatten();
        Ok((rows, next))
    }

    /// The primary keys of the rows of these `doc_id`s (more than one each after an
    /// interrupted write).
    pub(super) async fn pks_of(
        &self,
        collection: &str,
        doc_ids: &[String],
    ) -> Result<Vec<Row>, VectorError> {
        if doc_ids.is_empty() {
            return Ok(Vec::new());
        }
        self.rows(
            collection,
            metadata_in("doc_id", doc_ids),
            &[schema::PK, schema::METADATA],
            None,
        )
        .await
    }

    /// One plain Insert of Dify's columns (no lookup: `write` replaces by doc_id around it).
    pub(super) async fn insert(
        &self,
        collection: &str,
        fields: Vec<proto::FieldData>,
        rows: usize,
    ) -> Result<(), VectorError> {
        let reply: MutationResult = self
            .rpc
            .call(
                "Insert",
                InsertRequest {
                    collection_name: collection.into(),
                    fields_data: fields,
                    num_rows: rows as u32,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| grpc_failed("insert", e))?;
        ok("insert", reply.status)?;
        if !reply.err_index.is_empty() {
            return Err(VectorError::store(
                NAME,
                "insert",
                format!("{} of {rows} rows failed", reply.err_index.len()),
            ));
        }
        Ok(())
    }

    /// Inserts `points` with no lookup of what their `doc_id`s already have: what a tight
    /// insert loop does, the ceiling `bench/vectors.sh` measures Upkeep's writes against.
    pub async fn insert_only(&self, at: &Location, points: &[Point]) -> Result<(), VectorError> {
        let Some(first) = points.first() else {
            return Ok(());
        };
        let fields = insert_columns(points, first.vector.len())?;
        self.insert(&at.collection, fields, points.len()).await
    }

    pub(super) async fn delete_pks(
        &self,
        collection: &str,
        pks: &[i64],
    ) -> Result<(), VectorError> {
        if pks.is_empty() {
            return Ok(());
        }
        let reply: MutationResult = self
            .rpc
            .call(
                "Delete",
                DeleteRequest {
                    collection_name: collection.into(),
                    expr: pks_in(pks),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| grpc_failed("delete", e))?;
        ok("delete", reply.status)
    }
}
