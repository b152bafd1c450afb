//! Log purge benchmark: Upkeep's `purge_logs` (exporting every batch to local storage, Dify's
//! default) beside a plain SQL loop that deletes the same rows in the same batch size without
//! exporting (a PL/pgSQL procedure committing per batch: no client round trips at all), on
//! identical copies of one generated database. While each runs, a Dify-like writer inserts
//! messages and touches conversations, and a sampler watches `pg_stat_activity` for the
//! longest open transaction. Run it with `bench/purge.sh`; it prints Markdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{Connection, PgConnection, PgPool};

#[path = "common.rs"]
mod common;
use common::{peak_rss, recreate, spawn_daemon, stop};

/// Every table either side deletes from.
const TABLES: &[&str] = &[
    "messages",
    "dataset_retriever_resources",
    "message_feedbacks",
    "message_files",
    "message_agent_thoughts",
    "message_chains",
    "app_annotation_hit_histories",
    "saved_messages",
    "message_annotations",
    "conversations",
    "pinned_conversations",
    "workflow_conversation_variables",
    "workflow_runs",
    "workflow_node_executions",
    "workflow_node_execution_offload",
    "workflow_app_logs",
    "workflow_pauses",
    "workflow_pause_reasons",
    "workflow_trigger_logs",
];

/// The loop an operator would write: Upkeep's selection, in the same batches, deleting
/// dependents by parent id then the parents, one COMMIT per batch, no export.
const PLAIN_LOOP: &str = r#"
CREATE PROCEDURE pg_temp.purge(days int, n int) LANGUAGE plpgsql AS $$
DECLARE
  cutoff timestamp := (now() AT TIME ZONE 'UTC') - make_interval(days => days);
  ids uuid[];
  keep uuid[];
BEGIN
  LOOP
    SELECT array_agg(id) INTO ids FROM (SELECT id FROM public.messages
      WHERE created_at < cutoff ORDER BY created_at, id LIMIT n) b;
    EXIT WHEN ids IS NULL;
    DELETE FROM public.dataset_retriever_resources WHERE message_id = ANY(ids);
    DELETE FROM public.message_feedbacks WHERE message_id = ANY(ids);
    DELETE FROM public.message_files WHERE message_id = ANY(ids);
    DELETE FROM public.message_agent_thoughts WHERE message_id = ANY(ids);
    DELETE FROM public.message_chains WHERE message_id = ANY(ids);
    DELETE FROM public.app_annotation_hit_histories WHERE message_id = ANY(ids);
    DELETE FROM public.saved_messages WHERE message_id = ANY(ids);
    UPDATE public.message_annotations SET message_id = NULL, conversation_id = NULL WHERE message_id = ANY(ids);
    DELETE FROM public.messages WHERE id = ANY(ids);
    COMMIT;
  END LOOP;
  LOOP
    SELECT array_agg(id) INTO ids FROM (SELECT c.id FROM public.conversations c
      WHERE c.updated_at < cutoff AND NOT EXISTS (SELECT 1 FROM public.messages m WHERE m.conversation_id = c.id)
      ORDER BY c.id LIMIT n) b;
    EXIT WHEN ids IS NULL;
    DELETE FROM public.pinned_conversations WHERE conversation_id = ANY(ids);
    DELETE FROM public.workflow_conversation_variables WHERE conversation_id = ANY(ids);
    DELETE FROM public.conversations WHERE id = ANY(ids);
    COMMIT;
  END LOOP;
  SELECT coalesce(array_agg(DISTINCT workflow_run_id), '{}') INTO keep FROM public.messages
    WHERE created_at >= cutoff AND workflow_run_id IS NOT NULL;
  LOOP
    SELECT array_agg(id) INTO ids FROM (SELECT id FROM public.workflow_runs
      WHERE created_at < cutoff AND status IN ('succeeded', 'failed', 'partial-succeeded', 'stopped')
      AND NOT (id = ANY(keep)) ORDER BY created_at, id LIMIT n) b;
    EXIT WHEN ids IS NULL;
    DELETE FROM public.workflow_node_execution_offload WHERE node_execution_id IN
      (SELECT id FROM public.workflow_node_executions WHERE workflow_run_id = ANY(ids));
    DELETE FROM public.workflow_node_executions WHERE workflow_run_id = ANY(ids);
    DELETE FROM public.workflow_app_logs WHERE workflow_run_id = ANY(ids);
    DELETE FROM public.workflow_pause_reasons WHERE pause_id IN
      (SELECT id FROM public.workflow_pauses WHERE workflow_run_id = ANY(ids));
    DELETE FROM public.workflow_pauses WHERE workflow_run_id = ANY(ids);
    DELETE FROM public.workflow_trigger_logs WHERE workflow_run_id = ANY(ids);
    DELETE FROM public.workflow_runs WHERE id = ANY(ids);
    COMMIT;
  END LOOP;
