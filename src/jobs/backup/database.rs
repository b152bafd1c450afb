//! The database part: `pg_dump --format=custom` of Dify's database (Upkeep's own schema left
//! out) and of the plugin daemon's, streamed into the repository as it is produced. Row
//! counts are read in the very snapshot the dump reads, so they are what the archive holds.

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use opendal::Operator;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tokio::io::AsyncReadExt;
use tokio::process::ChildStdout;

use super::{Checkpoint, phase, repo_failed};
use crate::backup::pg::{self, PgTarget};
use crate::backup::repo::{self, DatabasePart, DumpedDatabase, RepoError};
use crate::config::Settings;
use crate::jobs::{JobCtx, JobError, Progress};
use crate::storage::transfer::hex;

/// Bytes handed to the repository writer at once (it uploads in 8 MiB parts).
const CHUNK: usize = 256 << 10;
const PART: usize = 8 << 20;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// A dump was under way: a new attempt starts it over from a new snapshot.
    started: bool,
    restarts: u32,
    pg_dump_version: Option<String>,
    server_version: Option<String>,
    snapshot_taken_at: Option<DateTime<Utc>>,
    done: Vec<DumpedDatabase>,
    finished: bool,
}

impl State {
    pub fn manifest(&self) -> Option<DatabasePart> {
        if !self.finished {
            return None;
        }
        Some(DatabasePart {
            pg_dump_version: self.pg_dump_version.clone().unwrap_or_default(),
            server_version: self.server_version.clone().unwrap_or_default(),
            snapshot_taken_at: self.snapshot_taken_at.unwrap_or_default(),
            restarts: self.restarts,
            databases: self.done.clone(),
        })
    }

    pub fn bytes(&self) -> u64 {
        self.done.iter().map(|d| d.size).sum()
    }
}

fn failed(e: pg::PgToolError) -> JobError {
    JobError::failed("dump_failed", e.to_string())
}

/// pg_dump must be at least the server's major version (it refuses a newer server).
pub async fn check_tools(pool: &PgPool, settings: &Settings) -> Result<(String, String), String> {
    let (tool, tool_major) = pg::tool_version(settings.backup.pg_bin_dir.as_deref(), "pg_dump")
        .await
        .map_err(|e| e.to_string())?;
    let (server, num): (String, String) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('server_version_num')",
    )
    .fetch_one(pool)
    .await
    .map_err(|e| e.to_string())?;
    let server_major = num.parse::<u32>().unwrap_or(0) / 10000;
    if tool_major < server_major {
        return Err(format!(
            "pg_dump {tool} cannot dump PostgreSQL {server}: install a client of version {server_major} or newer (or point UPKEEP_PG_BIN_DIR at one)"
        ));
    }
    Ok((tool, server))
}

/// The databases dumped: Dify's, then the plugin daemon's when it exists on the same server.
async fn databases(ctx: &JobCtx) -> Result<(PgTarget, Vec<String>), JobError> {
    let main = PgTarget::from_url(&ctx.settings.database_url).map_err(failed)?;
    let mut names = vec![main.database()];
    let plugin = &ctx.settings.backup.plugin_database;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(plugin)
            .fetch_one(&ctx.pool)
            .await?;
    if exists && *plugin != names[0] {
        names.push(plugin.clone());
    }
    Ok((main, names))
}

pub async fn plan(ctx: &mut JobCtx) -> Result<Value, JobError> {
    let tools = check_tools(&ctx.pool, &ctx.settings).await;
    let (_, names) = databases(ctx).await?;
    let mut dbs = Vec::new();
    for name in &names {
        let size: Option<i64> = sqlx::query_scalar("SELECT pg_database_size($1)")
            .bind(name)
            .fetch_one(&ctx.pool)
            .await?;
        dbs.push(json!({"name": name, "bytes_on_disk": size}));
    }
    Ok(json!({
        "databases": dbs,
        "excluded": ["schema upkeep (Upkeep's own queue)"],
        "pg_dump": tools.as_ref().map(|(t, _)| t.clone()).ok(),
        "problem": tools.err(),
    }))
}

pub async fn run(ctx: &mut JobCtx, op: &Operator, cp: &mut Checkpoint) -> Result<(), JobError> {
    if cp.database.finished {
        return Ok(());
    }
    let (tool, server) = check_tools(&ctx.pool, &ctx.settings)
        .await
        .map_err(|m| JobError::failed("pg_dump_unusable", m))?;
    if cp.database.started {
        // An exported snapshot lives only as long as the transaction that exported it, and a
        // custom-format stream cannot be continued: the dump starts over, and says so.
        cp.database.restarts += 1;
        ctx.warn(
            format!(
                "database dump restarted from a new snapshot: the snapshot of {} ended with the interrupted attempt",
                cp.database
                    .snapshot_taken_at
                    .map_or("the earlier attempt".to_string(), |t| t.to_rfc3339())
            ),
            json!({"restarts": cp.database.restarts}),
        )
        .await?;
        cp.database.done.clear();
    }
    cp.database.started = true;
    cp.database.pg_dump_version = Some(tool);
    cp.database.server_version = Some(server);
    ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
    let (main, names) = databases(ctx).await?;
    for name in names {
        let target = main.with_database(&name);
        let (dumped, taken_at) = dump_one(ctx, op, &cp.set, &name, &target).await?;
        if cp.database.done.is_empty() {
            cp.database.snapshot_taken_at = Some(taken_at);
        }
        cp.database.done.push(dumped);
        ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
    }
    cp.database.finished = true;
    ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
    Ok(())
}

