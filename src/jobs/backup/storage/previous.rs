//! The previous set's index, for the fast path: an object whose size and mtime (and ETag)
//! match what the last set recorded is not read again.

use super::*;

/// Loads the index of the newest complete set taken from the same storage into
/// `upkeep.backup_prev`; returns its id.
pub(super) async fn load_previous(
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

pub(super) async fn insert_prev(ctx: &JobCtx, lines: &[IndexLine]) -> Result<(), JobError> {
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

/// What the previous set's index says of a key.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct PrevRow {
    pub(super) key: String,
    pub(super) size: i64,
    pub(super) sha256: Vec<u8>,
    pub(super) mtime: Option<DateTime<Utc>>,
    pub(super) etag: Option<String>,
}

impl PrevRow {
    /// The same size and modification time, and the same ETag where both have one (the
    /// rule of restic and rsync: content is not read when the metadata says unchanged).
    pub(super) fn unchanged(&self, o: &SourceObject) -> bool {
        let etag_ok = match (&self.etag, &o.etag) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        // Postgres keeps microseconds; storages may report nanoseconds.
        let mtime = o.last_modified.map(|t| t.trunc_subsecs(6));
        self.size == o.size as i64 && etag_ok && self.mtime.is_some() && self.mtime == mtime
    }
}
