//! Vacuum benchmark: Upkeep's `vacuum` job beside what an operator runs today, a `psql`
//! session with one `VACUUM` per table, on identical copies of a generated Dify database
//! with dead rows. Run it with `bench/vacuum.sh`; it prints a Markdown table.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio::process::Command;

#[path = "common.rs"]
mod common;
use common::{peak_rss, recreate, spawn_daemon, stop};

#[tokio::main]
async fn main() {
    let mut pg = "postgres://postgres@127.0.0.1:5432/postgres".to_string();
    let mut upkeep = "target/release/upkeep".to_string();
    let mut messages = 300_000usize;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--pg" => pg = value,
            "--upkeep" => upkeep = value,
            "--messages" => messages = value.parse().expect("--messages N"),
            other => panic!("unknown argument {other}"),
        }
    }
    let mut spec = upkeep::demo::datagen::DemoSpec::scaled(messages);
    spec.dead_row_fraction = 0.3;
    let (_, pool, summary, generated) =
        common::generated_database(&pg, "upkeep_bench_vacuum", &spec, None).await;
    let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&pool)
        .await
        .expect("size");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    pool.close().await;
    println!(
        "Database: {} messages generated in {:.1} s, {} tables, {:.0} MiB, {:.0}% of message-side rows made dead.",
        summary.rows.get("messages").copied().unwrap_or(0),
        generated.as_secs_f64(),
        tables.len(),
        size as f64 / 1048576.0,
        spec.dead_row_fraction * 100.0
    );
    println!();
    println!(
        "| mode | psql, one VACUUM per table | Upkeep `vacuum` job | Upkeep / psql | bytes after (psql / Upkeep) | Upkeep daemon peak RSS |"
    );
    println!("|---|---|---|---|---|---|");
    for (mode, statement) in [
        ("analyze", "VACUUM (ANALYZE)"),
        ("full", "VACUUM (FULL, ANALYZE)"),
    ] {
        let psql_db = recreate(
            &pg,
            &format!("upkeep_bench_vacuum_psql_{mode}"),
            Some("upkeep_bench_vacuum"),
        )
        .await;
        let upkeep_db = recreate(
            &pg,
            &format!("upkeep_bench_vacuum_upkeep_{mode}"),
            Some("upkeep_bench_vacuum"),
        )
        .await;

        let script: String = tables
            .iter()
            .map(|t| format!("{statement} public.\"{t}\";\n"))
            .collect();
        let t0 = Instant::now();
        let mut psql = Command::new("psql")
            .args([psql_db.as_str(), "-v", "ON_ERROR_STOP=1", "-q"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("psql");
        {
            use tokio::io::AsyncWriteExt;
            let mut stdin = psql.stdin.take().expect("stdin");
            stdin
                .write_all(script.as_bytes())
                .await
                .expect("write script");
        }
        assert!(psql.wait().await.expect("psql").success(), "psql failed");
        let psql_time = t0.elapsed();
        let psql_after = db_size(&psql_db).await;

        let (upkeep_time, rss) = run_upkeep(&upkeep, &upkeep_db, mode).await;
        let upkeep_after = db_size(&upkeep_db).await;
        println!(
            "| {mode} | {:.2} s | {:.2} s | {:.2} | {:.0} / {:.0} MiB | {rss} |",
            psql_time.as_secs_f64(),
            upkeep_time.as_secs_f64(),
            upkeep_time.as_secs_f64() / psql_time.as_secs_f64(),
            psql_after as f64 / 1048576.0,
            upkeep_after as f64 / 1048576.0
        );
    }
    println!();
    println!(
        "psql: wall time of one session running the statements; Upkeep: from the submit request to the job's end, as the client sees it."
    );
}

async fn db_size(url: &str) -> i64 {
    let mut c = PgConnection::connect(url).await.expect("connect");
    sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&mut c)
        .await
        .expect("size")
}

async fn run_upkeep(bin: &str, db_url: &str, mode: &str) -> (Duration, String) {
    let (mut child, url) = spawn_daemon(bin, db_url, "vacuum-bench").await;
    let t0 = Instant::now();
    common::run_job(
        &url,
        &json!({"kind": "vacuum", "params": {"mode": mode, "lock_timeout_ms": 60000}}),
    )
    .await;
    let elapsed = t0.elapsed();
    let rss = peak_rss(&child);
    stop(&mut child).await;
    (elapsed, rss)
}
