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

/// Loads the index of the newest complete set taken from the same storage into
/// `upkeep.backup_prev`; returns its id.
async fn load_previous(
    ctx: &mut JobCtx,
    op: &Operator,
    this_set: &str,
    source: &str,
) -> Result<Option<String>, JobError> {
    sqlx::query("DELETE FROM upkeep.backup_prev WHERE job_id = $1")
        .bind(ctx.job_id)
        .execute(&ctx.pool)
        .await?;
    let sets = repo::complete_sets(op).await.map_err(repo_failed)?;
    for set in sets.iter().rev().filter(|s| s.as_str() != this_set) {
        let m = match repo::read_manifest(op, set).await {
            Ok(m) => m,
            // An unreadable old manifest only costs the shortcut.
            Err(_) => continue,
        };
        let Some(part) = m.storage.filter(|p| p.source == source) else {
            continue;
        };
        let mut lines = IndexReader::open(op, &part.index.path)
            .await
            .map_err(repo_failed)?;
        let mut batch: Vec<IndexLine> = Vec::with_capacity(1000);
        loop {
            let line = lines.next().await.map_err(repo_failed)?;
            let end = line.is_none();
            batch.extend(line);
            if batch.len() >= 1000 || (end && !batch.is_empty()) {
                insert_prev(ctx, &batch).await?;
                batch.clear();
            }
            if end {
                break;
            }
        }
        return Ok(Some(set.clone()));
    }
    Ok(None)
}

