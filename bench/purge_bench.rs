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
use upkeep::dify::access_paths::{self, Path};
use upkeep::dify::shape::Shape;

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

/// One phase of the loop: the batch's parents (a subquery over `{cutoff}`, `{keep}`, `{n}`),
/// then the statements run on their ids (`{ids}`), each naming the table it touches.
struct Phase {
    parents: String,
    /// Walk by primary key after `{last}` (where the release has no index on `created_at`).
    keyset: bool,
    statements: Vec<(&'static str, String)>,
}

/// The loop an operator would write, as Upkeep selects: dependents deleted by parent id, then
/// the parents, one COMMIT per batch, no export. `adapted`: the same lookups by the access
/// paths Upkeep takes on this release (`dify::access_paths`), else 1.15's (a link column
/// lookup, runs walked by `created_at`). Tables the release lacks are left out.
fn phases(shape: &Shape, adapted: bool) -> Vec<Phase> {
    // `public.<table> x WHERE <its rows of the batch>`.
    let rows = |table: &str, column: &str| -> String {
        let choice = access_paths::choose(shape, table, &[column], false);
        match (adapted, choice.leading) {
            (true, Some(l)) if matches!(choice.path, Path::LeadingColumns { .. }) => {
                format!(
                    "public.{table} x WHERE {}",
                    l.cond_for("x").replace("$1", "{ids}")
                )
            }
            _ => format!("public.{table} x WHERE x.{column} = ANY({{ids}})"),
        }
    };
    let delete =
        |table: &'static str, column: &str| (table, format!("DELETE FROM {}", rows(table, column)));
    // Upkeep's rule: without a usable index led by `created_at`, runs are walked by id.
    let runs_by_id = adapted
        && !matches!(
            access_paths::choose(shape, "workflow_runs", &["created_at"], false).path,
            Path::Index { .. }
        );
    let phases = vec![
        Phase {
            parents: "SELECT id FROM public.messages WHERE created_at < {cutoff} ORDER BY created_at, id LIMIT {n}".into(),
            keyset: false,
            statements: vec![
                delete("dataset_retriever_resources", "message_id"),
                delete("message_feedbacks", "message_id"),
                delete("message_files", "message_id"),
                delete("message_agent_thoughts", "message_id"),
                delete("message_chains", "message_id"),
                delete("app_annotation_hit_histories", "message_id"),
                delete("saved_messages", "message_id"),
                ("message_annotations", "UPDATE public.message_annotations SET message_id = NULL, conversation_id = NULL WHERE message_id = ANY({ids})".into()),
                ("messages", "DELETE FROM public.messages WHERE id = ANY({ids})".into()),
            ],
        },
        Phase {
            parents: "SELECT c.id FROM public.conversations c WHERE c.updated_at < {cutoff} \
                      AND NOT EXISTS (SELECT 1 FROM public.messages m WHERE m.conversation_id = c.id) ORDER BY c.id LIMIT {n}".into(),
            keyset: false,
            statements: vec![
                delete("pinned_conversations", "conversation_id"),
                delete("workflow_conversation_variables", "conversation_id"),
                ("conversations", "DELETE FROM public.conversations WHERE id = ANY({ids})".into()),
            ],
        },
        Phase {
            parents: format!(
                "SELECT id FROM public.workflow_runs WHERE created_at < {{cutoff}} \
                 AND status IN ('succeeded', 'failed', 'partial-succeeded', 'stopped') AND NOT (id = ANY({{keep}})) {}",
                if runs_by_id { "AND id > {last} ORDER BY id LIMIT {n}" } else { "ORDER BY created_at, id LIMIT {n}" }
            ),
            keyset: runs_by_id,
            statements: vec![
                ("workflow_node_execution_offload", format!(
                    "DELETE FROM public.workflow_node_execution_offload WHERE node_execution_id IN (SELECT x.id FROM {})",
                    rows("workflow_node_executions", "workflow_run_id"))),
                delete("workflow_node_executions", "workflow_run_id"),
                delete("workflow_app_logs", "workflow_run_id"),
                ("workflow_pause_reasons", format!(
                    "DELETE FROM public.workflow_pause_reasons WHERE pause_id IN (SELECT x.id FROM {})",
                    rows("workflow_pauses", "workflow_run_id"))),
                delete("workflow_pauses", "workflow_run_id"),
                delete("workflow_trigger_logs", "workflow_run_id"),
                ("workflow_runs", "DELETE FROM public.workflow_runs WHERE id = ANY({ids})".into()),
            ],
        },
    ];
    phases
        .into_iter()
        .map(|mut p| {
            p.statements.retain(|(t, _)| shape.has_table(t));
            p
        })
        .collect()
}

const ZERO_ID: &str = "00000000-0000-0000-0000-000000000000";

/// The loop server-side: a PL/pgSQL procedure, COMMIT per batch, no client round trips.
fn plpgsql(phases: &[Phase], days: u32, batch: u32) -> String {
    let fill = |s: &str| {
        s.replace("{cutoff}", "cutoff")
            .replace("{keep}", "keep")
            .replace("{ids}", "ids")
            .replace("{last}", "last")
            .replace("{n}", &batch.to_string())
    };
    let mut out = format!(
        "CREATE PROCEDURE pg_temp.purge() LANGUAGE plpgsql AS $$\nDECLARE\n  cutoff timestamp := \
         (now() AT TIME ZONE 'UTC') - make_interval(days => {days});\n  ids uuid[];\n  keep uuid[];\n  \
         last uuid := '{ZERO_ID}';\nBEGIN\n  SELECT coalesce(array_agg(DISTINCT workflow_run_id), '{{}}') INTO keep \
         FROM public.messages WHERE created_at >= cutoff AND workflow_run_id IS NOT NULL;\n"
    );
    for p in phases {
        out.push_str(&format!(
            "  LOOP\n    SELECT array_agg(id ORDER BY id) INTO ids FROM ({}) b;\n    EXIT WHEN ids IS NULL;\n",
            fill(&p.parents)
        ));
        if p.keyset {
            out.push_str("    last := ids[array_upper(ids, 1)];\n");
        }
        for (_, st) in &p.statements {
            out.push_str(&format!("    {};\n", fill(st)));
        }
        out.push_str("    COMMIT;\n  END LOOP;\n");
    }
    out.push_str("END $$;\n");
    out
}

/// The same loop as a client would run it over the wire: one psql session, a block per batch
/// (ids read into a variable, then the statements, each batch its own transaction). psql has
/// no loops, so the script holds as many blocks as there are batches, plus one.
/// With `export`, each batch's rows are first written to files there (one `COPY` of
/// `row_to_json` per table into one file per batch and table) and synced, before its delete:
/// the work an export adds, done the cheapest way a script can (no read-back, fewer files).
fn psql_script(
    phases: &[Phase],
    days: u32,
    batch: u32,
    batches: [i64; 3],
    export: Option<&std::path::Path>,
) -> String {
    let fill = |s: &str| {
        s.replace("{cutoff}", ":'cutoff'")
            .replace("{keep}", ":'keep'")
            .replace("{ids}", ":'ids'")
            .replace("{last}", ":'last'")
            .replace("{n}", &batch.to_string())
    };
    let mut out = String::from("\\set ON_ERROR_STOP 1\n");
    let mut file_no = 0u64;
    out.push_str(&format!(
        "SELECT (now() AT TIME ZONE 'UTC') - interval '{days} days' AS cutoff, '{ZERO_ID}' AS last \\gset\n"
    ));
    out.push_str(
        "SELECT coalesce(array_agg(DISTINCT workflow_run_id)::text, '{}') AS keep FROM public.messages \
         WHERE created_at >= :'cutoff' AND workflow_run_id IS NOT NULL \\gset\n",
    );
    for (p, n) in phases.iter().zip(batches) {
        let last = if p.keyset {
            ", coalesce((array_agg(id ORDER BY id DESC))[1]::text, :'last') AS last"
        } else {
            ""
        };
        for _ in 0..=n {
            let ids = format!(
                "SELECT coalesce(array_agg(id)::text, '{{}}') AS ids{last} FROM ({}) b \\gset\n",
                fill(&p.parents)
            );
            if let Some(dir) = export {
                file_no += 1;
                out.push_str(&ids);
                for (table, st) in &p.statements {
                    if let Some(select) = export_select(table, st) {
                        out.push_str(&format!(
                            "COPY ({}) TO STDOUT \\g '{}/b{file_no}-{table}.json'\n",
                            fill(&select),
                            dir.display()
                        ));
                    }
                }
                out.push_str(&format!("\\! sync {}/b{file_no}-*\n", dir.display()));
                out.push_str("BEGIN;\n");
            } else {
                out.push_str("BEGIN;\n");
                out.push_str(&ids);
            }
            for (_, st) in &p.statements {
                out.push_str(&fill(st));
                out.push_str(";\n");
            }
            out.push_str("COMMIT;\n");
        }
    }
    out
}

/// The rows a `DELETE FROM public.<table> [x] WHERE ..` removes, as JSON; `None` for an update.
fn export_select(table: &str, delete: &str) -> Option<String> {
    let rest = delete.strip_prefix("DELETE FROM ")?;
    let alias = if rest.starts_with(&format!("public.{table} x ")) {
        "x"
    } else {
        table
    };
    Some(format!("SELECT row_to_json({alias}) FROM {rest}"))
}

struct Outcome {
    elapsed: Duration,
    /// Rows per table when it ended.
    after: BTreeMap<String, i64>,
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
    let mut release: Option<String> = None;
    let mut graph_bytes = 0usize;
    let mut without_export = false;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--pg" => pg = value,
            "--upkeep" => upkeep = value,
            "--messages" => messages = value.parse().expect("--messages N"),
            "--batch" => batch = value.parse().expect("--batch N"),
            "--days" => days = value.parse().expect("--days N"),
            "--release" => release = Some(value),
            "--graph-bytes" => graph_bytes = value.parse().expect("--graph-bytes N"),
            "--upkeep-export" => {
                without_export = match value.as_str() {
                    "on" => false,
                    "both" => true,
                    _ => panic!("--upkeep-export on|both"),
                }
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let mut spec = upkeep::demo::datagen::DemoSpec::scaled(messages);
    spec.dead_row_fraction = 0.0;
    spec.run_graph_bytes = graph_bytes;
    let schema = release.as_deref().map(common::release_schema);
    let (_, pool, summary, generated) =
        common::generated_database(&pg, "upkeep_bench_purge", &spec, schema.as_ref()).await;
    sqlx::raw_sql("VACUUM ANALYZE")
        .execute(&pool)
        .await
        .expect("analyze");
    let shape = Shape::read(&pool).await.expect("catalog");
    let before = counts(&pool).await;
    let graph_size: Option<f64> =
        sqlx::query_scalar("SELECT avg(octet_length(graph))::float8 FROM public.workflow_runs")
            .fetch_one(&pool)
            .await
            .expect("graph size");
    pool.close().await;
    println!(
        "Database: Dify {}'s schema, {} rows in {} tables generated in {:.1} s ({} messages, {} workflow runs with graphs of {:.0} bytes on average, {} node executions), spread over {} days; purge `days: {days}`, `batch: {batch}`, every tenant.",
        release.as_deref().unwrap_or("1.15.0"),
        summary.total_rows(),
        summary.rows.len(),
        generated.as_secs_f64(),
        summary.rows.get("messages").copied().unwrap_or(0),
        summary.rows.get("workflow_runs").copied().unwrap_or(0),
        graph_size.unwrap_or(0.0),
        summary
            .rows
            .get("workflow_node_executions")
            .copied()
            .unwrap_or(0),
        spec.days_spread,
    );
    println!();
    println!("Load average at the start: {}.", load_average());
    println!();

    let exports = std::env::temp_dir().join(format!("upkeep-bench-purge-{}", std::process::id()));
    std::fs::create_dir_all(&exports).expect("export dir");
    let (naive, adapted) = (phases(&shape, false), phases(&shape, true));
    // On 1.15 both are the same loop: every lookup has its index.
    let older = release.is_some();
    let mut runs: Vec<(String, Outcome)> = Vec::new();
    let db = async |n: &str| {
        recreate(
            &pg,
            &format!("upkeep_bench_purge_{n}"),
            Some("upkeep_bench_purge"),
        )
        .await
    };
    if older {
        let url = db("naive").await;
        let o = measured(
            &url,
            "psql",
            &before,
            run_psql(&url, &naive, days, batch, None),
        )
        .await;
        runs.push(("plain SQL loop by 1.15's lookups (link columns, runs by `created_at`): one psql session, no export".into(), o));
    }
    let url = db("plain").await;
    let o = measured(
        &url,
        "psql",
        &before,
        run_psql(&url, &adapted, days, batch, None),
    )
    .await;
    runs.push((
        if older {
            "the same loop by Upkeep's access paths (see the dry run below)"
        } else {
            "plain SQL loop: one psql session, a block per batch, no export"
        }
        .into(),
        o,
    ));
    let url = db("server").await;
    let o = measured(
        &url,
        "plpgsql",
        &before,
        run_server_side(&url, &adapted, days, batch),
    )
    .await;
    runs.push((
        "the same loop server-side (PL/pgSQL, COMMIT per batch, no export)".into(),
        o,
    ));
    let url = db("psql_export").await;
    let loop_exports = exports.join("psql");
    std::fs::create_dir_all(&loop_exports).expect("loop's export dir");
    let o = measured(
        &url,
        "psql",
        &before,
        run_psql(&url, &adapted, days, batch, Some(&loop_exports)),
    )
    .await;
    let size = dir_bytes(&loop_exports);
    let _ = std::fs::remove_dir_all(&loop_exports);
    runs.push((
        format!(
            "the psql loop exporting first: per batch, one `COPY (SELECT row_to_json ..)` per table to a file, `sync`, then the delete ({:.0} MiB, no read-back)",
            size as f64 / (1 << 20) as f64
        ),
        o,
    ));
    // (name, temporary indexes, export)
    let mut upkeep_runs = vec![("Upkeep `purge_logs`, export on (local fs)", false, true)];
    if older {
        upkeep_runs.push((
            "Upkeep `purge_logs`, export on, `temporary_indexes: true`",
            true,
            true,
        ));
    }
    if without_export {
        upkeep_runs.push(("Upkeep `purge_logs`, `export: false`", false, false));
    }
    let mut ours_at = 0;
    for (name, temporary, export) in upkeep_runs {
        let url = db(match (temporary, export) {
            (true, _) => "upkeep_tmp",
            (false, true) => "upkeep",
            (false, false) => "upkeep_noexport",
        })
        .await;
        let o = measured(
            &url,
            "upkeep",
            &before,
            run_upkeep(&upkeep, &url, days, batch, temporary, export, &exports),
        )
        .await;
        if !temporary && export {
            ours_at = runs.len();
        }
        runs.push((name.into(), o));
    }
    let _ = std::fs::remove_dir_all(&exports);

    // The baseline: the loop as written for this release's lookups (the first run).
    let base = runs[0].1.rows as f64 / runs[0].1.elapsed.as_secs_f64();
    println!(
        "| | rows deleted | time | rows/s | ratio | longest transaction | Dify writer: writes, slowest | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, o) in &runs {
        println!(
            "| {name} | {} | {:.1} s | {:.0} | {:.2} | {} ms | {}, {} ms | {} |",
            o.rows,
            o.elapsed.as_secs_f64(),
            o.rows as f64 / o.elapsed.as_secs_f64(),
            (o.rows as f64 / o.elapsed.as_secs_f64()) / base,
            o.longest_tx.as_millis(),
            o.writes,
            o.writer_max.as_millis(),
            o.rss,
        );
    }
    println!();
    for (_, o) in runs.iter().filter(|(_, o)| !o.detail.is_empty()) {
        println!("{}", o.detail);
        println!();
    }
    println!("Load average at the end: {}.", load_average());
    println!();
    // The writers' own messages aside, every run must leave the same rows behind.
    let left = |o: &Outcome, t: &str| {
        o.after.get(t).copied().unwrap_or(0) - if t == "messages" { o.writes as i64 } else { 0 }
    };
    let ours = &runs[ours_at].1;
    let diffs: Vec<String> = runs
        .iter()
        .filter_map(|(name, o)| {
            let d: Vec<String> = TABLES
                .iter()
                .filter_map(|t| {
                    let d = left(o, t) - left(ours, t);
                    (d != 0).then(|| format!("{t} {d:+}"))
                })
                .collect();
            (!d.is_empty()).then(|| format!("{name}: {d:?}"))
        })
        .collect();
    if diffs.is_empty() {
        println!(
            "Every run's end state has the same row count in every table (the writers' rows aside)."
        );
    } else {
        println!(
            "Rows left beyond Upkeep's (the runs start minutes apart, so their cutoffs differ by as much): {}.",
            diffs.join("; ")
        );
    }
}

/// Bytes of the files directly under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read the loop's exports")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Rows the result says were exported, every table.
fn exported_rows(result: &serde_json::Value) -> f64 {
    result["tables"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, t)| t["exported"].as_f64().unwrap_or(0.0))
        .sum()
}

/// The 1, 5 and 15 minute load averages: the machine is shared, so each run says how much.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|_| "?".into())
}

