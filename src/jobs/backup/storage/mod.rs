//! The storage part: every object under Dify's storage root, read once, hashed, and written to
//! `objects/sha256/..` unless the repository already holds those bytes (from this set or an
//! earlier one). A ledger row per object commits with the checkpoint, so a resumed backup
//! skips what is done; the index (key, size, sha256 per object) is written from the ledger.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound, Utc};
use futures_util::{StreamExt, TryStreamExt};
use md5::Md5;
use opendal::Operator;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Checkpoint, dify_storage, phase, repo_failed};
use crate::backup::repo::{self, FileEntry, IndexLine, IndexReader, RepoError, StoragePart};
use crate::jobs::{JobCtx, JobError, Progress, storage_param};
use crate::storage::listing::Listing;
use crate::storage::transfer::{
    self, MemoryBudget, Sha256Sum, Side, SourceObject, TransferError, hex,
};

mod object;
mod previous;

use object::*;
use previous::*;

/// Objects up to this size are read into memory once (under the budget) and hashed there;
/// larger ones are hashed in a first streaming read and copied in a second.
const IN_MEMORY_MAX: u64 = 64 << 20;
const BATCH: usize = 256;
const SAMPLE: usize = 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    finished: bool,
    pub objects_written: u64,
    pub bytes_written: u64,
    pub bytes_deduplicated: u64,
    /// Listed, then gone before they were read (Dify deleted them meanwhile).
    pub vanished: u64,
    /// Not read: the previous set's index said they were unchanged.
    pub objects_unchanged: u64,
    /// The set whose index was loaded for that check (`""`: none), once loaded.
    pub previous_set: Option<String>,
    failed: u64,
    failures: Vec<Value>,
}

type Known = Arc<Mutex<HashMap<Sha256Sum, u64>>>;

struct Stored {
    key: String,
    size: u64,
    sha256: Sha256Sum,
    written: bool,
    /// false: the previous set's index said it was unchanged, so it was not read.
    read: bool,
    mtime: Option<DateTime<Utc>>,
    etag: Option<String>,
}

fn source(ctx: &JobCtx) -> Result<(String, Operator), JobError> {
    let config = dify_storage(&ctx.settings)
        .map_err(|m| JobError::failed("invalid_params", format!("Dify's storage: {m}")))?;
    let op = storage_param::open(&config, "storage").map_err(storage_param::invalid)?;
    Ok((config.describe(), op))
}

pub async fn plan(ctx: &mut JobCtx, repo_op: &Operator) -> Result<Value, JobError> {
    let (described, src) = source(ctx)?;
    let mut listing = Listing::new(&src, Side::Source, vec![String::new()]);
    let (mut objects, mut bytes) = (0u64, 0u64);
    while let Some(batch) = listing.next_batch(1000).await? {
        ctx.check_stop()?;
        objects += batch.len() as u64;
        bytes += batch.iter().map(|(_, s)| s).sum::<u64>();
    }
    let known = repo::known_objects(repo_op).await.map_err(repo_failed)?;
    Ok(json!({
        "source": described,
        "objects": objects,
        "bytes": bytes,
        "objects_in_repository": known.len(),
        "note": "every object is read and hashed; only contents the repository lacks are written",
    }))
}

