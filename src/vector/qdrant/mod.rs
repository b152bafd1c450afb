//! Qdrant over gRPC with the `qdrant-client` crate, writing exactly what Dify's Qdrant code
//! writes: one unnamed cosine vector per collection, HNSW `m=0, payload_m=16`, payload
//! `{page_content, metadata, group_id}`, point id = `metadata.doc_id`, and the payload
//! indexes Dify creates. Only calls and fields Qdrant 1.8 serves (Dify's compose runs 1.8.3):
//! vectors go in `Vector.data` unless the server is 1.13 or newer, which reads `dense`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use qdrant_client::qdrant::{
    Condition, CountPoints, CreateCollection, CreateFieldIndexCollection, DeletePoints,
    DenseVector, Distance, FieldType, Filter, GetCollectionInfoRequest, GetPoints, HnswConfigDiff,
    PayloadIndexParams, PointId, PointStruct, ScrollPoints, SearchPoints, TextIndexParams,
    TokenizerType, UpsertPoints, Vector, VectorParams, Vectors, VectorsConfig,
    payload_index_params::IndexParams, point_id::PointIdOptions, vector::Vector as VectorKind,
    vector_output::Vector as OutputKind, vectors::VectorsOptions, vectors_config::Config,
    vectors_output::VectorsOptions as OutputOptions,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::store::{
    Adapter, CollectionInfo, Health, Hit, Location, Page, Point, VectorError, VectorSource,
    VectorStore, VectorTarget,
};
use crate::config::Component;
use crate::dify::index_struct;
use crate::dify::vector_records::Dataset;

mod target;

const NAME: &str = "qdrant";

/// `{"type": "qdrant", ...}`: Dify's `QDRANT_*` variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QdrantConfig {
    /// `QDRANT_URL`: the REST URL; gRPC is on the same host at `grpc_port`.
    pub url: String,
    #[serde(default)]
    pub api_key: Option<String>,
    /// `QDRANT_GRPC_PORT` (6334).
    #[serde(default = "default_grpc_port")]
    pub grpc_port: u16,
    /// `QDRANT_CLIENT_TIMEOUT` in seconds (20).
    #[serde(default = "default_timeout")]
    pub client_timeout: u64,
    /// `QDRANT_REPLICATION_FACTOR` (1), for collections Upkeep creates.
    #[serde(default = "default_replication")]
    pub replication_factor: u32,
}

fn default_grpc_port() -> u16 {
    6334
}
fn default_timeout() -> u64 {
    20
}
fn default_replication() -> u32 {
    1
}

pub struct QdrantStore {
    client: Qdrant,
    version: String,
    /// The server reads `Vector.dense` (1.13+); older ones only `Vector.data`.
    dense: bool,
    /// `QDRANT_REPLICATION_FACTOR`, for collections Upkeep creates.
    replication_factor: u32,
}

