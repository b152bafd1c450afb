//! `delete_source`: what was verified on the target, deleted from the source.

use super::*;

/// Deletes source objects recorded as verified, in ledger batches; an object that changed on
/// the source since it was copied is kept.
pub(super) async fn delete_source(ctx: &mut JobCtx, src: &Operator) -> Result<u64, JobError> {
    let mut deleted = 0u64;
    loop {
        ctx.check_stop()?;
        let batch: Vec<(String, i64)> = sqlx::query_as(
            "SELECT key, size FROM upkeep.storage_objects \
             WHERE job_id = $1 AND source_deleted_at IS NULL ORDER BY key LIMIT 256",
        )
        .bind(ctx.job_id)
        .fetch_all(&ctx.pool)
        .await?;
        if batch.is_empty() {
            return Ok(deleted);
        }
        let results = futures_util::stream::iter(batch.clone())
            .map(|(key, size)| async move {
                match transfer::stat_source(src, &key).await {
                    Ok(o) if o.size as i64 == size => src
                        .delete(&key)
                        .await
                        .map(|()| true)
                        .map_err(|e| format!("deleting {key}: {e}")),
                    Ok(_) => Ok(false),
                    Err(e) if e.not_found => Ok(false),
                    Err(e) => Err(e.to_string()),
                }
            })
            .buffered(16)
            .collect::<Vec<_>>()
            .await;
        let mut done_keys = Vec::new();
        for ((key, _), r) in batch.iter().zip(results) {
            match r {
                Ok(d) => {
                    deleted += u64::from(d);
                    done_keys.push(key.clone());
                }
                Err(e) => return Err(JobError::failed("source_failed", format!("source: {e}"))),
            }
        }
        sqlx::query(
            "UPDATE upkeep.storage_objects SET source_deleted_at = now() \
             WHERE job_id = $1 AND key = ANY($2)",
        )
        .bind(ctx.job_id)
        .bind(&done_keys)
        .execute(&ctx.pool)
        .await?;
        ctx.progress(
            Progress {
                done: deleted,
                ..phase_progress("delete source objects")
            },
            false,
        )
        .await?;
    }
}
