//! What the two stores that are Postgres databases (pgvector, AnalyticDB in SQL mode) share:
//! connecting as Dify does, telling a missing table from a failure, Postgres' folding of the
//! unquoted names Dify writes, and vectors as Postgres literals.

use std::fmt::Write as _;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::store::{Hit, VectorError};
use crate::db::{quote_ident, sqlstate};

/// Connections per store: Dify's `*_MAX_CONNECTION` default is 5; a job copies a few datasets
/// at once, each one statement at a time.
const POOL_SIZE: u32 = 8;

pub fn options(
    host: &str,
    port: u16,
    user: &str,
    password: Option<&str>,
    database: &str,
) -> PgConnectOptions {
    let options = PgConnectOptions::new()
        .host(host)
        .port(port)
        .username(user)
        .database(database)
        .application_name("upkeep");
    match password {
        Some(p) => options.password(p),
        None => options,
    }
}

/// A pool that has connected once (so a wrong host or password fails here, by name).
pub async fn connect(
    store: &'static str,
    options: PgConnectOptions,
) -> Result<PgPool, VectorError> {
    PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        .acquire_timeout(Duration::from_secs(20))
        .connect_with(options)
        .await
        .map_err(|e| VectorError::store(store, "connect", e))
}

/// Maps a failed statement to the store's error, naming the call.
pub fn failed(store: &'static str, call: &'static str) -> impl Fn(sqlx::Error) -> VectorError {
    move |e| VectorError::store(store, call, e)
}

/// The table (or its schema, or its database) is not there: reads see nothing, as Dify's own
/// reads do.
pub fn missing_table(e: &sqlx::Error) -> bool {
    matches!(sqlstate(e).as_deref(), Some("42P01" | "3F000" | "3D000"))
}

/// An operator class, access method or text search configuration the statement names is not
/// there (e.g. `gin_bigm_ops` without pg_bigm).
pub fn missing_object(e: &sqlx::Error) -> bool {
    sqlstate(e).as_deref() == Some("42704")
}

/// Not allowed (e.g. `CREATE EXTENSION` by a role that may not).
pub fn not_allowed(e: &sqlx::Error) -> bool {
    sqlstate(e).as_deref() == Some("42501")
}

/// The identifier Postgres makes of `name` written unquoted, as Dify writes table names:
/// ASCII letters folded to lower case, cut to 63 bytes (NAMEDATALEN - 1). Names with anything
/// but ASCII letters, digits and `_` are refused: Dify's unquoted SQL could not use them.
pub fn unquoted(name: &str) -> Result<String, VectorError> {
    let plain = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain {
        return Err(VectorError::Layout(format!(
            "{name:?} is not a name Dify can write unquoted (letters, digits and _ only)"
        )));
    }
    let mut folded = name.to_ascii_lowercase();
    folded.truncate(63);
    Ok(quote_ident(&folded))
}

/// Search rows (`doc_id`, cosine `distance`) as hits scored as Dify scores them
/// (`1 - distance`); a missing table finds nothing.
pub fn hits(
    store: &'static str,
    rows: Result<Vec<sqlx::postgres::PgRow>, sqlx::Error>,
) -> Result<Vec<Hit>, VectorError> {
    use sqlx::Row;
    let rows = match rows {
        Err(e) if missing_table(&e) => return Ok(Vec::new()),
        r => r.map_err(failed(store, "search"))?,
    };
    rows.into_iter()
        .map(|r| {
            let distance: f64 = r.try_get("distance").map_err(failed(store, "search"))?;
            Ok(Hit {
                id: r
                    .try_get::<Option<String>, _>("doc_id")
                    .map_err(failed(store, "search"))?
                    .unwrap_or_default(),
                score: (1.0 - distance) as f32,
            })
        })
        .collect()
}

/// `[1,2.5,...]` (pgvector) or `{1,2.5,...}` (a Postgres array): each float in its shortest
/// form that reads back to the same `f32`, so nothing is lost on the way.
pub fn vector_literal(v: &[f32], open: char, close: char) -> String {
    let mut s = String::with_capacity(v.len() * 11 + 2);
    s.push(open);
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{x}");
    }
    s.push(close);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_as_postgres_does() {
        let id = "Vector_index_3f1c2a4b_0000_4000_8000_0123456789ab_Node";
        assert_eq!(
            unquoted(&format!("embedding_{id}")).expect("plain"),
            "\"embedding_vector_index_3f1c2a4b_0000_4000_8000_0123456789ab_nod\""
        );
        assert!(unquoted("a\"b").is_err());
        assert!(unquoted("1abc").is_err());
        assert!(unquoted("").is_err());
    }

    #[test]
    fn vectors_round_trip_as_text() {
        let v = [0.1f32, -3.4028235e38, 1e-45, 0.333_333_34];
        let text = vector_literal(&v, '[', ']');
        let back: Vec<f32> = text
            .trim_matches(['[', ']'])
            .split(',')
            .map(|x| x.parse().expect("float"))
            .collect();
        assert_eq!(back, v);
    }
}
