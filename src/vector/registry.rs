//! The one list of vector stores (at the bottom). From it: `StoreConfig`, the `{"type": ...}`
//! object of job params with one schema per store in the OpenAPI document; its parsing from
//! Dify's env; `AnyStore`, an open store of any kind behind the source and target traits;
//! and `SUPPORTED`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::store::{
    Adapter, CollectionInfo, Health, Hit, Location, Page, Point, VectorError, VectorSource,
    VectorStore, VectorTarget,
};
use super::{analyticdb, milvus, pgvector, qdrant, weaviate};
use crate::config::Component;
use crate::dify::vector_records::Dataset;

macro_rules! vector_stores {
    ($($variant:ident => $store:ty, $config:ty;)+) => {
        /// A vector store as a job names it: `{"type": ..., ...}` with Dify's variable names
        /// for that store, lowercased, without the prefix (`{"type": "qdrant", "url": ...}`).
        /// (A variant's name in snake case is its store's `KIND`: a test holds them equal.)
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum StoreConfig {
            $($variant($config),)+
        }

        /// The stores this version reads and writes.
        pub const SUPPORTED: &[&str] = &[$(<$store as Adapter>::KIND),+];

        impl StoreConfig {
            pub fn kind(&self) -> &'static str {
                match self { $(Self::$variant(_) => <$store as Adapter>::KIND,)+ }
            }

            /// What its shape cannot say: `(field, message)`.
            fn check(&self) -> Result<(), (String, String)> {
                match self { $(Self::$variant(c) => <$store as Adapter>::check(c),)+ }
            }

            /// Where it is, without credentials.
            pub fn describe(&self) -> String {
                let location = match self { $(Self::$variant(c) => <$store as Adapter>::location(c),)+ };
                crate::secrets::scrub(&location)
            }

            /// Dify's env, for the store `kind` (`VECTOR_STORE`, or the one a dataset's
            /// `index_struct` names). Errors name the variable.
            pub fn from_env(kind: &str, env: &Component) -> Result<Self, String> {
                $(if kind == <$store as Adapter>::KIND {
                    return <$store as Adapter>::from_env(env).map(Self::$variant);
                })+
                Err(format!(
                    "vector store {kind:?} is not supported by this version (supported: {})",
                    SUPPORTED.join(", ")
                ))
            }

            /// Connects.
            pub async fn open(&self) -> Result<AnyStore, VectorError> {
                match self {
                    $(Self::$variant(c) => <$store as Adapter>::open(c).await.map(AnyStore::$variant),)+
                }
            }

            /// Connects, to write what the Dify at `revision` reads.
            pub async fn open_target(&self, revision: Option<&str>) -> Result<AnyStore, VectorError> {
                let mut store = self.open().await?;
                store.for_release(revision);
                Ok(store)
            }

            /// Where Dify keeps `ds` in this store (`class_prefix`: what its `index_struct`
            /// names, when that names this store).
            pub fn locate(&self, ds: &Dataset, class_prefix: Option<&str>) -> Location {
                match self { $(Self::$variant(_) => <$store as Adapter>::locate(ds, class_prefix),)+ }
            }

            /// `datasets.index_struct` pointing at `at` in this store, as Dify writes it.
            pub fn index_struct(&self, at: &Location) -> String {
                match self { $(Self::$variant(_) => <$store as Adapter>::index_struct(at),)+ }
            }
        }

        /// An open store of any kind: the job code is written once, for this.
        pub enum AnyStore {
            $($variant($store),)+
        }

        impl VectorStore for AnyStore {
            fn kind(&self) -> &'static str {
                match self { $(Self::$variant(s) => s.kind(),)+ }
            }
            async fn health(&self) -> Result<Health, VectorError> {
                match self { $(Self::$variant(s) => s.health().await,)+ }
            }
            async fn describe(&self, collection: &str) -> Result<Option<CollectionInfo>, VectorError> {
                match self { $(Self::$variant(s) => s.describe(collection).await,)+ }
            }
            fn notes(&self) -> Vec<String> {
                match self { $(Self::$variant(s) => s.notes(),)+ }
            }
        }

        impl VectorSource for AnyStore {
            async fn read_page(
                &self,
                at: &Location,
                cursor: Option<&str>,
                limit: usize,
                vectors: bool,
            ) -> Result<Page, VectorError> {
                match self { $(Self::$variant(s) => s.read_page(at, cursor, limit, vectors).await,)+ }
            }
            async fn fetch(&self, at: &Location, ids: &[String]) -> Result<Vec<Point>, VectorError> {
                match self { $(Self::$variant(s) => s.fetch(at, ids).await,)+ }
            }
        }

        impl VectorTarget for AnyStore {
            fn for_release(&mut self, revision: Option<&str>) {
                match self { $(Self::$variant(s) => s.for_release(revision),)+ }
            }
            async fn ensure(&self, at: &Location, dimension: usize) -> Result<(), VectorError> {
                match self { $(Self::$variant(s) => s.ensure(at, dimension).await,)+ }
            }
            async fn write(&self, at: &Location, points: &[Point]) -> Result<(), VectorError> {
                match self { $(Self::$variant(s) => s.write(at, points).await,)+ }
            }
            async fn write_new(&self, at: &Location, points: &[Point]) -> Result<(), VectorError> {
                match self { $(Self::$variant(s) => s.write_new(at, points).await,)+ }
            }
            async fn present(&self, at: &Location, doc_ids: &[String]) -> Result<Vec<String>, VectorError> {
                match self { $(Self::$variant(s) => s.present(at, doc_ids).await,)+ }
            }
            async fn count(&self, at: &Location) -> Result<u64, VectorError> {
                match self { $(Self::$variant(s) => s.count(at).await,)+ }
            }
            async fn read_back(&self, at: &Location, doc_ids: &[String]) -> Result<Vec<Point>, VectorError> {
                match self { $(Self::$variant(s) => s.read_back(at, doc_ids).await,)+ }
            }
            async fn doc_ids(
                &self,
                at: &Location,
                cursor: Option<&str>,
                limit: usize,
            ) -> Result<(Vec<String>, Option<String>), VectorError> {
                match self { $(Self::$variant(s) => s.doc_ids(at, cursor, limit).await,)+ }
            }
            async fn search(
                &self,
                at: &Location,
                vector: &[f32],
                limit: usize,
                document_ids: &[String],
            ) -> Result<Vec<Hit>, VectorError> {
                match self { $(Self::$variant(s) => s.search(at, vector, limit, document_ids).await,)+ }
            }
            async fn remove(&self, at: &Location, doc_ids: &[String]) -> Result<(), VectorError> {
                match self { $(Self::$variant(s) => s.remove(at, doc_ids).await,)+ }
            }
        }
    };
}

