//! A backup repository on any OpenDAL backend: content-addressed objects shared by every set,
//! one directory per set, and the manifest written last that makes a set complete.
//!
//! ```text
//! objects/sha256/<2 hex>/<64 hex>     storage objects and vector parts, written once
//! sets/<set>/database/<db>.dump       pg_dump custom-format archives
//! sets/<set>/storage.ndjson           the storage index: key, size, sha256 per object
//! sets/<set>/vectors/<id>.json        a dataset's descriptor (store, dimension, metric, model)
//! sets/<set>/manifest.json            every file with size and SHA-256; absent = incomplete
//! ```

use std::collections::{BTreeMap, HashMap};

use futures_util::TryStreamExt;
use opendal::{EntryMode, ErrorKind, Operator};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::storage::transfer::{Sha256Sum, hex};

pub const FORMAT: &str = "upkeep-backup/1";

pub fn object_path(sha: &Sha256Sum) -> String {
    let h = hex(sha);
    format!("objects/sha256/{}/{h}", &h[..2])
}

pub fn manifest_path(set: &str) -> String {
    format!("sets/{set}/manifest.json")
}

pub fn dump_path(set: &str, database: &str) -> String {
    format!("sets/{set}/database/{database}.dump")
}

pub fn index_path(set: &str) -> String {
    format!("sets/{set}/storage.ndjson")
}

pub fn descriptor_path(set: &str, unit: &str) -> String {
    format!("sets/{set}/vectors/{unit}.json")
}

/// `YYYYMMDDTHHMMSSZ-<8 hex>`: sorts by time in a bucket listing (the first 3 hex are the
/// milliseconds, so two sets of one second sort too), fixed for the job (the time is the job
/// id's UUIDv7 timestamp, the rest its random bits).
pub fn set_id(job_id: Uuid) -> String {
    let ms = job_id
        .get_timestamp()
        .map(|t| {
            let (s, n) = t.to_unix();
            s as i64 * 1000 + i64::from(n / 1_000_000)
        })
        .unwrap_or(0);
    let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let bits = job_id.simple().to_string();
    format!(
        "{}-{:03x}{}",
        at.format("%Y%m%dT%H%M%SZ"),
        ms.rem_euclid(1000),
        &bits[13..18]
    )
}

/// Whether `s` looks like a set id (it becomes part of a path, so nothing else is let in).
pub fn valid_set_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 25
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[16] == b'-'
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[17..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// One file of a set, as the manifest pins it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// One line of the storage index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexLine {
    /// The object's key in Dify's storage.
    pub k: String,
    pub s: u64,
    /// SHA-256 of its bytes: where it is under `objects/`.
    pub h: String,
    /// Last modified, as the storage said: with the size (and the ETag where there is one), how
    /// the next backup knows an object is unchanged without reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
}

/// The Dify release a set was taken from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = SetDifyRelease)]
pub struct DifyInfo {
    pub revision: Option<String>,
    pub release: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabasePart {
    pub pg_dump_version: String,
    pub server_version: String,
    /// When the snapshot the main dump reads was taken.
    pub snapshot_taken_at: chrono::DateTime<chrono::Utc>,
    /// How often the dump was started over from a new snapshot (a killed attempt's ended).
    pub restarts: u32,
    pub databases: Vec<DumpedDatabase>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DumpedDatabase {
    pub name: String,
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Exact row counts per `schema.table`, read in the dump's own snapshot.
    pub tables: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoragePart {
    pub source: String,
    pub objects: u64,
    pub bytes: u64,
    pub index: FileEntry,
}

/// How one dataset's (or app's annotation replies') records were kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Descriptor {
    pub format: String,
    /// `dataset` or `annotations` (then the id is the app's).
    pub kind: String,
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub store: String,
    pub collection: String,
    pub dimension: Option<usize>,
    pub metric: String,
    pub layout: String,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub records: u64,
    /// Parquet files of at most a bounded number of rows each, in read order.
    pub parts: Vec<VectorFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VectorFile {
    pub path: String,
    pub rows: u64,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VectorsPart {
    pub store: String,
    pub datasets: Vec<Descriptor>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub set: String,
    pub label: Option<String>,
    pub job_id: Uuid,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub completed_at: chrono::DateTime<chrono::Utc>,
    pub upkeep_version: String,
    pub dify: DifyInfo,
    pub database: Option<DatabasePart>,
    pub storage: Option<StoragePart>,
    pub vectors: Option<VectorsPart>,
    /// Every file of the set except the storage objects (which the index pins).
    pub files: Vec<FileEntry>,
}

impl Manifest {
    pub fn parts(&self) -> Vec<&'static str> {
        let mut parts = Vec::new();
        if self.database.is_some() {
            parts.push("database");
        }
        if self.storage.is_some() {
            parts.push("storage");
        }
        if self.vectors.is_some() {
            parts.push("vectors");
        }
        parts
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("set {0} has no manifest: it is incomplete (a backup that did not finish) or absent")]
    Incomplete(String),
    #[error("the manifest of set {set} cannot be read: {message}")]
    BadManifest { set: String, message: String },
    #[error("the repository failed at {path}: {error}")]
    Storage { path: String, error: opendal::Error },
}

impl RepoError {
    pub fn storage(path: &str, error: opendal::Error) -> Self {
        RepoError::Storage {
            path: path.to_string(),
            error,
        }
    }
}

pub async fn read_manifest(op: &Operator, set: &str) -> Result<Manifest, RepoError> {
    let path = manifest_path(set);
    let bytes = match op.read(&path).await {
        Ok(b) => b.to_vec(),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(RepoError::Incomplete(set.to_string()));
        }
        Err(e) => return Err(RepoError::storage(&path, e)),
    };
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| RepoError::BadManifest {
        set: set.to_string(),
        message: e.to_string(),
    })?;
    if m.format != FORMAT || m.set != set {
        return Err(RepoError::BadManifest {
            set: set.to_string(),
            message: format!("format {:?}, set {:?}", m.format, m.set),
        });
    }
    Ok(m)
}

/// Set ids with a manifest, oldest first.
pub async fn complete_sets(op: &Operator) -> Result<Vec<String>, RepoError> {
    let mut sets = Vec::new();
    for set in set_dirs(op).await? {
        match op.exists(&manifest_path(&set)).await {
            Ok(true) => sets.push(set),
            Ok(false) => {}
            Err(e) => return Err(RepoError::storage(&manifest_path(&set), e)),
        }
    }
    Ok(sets)
}

/// Every directory under `sets/` that is named like a set, oldest first.
pub async fn set_dirs(op: &Operator) -> Result<Vec<String>, RepoError> {
    let entries = match op.list("sets/").await {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RepoError::storage("sets/", e)),
    };
    let mut sets: Vec<String> = entries
        .iter()
        .filter(|e| e.metadata().mode() == EntryMode::DIR)
        .map(|e| e.name().trim_end_matches('/').to_string())
        .filter(|n| valid_set_id(n))
        .collect();
    sets.sort();
    sets.dedup();
    Ok(sets)
}

