//! Dify's database side: `upload_files.storage_type` flipped for verified rows, and every
//! referenced key cross-checked against the ledger and the target.

use super::*;

/// Sets `upload_files.storage_type` for rows whose key is verified on the target, in short
/// keyset batches so Dify's own writes never wait long.
pub(super) async fn update_db(
    ctx: &mut JobCtx,
    target: &StorageConfig,
    cp: &mut Checkpoint,
) -> Result<(), JobError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('public.upload_files') IS NOT NULL")
        .fetch_one(&ctx.pool)
        .await?;
    if !exists {
        return Ok(());
    }
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM upkeep.storage_objects WHERE job_id = $1")
            .bind(ctx.job_id)
            .fetch_one(&ctx.pool)
            .await?;
    let mut scanned = 0u64;
    loop {
        ctx.check_stop()?;
        let mut tx = ctx.pool.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '5s'")
            .execute(&mut *tx)
            .await?;
        let (last, rows, updated): (Option<Uuid>, i64, i64) = sqlx::query_as(
            "WITH batch AS ( \
                 SELECT id, key FROM public.upload_files \
                 WHERE $1::uuid IS NULL OR id > $1 ORDER BY id LIMIT $2), \
             updated AS ( \
                 UPDATE public.upload_files u SET storage_type = $3 \
                 FROM batch b JOIN upkeep.storage_objects o ON o.job_id = $4 AND o.key = b.key \
                 WHERE u.id = b.id AND u.storage_type <> $3 RETURNING 1) \
             SELECT (SELECT id FROM batch ORDER BY id DESC LIMIT 1), \
                    (SELECT count(*) FROM batch), (SELECT count(*) FROM updated)",
        )
        .bind(cp.db_after)
        .bind(DB_BATCH)
        .bind(target.dify_type())
        .bind(ctx.job_id)
        .fetch_one(&mut *tx)
        .await?;
        cp.rows_updated += updated as u64;
        cp.db_after = last;
        ctx.save_checkpoint(&mut *tx, cp).await?;
        tx.commit().await?;
        scanned += rows as u64;
        ctx.progress(
            Progress {
                phase: "update upload_files.storage_type".into(),
                done: scanned,
                unit: "rows".into(),
                detail: Some(json!({"updated": cp.rows_updated, "verified_objects": total})),
                ..Default::default()
            },
            false,
        )
        .await?;
        if rows < DB_BATCH {
            return Ok(());
        }
    }
}

pub(super) async fn collect_refs(ctx: &JobCtx) -> Result<u64, JobError> {
    let sources = storage_refs::present(&ctx.pool).await?;
    Ok(storage_refs::collect(&ctx.pool, ctx.job_id, &sources).await?)
}

pub(super) async fn clear_refs(ctx: &JobCtx) -> Result<(), JobError> {
    Ok(storage_refs::clear(&ctx.pool, ctx.job_id).await?)
}

/// A referenced key, what references it, and the ledger's size when it was verified.
pub(super) type RefRow = (String, String, Option<i64>);

/// Pages through `upkeep.storage_refs` by key, checking for a stop between pages.
#[derive(Default)]
pub(super) struct RefPages {
    after: String,
}

impl RefPages {
    async fn next(&mut self, ctx: &JobCtx) -> Result<Option<Vec<RefRow>>, JobError> {
        ctx.check_stop()?;
        let page: Vec<RefRow> = sqlx::query_as(
            "SELECT r.key, r.source, o.size FROM upkeep.storage_refs r \
             LEFT JOIN upkeep.storage_objects o ON o.job_id = r.job_id AND o.key = r.key \
             WHERE r.job_id = $1 AND r.key > $2 ORDER BY r.key LIMIT $3",
        )
        .bind(ctx.job_id)
        .bind(&self.after)
        .bind(CHECK_PAGE)
        .fetch_all(&ctx.pool)
        .await?;
        match page.last() {
            Some((last, _, _)) => {
                self.after = last.clone();
                Ok(Some(page))
            }
            None => Ok(None),
        }
    }
}

/// For the dry run: referenced keys the source does not have.
pub(super) async fn refs_missing_on_source(
    ctx: &mut JobCtx,
    src: &Operator,
) -> Result<(u64, Vec<Value>), JobError> {
    let (mut missing, mut sample) = (0u64, Vec::new());
    let mut pages = RefPages::default();
    while let Some(page) = pages.next(ctx).await? {
        let found = stat_all(src, page.iter().map(|(k, _, _)| k.clone()).collect()).await;
        for ((key, source, _), present) in page.into_iter().zip(found) {
            if !present.map_err(source_failed)? {
                missing += 1;
                if sample.len() < SAMPLE {
                    sample.push(json!({"key": key, "referenced_by": source}));
                }
            }
        }
    }
    Ok((missing, sample))
}