impl StoreConfig {
    /// Params form; errors name the field under `params.<field>`.
    pub fn from_value(v: &Value) -> Result<Self, (String, String)> {
        let config =
            serde_path_to_error::deserialize::<_, StoreConfig>(v.clone()).map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                (if path == "." { String::new() } else { path }, message)
            })?;
        config.check()?;
        Ok(config)
    }
}

vector_stores! {
    Weaviate => weaviate::Weaviate, weaviate::WeaviateConfig;
    Qdrant => qdrant::QdrantStore, qdrant::QdrantConfig;
    Milvus => milvus::MilvusStore, milvus::MilvusConfig;
    Pgvector => pgvector::PgvectorStore, pgvector::PgvectorConfig;
    Analyticdb => analyticdb::AnalyticdbStore, analyticdb::AnalyticdbConfig;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `type` of params and of the OpenAPI document is each store's `VECTOR_STORE` name.
    #[test]
    fn type_names_are_the_kinds() {
        let doc = serde_json::to_value(crate::api::openapi()).expect("openapi serialises");
        let variants = doc["components"]["schemas"]["StoreConfig"]["oneOf"]
            .as_array()
            .expect("StoreConfig is a oneOf");
        let names: Vec<&str> = variants
            .iter()
            .filter_map(|v| v["allOf"][1]["properties"]["type"]["enum"][0].as_str())
            .collect();
        assert_eq!(names, SUPPORTED);
        for kind in SUPPORTED {
            let err = StoreConfig::from_value(&serde_json::json!({"type": kind}))
                .expect_err("fields missing");
            assert!(!err.1.contains("unknown variant"), "{kind}: {err:?}");
        }
    }
}