/// Where the gRPC service is: Dify's `QDRANT_URL` names the REST port, `QDRANT_GRPC_PORT`
/// (6334) the gRPC one, on the same host and scheme.
pub fn grpc_url(rest_url: &str, grpc_port: u16) -> Result<String, VectorError> {
    let (scheme, rest) = rest_url
        .split_once("://")
        .ok_or_else(|| VectorError::Config(format!("QDRANT_URL {rest_url:?} has no http(s)://")))?;
    if scheme != "http" && scheme != "https" {
        return Err(VectorError::Config(format!(
            "QDRANT_URL {rest_url:?}: only http and https are supported (embedded `path:` mode has no server)"
        )));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.rsplit_once(':') {
        // An IPv6 literal keeps its brackets; a port is dropped.
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    if host.is_empty() {
        return Err(VectorError::Config(format!(
            "QDRANT_URL {rest_url:?} has no host"
        )));
    }
    Ok(format!("{scheme}://{host}:{grpc_port}"))
}

/// `major.minor` of a version string like `1.8.3`.
fn minor_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.trim_start_matches('v').split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn failed(call: &'static str, e: QdrantError) -> VectorError {
    VectorError::store(NAME, call, e)
}

fn not_found(e: &QdrantError) -> bool {
    matches!(e, QdrantError::ResponseError { status } if status.code() == tonic::Code::NotFound)
}

fn uuid_id(id: &str) -> PointId {
    PointId::from(id.to_string())
}

fn id_string(id: Option<&PointId>) -> String {
    match id.and_then(|i| i.point_id_options.as_ref()) {
        Some(PointIdOptions::Uuid(u)) => u.clone(),
        Some(PointIdOptions::Num(n)) => n.to_string(),
        None => String::new(),
    }
}

fn group_filter(group: &str) -> Filter {
    Filter::must([Condition::matches("group_id", group.to_string())])
}

/// A stored point as Dify's record: `page_content`, `metadata` (every key), the vector from
/// whichever field the server filled.
#[allow(deprecated)] // `VectorOutput.data` is what servers before 1.17 fill.
fn point_of(
    id: Option<&PointId>,
    payload: HashMap<String, qdrant_client::qdrant::Value>,
    vectors: Option<qdrant_client::qdrant::VectorsOutput>,
) -> Point {
    let payload: Value = Payload::from(payload).into();
    let text = payload["page_content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let metadata: Map<String, Value> = payload["metadata"].as_object().cloned().unwrap_or_default();
    let vector = match vectors.and_then(|v| v.vectors_options) {
        Some(OutputOptions::Vector(v)) => match v.vector {
            Some(OutputKind::Dense(d)) => d.data,
            _ => v.data,
        },
        _ => Vec::new(),
    };
    Point {
        id: id_string(id),
        vector,
        text,
        metadata,
    }
}

impl QdrantStore {
    /// One page of a group's points, in id order after `cursor`.
    async fn scroll_group(
        &self,
        at: &Location,
        cursor: Option<&str>,
        limit: usize,
        payload: bool,
        vectors: bool,
    ) -> Result<qdrant_client::qdrant::ScrollResponse, VectorError> {
        self.client
            .scroll(ScrollPoints {
                collection_name: at.collection.clone(),
                filter: Some(group_filter(&at.group)),
                offset: cursor.map(uuid_id),
                limit: Some(u32::try_from(limit).unwrap_or(u32::MAX)),
                with_payload: Some(payload.into()),
                with_vectors: Some(vectors.into()),
                ..Default::default()
            })
            .await
            .map_err(|e| failed("scroll", e))
    }

    /// Connects and asks the server's version once (it decides the vector wire form).
    pub async fn connect(
        grpc_url: &str,
        api_key: Option<&str>,
        timeout: Duration,
        replication_factor: u32,
    ) -> Result<Self, VectorError> {
        let client = Qdrant::from_url(grpc_url)
            .api_key(api_key.filter(|k| !k.is_empty()).map(str::to_string))
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .skip_compatibility_check()
            .build()
            .map_err(|e| VectorError::Config(format!("Qdrant at {grpc_url}: {e}")))?;
        let reply = client
            .health_check()
            .await
            .map_err(|e| failed("health check", e))?;
        let dense = minor_version(&reply.version).is_some_and(|v| v >= (1, 13));
        Ok(QdrantStore {
            client,
            version: reply.version,
            dense,
            replication_factor,
        })
    }

    /// Points by id, with payload and vectors.
    async fn points(&self, collection: &str, ids: &[String]) -> Result<Vec<Point>, VectorError> {
        let got = self
            .client
            .get_points(GetPoints {
                collection_name: collection.to_string(),
                ids: ids.iter().map(|i| uuid_id(i)).collect(),
                with_payload: Some(true.into()),
                with_vectors: Some(true.into()),
                ..Default::default()
            })
            .await
            .map_err(|e| failed("get points", e))?;
        Ok(got
            .result
            .into_iter()
            .map(|p| point_of(p.id.as_ref(), p.payload, p.vectors))
            .collect())
    }
    pub fn version(&self) -> &str {
        &self.version
    }

    /// A vector in the form this server reads.
    #[allow(deprecated)] // `Vector.data`: the only field Qdrant before 1.13 reads.
    fn vector(&self, data: Vec<f32>) -> Vectors {
        let vector = if self.dense {
            Vector {
                vector: Some(VectorKind::Dense(DenseVector { data })),
                ..Default::default()
            }
        } else {
            Vector {
                data,
                ..Default::default()
            }
        };
        Vectors {
            vectors_options: Some(VectorsOptions::Vector(vector)),
        }
    }

    /// The collection's vector params and the payload fields it indexes; None if absent.
    async fn info(
        &self,
        collection: &str,
    ) -> Result<Option<(CollectionInfo, HashSet<String>)>, VectorError> {
        let info = match self
            .client
            .collection_info(GetCollectionInfoRequest {
                collection_name: collection.to_string(),
            })
            .await
        {
            Ok(r) => r.result.unwrap_or_default(),
            Err(e) if not_found(&e) => return Ok(None),
            Err(e) => return Err(failed("collection info", e)),
        };
        let indexed = info.payload_schema.keys().cloned().collect();
        let params = info
            .config
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        match params {
            Some(Config::Params(p)) => Ok(Some((
                CollectionInfo {
                    dimension: usize::try_from(p.size).ok(),
                    distance: Distance::try_from(p.distance)
                        .map(|d| d.as_str_name().to_lowercase())
                        .unwrap_or_else(|_| "unknown".into()),
                    layout: "unnamed".into(),
                },
                indexed,
            ))),
            _ => Err(VectorError::Layout(format!(
                "Qdrant collection {collection} has named vectors; Dify writes one unnamed vector"
            ))),
        }
    }

    async fn create_index(
        &self,
        collection: &str,
        field: &str,
        kind: FieldType,
        params: Option<IndexParams>,
    ) -> Result<(), VectorError> {
        self.client
            .create_field_index(CreateFieldIndexCollection {
                collection_name: collection.to_string(),
                wait: Some(true),
                field_name: field.to_string(),
                field_type: Some(kind as i32),
                field_index_params: params.map(|p| PayloadIndexParams {
                    index_params: Some(p),
                }),
                ..Default::default()
            })
            .await
            .map_err(|e| failed("create field index", e))?;
        Ok(())
    }
}

impl Adapter for QdrantStore {
    const KIND: &'static str = NAME;
    type Config = QdrantConfig;

    fn from_env(env: &Component) -> Result<QdrantConfig, String> {
        let number = |name: &str, default: u64| match env.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| format!("{name}={v:?} is not a number")),
        };
        Ok(QdrantConfig {
            url: env
                .get("QDRANT_URL")
                .ok_or("QDRANT_URL is not set")?
                .to_string(),
            api_key: env.get("QDRANT_API_KEY").map(str::to_string),
            grpc_port: u16::try_from(number("QDRANT_GRPC_PORT", 6334)?)
                .map_err(|_| "QDRANT_GRPC_PORT is not a port".to_string())?,
            client_timeout: number("QDRANT_CLIENT_TIMEOUT", 20)?,
            replication_factor: u32::try_from(number("QDRANT_REPLICATION_FACTOR", 1)?)
                .map_err(|_| "QDRANT_REPLICATION_FACTOR is too large".to_string())?,
        })
    }

    fn location(config: &QdrantConfig) -> String {
        format!("qdrant at {} (gRPC port {})", config.url, config.grpc_port)
    }

    async fn open(config: &QdrantConfig) -> Result<Self, VectorError> {
        let grpc = grpc_url(&config.url, config.grpc_port)?;
        QdrantStore::connect(
            &grpc,
            config.api_key.as_deref(),
            Duration::from_secs(config.client_timeout),
            config.replication_factor,
        )
        .await
    }

    /// Dify's Qdrant factory uses the shared collection of the dataset's embedding model
    /// (`dataset_collection_bindings`) whenever the dataset has one, `group_id` = dataset.
    fn locate(ds: &Dataset, class_prefix: Option<&str>) -> Location {
        let collection = match (&ds.binding_collection, class_prefix) {
            (Some(binding), _) => binding.clone(),
            (None, Some(name)) => name.to_string(),
            (None, None) => index_struct::generated_name(ds.id),
        };
        Location {
            collection,
            group: ds.id.to_string(),
        }
    }
}

impl VectorStore for QdrantStore {
    fn kind(&self) -> &'static str {
        NAME
    }

    async fn health(&self) -> Result<Health, VectorError> {
        let reply = self
            .client
            .health_check()
            .await
            .map_err(|e| failed("health check", e))?;
        Ok(Health {
            version: reply.version,
            detail: None,
        })
    }

    async fn describe(&self, collection: &str) -> Result<Option<CollectionInfo>, VectorError> {
        Ok(self.info(collection).await?.map(|(info, _)| info))
    }
}

