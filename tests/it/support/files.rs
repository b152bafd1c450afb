//! Storage trees for storage tests: a temporary directory that holds Dify-shaped keys, and
//! snapshots of any backend (through Upkeep's own operator) to compare source and target.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};
use upkeep::storage::{Resilience, StorageConfig};

/// A directory under the system temp dir, removed on drop.
pub struct TempTree {
    pub root: PathBuf,
}

impl TempTree {
    pub fn new(label: &str) -> TempTree {
        let root = std::env::temp_dir().join(format!("upkeep-{label}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&root).expect("create temp tree");
        TempTree { root }
    }

    pub fn path(&self) -> &str {
        self.root.to_str().expect("utf-8 temp path")
    }

    /// `{"type": "local", "root": ...}` for job params.
    pub fn config(&self) -> Value {
        serde_json::json!({"type": "local", "root": self.path()})
    }

    pub fn write(&self, key: &str, bytes: &[u8]) {
        let path = self.root.join(key);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create dirs");
        }
        std::fs::write(&path, bytes).expect("write file");
    }

    /// A file of `size` pseudo-random bytes, written in chunks (never all in memory).
    pub fn write_large(&self, key: &str, size: u64, seed: u64) {
        use std::io::Write;
        let path = self.root.join(key);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create dirs");
        }
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create file"));
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut chunk = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            rng.fill(&mut chunk[..n]);
            f.write_all(&chunk[..n]).expect("write chunk");
            left -= n as u64;
        }
        f.flush().expect("flush");
    }

    pub fn exists(&self, key: &str) -> bool {
        Path::new(&self.root).join(key).is_file()
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Every object of a backend: key → (size, sha256 hex), read through Upkeep's operator.
pub async fn snapshot(config: &Value) -> BTreeMap<String, (u64, String)> {
    let config = StorageConfig::from_value(config.clone()).expect("valid storage config");
    let op = upkeep::storage::operator(&config, Resilience::default()).expect("operator");
    let mut lister = op.lister_with("").recursive(true).await.expect("list");
    let mut out = BTreeMap::new();
    while let Some(entry) = lister.try_next().await.expect("list entry") {
        if entry.path().ends_with('/') {
            continue;
        }
        let key = entry.path().to_string();
        let mut stream = op
            .reader(&key)
            .await
            .expect("reader")
            .into_bytes_stream(..)
            .await
            .expect("stream");
        let mut h = Sha256::new();
        let mut n = 0u64;
        while let Some(b) = stream.try_next().await.expect("read") {
            n += b.len() as u64;
            h.update(&b);
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        out.insert(key, (n, hex));
    }
    out
}

/// Writes one object through Upkeep's operator (to seed a cloud backend).
pub async fn put(config: &Value, key: &str, bytes: Vec<u8>) {
    let config = StorageConfig::from_value(config.clone()).expect("valid storage config");
    let op = upkeep::storage::operator(&config, Resilience::default()).expect("operator");
    op.write_with(key, bytes)
        .content_type("application/octet-stream")
        .await
        .expect("write");
}

/// Every object under `prefix` with its bytes (for small test sets).
pub async fn read_all(config: &Value, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let config = StorageConfig::from_value(config.clone()).expect("valid storage config");
    let op = upkeep::storage::operator(&config, Resilience::default()).expect("operator");
    let mut out = BTreeMap::new();
    let mut lister = match op.lister_with(prefix).recursive(true).await {
        Ok(l) => l,
        Err(e) if e.kind() == opendal::ErrorKind::NotFound => return out,
        Err(e) => panic!("list {prefix}: {e}"),
    };
    while let Some(entry) = lister.try_next().await.expect("list entry") {
        if entry.path().ends_with('/') {
            continue;
        }
        let key = entry.path().to_string();
        let bytes = op.read(&key).await.expect("read").to_vec();
        out.insert(key, bytes);
    }
    out
}