pub async fn run(
    ctx: &mut JobCtx,
    op: &Operator,
    cp: &mut Checkpoint,
    concurrency: usize,
    rehash: bool,
) -> Result<(), JobError> {
    if cp.storage.finished {
        return Ok(());
    }
    let (described, src) = source(ctx)?;
    ctx.progress(phase("list storage"), true).await?;
    let mut total = 0u64;
    let mut listing = Listing::new(&src, Side::Source, vec![String::new()]);
    while let Some(batch) = listing.next_batch(1000).await? {
        ctx.check_stop()?;
        total += batch.len() as u64;
    }
    let known: Known = Arc::new(Mutex::new(
        repo::known_objects(op).await.map_err(repo_failed)?,
    ));
    if cp.storage.previous_set.is_none() {
        let previous = if rehash {
            None
        } else {
            load_previous(ctx, op, &cp.set, &described).await?
        };
        cp.storage.previous_set = Some(previous.unwrap_or_default());
        ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
    }
    let (mut done,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM upkeep.backup_files WHERE job_id = $1 AND part = 'storage'",
    )
    .bind(ctx.job_id)
    .fetch_one(&ctx.pool)
    .await?;
    let budget = MemoryBudget::default();
    let mut listing = Listing::new(&src, Side::Source, vec![String::new()]);
    while let Some(batch) = listing.next_batch(BATCH).await? {
        ctx.check_stop()?;
        let keys: Vec<&str> = batch.iter().map(|(k, _)| k.as_str()).collect();
        let recorded: Vec<String> = sqlx::query_scalar(
            "SELECT path FROM upkeep.backup_files WHERE job_id = $1 AND part = 'storage' AND path = ANY($2)",
        )
        .bind(ctx.job_id)
        .bind(&keys)
        .fetch_all(&ctx.pool)
        .await?;
        let recorded: std::collections::HashSet<String> = recorded.into_iter().collect();
        let todo: Vec<String> = batch
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !recorded.contains(k))
            .collect();
        let prev: Vec<PrevRow> = sqlx::query_as(
            "SELECT key, size, sha256, mtime, etag FROM upkeep.backup_prev \
             WHERE job_id = $1 AND key = ANY($2)",
        )
        .bind(ctx.job_id)
        .bind(&todo)
        .fetch_all(&ctx.pool)
        .await?;
        let mut prev: HashMap<String, PrevRow> =
            prev.into_iter().map(|p| (p.key.clone(), p)).collect();
        let mut transfers = futures_util::stream::iter(todo)
            .map(|key| {
                let p = prev.remove(&key);
                store_object(
                    src.clone(),
                    op.clone(),
                    key,
                    p,
                    known.clone(),
                    budget.clone(),
                )
            })
            .buffer_unordered(concurrency);
        // The repository refusing a write (full, or gone) ends the job at once: the rest of
        // the batch would only be refused too, each after the storage layer's retries. Nothing
        // of this batch is recorded then: an object deduplicated against one whose write was
        // refused (or cut short here) has no bytes in the repository.
        let mut stored = Vec::new();
        while let Some(r) = transfers.next().await {
            match r {
                Ok(s) => stored.push(s),
                Err(e) if e.side == Side::Source && e.not_found => cp.storage.vanished += 1,
                Err(e) if e.side == Side::Source => {
                    cp.storage.failed += 1;
                    if cp.storage.failures.len() < SAMPLE {
                        cp.storage
                            .failures
                            .push(json!({"key": e.key, "error": e.to_string()}));
                    }
                }
                Err(e) => {
                    return Err(JobError::failed(
                        "target_failed",
                        format!("repository: {e}"),
                    ));
                }
            }
        }
        done += stored.len() as i64;
        flush(ctx, cp, stored).await?;
        ctx.progress(
            Progress {
                done: done as u64,
                total: Some(total),
                unit: "objects".into(),
                detail: Some(json!({"bytes_written": cp.storage.bytes_written, "bytes_deduplicated": cp.storage.bytes_deduplicated})),
                ..phase("back up storage")
            },
            false,
        )
        .await?;
    }
    if cp.storage.failed > 0 {
        return Err(JobError::Failed {
            code: "objects_failed",
            message: format!(
                "{} object(s) of {described} could not be read, so the set would not hold the whole storage; first: {}",
                cp.storage.failed,
                cp.storage
                    .failures
                    .first()
                    .map_or(String::new(), |f| f["error"].to_string())
            ),
            result: Some(json!({"failed": cp.storage.failed, "failures": cp.storage.failures})),
        });
    }
    cp.storage.finished = true;
    let mut tx = ctx.pool.begin().await?;
    sqlx::query("DELETE FROM upkeep.backup_prev WHERE job_id = $1")
        .bind(ctx.job_id)
        .execute(&mut *tx)
        .await?;
    ctx.save_checkpoint(&mut *tx, &*cp).await?;
    tx.commit().await?;
    Ok(())
}

