//! Moving one object between two operators: streamed in chunks, hashed on the way, written as a
//! multipart upload when large, and checked on the target before anyone calls it done.

use std::sync::Arc;

use futures_util::TryStreamExt;
use opendal::{ErrorKind, Operator};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// Bytes per read request.
const READ_CHUNK: usize = 4 << 20;
/// Bytes per multipart part (S3 needs at least 5 MiB, except for the last one).
const PART: usize = 8 << 20;
/// Parts uploaded at once per object.
const PARTS_IN_FLIGHT: usize = 2;
/// The most one transfer holds in memory: a read chunk, the part being filled, the parts in flight.
const MIB_PER_TRANSFER: u32 = ((READ_CHUNK + PART * (PARTS_IN_FLIGHT + 1)) >> 20) as u32;
/// Memory all transfers of a job may hold at once, in MiB.
pub const MEMORY_BUDGET_MIB: u32 = 96;

pub type Sha256Sum = [u8; 32];

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
    fn new(side: Side, action: &'static str, key: &str, e: impl std::fmt::Display) -> Self {
        TransferError {
            side,
            key: key.to_string(),
            action,
            error: e.to_string(),
            not_found: false,
        }
    }

    fn from_opendal(side: Side, action: &'static str, key: &str, e: opendal::Error) -> Self {
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
    async fn reserve(&self, size: u64) -> tokio::sync::SemaphorePermit<'_> {
        let mib = u32::try_from((size >> 20) + 1)
            .unwrap_or(u32::MAX)
            .min(MIB_PER_TRANSFER);
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

/// Read requests no bigger than the object: a small file must not cost a 4 MiB buffer.
fn read_chunk(size: u64) -> usize {
    usize::try_from(size).map_or(READ_CHUNK, |s| s.clamp(64 << 10, READ_CHUNK))
}

/// Reads an object of `size` bytes through and returns its length and SHA-256.
pub async fn hash_object(
    op: &Operator,
    side: Side,
    key: &str,
    size: u64,
    budget: &MemoryBudget,
) -> Result<(u64, Sha256Sum), TransferError> {
    let _memory = budget.reserve(size.min(READ_CHUNK as u64)).await;
    let fail = |e| TransferError::from_opendal(side, "reading", key, e);
    let reader = op
        .reader_with(key)
        .chunk(read_chunk(size))
        .await
        .map_err(fail)?;
    let mut stream = reader.into_bytes_stream(..).await.map_err(fail)?;
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| TransferError::new(side, "reading", key, e))?
    {
        len += chunk.len() as u64;
        hasher.update(&chunk);
    }
    Ok((len, hasher.finalize().into()))
}

/// Streams `object` from `src` to `dst`; returns the bytes written and their SHA-256. A failed
/// write is aborted, so no partial object stays behind where the backend allows that.
pub async fn copy(
    src: &Operator,
    dst: &Operator,
    object: &SourceObject,
    budget: &MemoryBudget,
) -> Result<(u64, Sha256Sum), TransferError> {
    let key = object.key.as_str();
    let _memory = budget.reserve(object.size).await;
    let source_err = |e| TransferError::from_opendal(Side::Source, "reading", key, e);
    let target_err = |e| TransferError::from_opendal(Side::Target, "writing", key, e);
    let reader = src
        .reader_with(key)
        .chunk(read_chunk(object.size))
        .await
        .map_err(source_err)?;
    let mut stream = reader.into_bytes_stream(..).await.map_err(source_err)?;
    // Dify's SDK backends store objects as binary when they are not told otherwise; some
    // backends (GCS) refuse an object without a type.
    let content_type = object
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    let mut writer = dst
        .writer_with(key)
        .chunk(PART)
        .concurrent(PARTS_IN_FLIGHT)
        .content_type(content_type)
        .await
        .map_err(target_err)?;
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    let written: Result<(), TransferError> = async {
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| TransferError::new(Side::Source, "reading", key, e))?
        {
            len += chunk.len() as u64;
            hasher.update(&chunk);
            writer.write(chunk).await.map_err(target_err)?;
        }
        writer.close().await.map_err(target_err)?;
        Ok(())
    }
    .await;
    if let Err(e) = written {
        let _ = writer.abort().await;
        return Err(e);
    }
    Ok((len, hasher.finalize().into()))
}

/// Checks the target's copy: its size, and its content hash when `expected_sha` is given.
pub async fn verify(
    dst: &Operator,
    key: &str,
    expected_len: u64,
    expected_sha: Option<&Sha256Sum>,
    budget: &MemoryBudget,
) -> Result<(), TransferError> {
    let mismatch = |what: String| TransferError::new(Side::Target, "verifying", key, what);
    match target_size(dst, key).await? {
        None => return Err(mismatch("the copy is not on the target".into())),
        Some(size) if size != expected_len => {
            return Err(mismatch(format!(
                "the copy has {size} bytes, the source {expected_len}"
            )));
        }
        Some(_) => {}
    }
    if let Some(expected) = expected_sha {
        let (len, sha) = hash_object(dst, Side::Target, key, expected_len, budget).await?;
        if len != expected_len || &sha != expected {
            return Err(mismatch(format!(
                "the copy's content differs from the source (sha256 {} vs {})",
                hex(&sha),
                hex(expected)
            )));
        }
    }
    Ok(())
}

pub fn hex(sum: &Sha256Sum) -> String {
    sum.iter().map(|b| format!("{b:02x}")).collect()
}
