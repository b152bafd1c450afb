//! Leaves dead tuples behind the way a live Dify does (conversations read, chains rewritten,
//! feedback withdrawn), so `vacuum` has something to reclaim. Nothing is vacuumed here.

use std::collections::BTreeMap;

use sqlx::PgPool;

/// Rows are picked by a hash of their id: the same rows for the same seed, on any server.
const SELECT_BY_HASH: &str = "(hashtext(id::text) & 1023) < $1";

pub(super) async fn make_dead_rows(
    pool: &PgPool,
    fraction: f64,
    rows: &mut BTreeMap<String, u64>,
) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let mut dead = BTreeMap::new();
    // NaN would otherwise select every row below.
    if fraction.is_nan() || fraction <= 0.0 {
        return Ok(dead);
    }
    let threshold = (fraction.min(1.0) * 1024.0).round() as i32;
    // One connection for all statements, so that forcing its statistics out below covers them.
    let mut conn = pool.acquire().await?;
    let updates = [
        (
            "message_chains",
            "UPDATE public.message_chains SET output = output WHERE ",
        ),
        (
            "conversations",
            "UPDATE public.conversations \
             SET read_at = updated_at, read_account_id = from_account_id WHERE ",
        ),
    ];
    for (table, update) in updates {
        let n = sqlx::query(sqlx::AssertSqlSafe(format!("{update}{SELECT_BY_HASH}")))
            .bind(threshold)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        dead.insert(table.to_owned(), n);
    }
    let deleted = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM public.message_feedbacks WHERE {SELECT_BY_HASH}"
    )))
    .bind(threshold)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    dead.insert("message_feedbacks".to_owned(), deleted);
    if let Some(n) = rows.get_mut("message_feedbacks") {
        *n -= deleted.min(*n);
    }
    // Statistics reach pg_stat_user_tables when the backend next reports; make that the end of
    // this statement, so callers see n_dead_tup at once.
    sqlx::query("SELECT pg_catalog.pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await?;
    Ok(dead)
}
