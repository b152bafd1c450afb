//! Vector stores: one adapter per store behind the traits of `store`, listed once in
//! `vector_stores!` (`registry.rs`). The list generates the store config of job params and its OpenAPI
//! schema, the parsing of Dify's env, the dispatch, the probe of `/v1/preflight` and the list
//! of supported stores. A new store is its own file plus one line there.

pub mod analyticdb;
pub mod embeddings;
pub mod milvus;
pub mod pgvector;
pub mod qdrant;
pub mod redis_flags;
mod registry;
mod sql;
pub mod store;
pub mod weaviate;

use std::time::Duration;

use serde::Serialize;

use crate::config::Component;

pub use registry::{AnyStore, SUPPORTED, StoreConfig};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reachability {
    /// The `VECTOR_STORE` / `STORAGE_TYPE` value in force.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it is (no credentials).
    pub location: Option<String>,
    /// `true` answered, `false` did not, `null` not checked.
    pub reachable: Option<bool>,
    /// The server's version, when it answered and says one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub detail: String,
}

/// How long the probe of `/v1/preflight` waits for a store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks the store `VECTOR_STORE` names the way a migration would: connects with Dify's
/// settings and asks the server's version.
pub async fn check(env: &Component) -> Reachability {
    let unchecked = |location: Option<String>, detail: String| Reachability {
        kind: env.kind.clone(),
        location,
        reachable: None,
        version: None,
        detail,
    };
    if !SUPPORTED.contains(&env.kind.as_str()) {
        return unchecked(
            None,
            format!(
                "{} is not supported by this version (supported: {})",
                env.kind,
                SUPPORTED.join(", ")
            ),
        );
    }
    let config = match StoreConfig::from_env(&env.kind, env) {
        Ok(c) => c,
        Err(e) => return unchecked(None, format!("not configured: {e}")),
    };
    let location = Some(config.describe());
    let answer = tokio::time::timeout(PROBE_TIMEOUT, async {
        let store = config.open().await?;
        store::VectorStore::health(&store).await
    })
    .await;
    let (reachable, version, detail) = match answer {
        Ok(Ok(h)) => (
            true,
            Some(h.version.clone()),
            h.detail
                .unwrap_or_else(|| format!("{} {} answered", env.kind, h.version)),
        ),
        Ok(Err(e)) => (false, None, e.to_string()),
        Err(_) => (false, None, format!("no answer within {PROBE_TIMEOUT:?}")),
    };
    Reachability {
        kind: env.kind.clone(),
        location,
        reachable: Some(reachable),
        version,
        detail,
    }
}
