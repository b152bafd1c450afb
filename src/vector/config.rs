//! A vector store as a job names it (`{"type": "qdrant", "url": ...}`: Dify's variable names,
//! lowercased, without the prefix) or as Dify's env configures it (`QDRANT_URL`, ...).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::qdrant::{self, QdrantStore};
use super::store::{CollectionInfo, Hit, Page, Point, VectorError, VectorStore};
use super::weaviate::Weaviate;
use crate::config::Component;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    Weaviate {
        /// `WEAVIATE_ENDPOINT`, e.g. `http://weaviate:8080`.
        endpoint: String,
        #[serde(default)]
        api_key: Option<String>,
    },
    Qdrant {
        /// `QDRANT_URL`: the REST URL; gRPC is on the same host at `grpc_port`.
        url: String,
        #[serde(default)]
        api_key: Option<String>,
        /// `QDRANT_GRPC_PORT` (6334).
        #[serde(default = "default_grpc_port")]
        grpc_port: u16,
        /// `QDRANT_CLIENT_TIMEOUT` in seconds (20).
        #[serde(default = "default_timeout")]
        client_timeout: u64,
        /// `QDRANT_REPLICATION_FACTOR` (1), for collections Upkeep creates.
        #[serde(default = "default_replication")]
        replication_factor: u32,
    },
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

/// The stores this version reads and writes.
pub const SUPPORTED: &[&str] = &["weaviate", "qdrant"];

impl StoreConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            StoreConfig::Weaviate { .. } => "weaviate",
            StoreConfig::Qdrant { .. } => "qdrant",
        }
    }

    /// Where it is, without credentials.
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Weaviate { endpoint, .. } => format!("weaviate at {endpoint}"),
            StoreConfig::Qdrant { url, grpc_port, .. } => {
                format!("qdrant at {url} (gRPC port {grpc_port})")
            }
        }
    }

    /// Params form; errors name the field under `params.<field>`.
    pub fn from_value(v: &Value) -> Result<Self, (String, String)> {
        serde_path_to_error::deserialize::<_, StoreConfig>(v.clone()).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            (if path == "." { String::new() } else { path }, message)
        })
    }

    /// Dify's env, for the store `kind` (`VECTOR_STORE`, or the one a dataset's `index_struct`
    /// names). Errors name the variable.
    pub fn from_env(kind: &str, env: &Component) -> Result<Self, String> {
        let need = |name: &str| {
            env.get(name)
                .map(str::to_string)
                .ok_or_else(|| format!("{name} is not set"))
        };
        let key = |name: &str| env.get(name).map(str::to_string);
        match kind {
            "weaviate" => Ok(StoreConfig::Weaviate {
                endpoint: need("WEAVIATE_ENDPOINT")?,
                api_key: key("WEAVIATE_API_KEY"),
            }),
            "qdrant" => {
                let number = |name: &str, default: u64| match env.get(name) {
                    None => Ok(default),
                    Some(v) => v
                        .parse::<u64>()
                        .map_err(|_| format!("{name}={v:?} is not a number")),
                };
                Ok(StoreConfig::Qdrant {
                    url: need("QDRANT_URL")?,
                    api_key: key("QDRANT_API_KEY"),
                    grpc_port: u16::try_from(number("QDRANT_GRPC_PORT", 6334)?)
                        .map_err(|_| "QDRANT_GRPC_PORT is not a port".to_string())?,
                    client_timeout: number("QDRANT_CLIENT_TIMEOUT", 20)?,
                    replication_factor: u32::try_from(number("QDRANT_REPLICATION_FACTOR", 1)?)
                        .map_err(|_| "QDRANT_REPLICATION_FACTOR is too large".to_string())?,
                })
            }
            other => Err(format!(
                "vector store {other:?} is not supported by this version (supported: {})",
                SUPPORTED.join(", ")
            )),
        }
    }
}

/// An open store of either kind.
pub enum AnyStore {
    Weaviate(Weaviate),
    Qdrant(QdrantStore),
}

impl StoreConfig {
    /// Connects (Qdrant asks the server's version here).
    pub async fn open(&self) -> Result<AnyStore, VectorError> {
        match self {
            StoreConfig::Weaviate { endpoint, api_key } => {
                Weaviate::new(endpoint, api_key.as_deref()).map(AnyStore::Weaviate)
            }
            StoreConfig::Qdrant {
                url,
                api_key,
                grpc_port,
                client_timeout,
                replication_factor,
            } => {
                let grpc = qdrant::grpc_url(url, *grpc_port)?;
                QdrantStore::connect(
                    &grpc,
                    api_key.as_deref(),
                    Duration::from_secs(*client_timeout),
                    *replication_factor,
                )
                .await
                .map(AnyStore::Qdrant)
            }
        }
    }
}

/// Either store through the one trait: the job code is written once, for `AnyStore`.
macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Weaviate($s) => $call,
            AnyStore::Qdrant($s) => $call,
        }
    };
}

impl VectorStore for AnyStore {
    fn kind(&self) -> &'static str {
        delegate!(self, s => s.kind())
    }
    async fn health(&self) -> Result<String, VectorError> {
        delegate!(self, s => s.health().await)
    }
    async fn describe(&self, collection: &str) -> Result<Option<CollectionInfo>, VectorError> {
        delegate!(self, s => s.describe(collection).await)
    }
    async fn read_page(
        &self,
        collection: &str,
        group: &str,
        cursor: Option<&str>,
        limit: usize,
        vectors: bool,
    ) -> Result<Page, VectorError> {
        delegate!(self, s => s.read_page(collection, group, cursor, limit, vectors).await)
    }
    async fn ensure_collection(
        &self,
        collection: &str,
        dimension: usize,
    ) -> Result<(), VectorError> {
        delegate!(self, s => s.ensure_collection(collection, dimension).await)
    }
    async fn upsert(
        &self,
        collection: &str,
        group: &str,
        points: &[Point],
    ) -> Result<(), VectorError> {
        delegate!(self, s => s.upsert(collection, group, points).await)
    }
    async fn count(&self, collection: &str, group: &str) -> Result<u64, VectorError> {
        delegate!(self, s => s.count(collection, group).await)
    }
    async fn get(&self, collection: &str, ids: &[String]) -> Result<Vec<Point>, VectorError> {
        delegate!(self, s => s.get(collection, ids).await)
    }
    async fn present(&self, collection: &str, ids: &[String]) -> Result<Vec<String>, VectorError> {
        delegate!(self, s => s.present(collection, ids).await)
    }
    async fn ids(&self, collection: &str, group: &str) -> Result<Vec<String>, VectorError> {
        delegate!(self, s => s.ids(collection, group).await)
    }
    async fn search(
        &self,
        collection: &str,
        group: &str,
        vector: &[f32],
        limit: usize,
    ) -> Result<Vec<Hit>, VectorError> {
        delegate!(self, s => s.search(collection, group, vector, limit).await)
    }
    async fn delete(&self, collection: &str, ids: &[String]) -> Result<(), VectorError> {
        delegate!(self, s => s.delete(collection, ids).await)
    }
}
