//! `vector_migrate`'s params: what to move, from where to where, how.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::vector::StoreConfig;
use crate::vector::embeddings::EmbeddingEndpoint;

/// What to do with a record the source store lacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissingVectors {
    /// It fails its dataset.
    Fail,
    /// Take it from Dify's `embeddings` cache; fail the dataset if the cache lacks it too.
    #[default]
    EmbeddingCache,
    /// The cache, then the embeddings endpoint in `embedding_endpoint`.
    Reembed,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Knowledge bases (`datasets`).
    Knowledge,
    /// Apps' annotation replies.
    Annotation,
    All,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorMigrateParams {
    /// The store to move to. Default: the one `VECTOR_STORE` names, configured as Dify is.
    #[serde(default)]
    #[schema(value_type = Option<StoreConfig>)]
    pub target: Option<Value>,
    /// The store to read. Default: per dataset, the one its `index_struct` names, configured
    /// from Dify's env. Annotation replies have no `index_struct`: their default is the one
    /// store other than the target that datasets name (or named before a migration).
    #[serde(default)]
    #[schema(value_type = Option<StoreConfig>)]
    pub source: Option<Value>,
    /// What to move. Default: `all`; `knowledge` when only `dataset_ids` is given,
    /// `annotation` when only `app_ids` is.
    #[serde(default)]
    pub scope: Option<Scope>,
    /// Only these datasets (default: every high-quality dataset not on the target yet).
    #[serde(default)]
    pub dataset_ids: Option<Vec<Uuid>>,
    /// Only these apps' annotation replies (default: every app with annotation reply on).
    #[serde(default)]
    pub app_ids: Option<Vec<Uuid>>,
    #[serde(default)]
    pub tenant_ids: Option<Vec<Uuid>>,
    #[serde(default)]
    pub missing_vectors: MissingVectors,
    /// The OpenAI-compatible endpoint for `missing_vectors: reembed`.
    #[serde(default)]
    pub embedding_endpoint: Option<EmbeddingEndpoint>,
    /// Points per read and per write, 1..=1000.
    #[serde(default = "default_batch")]
    #[schema(default = 256, minimum = 1, maximum = 1000)]
    pub batch_size: u32,
    /// Datasets copied at once, 1..=32.
    #[serde(default = "default_concurrency")]
    #[schema(default = 4, minimum = 1, maximum = 32)]
    pub concurrency: u32,
    /// Point each verified dataset at the target; false copies and verifies only.
    #[serde(default = "yes")]
    pub switch_over: bool,
    /// Share the datasets among this many child jobs (1..=64) that any daemon on this database
    /// claims; each copies, verifies and switches its own. 1: this job does them all.
    #[serde(default = "one")]
    #[schema(default = 1, minimum = 1, maximum = 64)]
    pub fan_out: u32,
}

fn one() -> u32 {
    1
}

fn default_batch() -> u32 {
    256
}
fn default_concurrency() -> u32 {
    4
}
fn yes() -> bool {
    true
}

impl VectorMigrateParams {
    pub fn scope(&self) -> Scope {
        match (self.scope, &self.dataset_ids, &self.app_ids) {
            (Some(s), _, _) => s,
            (None, Some(_), None) => Scope::Knowledge,
            (None, None, Some(_)) => Scope::Annotation,
            (None, _, _) => Scope::All,
        }
    }
    pub fn knowledge(&self) -> bool {
        self.scope() != Scope::Annotation
    }
    pub fn annotations(&self) -> bool {
        self.scope() != Scope::Knowledge
    }
}