async fn insert_prev(ctx: &JobCtx, lines: &[IndexLine]) -> Result<(), JobError> {
    let keys: Vec<&str> = lines.iter().map(|l| l.k.as_str()).collect();
    let sizes: Vec<i64> = lines.iter().map(|l| l.s as i64).collect();
    let shas: Vec<Vec<u8>> = lines
        .iter()
        .map(|l| {
            repo::parse_hex(&l.h)
                .map(|h| h.to_vec())
                .unwrap_or_default()
        })
        .collect();
    let mtimes: Vec<Option<DateTime<Utc>>> = lines.iter().map(|l| l.m).collect();
    let etags: Vec<Option<&str>> = lines.iter().map(|l| l.e.as_deref()).collect();
    sqlx::query(
        "INSERT INTO upkeep.backup_prev (job_id, key, size, sha256, mtime, etag) \
         SELECT $1, k, s, h, m, e \
         FROM unnest($2::text[], $3::bigint[], $4::bytea[], $5::timestamptz[], $6::text[]) AS t(k, s, h, m, e) \
         WHERE length(h) = 32 ON CONFLICT DO NOTHING",
    )
    .bind(ctx.job_id)
    .bind(&keys)
    .bind(&sizes)
    .bind(&shas)
    .bind(&mtimes)
    .bind(&etags)
    .execute(&ctx.pool)
    .await?;
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

/// What the previous set's index says of a key.
#[derive(Debug, Clone, sqlx::FromRow)]
struct PrevRow {
    key: String,
    size: i64,
    sha256: Vec<u8>,
    mtime: Option<DateTime<Utc>>,
    etag: Option<String>,
}

impl PrevRow {
    /// The same size and modification time, and the same ETag where both have one (the
    /// rule of restic and rsync: content is not read when the metadata says unchanged).
    fn unchanged(&self, o: &SourceObject) -> bool {
        let etag_ok = match (&self.etag, &o.etag) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        // Postgres keeps microseconds; storages may report nanoseconds.
        let mtime = o.last_modified.map(|t| t.trunc_subsecs(6));
        self.size == o.size as i64 && etag_ok && self.mtime.is_some() && self.mtime == mtime
    }
}

/// Puts one object's bytes in the repository unless they are there already.
async fn store_object(
    src: Operator,
    repo_op: Operator,
    key: String,
    prev: Option<PrevRow>,
    known: Known,
    budget: MemoryBudget,
) -> Result<Stored, TransferError> {
    let object = transfer::stat_source(&src, &key).await?;
    let stored = |size: u64, sha256: Sha256Sum, written: bool, read: bool| Stored {
        key: key.clone(),
        size,
        sha256,
        written,
        read,
        mtime: object.last_modified,
        etag: object.etag.clone(),
    };
    if let Some(p) = prev.filter(|p| p.unchanged(&object))
        && let Some(sha) = <Sha256Sum>::try_from(p.sha256.as_slice()).ok()
        && in_repository(&repo_op, &known, &sha, object.size).await?
    {
        return Ok(stored(object.size, sha, false, false));
    }
    if object.size > IN_MEMORY_MAX {
        let (len, sha) =
            transfer::hash_object(&src, Side::Source, &key, object.size, &budget).await?;
        if already_there(&repo_op, &known, &sha, len).await? {
            return Ok(stored(len, sha, false, true));
        }
        let path = repo::object_path(&sha);
        let written = match transfer::copy_to(&src, &repo_op, &object, &path, &budget).await {
            Ok(w) => w,
            Err(e) => {
                forget(&known, &sha);
                return Err(e);
            }
        };
        if written.sha256 != sha {
            forget(&known, &sha);
            return Err(TransferError::new(
                Side::Source,
                "reading",
                &key,
                "the object changed while it was read",
            ));
        }
        if !written.server_verified {
            transfer::verify(&repo_op, &path, len, Some(&sha), &budget).await?;
        }
        return Ok(stored(len, sha, true, true));
    }
    let _memory = budget.reserve(object.size).await;
    let bytes = src
        .read(&key)
        .await
        .map_err(|e| TransferError::from_opendal(Side::Source, "reading", &key, e))?
        .to_bytes();
    let size = bytes.len() as u64;
    let sha: Sha256Sum = Sha256::digest(&bytes).into();
    if already_there(&repo_op, &known, &sha, size).await? {
        return Ok(stored(size, sha, false, true));
    }
    let path = repo::object_path(&sha);
    let md5 = transfer::hex(&Md5::digest(&bytes));
    let meta = match repo_op
        .write_with(&path, bytes)
        .content_type("application/octet-stream")
        .await
    {
        Ok(meta) => meta,
        Err(e) => {
            forget(&known, &sha);
            return Err(TransferError::from_opendal(
                Side::Target,
                "writing",
                &path,
                e,
            ));
        }
    };
    // A single PUT's ETag is the MD5 of what the server stored: proof enough, without
    // asking again. Elsewhere (local disk, Azure) the size is checked.
    let proven = meta
        .etag()
        .is_some_and(|t| t.trim_matches('"').eq_ignore_ascii_case(&md5));
    if !proven {
        transfer::verify(&repo_op, &path, size, None, &budget).await?;
    }
    Ok(stored(size, sha, true, true))
}

/// Whether the repository holds `sha` with `size`, without claiming it.
async fn in_repository(
    repo_op: &Operator,
    known: &Known,
    sha: &Sha256Sum,
    size: u64,
) -> Result<bool, TransferError> {
    let listed = known
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(sha)
        .copied();
    match listed {
        None => Ok(false),
        Some(s) if s == size => Ok(true),
        Some(_) => Ok(transfer::target_size(repo_op, &repo::object_path(sha)).await? == Some(size)),
    }
}

/// Claims `sha` for writing, or says the repository holds it. A listed object of another size
/// is a partial write of an interrupted attempt: it is written again.
async fn already_there(
    repo_op: &Operator,
    known: &Known,
    sha: &Sha256Sum,
    size: u64,
) -> Result<bool, TransferError> {
    let listed = {
        let mut k = known.lock().unwrap_or_else(|p| p.into_inner());
        match k.get(sha).copied() {
            None => {
                // Claimed: a second object with these bytes in this run is deduplicated.
                k.insert(*sha, size);
                return Ok(false);
            }
            Some(listed) => listed,
        }
    };
    if listed == size {
        return Ok(true);
    }
    let path = repo::object_path(sha);
    Ok(transfer::target_size(repo_op, &path).await? == Some(size))
}

fn forget(known: &Known, sha: &Sha256Sum) {
    known.lock().unwrap_or_else(|p| p.into_inner()).remove(sha);
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