async fn connect(ctx: &JobCtx, database: &str) -> Result<PgConnection, JobError> {
    let options: PgConnectOptions = ctx
        .settings
        .database_url
        .parse()
        .map_err(|e: sqlx::Error| JobError::failed("dump_failed", e.to_string()))?;
    Ok(options
        .database(database)
        .application_name("upkeep")
        .connect()
        .await?)
}

async fn dump_one(
    ctx: &mut JobCtx,
    op: &Operator,
    set: &str,
    name: &str,
    target: &PgTarget,
) -> Result<(DumpedDatabase, DateTime<Utc>), JobError> {
    let mut conn = connect(ctx, name).await?;
    // The snapshot pg_dump reads is this transaction's: it stays open until the dump is done.
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut conn)
        .await?;
    let (snapshot, taken_at): (String, DateTime<Utc>) =
        sqlx::query_as("SELECT pg_export_snapshot(), now()")
            .fetch_one(&mut conn)
            .await?;
    let args = vec![
        "--format=custom".to_string(),
        format!("--snapshot={snapshot}"),
        "--exclude-schema=upkeep".to_string(),
        "--lock-wait-timeout=60000".to_string(),
    ];
    let mut running = pg::spawn(
        ctx.settings.backup.pg_bin_dir.as_deref(),
        "pg_dump",
        target,
        &args,
        false,
    )
    .map_err(failed)?;
    let path = repo::dump_path(set, name);
    let writer = op
        .writer_with(&path)
        .chunk(PART)
        .concurrent(2)
        .content_type("application/octet-stream")
        .await;
    let mut writer = match writer {
        Ok(w) => w,
        Err(e) => {
            running.kill().await;
            return Err(repo_failed(RepoError::storage(&path, e)));
        }
    };
    let Some(stdout) = running.child.stdout.take() else {
        running.kill().await;
        return Err(JobError::failed(
            "dump_failed",
            "pg_dump has no output pipe",
        ));
    };
    ctx.progress(
        Progress {
            unit: "bytes".into(),
            ..phase(&format!("dump {name}"))
        },
        true,
    )
    .await?;
    let (counts, streamed) = tokio::join!(
        count_rows(&mut conn),
        stream(ctx, stdout, &mut writer, name, &path)
    );
    let streamed = match streamed {
        Ok(s) => s,
        Err(e) => {
            let _ = writer.abort().await;
            running.kill().await;
            return Err(e);
        }
    };
    if let Err(e) = running.finish().await {
        let _ = writer.abort().await;
        return Err(failed(e));
    }
    writer
        .close()
        .await
        .map_err(|e| repo_failed(RepoError::storage(&path, e)))?;
    let tables = counts?;
    sqlx::query("COMMIT").execute(&mut conn).await?;
    let _ = conn.close().await;
    let (size, sha) = streamed;
    ctx.log(
        format!("dumped {name}: {size} bytes, {} tables", tables.len()),
        json!({"database": name, "bytes": size}),
    )
    .await?;
    Ok((
        DumpedDatabase {
            name: name.to_string(),
            path,
            size,
            sha256: hex(&sha),
            tables,
        },
        taken_at,
    ))
}

async fn stream(
    ctx: &mut JobCtx,
    mut out: ChildStdout,
    writer: &mut opendal::Writer,
    name: &str,
    path: &str,
) -> Result<(u64, [u8; 32]), JobError> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let stop = ctx.stop_signal();
    tokio::pin!(stop);
    loop {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let mut eof = false;
        while buf.len() < CHUNK {
            let n = tokio::select! {
                r = out.read_buf(&mut buf) => r.map_err(|e| JobError::failed("dump_failed", format!("reading pg_dump's output: {e}")))?,
                _ = &mut stop => return Err(ctx.check_stop().err().unwrap_or(JobError::Interrupted)),
            };
            if n == 0 {
                eof = true;
                break;
            }
        }
        if !buf.is_empty() {
            hasher.update(&buf);
            size += buf.len() as u64;
            writer
                .write(buf.freeze())
                .await
                .map_err(|e| repo_failed(RepoError::storage(path, e)))?;
            ctx.failpoint("backup.dump_chunk").await?;
            ctx.progress(
                Progress {
                    done: size,
                    unit: "bytes".into(),
                    ..phase(&format!("dump {name}"))
                },
                false,
            )
            .await?;
        }
        if eof {
            return Ok((size, hasher.finalize().into()));
        }
    }
}

/// Exact rows per table, in the exporting transaction's snapshot.
pub async fn count_rows(
    conn: &mut PgConnection,
) -> Result<std::collections::BTreeMap<String, i64>, JobError> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'upkeep') \
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
         ORDER BY 1, 2",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = std::collections::BTreeMap::new();
    for (schema, table) in tables {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            crate::db::qualified(&schema, &table)
        )))
        .fetch_one(&mut *conn)
        .await?;
        counts.insert(format!("{schema}.{table}"), n);
    }
    Ok(counts)
}
