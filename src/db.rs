//! The one Postgres pool (Dify's database; Upkeep's own tables live in schema `upkeep`),
//! migrations, and the one helper that quotes identifiers.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL from {source_name}: {message}")]
    Url {
        source_name: &'static str,
        message: String,
    },
    #[error("cannot reach the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot apply Upkeep's migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub async fn connect(
    url: &str,
    source_name: &'static str,
    max_connections: u32,
) -> Result<PgPool, DbError> {
    let options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| DbError::Url {
        source_name,
        message: e.to_string(),
    })?;
    let options = options.application_name("upkeep");
    let port = options.get_port();
    PgPoolOptions::new()
        .max_connections(max_connections)
        .after_connect(move |_, _| {
            Box::pin(async move {
                crate::nodelay::set_on_sockets_to(port);
                Ok(())
            })
        })
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(DbError::Connect)
}

pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// The server's version as it reports it (`SHOW server_version`).
pub async fn server_version(pool: &PgPool) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SHOW server_version")
        .fetch_one(pool)
        .await
}

/// Quotes a Postgres identifier (table, schema) so names from configuration or requests can
/// never be read as SQL. Every identifier that is not a literal in our code goes through here.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table`, both parts quoted.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// The SQLSTATE of a database error, if it is one.
pub fn sqlstate(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

/// Whether `err` means the connection to Postgres went away (a restart, a failover, an
/// administrator's `pg_terminate_backend`, the network), not that a statement was wrong: work
/// that met it may succeed on a new connection.
pub fn connection_lost(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Class 08: connection exception; 57P01-03: admin shutdown, crash shutdown, cannot
        // connect now (the server is starting or stopping).
        _ => sqlstate(err).is_some_and(|c| {
            c.starts_with("08") || matches!(c.as_str(), "57P01" | "57P02" | "57P03")
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_is_told_from_a_wrong_statement() {
        assert!(connection_lost(&sqlx::Error::PoolTimedOut));
        assert!(connection_lost(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!connection_lost(&sqlx::Error::RowNotFound));
        assert!(!connection_lost(&sqlx::Error::Protocol("bad".into())));
    }

    #[test]
    fn quotes_hostile_names() {
        assert_eq!(quote_ident("messages"), "\"messages\"");
        assert_eq!(
            quote_ident("a\"; DROP TABLE x; --"),
            "\"a\"\"; DROP TABLE x; --\""
        );
        assert_eq!(qualified("public", "Ab"), "\"public\".\"Ab\"");
    }
}
