//! Dify's file storage. For now: which backend `STORAGE_TYPE` names, where, and whether it
//! answers (local roots are listed; cloud backends come with `storage_migrate`).

use std::path::{Path, PathBuf};

use crate::config::Component;
use crate::vector::Reachability;

/// The local root Dify uses: `OPENDAL_FS_ROOT` (scheme fs) or `STORAGE_LOCAL_PATH`, default
/// `storage`, relative to the working directory (`/app/api` in Dify's image).
pub fn local_root(storage: &Component) -> Option<PathBuf> {
    let root = match storage.kind.as_str() {
        "opendal" if storage.get("OPENDAL_SCHEME").unwrap_or("fs") == "fs" => {
            storage.get("OPENDAL_FS_ROOT").unwrap_or("storage")
        }
        "local" => storage.get("STORAGE_LOCAL_PATH").unwrap_or("storage"),
        _ => return None,
    };
    Some(PathBuf::from(root))
}

pub async fn check(storage: &Component) -> Reachability {
    let kind = storage.kind.clone();
    let Some(root) = local_root(storage) else {
        let location = match kind.as_str() {
            "s3" => storage.get("S3_BUCKET_NAME").map(|b| format!("s3://{b}")),
            "azure-blob" => storage
                .get("AZURE_BLOB_CONTAINER_NAME")
                .map(|c| format!("azblob://{c}")),
            "opendal" => storage
                .get("OPENDAL_SCHEME")
                .map(|s| format!("opendal {s}")),
            _ => None,
        };
        return Reachability {
            kind,
            location,
            reachable: None,
            detail: "cloud storage is not checked by this version".into(),
        };
    };
    let shown = std::path::absolute(&root).unwrap_or(root.clone());
    let (reachable, detail) = probe_dir(&root).await;
    Reachability {
        kind,
        location: Some(shown.display().to_string()),
        reachable: Some(reachable),
        detail,
    }
}

async fn probe_dir(root: &Path) -> (bool, String) {
    match tokio::fs::read_dir(root).await {
        Ok(mut entries) => {
            let mut n = 0;
            while let Ok(Some(_)) = entries.next_entry().await {
                n += 1;
                if n >= 1000 {
                    break;
                }
            }
            (
                true,
                format!(
                    "readable; {n}{} entries at the root",
                    if n >= 1000 { "+" } else { "" }
                ),
            )
        }
        Err(e) => (false, format!("cannot read {}: {e}", root.display())),
    }
}
