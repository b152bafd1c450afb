//! What the catalogue says of Dify's tables: their names, sizes and dead rows, measured
//! without waiting on a busy table.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::SCHEMA;
use crate::db::sqlstate;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct TableStats {
    pub(super) table: String,
    pub(super) total_bytes: i64,
    pub(super) table_bytes: i64,
    pub(super) index_bytes: i64,
    pub(super) live_tuples: i64,
    pub(super) dead_tuples: i64,
    pub(super) last_vacuum: Option<DateTime<Utc>>,
    pub(super) last_autovacuum: Option<DateTime<Utc>>,
}

/// Names of Dify's tables (all, or those of `only` that exist), from the catalogue alone: no
/// lock is taken, so a busy table never blocks a request.
pub(super) async fn table_names(
    pool: &PgPool,
    only: Option<&Vec<String>>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'm') \
           AND ($2::text[] IS NULL OR c.relname = ANY($2)) ORDER BY c.relname",
    )
    .bind(SCHEMA)
    .bind(only)
    .fetch_all(pool)
    .await
}

/// How long measuring sizes may wait for a table's lock before falling back to estimates.
const MEASURE_LOCK_TIMEOUT: &str = "1s";

/// Sizes and tuple counts. Exact sizes open each table (a lock a busy table may not grant);
/// when that would wait, the sizes come from the catalogue instead (`false` in the answer).
pub(super) async fn table_stats(
    pool: &PgPool,
    only: Option<&Vec<String>>,
) -> Result<(Vec<TableStats>, bool), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(MEASURE_LOCK_TIMEOUT)
        .execute(&mut *tx)
        .await?;
    match stats_query(&mut *tx, only, true).await {
        Ok(stats) => {
            tx.commit().await?;
            Ok((stats, true))
        }
        Err(e) if sqlstate(&e).as_deref() == Some("55P03") => {
            drop(tx);
            Ok((stats_query(pool, only, false).await?, false))
        }
        Err(e) => Err(e),
    }
}

/// One query for both ways of measuring: `exact` calls the size functions (which lock each
/// table), otherwise sizes are pages from the catalogue (no lock). CASE evaluates only the
/// branch it takes.
async fn stats_query<'e>(
    db: impl sqlx::PgExecutor<'e>,
    only: Option<&Vec<String>>,
    exact: bool,
) -> Result<Vec<TableStats>, sqlx::Error> {
    sqlx::query_as::<_, TableStats>(
        "SELECT c.relname::text AS table, \
            CASE WHEN $3 THEN pg_total_relation_size(c.oid) \
                 ELSE (c.relpages + coalesce(t.relpages, 0) + coalesce(ix.pages, 0)) * bs.v END AS total_bytes, \
            CASE WHEN $3 THEN pg_relation_size(c.oid) ELSE c.relpages * bs.v END AS table_bytes, \
            CASE WHEN $3 THEN pg_indexes_size(c.oid) ELSE coalesce(ix.pages, 0) * bs.v END AS index_bytes, \
            coalesce(s.n_live_tup, 0) AS live_tuples, coalesce(s.n_dead_tup, 0) AS dead_tuples, \
            s.last_vacuum, s.last_autovacuum \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         CROSS JOIN (SELECT current_setting('block_size')::bigint AS v) bs \
         LEFT JOIN pg_class t ON t.oid = c.reltoastrelid \
         LEFT JOIN LATERAL (SELECT sum(i.relpages)::bigint AS pages FROM pg_index x \
            JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid) ix ON true \
         LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'm') \
           AND ($2::text[] IS NULL OR c.relname = ANY($2)) \
         ORDER BY c.relname",
    )
    .bind(SCHEMA)
    .bind(only)
    .bind(exact)
    .fetch_all(db)
    .await
}

/// VACUUM FULL rewrites one table at a time; at its peak it needs the largest table with its
/// indexes again in free space.
pub(super) fn peak_space(stats: &[TableStats]) -> i64 {
    stats.iter().map(|t| t.total_bytes).max().unwrap_or(0)
}