END $$;
"#;

/// The same loop as a client would run it over the wire: one psql session, a block per batch
/// (ids read into a variable, then the deletes, each batch its own transaction). psql has no
/// loops, so the script holds as many blocks as there are batches, plus one.
fn psql_script(days: u32, batch: u32, batches: [i64; 3]) -> String {
    let cutoff = format!("(now() AT TIME ZONE 'UTC') - interval '{days} days'");
    let mut out = String::from("\\set ON_ERROR_STOP 1\n");
    out.push_str(&format!("SELECT {cutoff} AS cutoff \\gset\n"));
    out.push_str(
        "SELECT coalesce(array_agg(DISTINCT workflow_run_id)::text, '{}') AS keep FROM public.messages \
         WHERE created_at >= :'cutoff' AND workflow_run_id IS NOT NULL \\gset\n",
    );
    let blocks: [(&str, &[&str]); 3] = [
        (
            "SELECT coalesce(array_agg(id)::text, '{}') AS ids FROM (SELECT id FROM public.messages \
             WHERE created_at < :'cutoff' ORDER BY created_at, id LIMIT N) b \\gset",
            &[
                "DELETE FROM public.dataset_retriever_resources WHERE message_id = ANY(:'ids');",
                "DELETE FROM public.message_feedbacks WHERE message_id = ANY(:'ids');",
                "DELETE FROM public.message_files WHERE message_id = ANY(:'ids');",
                "DELETE FROM public.message_agent_thoughts WHERE message_id = ANY(:'ids');",
                "DELETE FROM public.message_chains WHERE message_id = ANY(:'ids');",
                "DELETE FROM public.app_annotation_hit_histories WHERE message_id = ANY(:'ids');",
                "DELETE FROM public.saved_messages WHERE message_id = ANY(:'ids');",
                "UPDATE public.message_annotations SET message_id = NULL, conversation_id = NULL WHERE message_id = ANY(:'ids');",
                "DELETE FROM public.messages WHERE id = ANY(:'ids');",
            ],
        ),
        (
            "SELECT coalesce(array_agg(id)::text, '{}') AS ids FROM (SELECT c.id FROM public.conversations c \
             WHERE c.updated_at < :'cutoff' AND NOT EXISTS (SELECT 1 FROM public.messages m WHERE m.conversation_id = c.id) \
             ORDER BY c.id LIMIT N) b \\gset",
            &[
                "DELETE FROM public.pinned_conversations WHERE conversation_id = ANY(:'ids');",
                "DELETE FROM public.workflow_conversation_variables WHERE conversation_id = ANY(:'ids');",
                "DELETE FROM public.conversations WHERE id = ANY(:'ids');",
            ],
        ),
        (
            "SELECT coalesce(array_agg(id)::text, '{}') AS ids FROM (SELECT id FROM public.workflow_runs \
             WHERE created_at < :'cutoff' AND status IN ('succeeded', 'failed', 'partial-succeeded', 'stopped') \
             AND NOT (id = ANY(:'keep')) ORDER BY created_at, id LIMIT N) b \\gset",
            &[
                "DELETE FROM public.workflow_node_execution_offload WHERE node_execution_id IN \
                 (SELECT id FROM public.workflow_node_executions WHERE workflow_run_id = ANY(:'ids'));",
                "DELETE FROM public.workflow_node_executions WHERE workflow_run_id = ANY(:'ids');",
                "DELETE FROM public.workflow_app_logs WHERE workflow_run_id = ANY(:'ids');",
                "DELETE FROM public.workflow_pause_reasons WHERE pause_id IN \
                 (SELECT id FROM public.workflow_pauses WHERE workflow_run_id = ANY(:'ids'));",
                "DELETE FROM public.workflow_pauses WHERE workflow_run_id = ANY(:'ids');",
                "DELETE FROM public.workflow_trigger_logs WHERE workflow_run_id = ANY(:'ids');",
                "DELETE FROM public.workflow_runs WHERE id = ANY(:'ids');",
            ],
        ),
    ];
    for ((select, deletes), n) in blocks.iter().zip(batches) {
        for _ in 0..=n {
            out.push_str("BEGIN;\n");
            out.push_str(&select.replace("LIMIT N", &format!("LIMIT {batch}")));
            out.push('\n');
            for d in deletes.iter() {
                out.push_str(d);
                out.push('\n');
            }
            out.push_str("COMMIT;\n");
        }
    }
    out
}

