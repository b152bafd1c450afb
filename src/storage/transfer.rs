//! Moving one object between two operators: streamed in chunks, hashed on the way (see
//! `digest`), written as a multipart upload when large, and checked on the target before anyone
//! calls it done.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use opendal::{ErrorKind, Operator};
use tokio::sync::Semaphore;

use super::digest::{self, Digests, Hasher, HashingFailed, PART, SINGLE_PUT_MAX, Wanted};
pub use super::digest::{Sha256Sum, hex};

/// The most a streaming read holds at once (OpenDAL's positioned reads of local files).
const READ_BUFFER: usize = 2 << 20;
/// Parts uploaded at once per object.
const PARTS_IN_FLIGHT: usize = 2;
/// The most one streamed transfer holds in memory: a read chunk, the chunks queued for hashing,
/// the part being filled, the parts in flight.
const MIB_PER_TRANSFER: u32 =
    ((READ_BUFFER * (1 + digest::QUEUED_CHUNKS) + PART * (PARTS_IN_FLIGHT + 1)) >> 20) as u32;
/// Memory all transfers of a job may hold at once, in MiB.
pub const MEMORY_BUDGET_MIB: u32 = 128;

/// Which end of a transfer failed: a target failure stops a migration, a source one skips the
/// object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

#[derive(Debug, thiserror::Error)]
#[error("{action} {key}: {error}")]
pub struct TransferError {
    pub side: Side,
    pub key: String,
    pub action: &'static str,
    pub error: String,
    pub not_found: bool,
}

impl TransferError {
    pub fn new(side: Side, action: &'static str, key: &str, e: impl std::fmt::Display) -> Self {
        TransferError {
            side,
            key: key.to_string(),
            action,
            error: e.to_string(),
            not_found: false,
        }
    }

    pub fn from_opendal(side: Side, action: &'static str, key: &str, e: opendal::Error) -> Self {
        let not_found = e.kind() == ErrorKind::NotFound;
        let mut err = Self::new(side, action, key, e);
        err.not_found = not_found;
        err
    }
}

/// Shares a memory budget between the transfers in flight, so many large objects at once cannot
/// hold more than `MEMORY_BUDGET_MIB`.
#[derive(Clone)]
pub struct MemoryBudget(Arc<Semaphore>);

impl Default for MemoryBudget {
    fn default() -> Self {
        MemoryBudget(Arc::new(Semaphore::new(MEMORY_BUDGET_MIB as usize)))
    }
}

impl MemoryBudget {
    pub async fn reserve(&self, size: u64) -> tokio::sync::SemaphorePermit<'_> {
        let cap = if size <= SINGLE_PUT_MAX {
            MEMORY_BUDGET_MIB
        } else {
            MIB_PER_TRANSFER
        };
        let mib = u32::try_from((size >> 20) + 1).unwrap_or(u32::MAX).min(cap);
        // The semaphore is never closed, so acquiring only waits.
        loop {
            if let Ok(permit) = self.0.acquire_many(mib).await {
                return permit;
            }
        }
    }
}

/// What a source object looks like before it moves.
#[derive(Debug, Clone)]
pub struct SourceObject {
    pub key: String,
    pub size: u64,
    pub content_type: Option<String>,
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
    pub etag: Option<String>,
}

pub async fn stat_source(op: &Operator, key: &str) -> Result<SourceObject, TransferError> {
    let meta = op
        .stat(key)
        .await
        .map_err(|e| TransferError::from_opendal(Side::Source, "reading", key, e))?;
    Ok(SourceObject {
        key: key.to_string(),
        size: meta.content_length(),
        content_type: meta.content_type().map(str::to_string),
        last_modified: meta
            .last_modified()
            .map(|t| chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::from(t))),
        etag: meta.etag().map(str::to_string),
    })
}

/// The target's size for `key`, or `None` when it has no such object.
pub async fn target_size(op: &Operator, key: &str) -> Result<Option<u64>, TransferError> {
    match op.stat(key).await {
        Ok(meta) => Ok(Some(meta.content_length())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TransferError::from_opendal(
            Side::Target,
            "checking",
            key,
            e,
        )),
    }
}

/// Reads an object through and returns its length and SHA-256: one streaming request.
pub async fn hash_object(
    op: &Operator,
    side: Side,
    key: &str,
    size: u64,
    budget: &MemoryBudget,
) -> Result<(u64, Sha256Sum), TransferError> {
    let queued = READ_BUFFER as u64 * (1 + digest::QUEUED_CHUNKS as u64);
    let _memory = budget.reserve(size.min(queued)).await;
    let fail = |e| TransferError::from_opendal(side, "reading", key, e);
    let reader = op.reader(key).await.map_err(fail)?;
    let mut stream = reader.into_bytes_stream(..).await.map_err(fail)?;
    let wanted = Wanted {
        sha256: true,
        etag_of_size: None,
    };
    let failed = |e| TransferError::new(side, "hashing", key, e);
    let mut hasher = Hasher::streaming(wanted, size);
    while let Some(chunk) = next_chunk(&mut stream, side, key).await? {
        hasher.update(&chunk).await.map_err(failed)?;
    }
    let digests = hasher.finish().await.map_err(failed)?;
    match digests.sha256 {
        Some(sha) => Ok((digests.len, sha)),
        None => Err(failed(HashingFailed::new("no SHA-256 was computed"))),
    }
}

/// What a copy wrote.
pub struct Written {
    pub len: u64,
    pub sha256: Sha256Sum,
    /// The target answered with an ETag equal to the MD5 of the bytes sent (single PUT) or to
    /// the multipart form of it: the server stored exactly those bytes.
    pub server_verified: bool,
}

