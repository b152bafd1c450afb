//! Defers the indexes and unique constraints of the tables being loaded: they are dropped
//! before the COPY streams start and rebuilt, with their exact definitions and names, once
//! the rows are in. Building an index from all rows at once is several times cheaper than
//! inserting each random uuid into it (PostgreSQL's own advice for bulk loads), and rebuilding
//! a primary key or unique index still rejects duplicates. Constraints other tables' foreign
//! keys depend on (in Dify's full schema: `apps`, `accounts`) stay in place.

use std::sync::Arc;

use sqlx::{Acquire, PgPool};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// One dropped index or constraint: the statement that dropped it and the one restoring it.
pub(super) struct Deferred {
    drop: String,
    create: String,
}

const DEFERRABLE: &str = "\
    SELECT format('DROP INDEX public.%I', ic.relname), pg_catalog.pg_get_indexdef(x.indexrelid) \
    FROM pg_catalog.pg_index x \
    JOIN pg_catalog.pg_class t ON t.oid = x.indrelid \
    JOIN pg_catalog.pg_class ic ON ic.oid = x.indexrelid \
    JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
    WHERE n.nspname = 'public' AND t.relname = ANY($1) \
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conindid = x.indexrelid) \
    UNION ALL \
    SELECT format('ALTER TABLE public.%I DROP CONSTRAINT %I', t.relname, c.conname), \
           format('ALTER TABLE public.%I ADD CONSTRAINT %I %s', t.relname, c.conname, \
                  pg_catalog.pg_get_constraintdef(c.oid)) \
    FROM pg_catalog.pg_constraint c \
    JOIN pg_catalog.pg_class t ON t.oid = c.conrelid \
    JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace \
    WHERE n.nspname = 'public' AND t.relname = ANY($1) AND c.contype IN ('p', 'u') \
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint f \
                      WHERE f.contype = 'f' AND f.conindid = c.conindid)";

/// Drops the indexes and unique constraints of `tables` in one transaction and returns how
/// to rebuild them.
pub(super) async fn defer(pool: &PgPool, tables: &[&str]) -> Result<Vec<Deferred>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let rows: Vec<(String, String)> = sqlx::query_as(DEFERRABLE)
        .bind(tables)
        .fetch_all(&mut *tx)
        .await?;
    let deferred: Vec<Deferred> = rows
        .into_iter()
        .map(|(drop, create)| Deferred { drop, create })
        .collect();
    for d in &deferred {
        sqlx::raw_sql(sqlx::AssertSqlSafe(d.drop.as_str()))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(deferred)
}

/// Rebuilds every deferred index and constraint, `parallel` at a time. Tries them all even
/// when one fails, so one failure does not leave the others missing; returns the first error.
pub(super) async fn rebuild(
    pool: &PgPool,
    deferred: Vec<Deferred>,
    parallel: usize,
) -> Result<(), sqlx::Error> {
    let permits = Arc::new(Semaphore::new(parallel.max(1)));
    let mut tasks = JoinSet::new();
    for index in deferred {
        let (pool, permits) = (pool.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let mut tx = pool.begin().await?;
            // Sorting in memory instead of spilling to disk; LOCAL ends with the transaction,
            // so the pooled session keeps its own setting.
            sqlx::raw_sql("SET LOCAL maintenance_work_mem = '256MB'")
                .execute(&mut *tx)
                .await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(index.create))
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        });
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.unwrap_or_else(|e| {
            Err(sqlx::Error::Protocol(format!(
                "index rebuild task failed: {e}"
            )))
        });
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
