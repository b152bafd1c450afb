//! Restoring a set's pg_dump archives: `pg_restore` fed straight from the repository, in one
//! transaction, so a failure leaves the database as it was. Also the scratch restore of
//! `backup_verify`'s `restore_test`.

use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use opendal::Operator;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::io::AsyncWriteExt;

use crate::backup::pg::{self, PgTarget};
use crate::backup::repo::{DumpedDatabase, Manifest, RepoError};
use crate::db::quote_ident;
use crate::jobs::backup::{count_rows, repo_failed};
use crate::jobs::{JobCtx, JobError};

fn failed(e: pg::PgToolError) -> JobError {
    JobError::failed("restore_failed", e.to_string())
}

pub async fn connect(ctx: &JobCtx, database: &str) -> Result<PgConnection, JobError> {
    let options: PgConnectOptions = ctx
        .settings
        .database_url
        .parse()
        .map_err(|e: sqlx::Error| JobError::failed("restore_failed", e.to_string()))?;
    Ok(options
        .database(database)
        .application_name("upkeep")
        .connect()
        .await?)
}

/// pg_restore must be at least as new as the pg_dump that wrote the archive.
pub async fn check_tool(ctx: &JobCtx, m: &Manifest) -> Result<(), JobError> {
    let (tool, major) = pg::tool_version(ctx.settings.backup.pg_bin_dir.as_deref(), "pg_restore")
        .await
        .map_err(failed)?;
    let dumped = m
        .database
        .as_ref()
        .and_then(|d| d.pg_dump_version.split('.').next()?.parse::<u32>().ok())
        .unwrap_or(0);
    if major < dumped {
        return Err(JobError::failed(
            "pg_restore_too_old",
            format!(
                "pg_restore {tool} cannot read an archive of pg_dump {dumped}: install a newer client or set UPKEEP_PG_BIN_DIR"
            ),
        ));
    }
    Ok(())
}

/// Streams one archive from the repository into `pg_restore`.
pub async fn pg_restore(
    ctx: &JobCtx,
    op: &Operator,
    db: &DumpedDatabase,
    target: &PgTarget,
    clean: bool,
) -> Result<(), JobError> {
    let mut args = vec![
        "--single-transaction".to_string(),
        "--exit-on-error".to_string(),
        "--no-owner".to_string(),
        "--no-privileges".to_string(),
    ];
    if clean {
        args.push("--clean".into());
        args.push("--if-exists".into());
    }
    let mut running = pg::spawn(
        ctx.settings.backup.pg_bin_dir.as_deref(),
        "pg_restore",
        target,
        &args,
        true,
    )
    .map_err(failed)?;
    let Some(mut stdin) = running.child.stdin.take() else {
        running.kill().await;
        return Err(JobError::failed(
            "restore_failed",
            "pg_restore has no input pipe",
        ));
    };
    let fail = |e| repo_failed(RepoError::storage(&db.path, e));
    let fed: Result<(), JobError> = async {
        let mut stream = op
            .reader(&db.path)
            .await
            .map_err(fail)?
            .into_bytes_stream(..)
            .await
            .map_err(fail)?;
        let stop = ctx.stop_signal();
        tokio::pin!(stop);
        loop {
            let chunk = tokio::select! {
                c = stream.try_next() => c.map_err(|e| JobError::failed("source_failed", format!("reading {}: {e}", db.path)))?,
                _ = &mut stop => return Err(ctx.check_stop().err().unwrap_or(JobError::Interrupted)),
            };
            let Some(chunk) = chunk else { break };
            // A closed pipe means pg_restore stopped: its exit status says why.
            if stdin.write_all(&chunk).await.is_err() {
                break;
            }
        }
        drop(stdin);
        Ok(())
    }
    .await;
    if let Err(e) = fed {
        running.kill().await;
        return Err(e);
    }
    running.finish().await.map_err(failed)
}

/// Tables outside the system schemas and Upkeep's: a database that has any is not empty.
pub async fn user_tables(conn: &mut PgConnection) -> Result<i64, JobError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'upkeep') \
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
    )
    .fetch_one(conn)
    .await?)
}

/// Row counts now against the manifest's, side by side.
pub fn compare(expected: &BTreeMap<String, i64>, found: &BTreeMap<String, i64>) -> (bool, Value) {
    let mut tables = serde_json::Map::new();
    let mut same = true;
    for (t, n) in expected {
        let got = found.get(t).copied();
        same &= got == Some(*n);
        tables.insert(t.clone(), json!({"set": n, "restored": got}));
    }
    (same, Value::Object(tables))
}

pub async fn counts_of(ctx: &JobCtx, database: &str) -> Result<BTreeMap<String, i64>, JobError> {
    let mut conn = connect(ctx, database).await?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut conn)
        .await?;
    let counts = count_rows(&mut conn).await;
    let _ = conn.close().await;
    counts
}

/// Restores Dify's archive into a scratch database, compares counts, drops it.
pub async fn restore_test(
    ctx: &mut JobCtx,
    op: &Operator,
    m: &Manifest,
) -> Result<Value, JobError> {
    check_tool(ctx, m).await?;
    let Some(db) = m.database.as_ref().and_then(|d| d.databases.first()) else {
        return Ok(json!({"matches": true, "note": "the set has no database part"}));
    };
    let scratch = format!("upkeep_rt_{}", &ctx.job_id.simple().to_string()[20..]);
    let main = PgTarget::from_url(&ctx.settings.database_url).map_err(failed)?;
    let drop_sql = format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(&scratch)
    );
    sqlx::query(sqlx::AssertSqlSafe(drop_sql.clone()))
        .execute(&ctx.pool)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {}",
        quote_ident(&scratch)
    )))
    .execute(&ctx.pool)
    .await?;
    let outcome = async {
        ctx.log(
            format!("restoring {} into scratch database {scratch}", db.path),
            Value::Null,
        )
        .await?;
        pg_restore(ctx, op, db, &main.with_database(&scratch), false).await?;
        counts_of(ctx, &scratch).await
    }
    .await;
    // Dropped whatever happened: a scratch database must not outlive its test.
    let dropped = sqlx::query(sqlx::AssertSqlSafe(drop_sql))
        .execute(&ctx.pool)
        .await;
    let found = outcome?;
    dropped?;
    let (matches, tables) = compare(&db.tables, &found);
    Ok(json!({"database": db.name, "scratch": scratch, "matches": matches, "tables": tables}))
}