/// Whether each key exists, asked with some concurrency, in order.
pub(super) async fn stat_all(op: &Operator, keys: Vec<String>) -> Vec<Result<bool, TransferError>> {
    futures_util::stream::iter(keys)
        .map(|key| async move {
            match transfer::stat_source(op, &key).await {
                Ok(_) => Ok(true),
                Err(e) if e.not_found => Ok(false),
                Err(e) => Err(e),
            }
        })
        .buffered(32)
        .collect()
        .await
}

/// Every key the database references must be verified in the ledger and still on the target
/// with the verified size. Reports what is not, and why.
pub(super) async fn cross_check(
    ctx: &mut JobCtx,
    src: &Operator,
    dst: &Operator,
) -> Result<Value, JobError> {
    ctx.progress(phase_progress("cross-check database references"), true)
        .await?;
    let referenced = collect_refs(ctx).await?;
    let (mut verified, mut not_copied, mut missing_on_source, mut not_on_target) =
        (0u64, 0u64, 0u64, 0u64);
    let mut sample = Vec::new();
    let mut checked = 0u64;
    let mut pages = RefPages::default();
    while let Some(page) = pages.next(ctx).await? {
        let lookups: Vec<(String, bool)> = page
            .iter()
            .map(|(k, _, s)| (k.clone(), s.is_some()))
            .collect();
        let on_target = futures_util::stream::iter(lookups)
            .map(|(key, verified)| async move {
                match verified {
                    true => transfer::target_size(dst, &key).await.map(Some),
                    false => Ok(None),
                }
            })
            .buffered(32)
            .collect::<Vec<_>>()
            .await;
        let unverified: Vec<String> = page
            .iter()
            .filter(|(_, _, size)| size.is_none())
            .map(|(k, _, _)| k.clone())
            .collect();
        let mut on_source = stat_all(src, unverified).await.into_iter();
        for ((key, source, size), there) in page.into_iter().zip(on_target) {
            let why = match size {
                Some(size) => match there.map_err(target_failed)? {
                    Some(Some(t)) if t as i64 == size => {
                        verified += 1;
                        continue;
                    }
                    _ => {
                        not_on_target += 1;
                        "verified earlier but no longer on the target with the same size"
                    }
                },
                None => match on_source.next() {
                    Some(Ok(true)) => {
                        not_copied += 1;
                        "on the source but not copied (outside prefixes, or failed)"
                    }
                    Some(Ok(false)) => {
                        missing_on_source += 1;
                        "missing on the source too (Dify cannot read it today either)"
                    }
                    Some(Err(e)) => return Err(source_failed(e)),
                    None => return Err(JobError::failed("internal", "cross-check lost a key")),
                },
            };
            if sample.len() < SAMPLE {
                sample.push(json!({"key": key, "referenced_by": source, "why": why}));
            }
        }
        checked += CHECK_PAGE as u64;
        ctx.progress(
            Progress {
                done: checked.min(referenced),
                total: Some(referenced),
                ..phase_progress("cross-check database references")
            },
            false,
        )
        .await?;
    }
    // Not in the database, but Dify 1.14.1+ cannot start the same without it.
    let secret = ".dify_secret_key";
    let secret_on_source = stat_all(src, vec![secret.to_string()])
        .await
        .pop()
        .transpose()
        .map_err(source_failed)?
        .unwrap_or(false);
    let secret_verified: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM upkeep.storage_objects WHERE job_id = $1 AND key = $2)",
    )
    .bind(ctx.job_id)
    .bind(secret)
    .fetch_one(&ctx.pool)
    .await?;
    let secret_missing = secret_on_source && !secret_verified;
    if secret_missing && sample.len() < SAMPLE {
        sample.push(json!({"key": secret, "referenced_by": "Dify's generated SECRET_KEY", "why": "on the source but not copied"}));
    }
    clear_refs(ctx).await?;
    let unsafe_count = not_copied + missing_on_source + not_on_target + u64::from(secret_missing);
    Ok(json!({
        "referenced": referenced,
        "verified": verified,
        "not_copied": not_copied + u64::from(secret_missing),
        "missing_on_source": missing_on_source,
        "not_on_target": not_on_target,
        "unsafe": unsafe_count,
        "missing": sample,
    }))
}