async fn counts(pool: &PgPool) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for t in TABLES {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('public.' || $1) IS NOT NULL")
            .bind(t)
            .fetch_one(pool)
            .await
            .expect("catalog");
        if !exists {
            continue;
        }
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
        after,
        rows: rows.max(0) as u64,
        longest_tx: Duration::from_micros(longest_us.load(Ordering::SeqCst)),
        writer_max,
        writes,
        rss,
        detail,
    }
}

async fn run_psql(
    db: &str,
    phases: &[Phase],
    days: u32,
    batch: u32,
    export: Option<&std::path::Path>,
) -> (String, String) {
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
    let script = psql_script(phases, days, batch, batches, export);
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

async fn run_server_side(db: &str, phases: &[Phase], days: u32, batch: u32) -> (String, String) {
    let mut c = PgConnection::connect(db).await.expect("connect");
    sqlx::raw_sql("SET application_name = 'plpgsql'")
        .execute(&mut c)
        .await
        .expect("name");
    sqlx::raw_sql(sqlx::AssertSqlSafe(plpgsql(phases, days, batch)))
        .execute(&mut c)
        .await
        .expect("procedure");
    sqlx::raw_sql("CALL pg_temp.purge()")
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
    temporary_indexes: bool,
    export: bool,
    exports: &std::path::Path,
) -> (String, String) {
    let (mut child, url) = spawn_daemon(bin, db, "purge-bench").await;
    let mut params = json!({"days": days, "batch": batch, "temporary_indexes": temporary_indexes,
        "export": export});
    if export {
        params["storage"] = json!({"type": "local", "root": exports.to_string_lossy()});
    }
    let view = common::run_job(&url, &json!({"kind": "purge_logs", "params": params})).await;
    let rss = peak_rss(&child);
    stop(&mut child).await;
    let r = &view["result"];
    // The lookups that do not simply have their own index.
    let paths: Vec<String> = r["access_paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["path"] != "index"
                || c["by"] == "id"
                || c["index"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("upkeep_tmp_"))
        })
        .map(|c| {
            format!(
                "{} by {}: {} {}",
                c["table"].as_str().unwrap_or("?"),
                c["by"].as_str().unwrap_or("?"),
                c["path"].as_str().unwrap_or("?"),
                c["index"].as_str().unwrap_or("")
            )
        })
        .collect();
    let detail = format!(
        "Upkeep's own account{}: {} batches, {} export files ({:.0} MiB, {:.0} bytes per row), longest delete transaction {} ms, {} batches retried; access paths other than a lookup column's own index: {}.",
        match (temporary_indexes, export) {
            (true, _) => " (`temporary_indexes: true`)",
            (false, false) => " (`export: false`)",
            (false, true) => "",
        },
        r["batches"],
        r["export"]["files"],
        r["export"]["bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        r["export"]["bytes"].as_f64().unwrap_or(0.0) / exported_rows(r).max(1.0),
        r["longest_transaction_ms"],
        r["retried_batches"],
        if paths.is_empty() {
            "none".to_string()
        } else {
            paths.join("; ")
        },
    );
    (rss, detail)
}