/// The content hashes already under `objects/`, with the size the listing gave (0 when it did
/// not say), so a backup writes each content once.
pub async fn known_objects(op: &Operator) -> Result<HashMap<Sha256Sum, u64>, RepoError> {
    let mut known = HashMap::new();
    let mut lister = match op.lister_with("objects/sha256/").recursive(true).await {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(known),
        Err(e) => return Err(RepoError::storage("objects/", e)),
    };
    while let Some(entry) = lister
        .try_next()
        .await
        .map_err(|e| RepoError::storage("objects/", e))?
    {
        if let Some(sha) = parse_hex(entry.name()) {
            known.insert(sha, entry.metadata().content_length());
        }
    }
    Ok(known)
}

/// The storage index of a set, a line at a time (it can hold millions of keys).
pub struct IndexReader {
    path: String,
    stream: opendal::FuturesBytesStream,
    buf: Vec<u8>,
    done: bool,
}

impl IndexReader {
    pub async fn open(op: &Operator, path: &str) -> Result<Self, RepoError> {
        let fail = |e| RepoError::storage(path, e);
        let stream = op
            .reader(path)
            .await
            .map_err(fail)?
            .into_bytes_stream(..)
            .await
            .map_err(fail)?;
        Ok(IndexReader {
            path: path.to_string(),
            stream,
            buf: Vec::new(),
            done: false,
        })
    }

    pub async fn next(&mut self) -> Result<Option<IndexLine>, RepoError> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if line.len() <= 1 {
                    continue;
                }
                return serde_json::from_slice(&line[..line.len() - 1])
                    .map(Some)
                    .map_err(|e| RepoError::BadManifest {
                        set: self.path.clone(),
                        message: format!("index line: {e}"),
                    });
            }
            if self.done {
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                self.buf.push(b'\n');
                continue;
            }
            match self.stream.try_next().await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) => self.done = true,
                Err(e) => {
                    return Err(RepoError::Storage {
                        path: self.path.clone(),
                        error: opendal::Error::new(ErrorKind::Unexpected, e.to_string()),
                    });
                }
            }
        }
    }
}

pub fn parse_hex(s: &str) -> Option<Sha256Sum> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_ids_sort_by_time_and_are_checked() {
        let at = |s: u64, ms: u32| {
            Uuid::new_v7(uuid::Timestamp::from_unix(
                uuid::NoContext,
                s,
                ms * 1_000_000,
            ))
        };
        // Within one second, and across seconds: always in creation order.
        let ids: Vec<String> = [(1_796_212_800, 5), (1_796_212_800, 999), (1_796_212_801, 0)]
            .into_iter()
            .map(|(s, ms)| set_id(at(s, ms)))
            .collect();
        for id in &ids {
            assert!(valid_set_id(id), "{id}");
        }
        assert!(ids[0].starts_with("20261202T120000Z-005"), "{ids:?}");
        assert!(ids[0] < ids[1] && ids[1] < ids[2], "{ids:?}");
        assert!(!valid_set_id("../../etc"));
        assert!(!valid_set_id("20261203T140000Z-0123456g"));
        assert!(valid_set_id("20261203T140000Z-0123abcd"));
    }

    #[test]
    fn object_paths_fan_out_by_the_first_byte() {
        let sha = [0xab; 32];
        let p = object_path(&sha);
        assert!(p.starts_with("objects/sha256/ab/abab"));
        assert_eq!(
            parse_hex(p.rsplit('/').next().unwrap_or_default()),
            Some(sha)
        );
        assert_eq!(parse_hex("xyz"), None);
    }
}