impl Written {
    fn new(key: &str, digests: Digests, etag: Option<&str>) -> Result<Self, TransferError> {
        let Some(sha256) = digests.sha256 else {
            return Err(TransferError::new(
                Side::Source,
                "hashing",
                key,
                "no SHA-256 was computed",
            ));
        };
        let server_verified = match (digests.etag, etag) {
            (Some(ours), Some(theirs)) => ours.matches(theirs),
            _ => false,
        };
        Ok(Written {
            len: digests.len,
            sha256,
            server_verified,
        })
    }
}

/// The next chunk of a source stream.
async fn next_chunk(
    stream: &mut (impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin),
    side: Side,
    key: &str,
) -> Result<Option<Bytes>, TransferError> {
    stream
        .try_next()
        .await
        .map_err(|e| TransferError::new(side, "reading", key, e))
}

fn hashing_failed(key: &str) -> impl Fn(HashingFailed) -> TransferError + '_ {
    move |e| TransferError::new(Side::Source, "hashing", key, e)
}

/// Streams `object` from `src` to `dst`, hashing the bytes on the way. A failed write is
/// aborted, so no partial object stays behind where the backend allows that.
pub async fn copy(
    src: &Operator,
    dst: &Operator,
    object: &SourceObject,
    budget: &MemoryBudget,
) -> Result<Written, TransferError> {
    copy_to(src, dst, object, &object.key, budget).await
}

/// `copy`, to another key on the target (a backup's content address).
pub async fn copy_to(
    src: &Operator,
    dst: &Operator,
    object: &SourceObject,
    dst_key: &str,
    budget: &MemoryBudget,
) -> Result<Written, TransferError> {
    let key = object.key.as_str();
    let _memory = budget.reserve(object.size).await;
    let source_err = |e| TransferError::from_opendal(Side::Source, "reading", key, e);
    let target_err = |e| TransferError::from_opendal(Side::Target, "writing", dst_key, e);
    let reader = src.reader(key).await.map_err(source_err)?;
    let mut stream = reader.into_bytes_stream(..).await.map_err(source_err)?;
    // Dify's SDK backends store objects as binary when they are not told otherwise; some
    // backends (GCS) refuse an object without a type.
    let content_type = object
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    let wanted = Wanted {
        sha256: true,
        etag_of_size: Some(object.size),
    };
    let failed = hashing_failed(key);
    let mut len = 0u64;
    if object.size <= SINGLE_PUT_MAX {
        // The whole object is read first and goes up in one request; it is hashed meanwhile,
        // beside the read and the upload, while the memory it takes is reserved anyway.
        let mut hasher = Hasher::holding(wanted, object.size);
        let mut chunks = Vec::new();
        while let Some(chunk) = next_chunk(&mut stream, Side::Source, key).await? {
            len += chunk.len() as u64;
            if len > object.size {
                return Err(TransferError::new(
                    Side::Source,
                    "reading",
                    key,
                    "the object grew while it was read",
                ));
            }
            hasher.update(&chunk).await.map_err(&failed)?;
            chunks.push(chunk);
        }
        let meta = dst
            .write_with(dst_key, opendal::Buffer::from(chunks))
            .content_type(content_type)
            .await
            .map_err(target_err)?;
        let digests = hasher.finish().await.map_err(&failed)?;
        return Written::new(key, digests, meta.etag());
    }
    let mut hasher = Hasher::streaming(wanted, object.size);
    let mut writer = dst
        .writer_with(dst_key)
        .chunk(PART)
        .concurrent(PARTS_IN_FLIGHT)
        .content_type(content_type)
        .await
        .map_err(target_err)?;
    let written: Result<opendal::Metadata, TransferError> = async {
        while let Some(chunk) = next_chunk(&mut stream, Side::Source, key).await? {
            hasher.update(&chunk).await.map_err(&failed)?;
            writer.write(chunk).await.map_err(target_err)?;
        }
        writer.close().await.map_err(target_err)
    }
    .await;
    let meta = match written {
        Ok(meta) => meta,
        Err(e) => {
            let _ = writer.abort().await;
            return Err(e);
        }
    };
    let digests = hasher.finish().await.map_err(&failed)?;
    Written::new(key, digests, meta.etag())
}

/// Checks the target's copy: with `expected_sha`, by reading it back (which also gives its
/// length); otherwise by its size.
pub async fn verify(
    dst: &Operator,
    key: &str,
    expected_len: u64,
    expected_sha: Option<&Sha256Sum>,
    budget: &MemoryBudget,
) -> Result<(), TransferError> {
    let mismatch = |what: String| TransferError::new(Side::Target, "verifying", key, what);
    match expected_sha {
        Some(expected) => {
            let (len, sha) = hash_object(dst, Side::Target, key, expected_len, budget).await?;
            if len != expected_len {
                return Err(mismatch(format!(
                    "the copy has {len} bytes, the source {expected_len}"
                )));
            }
            if &sha != expected {
                return Err(mismatch(format!(
                    "the copy's content differs from the source (sha256 {} vs {})",
                    hex(&sha),
                    hex(expected)
                )));
            }
        }
        None => match target_size(dst, key).await? {
            None => return Err(mismatch("the copy is not on the target".into())),
            Some(size) if size != expected_len => {
                return Err(mismatch(format!(
                    "the copy has {size} bytes, the source {expected_len}"
                )));
            }
            Some(_) => {}
        },
    }
    Ok(())
}
