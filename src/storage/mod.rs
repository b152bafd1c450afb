//! Dify's file storage through OpenDAL: the backend config (from Dify's variables or a job's
//! params), one operator per config with the same retry/timeout/limit layers, and streamed,
//! verified object transfers.

pub mod config;
pub mod digest;
pub mod listing;
pub mod operator;
pub mod transfer;

pub use config::{ConfigError, LocalConfig, StorageConfig};
pub use operator::{Resilience, operator};

use crate::config::Component;
use crate::vector::Reachability;

/// Dify's local storage directory whatever `STORAGE_TYPE` says now: `OPENDAL_FS_ROOT`, else
/// `STORAGE_LOCAL_PATH`, else `storage` (what a migration off local disk reads by default).
pub fn local_storage(env: &Component) -> StorageConfig {
    let root = env
        .get("OPENDAL_FS_ROOT")
        .or_else(|| env.get("STORAGE_LOCAL_PATH"))
        .unwrap_or("storage");
    StorageConfig::Local(LocalConfig { root: root.into() })
}

/// Whether the configured storage answers: one listing request at the root.
pub async fn check(env: &Component) -> Reachability {
    let kind = env.kind.clone();
    let config = match StorageConfig::from_env(env) {
        Ok(c) => c,
        Err(e) => {
            return Reachability {
                kind,
                location: None,
                reachable: Some(false),
                version: None,
                detail: format!("misconfigured: {e}"),
            };
        }
    };
    let location = Some(config.describe());
    // Building an fs operator creates its root: a missing directory is reported, not made.
    if let Some(root) = config.local_root()
        && !std::path::Path::new(root).is_dir()
    {
        return Reachability {
            kind,
            location,
            reachable: Some(false),
            version: None,
            detail: format!("{} is not a directory", config::absolute(root)),
        };
    }
    let resilience = Resilience {
        retries: 0,
        timeout: std::time::Duration::from_secs(5),
        io_timeout: std::time::Duration::from_secs(5),
        ..Resilience::default()
    };
    let (reachable, detail) = match operator(&config, resilience) {
        Err(e) => (false, format!("misconfigured: {e}")),
        Ok(op) => match op.list_with("").limit(10).await {
            Ok(entries) => (
                true,
                format!("readable; {} entries at the root", entries.len()),
            ),
            Err(e) => (false, format!("cannot list the root: {e}")),
        },
    };
    Reachability {
        kind,
        location,
        reachable: Some(reachable),
        version: None,
        detail,
    }
}