impl VectorSource for QdrantStore {
    async fn read_page(
        &self,
        at: &Location,
        cursor: Option<&str>,
        limit: usize,
        vectors: bool,
    ) -> Result<Page, VectorError> {
        let page = self.scroll_group(at, cursor, limit, true, vectors).await?;
        Ok(Page {
            points: page
                .result
                .into_iter()
                .map(|p| point_of(p.id.as_ref(), p.payload, p.vectors))
                .collect(),
            next: page.next_page_offset.as_ref().map(|id| id_string(Some(id))),
        })
    }

    async fn fetch(&self, at: &Location, ids: &[String]) -> Result<Vec<Point>, VectorError> {
        self.points(&at.collection, ids).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grpc_port_replaces_the_rest_one() {
        assert_eq!(
            grpc_url("http://qdrant:6333", 6334).ok().as_deref(),
            Some("http://qdrant:6334")
        );
        assert_eq!(
            grpc_url("https://q.example.com", 6334).ok().as_deref(),
            Some("https://q.example.com:6334")
        );
        assert_eq!(
            grpc_url("http://[::1]:6333/", 7000).ok().as_deref(),
            Some("http://[::1]:7000")
        );
        assert!(grpc_url("path:storage/qdrant", 6334).is_err());
    }

    #[test]
    fn reads_versions() {
        assert_eq!(minor_version("1.8.3"), Some((1, 8)));
        assert_eq!(minor_version("v1.13.0"), Some((1, 13)));
        assert_eq!(minor_version("dev"), None);
    }
}
