//! Restoring the storage part: every object the set's index names, copied from its content
//! address to its key in the storage Dify is configured with, and checked by SHA-256. The
//! `storage_objects` ledger (as for `storage_migrate`) lets a resumed restore skip what is done.

use futures_util::StreamExt;
use opendal::Operator;
use serde_json::{Value, json};

use crate::backup::repo::{self, IndexLine, IndexReader, Manifest};
use crate::jobs::backup::repo_failed;
use crate::jobs::{JobCtx, JobError, Progress};
use crate::storage::transfer::{self, MemoryBudget, SourceObject, TransferError};

const BATCH: usize = 256;

pub async fn run(
    ctx: &mut JobCtx,
    repo_op: &Operator,
    dst: &Operator,
    m: &Manifest,
    concurrency: usize,
) -> Result<Value, JobError> {
    let Some(part) = &m.storage else {
        return Ok(Value::Null);
    };
    let budget = MemoryBudget::default();
    let mut lines = IndexReader::open(repo_op, &part.index.path)
        .await
        .map_err(repo_failed)?;
    let (mut done, mut copied, mut bytes) = (0u64, 0u64, 0u64);
    let mut batch: Vec<IndexLine> = Vec::with_capacity(BATCH);
    loop {
        let line = lines.next().await.map_err(repo_failed)?;
        let end = line.is_none();
        batch.extend(line);
        if batch.len() < BATCH && !end {
            continue;
        }
        ctx.check_stop()?;
        let keys: Vec<&str> = batch.iter().map(|l| l.k.as_str()).collect();
        let recorded: Vec<String> = sqlx::query_scalar(
            "SELECT key FROM upkeep.storage_objects WHERE job_id = $1 AND key = ANY($2)",
        )
        .bind(ctx.job_id)
        .bind(&keys)
        .fetch_all(&ctx.pool)
        .await?;
        let todo: Vec<IndexLine> = batch
            .iter()
            .filter(|l| !recorded.contains(&l.k))
            .cloned()
            .collect();
        let mut transfers = futures_util::stream::iter(todo)
            .map(|l| {
                let (repo_op, dst, budget) = (repo_op.clone(), dst.clone(), budget.clone());
                async move { put(&repo_op, &dst, &l, &budget).await }
            })
            .buffer_unordered(concurrency);
        // The first failure ends the job (the transfers in flight are dropped): a full or
        // failing storage would refuse the rest of the batch too, each after its retries.
        let mut ok = Vec::new();
        while let Some(r) = transfers.next().await {
            ok.push(r.map_err(|e| {
                JobError::failed("storage_failed", format!("restoring storage: {e}"))
            })?);
        }
        copied += ok.len() as u64;
        bytes += ok.iter().map(|r| r.size).sum::<u64>();
        let k: Vec<&str> = ok.iter().map(|r| r.key.as_str()).collect();
        let s: Vec<i64> = ok.iter().map(|r| r.size as i64).collect();
        let h: Vec<Vec<u8>> = ok.iter().map(|r| r.sha256.to_vec()).collect();
        sqlx::query(
            "INSERT INTO upkeep.storage_objects (job_id, key, size, sha256, outcome) \
             SELECT $1, k, s, h, 'copied' FROM unnest($2::text[], $3::bigint[], $4::bytea[]) AS t(k, s, h) \
             ON CONFLICT DO NOTHING",
        )
        .bind(ctx.job_id)
        .bind(&k)
        .bind(&s)
        .bind(&h)
        .execute(&ctx.pool)
        .await?;
        ctx.failpoint("restore.storage_flushed").await?;
        done += batch.len() as u64;
        batch.clear();
        ctx.progress(
            Progress {
                phase: "restore storage".into(),
                done,
                total: Some(part.objects),
                unit: "objects".into(),
                ..Default::default()
            },
            false,
        )
        .await?;
        if end {
            break;
        }
    }
    let restored: (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), sum(size)::bigint FROM upkeep.storage_objects WHERE job_id = $1",
    )
    .bind(ctx.job_id)
    .fetch_one(&ctx.pool)
    .await?;
    Ok(json!({
        "objects": {"set": part.objects, "restored": restored.0},
        "bytes": {"set": part.bytes, "restored": restored.1.unwrap_or(0)},
        "copied_this_attempt": copied,
        "bytes_this_attempt": bytes,
    }))
}

/// One object back at its key, checked.
struct Restored {
    key: String,
    size: u64,
    sha256: [u8; 32],
}

async fn put(
    repo_op: &Operator,
    dst: &Operator,
    line: &IndexLine,
    budget: &MemoryBudget,
) -> Result<Restored, TransferError> {
    let sha = repo::parse_hex(&line.h).ok_or_else(|| {
        TransferError::new(
            transfer::Side::Source,
            "reading",
            &line.k,
            "bad sha256 in the index",
        )
    })?;
    let object = SourceObject {
        key: repo::object_path(&sha),
        size: line.s,
        content_type: None,
        last_modified: None,
        etag: None,
    };
    let written = transfer::copy_to(repo_op, dst, &object, &line.k, budget).await?;
    if written.sha256 != sha || written.len != line.s {
        return Err(TransferError::new(
            transfer::Side::Source,
            "reading",
            &object.key,
            "the repository's object does not match the index",
        ));
    }
    if !written.server_verified {
        transfer::verify(dst, &line.k, written.len, Some(&sha), budget).await?;
    }
    Ok(Restored {
        key: line.k.clone(),
        size: written.len,
        sha256: sha,
    })
}
