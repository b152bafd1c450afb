//! Vector stores: which store Dify's env names, where, and whether it answers; and one
//! adapter per store behind `store::VectorStore`, for migrations.

pub mod config;
pub mod embeddings;
pub mod qdrant;
pub mod redis_flags;
pub mod store;
pub mod weaviate;

use std::time::Duration;

use serde::Serialize;

use crate::config::Component;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reachability {
    /// The `VECTOR_STORE` / `STORAGE_TYPE` value in force.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it is (no credentials).
    pub location: Option<String>,
    /// `true` answered, `false` did not, `null` not checked.
    pub reachable: Option<bool>,
    pub detail: String,
}

/// Checks the store `VECTOR_STORE` names, the way a client of it would first connect.
pub async fn check(store: &Component) -> Reachability {
    let http = |var: &str, path: &str| {
        store
            .get(var)
            .map(|base| format!("{}{path}", base.trim_end_matches('/')))
    };
    let (location, probe) = match store.kind.as_str() {
        "weaviate" => (
            store.get("WEAVIATE_ENDPOINT").map(str::to_string),
            http("WEAVIATE_ENDPOINT", "/v1/.well-known/ready").map(Probe::Http),
        ),
        "qdrant" => (
            store.get("QDRANT_URL").map(str::to_string),
            http("QDRANT_URL", "/readyz").map(Probe::Http),
        ),
        "milvus" => {
            let uri = store.get("MILVUS_URI").map(str::to_string);
            (
                uri.clone(),
                uri.and_then(|u| host_port(&u, 19530)).map(Probe::Tcp),
            )
        }
        "pgvector" => {
            let host = store.get("PGVECTOR_HOST").map(str::to_string);
            let port = store.get("PGVECTOR_PORT").unwrap_or("5432").to_string();
            (
                host.as_ref().map(|h| format!("{h}:{port}")),
                host.map(|h| Probe::Tcp(format!("{h}:{port}"))),
            )
        }
        _ => (None, None),
    };
    let Some(probe) = probe else {
        return Reachability {
            kind: store.kind.clone(),
            location,
            reachable: None,
            detail: format!(
                "no endpoint configured or {} not checked by this version",
                store.kind
            ),
        };
    };
    let (reachable, detail) = probe.run().await;
    Reachability {
        kind: store.kind.clone(),
        location,
        reachable: Some(reachable),
        detail,
    }
}

pub enum Probe {
    Http(String),
    Tcp(String),
}

impl Probe {
    pub async fn run(&self) -> (bool, String) {
        let timeout = Duration::from_secs(3);
        match self {
            Probe::Http(url) => {
                let client = match reqwest::Client::builder().timeout(timeout).build() {
                    Ok(c) => c,
                    Err(e) => return (false, e.to_string()),
                };
                match client.get(url).send().await {
                    Ok(r) if r.status().is_success() => {
                        (true, format!("GET {url}: {}", r.status()))
                    }
                    Ok(r) => (false, format!("GET {url}: {}", r.status())),
                    Err(e) => (false, format!("GET {url}: {e}")),
                }
            }
            Probe::Tcp(addr) => {
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                    Ok(Ok(_)) => (true, format!("TCP {addr}: connected")),
                    Ok(Err(e)) => (false, format!("TCP {addr}: {e}")),
                    Err(_) => (false, format!("TCP {addr}: timed out")),
                }
            }
        }
    }
}

/// `http://host:port/...` or `host:port` to `host:port`.
fn host_port(uri: &str, default_port: u16) -> Option<String> {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.is_empty() {
        return None;
    }
    if authority.contains(':') {
        Some(authority.to_string())
    } else {
        Some(format!("{authority}:{default_port}"))
    }
}
