//! The demo's database: created with a comment that marks it as the demo's, and only ever
//! dropped again when it carries that mark, so `--database` can never cost anyone a database.

use sqlx::{Connection, PgConnection};

use crate::db::quote_ident;

/// The `COMMENT ON DATABASE` the demo writes, and looks for before it drops anything.
pub const MARK: &str = "made by upkeep demo: upkeep demo drops and recreates it";

#[derive(Debug, thiserror::Error)]
pub enum DemoDbError {
    #[error(
        "database \"{0}\" already exists and was not made by upkeep demo, so it is left alone; \
         pick another name with --database NAME (the demo makes it), or drop it yourself"
    )]
    NotTheDemos(String),
    #[error("--pg-url has no database name to replace")]
    NoDatabaseInUrl,
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
}

/// Drops `name` if the demo made it, refuses it if anyone else did, then creates and marks it.
/// Returns its URL on `server`.
pub async fn recreate(server: &str, name: &str) -> Result<String, DemoDbError> {
    let base = server.split('?').next().unwrap_or(server);
    let (prefix, _) = base.rsplit_once('/').ok_or(DemoDbError::NoDatabaseInUrl)?;
    let mut conn = PgConnection::connect(server).await?;
    let existing: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(name)
    .fetch_optional(&mut conn)
    .await?;
    match existing {
        Some(Some(comment)) if comment == MARK => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE {} WITH (FORCE)",
                quote_ident(name)
            )))
            .execute(&mut conn)
            .await?;
        }
        Some(_) => return Err(DemoDbError::NotTheDemos(name.to_string())),
        None => {}
    }
    let ident = quote_ident(name);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {ident}")))
        .execute(&mut conn)
        .await?;
    // COMMENT takes no bind parameters; MARK is a constant without quotes.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "COMMENT ON DATABASE {ident} IS '{MARK}'"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(format!("{prefix}/{name}"))
}