/// Ledger rows and the checkpoint, in one transaction.
async fn flush(ctx: &mut JobCtx, cp: &mut Checkpoint, stored: Vec<Stored>) -> Result<(), JobError> {
    if stored.is_empty() {
        return Ok(());
    }
    for s in &stored {
        if !s.read {
            cp.storage.objects_unchanged += 1;
        }
        if s.written {
            cp.storage.objects_written += 1;
            cp.storage.bytes_written += s.size;
        } else {
            cp.storage.bytes_deduplicated += s.size;
        }
    }
    let keys: Vec<&str> = stored.iter().map(|s| s.key.as_str()).collect();
    let sizes: Vec<i64> = stored.iter().map(|s| s.size as i64).collect();
    let shas: Vec<Vec<u8>> = stored.iter().map(|s| s.sha256.to_vec()).collect();
    let written: Vec<bool> = stored.iter().map(|s| s.written).collect();
    let mtimes: Vec<Option<DateTime<Utc>>> = stored.iter().map(|s| s.mtime).collect();
    let etags: Vec<Option<String>> = stored.iter().map(|s| s.etag.clone()).collect();
    let mut tx = ctx.pool.begin().await?;
    sqlx::query(
        "INSERT INTO upkeep.backup_files (job_id, part, path, size, sha256, written, mtime, etag) \
         SELECT $1, 'storage', * FROM unnest($2::text[], $3::bigint[], $4::bytea[], $5::bool[], \
                $6::timestamptz[], $7::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(ctx.job_id)
    .bind(&keys)
    .bind(&sizes)
    .bind(&shas)
    .bind(&written)
    .bind(&mtimes)
    .bind(&etags)
    .execute(&mut *tx)
    .await?;
    ctx.save_checkpoint(&mut *tx, &*cp).await?;
    tx.commit().await?;
    ctx.failpoint("backup.storage_flushed").await?;
    Ok(())
}

type IndexRow = (String, i64, Vec<u8>, Option<DateTime<Utc>>, Option<String>);

/// Writes the index from the ledger, sorted by key, streamed.
pub async fn write_index(
    ctx: &mut JobCtx,
    op: &Operator,
    cp: &Checkpoint,
) -> Result<StoragePart, JobError> {
    let (described, _) = source(ctx)?;
    let path = repo::index_path(&cp.set);
    let mut writer = op
        .writer_with(&path)
        .chunk(8 << 20)
        .content_type("application/x-ndjson")
        .await
        .map_err(|e| repo_failed(RepoError::storage(&path, e)))?;
    let mut rows = sqlx::query_as::<_, IndexRow>(
        "SELECT path, size, sha256, mtime, etag FROM upkeep.backup_files \
         WHERE job_id = $1 AND part = 'storage' ORDER BY path COLLATE \"C\"",
    )
    .bind(ctx.job_id)
    .fetch(&ctx.pool);
    let mut hasher = Sha256::new();
    let (mut objects, mut bytes, mut len) = (0u64, 0u64, 0u64);
    let mut buf = Vec::with_capacity(1 << 20);
    let written: Result<(), JobError> = async {
        while let Some((key, size, sha, mtime, etag)) = rows.try_next().await? {
            let line = IndexLine {
                k: key,
                s: size as u64,
                h: hex(&sha),
                m: mtime,
                e: etag,
            };
            serde_json::to_writer(&mut buf, &line)
                .map_err(|e| JobError::failed("internal", e.to_string()))?;
            buf.push(b'\n');
            objects += 1;
            bytes += size as u64;
            if buf.len() >= 1 << 20 {
                let chunk = std::mem::take(&mut buf);
                hasher.update(&chunk);
                len += chunk.len() as u64;
                writer
                    .write(chunk)
                    .await
                    .map_err(|e| repo_failed(RepoError::storage(&path, e)))?;
            }
        }
        hasher.update(&buf);
        len += buf.len() as u64;
        writer
            .write(std::mem::take(&mut buf))
            .await
            .map_err(|e| repo_failed(RepoError::storage(&path, e)))?;
        Ok(())
    }
    .await;
    drop(rows);
    if let Err(e) = written {
        let _ = writer.abort().await;
        return Err(e);
    }
    writer
        .close()
        .await
        .map_err(|e| repo_failed(RepoError::storage(&path, e)))?;
    Ok(StoragePart {
        source: described,
        objects,
        bytes,
        index: FileEntry {
            path,
            size: len,
            sha256: hex(&hasher.finalize()),
        },
    })
}