struct Outcome {
    elapsed: Duration,
    rows: u64,
    longest_tx: Duration,
    writer_max: Duration,
    writes: u64,
    rss: String,
    detail: String,
}

#[tokio::main]
async fn main() {
    let mut pg = "postgres://postgres@127.0.0.1:5432/postgres".to_string();
    let mut upkeep = "target/release/upkeep".to_string();
    let mut messages = 1_000_000usize;
    let mut batch = 1000u32;
    let mut days = 30u32;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--pg" => pg = value,
            "--upkeep" => upkeep = value,
            "--messages" => messages = value.parse().expect("--messages N"),
            "--batch" => batch = value.parse().expect("--batch N"),
            "--days" => days = value.parse().expect("--days N"),
            other => panic!("unknown argument {other}"),
        }
    }
    let mut spec = upkeep::demo::datagen::DemoSpec::scaled(messages);
    spec.dead_row_fraction = 0.0;
    let (_, pool, summary, generated) =
        common::generated_database(&pg, "upkeep_bench_purge", &spec).await;
    sqlx::raw_sql("VACUUM ANALYZE")
        .execute(&pool)
        .await
        .expect("analyze");
    let before = counts(&pool).await;
    pool.close().await;
    println!(
        "Database: {} rows in {} tables generated in {:.1} s ({} messages, {} workflow runs, {} node executions), spread over {} days; purge `days: {days}`, `batch: {batch}`, every tenant.",
        summary.total_rows(),
        summary.rows.len(),
        generated.as_secs_f64(),
        summary.rows.get("messages").copied().unwrap_or(0),
        summary.rows.get("workflow_runs").copied().unwrap_or(0),
        summary
            .rows
            .get("workflow_node_executions")
            .copied()
            .unwrap_or(0),
        spec.days_spread,
    );
    println!();

    let server_db = recreate(&pg, "upkeep_bench_purge_server", Some("upkeep_bench_purge")).await;
    let plain_db = recreate(&pg, "upkeep_bench_purge_plain", Some("upkeep_bench_purge")).await;
    let upkeep_db = recreate(&pg, "upkeep_bench_purge_upkeep", Some("upkeep_bench_purge")).await;
    let server = measured(
        &server_db,
        "plpgsql",
        &before,
        run_server_side(&server_db, days, batch),
    )
    .await;
    let plain = measured(&plain_db, "psql", &before, run_psql(&plain_db, days, batch)).await;
    let exports = std::env::temp_dir().join(format!("upkeep-bench-purge-{}", std::process::id()));
    std::fs::create_dir_all(&exports).expect("export dir");
    let ours = measured(
        &upkeep_db,
        "upkeep",
        &before,
        run_upkeep(&upkeep, &upkeep_db, days, batch, &exports),
    )
    .await;
    let _ = std::fs::remove_dir_all(&exports);
    let (after_plain, after_ours) = (
        counts(&PgPool::connect(&plain_db).await.expect("connect")).await,
        counts(&PgPool::connect(&upkeep_db).await.expect("connect")).await,
    );
    // The writers' own messages aside, both must leave the same rows behind.
    let left = |after: &BTreeMap<String, i64>, o: &Outcome, t: &str| {
        after.get(t).copied().unwrap_or(0) - if t == "messages" { o.writes as i64 } else { 0 }
    };
    let differs: Vec<&str> = TABLES
        .iter()
        .copied()
        .filter(|t| left(&after_plain, &plain, t) != left(&after_ours, &ours, t))
        .collect();

    println!(
        "| | rows deleted | time | rows/s | ratio | longest transaction | Dify writer: writes, slowest | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, o) in [
        (
            "plain SQL loop: one psql session, a block per batch, no export",
            &plain,
        ),
        (
            "the same loop server-side (PL/pgSQL, COMMIT per batch, no export)",
            &server,
        ),
        ("Upkeep `purge_logs`, export on (local fs)", &ours),
    ] {
        println!(
            "| {name} | {} | {:.1} s | {:.0} | {:.2} | {} ms | {}, {} ms | {} |",
            o.rows,
            o.elapsed.as_secs_f64(),
            o.rows as f64 / o.elapsed.as_secs_f64(),
            (o.rows as f64 / o.elapsed.as_secs_f64())
                / (plain.rows as f64 / plain.elapsed.as_secs_f64()),
            o.longest_tx.as_millis(),
            o.writes,
            o.writer_max.as_millis(),
            o.rss,
        );
    }
    println!();
    println!("{}", ours.detail);
    println!();
    let after_server = counts(&PgPool::connect(&server_db).await.expect("connect")).await;
    let also: Vec<&str> = TABLES
        .iter()
        .copied()
        .filter(|t| left(&after_server, &server, t) != left(&after_ours, &ours, t))
        .collect();
    if differs.is_empty() && also.is_empty() {
        println!(
            "All three end states have the same row count in every table (the writers' rows aside)."
        );
    } else {
        let diff = |after: &BTreeMap<String, i64>, o: &Outcome| -> Vec<String> {
            TABLES
                .iter()
                .filter_map(|t| {
                    let d = left(after, o, t) - left(&after_ours, &ours, t);
                    (d != 0).then(|| format!("{t} {d:+}"))
                })
                .collect()
        };
        println!(
            "Rows left beyond Upkeep's (the runs start minutes apart, so their cutoffs differ by as much): psql loop {:?}, server-side {:?}.",
            diff(&after_plain, &plain),
            diff(&after_server, &server)
        );
    }
}

async fn counts(pool: &PgPool) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for t in TABLES {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM public.{t}"
        )))
        .fetch_one(pool)
        .await
        .expect("count");
        out.insert(t.to_string(), n);
    }
    out
}

/// Runs `work` with a Dify-like writer and a transaction sampler beside it.
async fn measured(
    db: &str,
    app: &str,
    before: &BTreeMap<String, i64>,
    work: impl std::future::Future<Output = (String, String)>,
) -> Outcome {
    let stop_flag = Arc::new(AtomicBool::new(false));
    let longest_us = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop_flag, longest_us, db, app) = (
            stop_flag.clone(),
            longest_us.clone(),
            db.to_string(),
            app.to_string(),
        );
        tokio::spawn(async move {
            let mut c = PgConnection::connect(&db).await.expect("sampler");
            while !stop_flag.load(Ordering::SeqCst) {
                let us: Option<i64> = sqlx::query_scalar(
                    "SELECT (extract(epoch FROM max(clock_timestamp() - xact_start)) * 1e6)::bigint \
                     FROM pg_stat_activity WHERE datname = current_database() \
                     AND application_name = $1 AND xact_start IS NOT NULL AND state <> 'idle'",
                )
                .bind(&app)
                .fetch_one(&mut c)
                .await
                .expect("sample");
                longest_us.fetch_max(us.unwrap_or(0).max(0) as u64, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let writer = {
        let (stop_flag, db) = (stop_flag.clone(), db.to_string());
        tokio::spawn(async move {
            let mut c = PgConnection::connect(&db).await.expect("writer");
            let (mut n, mut slowest) = (0u64, Duration::ZERO);
            while !stop_flag.load(Ordering::SeqCst) {
                let t = Instant::now();
                // A new message in a recent conversation, and the conversation touched, as
                // Dify's chat endpoint does.
                sqlx::raw_sql(
                    "WITH c AS (SELECT id, app_id FROM public.conversations ORDER BY updated_at DESC LIMIT 1 OFFSET (random() * 50)::int) \
                     , m AS (INSERT INTO public.messages (app_id, conversation_id, inputs, query, message, message_unit_price, \
                        answer, answer_unit_price, currency, from_source) \
                        SELECT app_id, id, '{}', 'q', '[]', 0, 'a', 0, 'USD', 'api' FROM c RETURNING conversation_id) \
                     UPDATE public.conversations SET updated_at = now() AT TIME ZONE 'UTC' WHERE id IN (SELECT conversation_id FROM m)",
                )
                .execute(&mut c)
                .await
                .expect("Dify write");
                slowest = slowest.max(t.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (n, slowest)
        })
    };
    let t0 = Instant::now();
    let (rss, detail) = work.await;
    let elapsed = t0.elapsed();
    stop_flag.store(true, Ordering::SeqCst);
    let _ = sampler.await;
    let (writes, writer_max) = writer.await.expect("writer");
    let after = counts(&PgPool::connect(db).await.expect("connect")).await;
    let rows: i64 = TABLES
        .iter()
        .map(|t| before.get(*t).copied().unwrap_or(0) - after.get(*t).copied().unwrap_or(0))
        .sum::<i64>()
        // The writer's own messages are not purge work.
        + writes as i64;
    Outcome {
        elapsed,
        rows: rows.max(0) as u64,
        longest_tx: Duration::from_micros(longest_us.load(Ordering::SeqCst)),
        writer_max,
        writes,
        rss,
        detail,
    }
}

async fn run_psql(db: &str, days: u32, batch: u32) -> (String, String) {
    let mut c = PgConnection::connect(db).await.expect("connect");
    let mut batches = [0i64; 3];
    for (i, sql) in [
        "SELECT count(*) FROM public.messages WHERE created_at < (now() AT TIME ZONE 'UTC') - make_interval(days => $1)",
        "SELECT count(*) FROM public.conversations WHERE updated_at < (now() AT TIME ZONE 'UTC') - make_interval(days => $1)",
        "SELECT count(*) FROM public.workflow_runs WHERE created_at < (now() AT TIME ZONE 'UTC') - make_interval(days => $1)",
    ]
    .into_iter()
    .enumerate()
    {
        let n: i64 = sqlx::query_scalar(sql)
            .bind(days as i32)
            .fetch_one(&mut c)
            .await
            .expect("count");
        batches[i] = n / i64::from(batch) + 1;
    }
    let script = psql_script(days, batch, batches);
    let mut psql = tokio::process::Command::new("psql")
        .args([db, "-q", "-X"])
        .env("PGAPPNAME", "psql")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = psql.stdin.take().expect("stdin");
        stdin.write_all(script.as_bytes()).await.expect("script");
    }
    assert!(
        psql.wait().await.expect("psql").success(),
        "psql loop failed"
    );
    ("(psql: a few MB)".into(), String::new())
}

async fn run_server_side(db: &str, days: u32, batch: u32) -> (String, String) {
    let mut c = PgConnection::connect(db).await.expect("connect");
    sqlx::raw_sql("SET application_name = 'plpgsql'")
        .execute(&mut c)
        .await
        .expect("name");
    sqlx::raw_sql(PLAIN_LOOP)
        .execute(&mut c)
        .await
        .expect("procedure");
    sqlx::query("CALL pg_temp.purge($1, $2)")
        .bind(days as i32)
        .bind(batch as i32)
        .execute(&mut c)
        .await
        .expect("plain loop");
    ("(server side)".into(), String::new())
}

async fn run_upkeep(
    bin: &str,
    db: &str,
    days: u32,
    batch: u32,
    exports: &std::path::Path,
) -> (String, String) {
    let (mut child, url) = spawn_daemon(bin, db, "purge-bench").await;
    let view = common::run_job(
        &url,
        &json!({"kind": "purge_logs", "params": {"days": days, "batch": batch,
            "storage": {"type": "local", "root": exports.to_string_lossy()}}}),
    )
    .await;
    let rss = peak_rss(&child);
    stop(&mut child).await;
    let r = &view["result"];
    let detail = format!(
        "Upkeep's own account: {} batches, {} export files ({:.0} MiB), longest delete transaction {} ms, {} batches retried.",
        r["batches"],
        r["export"]["files"],
        r["export"]["bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        r["longest_transaction_ms"],
        r["retried_batches"],
    );
    (rss, detail)
}
