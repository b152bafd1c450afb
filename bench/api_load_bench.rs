//! API load benchmark (issue 18): `GET /v1/jobs` and a job's events with 100,000 finished jobs
//! and 1,000,000 events in the tables, driven by a second process (this program, re-run as a
//! client), beside the same queries sent straight to Postgres; then the same load while the
//! daemon's TTL pruning deletes most of the jobs. Run it with `bench/api_load.sh`; it prints
//! Markdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

#[path = "common.rs"]
// Only the daemon helpers are used here.
#[allow(dead_code)]
mod common;
use common::{TOKEN, peak_rss, recreate, spawn_daemon_with, stop};

struct Args {
    pg: String,
    upkeep: String,
    jobs: i64,
    events: i64,
    seconds: u64,
    concurrency: usize,
    ttl_days: u32,
}

fn args(argv: &[String]) -> Args {
    let mut a = Args {
        pg: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        upkeep: "target/release/upkeep".into(),
        jobs: 100_000,
        events: 1_000_000,
        seconds: 30,
        concurrency: 8,
        ttl_days: 30,
    };
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--pg" => a.pg = value,
            "--upkeep" => a.upkeep = value,
            "--jobs" => a.jobs = value.parse().expect("--jobs N"),
            "--events" => a.events = value.parse().expect("--events N"),
            "--seconds" => a.seconds = value.parse().expect("--seconds N"),
            "--concurrency" => a.concurrency = value.parse().expect("--concurrency N"),
            "--ttl-days" => a.ttl_days = value.parse().expect("--ttl-days N"),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Jobs created over this many days, so a TTL of 30 expires about two thirds of them.
const SPREAD_DAYS: i32 = 90;
/// Jobs with this many events each (two recent ones the load reads, two past the TTL).
const BIG_JOBS: i64 = 4;
const BIG_JOB_EVENTS: i64 = 50_000;
/// The deep page: the one after this many jobs, newest first (page 501 of 50).
const DEEP_OFFSET: i64 = 25_000;

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("client") {
        return client(&argv[1..]).await;
    }
    let a = args(&argv);
    let load_before = loadavg();
    let db_url = recreate(&a.pg, "upkeep_bench_api", None).await;
    let pool = PgPool::connect(&db_url).await.expect("connect");
    upkeep::demo::fixture::load_dify_fixture(&pool)
        .await
        .expect("fixture");
    upkeep::db::migrate(&pool).await.expect("migrate");
    let filled = Instant::now();
    fill(&db_url, a.jobs, a.events).await;
    let fill_s = filled.elapsed().as_secs_f64();
    let (jobs, events, jobs_mb, events_mb): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM upkeep.jobs), (SELECT count(*) FROM upkeep.job_events), \
         pg_total_relation_size('upkeep.jobs') >> 20, pg_total_relation_size('upkeep.job_events') >> 20",
    )
    .fetch_one(&pool)
    .await
    .expect("sizes");
    let targets = targets(&pool).await;
    let plan = std::env::temp_dir().join(format!("api_load_plan_{}.json", std::process::id()));
    std::fs::write(&plan, serde_json::to_vec(&targets).expect("plan")).expect("write plan");

    // 1. The API with nothing else going on (a TTL nothing reaches).
    let (mut daemon, url) = spawn(&a, &db_url, 3650).await;
    let api = run_client(a.concurrency, "http", &url, &plan, a.seconds, 2).await;
    let api_rss = peak_rss(&daemon);
    stop(&mut daemon).await;

    // 2. The floor: the same statements sent straight to Postgres by the same kind of client.
    let sql = run_client(a.concurrency, "sql", &db_url, &plan, a.seconds, 2).await;

    // 3. The API again, on a daemon whose TTL expires most jobs: its housekeeping prunes at start.
    let (expired_jobs, expired_events): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum((SELECT count(*) FROM upkeep.job_events e WHERE e.job_id = j.id)), 0)::bigint \
         FROM upkeep.jobs j WHERE finished_at < now() - make_interval(days => $1)",
    )
    .bind(a.ttl_days as i32)
    .fetch_one(&pool)
    .await
    .expect("expired");
    let sampler = Sampler::start(&db_url).await;
    let (mut daemon, url) = spawn(&a, &db_url, a.ttl_days).await;
    let pruning_from = unix_ms();
    let load = {
        let (seconds, concurrency, url, plan) =
            (a.seconds, a.concurrency, url.clone(), plan.clone());
        tokio::spawn(async move { run_client(concurrency, "http", &url, &plan, seconds, 0).await })
    };
    let pruned_at = wait_pruned(&pool, a.ttl_days, pruning_from).await;
    let during = load.await.expect("load");
    let prune_rss = peak_rss(&daemon);
    stop(&mut daemon).await;
    let (statements, median_ms, longest_prune_ms, longest_daemon_ms) =
        sampler.stop().await.summary();
    let _ = std::fs::remove_file(&plan);
    let load_after = loadavg();

    println!(
        "Database: {jobs} finished jobs ({jobs_mb} MiB with indexes) and {events} events ({events_mb} MiB), \
         generated by set-based SQL in {fill_s:.1} s; jobs created over the last {SPREAD_DAYS} days; \
         {BIG_JOBS} jobs with {BIG_JOB_EVENTS} events each, the other events 8 per job."
    );
    println!();
    println!(
        "Load: {} concurrent clients in a second process, closed loop (each sends its next request \
         when the last answer is read), the endpoints below in turn, {} s per setup \
         (the first two after a 2 s warm-up). Load average before / after: {load_before} / {load_after}.",
        a.concurrency, a.seconds
    );
    println!();
    println!("| endpoint | setup | requests | req/s | p50 | p95 | p99 | max | errors | avg body |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let pruning_window = |s: &Sample| s.start_ms < pruned_at.unwrap_or(u64::MAX);
    let setups: [(&str, Vec<&Sample>); 3] = [
        ("Upkeep API", api.iter().collect()),
        ("SQL, straight to Postgres", sql.iter().collect()),
        (
            "Upkeep API while pruning",
            during.iter().filter(|s| pruning_window(s)).collect(),
        ),
    ];
    for (i, name) in ENDPOINTS.iter().enumerate() {
        for (j, (setup, samples)) in setups.iter().enumerate() {
            let mine: Vec<&Sample> = samples
                .iter()
                .copied()
                .filter(|s| s.endpoint == i)
                .collect();
            let label = if j == 0 { *name } else { "" };
            println!("| {label} | {setup} | {} |", row(&mine, j == 1));
        }
    }
    for (j, (setup, samples)) in setups.iter().enumerate() {
        println!("| **all** | {setup} | {} |", row(samples, j == 1));
    }
    println!();
    println!("Daemon peak RSS: {api_rss} (load only), {prune_rss} (load and pruning).");
    println!();
    match pruned_at {
        Some(done) => println!(
            "Pruning (`UPKEEP_JOB_TTL_DAYS={}`): {expired_jobs} jobs and {expired_events} events past the TTL, \
             all gone {:.1} s after the daemon started, under the load above. A 20 ms sampler of \
             `pg_stat_activity` caught {statements} pruning statements (one transaction each) in flight, \
             each at the longest it was seen: median {median_ms} ms, longest {longest_prune_ms} ms; the longest transaction of any \
             daemon connection was {longest_daemon_ms} ms. \"While pruning\" counts the requests sent before \
             the last expired job was gone.",
            a.ttl_days,
            (done - pruning_from) as f64 / 1000.0
        ),
        None => println!(
            "Pruning (`UPKEEP_JOB_TTL_DAYS={}`): {expired_jobs} jobs and {expired_events} events past the TTL, \
             NOT all gone within {} s; {statements} pruning statements seen, median {median_ms} ms, longest \
             {longest_prune_ms} ms; longest transaction of any daemon connection {longest_daemon_ms} ms.",
            a.ttl_days,
            PRUNE_DEADLINE.as_secs()
        ),
    }
}

async fn spawn(a: &Args, db_url: &str, ttl_days: u32) -> (tokio::process::Child, String) {
    spawn_daemon_with(
        &a.upkeep,
        db_url,
        "bench-api",
        &[("UPKEEP_JOB_TTL_DAYS", ttl_days.to_string())],
    )
    .await
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// The bench's data, by set-based SQL on one connection. Triggers (a NOTIFY per event) and
/// foreign-key checks are off for the fill only: the generator makes every reference itself.
async fn fill(db_url: &str, jobs: i64, events: i64) {
    let per_job = (events - BIG_JOBS * BIG_JOB_EVENTS) / jobs;
    assert!(
        per_job >= 2,
        "--events must leave at least two events a job"
    );
    let mut c = PgConnection::connect(db_url).await.expect("fill");
    sqlx::raw_sql(
        "SET session_replication_role = replica; \
         CREATE FUNCTION pg_temp.uuid7(ts timestamptz) RETURNS uuid LANGUAGE sql VOLATILE AS $$ \
           SELECT (lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '7' \
                   || substr(md5(random()::text), 1, 3) || substr('89ab', 1 + floor(random() * 4)::int, 1) \
                   || substr(md5(random()::text), 1, 15))::uuid $$;",
    )
    .execute(&mut c)
    .await
    .expect("fill setup");
    sqlx::query(FILL_JOBS)
        .bind(jobs)
        .bind(SPREAD_DAYS)
        .execute(&mut c)
        .await
        .expect("fill jobs");
    sqlx::query(BIG_JOBS_SQL)
        .bind(BIG_JOBS)
        .execute(&mut c)
        .await
        .expect("big jobs");
    sqlx::query(FILL_EVENTS)
        .bind(per_job as i32)
        .bind(BIG_JOB_EVENTS as i32)
        .execute(&mut c)
        .await
        .expect("fill events");
    // One statement each: VACUUM refuses to run in the implicit transaction of a batch.
    for sql in [
        "RESET session_replication_role",
        "VACUUM ANALYZE upkeep.jobs",
        "VACUUM ANALYZE upkeep.job_events",
    ] {
        sqlx::raw_sql(sql).execute(&mut c).await.expect(sql);
    }
}

/// Finished jobs of every kind, in the shares a daemon with nightly schedules sees: params with
/// their defaults filled in, the last progress, a result (a vacuum's per-table sizes are the
/// biggest), an error for the failed and cancelled ones. Inserted in creation order, as they
/// would have been.
const FILL_JOBS: &str = r#"
WITH base AS (
    SELECT g, now() - make_interval(days => $2) * random() AS created,
           random() AS rk, random() AS rs, random() AS rd
    FROM generate_series(1, $1) g
), typed AS (
    SELECT *,
        CASE WHEN rk < 0.30 THEN 'vacuum' WHEN rk < 0.55 THEN 'purge_logs' WHEN rk < 0.70 THEN 'backup'
             WHEN rk < 0.78 THEN 'backup_verify' WHEN rk < 0.83 THEN 'orphan_files'
             WHEN rk < 0.88 THEN 'orphan_records' WHEN rk < 0.93 THEN 'purge_exports'
             WHEN rk < 0.95 THEN 'storage_migrate' WHEN rk < 0.98 THEN 'vector_migrate'
             WHEN rk < 0.99 THEN 'vector_rollback' ELSE 'restore' END AS kind,
        CASE WHEN rs < 0.88 THEN 'succeeded' WHEN rs < 0.96 THEN 'failed' ELSE 'cancelled' END AS state
    FROM base
), timed AS (
    SELECT *, created + interval '1 second' * (0.05 + random()) AS started,
        interval '1 second' * (2 + rd * CASE kind WHEN 'vacuum' THEN 120 WHEN 'purge_logs' THEN 1800
            WHEN 'backup' THEN 3600 WHEN 'storage_migrate' THEN 7200 WHEN 'vector_migrate' THEN 3600
            ELSE 300 END) AS took,
        (g * 7919 % 9000000)::bigint AS n
    FROM typed
)
INSERT INTO upkeep.jobs (id, kind, params, dry_run, state, attempts, run_after, progress, result,
                         error, created_at, started_at, finished_at, updated_at)
SELECT pg_temp.uuid7(created), kind,
    CASE kind
        WHEN 'vacuum' THEN '{"mode": "analyze", "tables": null, "lock_timeout_ms": 5000}'
        WHEN 'purge_logs' THEN '{"days": 30, "batch": 100, "export": true, "tenant_ids": null}'
        WHEN 'backup' THEN '{"parts": ["database", "storage", "vectors"], "label": "nightly", "retention": {"keep_last": 7}, "target": {"type": "s3", "bucket_name": "dify-backups", "endpoint": "https://s3.example.internal", "region": "us-east-1", "access_key": "AKIAEXAMPLE", "secret_key": "v1.sealed.QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="}}'
        WHEN 'backup_verify' THEN '{"set": "2026-11-30T02:00:00Z-nightly", "restore_test": false, "source": null}'
        WHEN 'orphan_files' THEN '{"confirm": false, "plan_job_id": null, "min_age_hours": 24, "prefixes": ["upload_files", "image_files", "tools"]}'
        WHEN 'orphan_records' THEN '{"confirm": false, "plan_job_id": null, "min_age_hours": 24}'
        WHEN 'purge_exports' THEN '{"older_than_days": 90}'
        WHEN 'storage_migrate' THEN '{"source": {"type": "local", "root": "/app/api/storage"}, "target": null, "prefixes": null, "concurrency": 8, "verify": "checksum", "update_db": true, "delete_source": false}'
        WHEN 'vector_migrate' THEN '{"target": "qdrant", "source": null, "dataset_ids": null, "tenant_ids": null, "scope": "all", "missing_vectors": "embedding_cache", "batch_size": 256, "concurrency": 4, "switch_over": true}'
        WHEN 'vector_rollback' THEN '{"dataset_ids": ["5f0c7a52-8d3e-4b7f-9a61-0c2f4b8e9d11"]}'
        ELSE '{"set": "2026-11-30T02:00:00Z-nightly", "parts": ["database", "storage"], "overwrite": false, "source": null}'
    END::jsonb,
    rd < 0.1, state, CASE WHEN rd > 0.95 THEN 2 ELSE 1 END, created,
    jsonb_build_object('phase', 'done', 'done', n % 5000, 'total', n % 5000, 'unit',
        CASE kind WHEN 'vacuum' THEN 'tables' WHEN 'purge_logs' THEN 'rows' WHEN 'vector_migrate' THEN 'points' ELSE 'objects' END,
        'rate_per_s', round((n % 997)::numeric / 3, 1), 'eta_s', 0),
    CASE WHEN state = 'cancelled' THEN NULL
         WHEN kind = 'vacuum' THEN jsonb_build_object('mode', 'analyze', 'tables',
            (SELECT jsonb_agg(jsonb_build_object('table', t, 'bytes_before', n * 8192 + length(t),
                    'bytes_after', n * 8000 + length(t), 'dead_rows_before', n % 10000, 'duration_ms', (n + g) % 4000))
             FROM unnest(ARRAY['messages', 'conversations', 'message_files', 'message_feedbacks', 'message_chains',
                               'message_agent_thoughts', 'workflow_runs', 'workflow_node_executions',
                               'workflow_app_logs', 'upload_files', 'embeddings', 'document_segments']) t))
         WHEN kind = 'purge_logs' THEN jsonb_build_object('batches', n % 300, 'exported_files', n % 900, 'deleted',
            jsonb_build_object('messages', n % 100000, 'message_files', n % 3000, 'message_feedbacks', n % 700,
                'message_chains', n % 5000, 'message_agent_thoughts', n % 9000, 'conversations', n % 8000,
                'workflow_runs', n % 20000, 'workflow_node_executions', n % 80000, 'workflow_app_logs', n % 20000))
         WHEN kind = 'backup' THEN jsonb_build_object('set', '2026-11-30T02:00:00Z-nightly', 'bytes', n * 1000,
            'files', n % 100000, 'written', n % 1000, 'parts', jsonb_build_object('database', jsonb_build_object('bytes', n * 300),
            'storage', jsonb_build_object('objects', n % 100000, 'bytes', n * 600), 'vectors', jsonb_build_object('datasets', n % 40, 'points', n % 900000)))
         ELSE jsonb_build_object('done', n % 5000, 'skipped', n % 50, 'bytes', n * 100)
    END,
    CASE state WHEN 'failed' THEN '{"code": "storage_unavailable", "message": "the storage did not answer: connection reset by peer (os error 104) after 5 retries"}'::jsonb
               WHEN 'cancelled' THEN '{"code": "cancelled", "message": "cancelled on request"}'::jsonb END,
    created, started, started + took, started + took
FROM timed ORDER BY created
"#;

/// The big jobs: storage migrations that ran for six hours, two a few days ago (the load reads
/// the newest one's events) and two past any TTL the bench uses.
const BIG_JOBS_SQL: &str = r#"
WITH picked AS (
    SELECT (SELECT id FROM upkeep.jobs WHERE created_at < now() - make_interval(days => d)
            ORDER BY created_at DESC LIMIT 1) AS id
    FROM unnest(ARRAY[2, 5, 60, 75]) d LIMIT $1
)
UPDATE upkeep.jobs SET kind = 'storage_migrate', state = 'succeeded', error = NULL, dry_run = false,
    params = '{"source": {"type": "local", "root": "/app/api/storage"}, "target": null, "prefixes": null, "concurrency": 8, "verify": "checksum", "update_db": true, "delete_source": false}',
    result = '{"copied": 2400000, "already_there": 1200, "bytes": 912000000000, "safe_to_switch": true}',
    finished_at = started_at + interval '6 hours', updated_at = started_at + interval '6 hours'
WHERE id IN (SELECT id FROM picked)
"#;

/// Every job's events (a state change, progress, a log line, the final state), and the big
/// jobs' progress events through their six hours, inserted in time order so events of jobs
/// that ran at once interleave as they do.
const FILL_EVENTS: &str = r#"
WITH big AS (
    SELECT id, started_at, finished_at FROM upkeep.jobs WHERE finished_at - started_at = interval '6 hours'
), all_events AS (
    SELECT j.id AS job_id, j.started_at + (j.finished_at - j.started_at) * k / ($1 - 1) AS at,
        CASE WHEN k = 0 OR k = $1 - 1 THEN 'state' WHEN k % 4 = 3 THEN 'log' ELSE 'progress' END AS type,
        CASE WHEN k = 0 THEN jsonb_build_object('state', 'running', 'worker', 'upkeep-7f9c/2', 'message', 'claimed')
             WHEN k = $1 - 1 THEN jsonb_build_object('state', j.state, 'message', 'job ' || j.state)
             WHEN k % 4 = 3 THEN jsonb_build_object('message', 'batch ' || k || ' committed')
             ELSE jsonb_build_object('phase', 'copy', 'done', k * 100, 'total', ($1 - 2) * 100,
                 'unit', 'rows', 'rate_per_s', 250.0, 'eta_s', ($1 - 2 - k) * 0.4) END AS data
    FROM upkeep.jobs j CROSS JOIN generate_series(0, $1 - 1) k
    UNION ALL
    SELECT b.id, b.started_at + (b.finished_at - b.started_at) * k / ($2 + 1), 'progress',
        jsonb_build_object('phase', 'copy upload_files/', 'done', k * 48, 'total', $2 * 48, 'unit', 'objects',
            'rate_per_s', 111.1, 'eta_s', ($2 - k) * 0.43)
    FROM big b CROSS JOIN generate_series(1, $2) k
)
INSERT INTO upkeep.job_events (job_id, at, type, attempt, data)
SELECT job_id, at, type, 1, data FROM all_events ORDER BY at
"#;

/// What the load asks for: the ids and cursors a client would hold.
#[derive(Serialize, Deserialize)]
struct Targets {
    deep_cursor: Uuid,
    show_ids: Vec<Uuid>,
    big_job: Uuid,
    late_after: i64,
}

async fn targets(pool: &PgPool) -> Targets {
    let deep_cursor =
        sqlx::query_scalar("SELECT id FROM upkeep.jobs ORDER BY id DESC OFFSET $1 LIMIT 1")
            .bind(DEEP_OFFSET - 1)
            .fetch_one(pool)
            .await
            .expect("deep cursor");
    // Jobs younger than any TTL the bench uses, so they stay while pruning runs.
    let show_ids = sqlx::query_scalar(
        "SELECT id FROM upkeep.jobs WHERE created_at > now() - interval '20 days' ORDER BY random() LIMIT 1000",
    )
    .fetch_all(pool)
    .await
    .expect("show ids");
    let big_job = sqlx::query_scalar(
        "SELECT id FROM upkeep.jobs WHERE finished_at - started_at = interval '6 hours' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(pool)
    .await
    .expect("big job");
    let late_after = sqlx::query_scalar(
        "SELECT id FROM upkeep.job_events WHERE job_id = $1 ORDER BY id OFFSET $2 LIMIT 1",
    )
    .bind(big_job)
    .bind(BIG_JOB_EVENTS * 9 / 10)
    .fetch_one(pool)
    .await
    .expect("late page");
    Targets {
        deep_cursor,
        show_ids,
        big_job,
        late_after,
    }
}

const ENDPOINTS: [&str; 8] = [
    "`GET /v1/jobs` (first page)",
    "`?state=failed`",
    "`?kind=vacuum&state=failed`",
    "`?kind=restore&state=cancelled` (rare: ~30 jobs)",
    "`?cursor=…` (page 501)",
    "`GET /v1/jobs/{id}`",
    "`GET /v1/jobs/{id}/events` (50k-event job, first page)",
    "`…/events?after=…` (its page at 45k)",
];

/// The daemon's own statements (`queue::list`, `queue::get`, `queue::events_after`).
const LIST_SQL: &str = "SELECT * FROM upkeep.jobs \
     WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR kind = $2) \
       AND ($3::uuid IS NULL OR id < $3) \
     ORDER BY id DESC LIMIT $4";
const GET_SQL: &str = "SELECT * FROM upkeep.jobs WHERE id = $1";
const EVENTS_SQL: &str = "SELECT id, job_id, at, type, attempt, data FROM upkeep.job_events \
     WHERE job_id = $1 AND id > $2 ORDER BY id LIMIT $3";

fn path(endpoint: usize, t: &Targets, n: usize) -> String {
    match endpoint {
        0 => "/v1/jobs".into(),
        1 => "/v1/jobs?state=failed".into(),
        2 => "/v1/jobs?kind=vacuum&state=failed".into(),
        3 => "/v1/jobs?kind=restore&state=cancelled".into(),
        4 => format!("/v1/jobs?cursor={}", t.deep_cursor),
        5 => format!("/v1/jobs/{}", t.show_ids[n % t.show_ids.len()]),
        6 => format!("/v1/jobs/{}/events", t.big_job),
        _ => format!("/v1/jobs/{}/events?after={}", t.big_job, t.late_after),
    }
}

/// The same request as one statement a user would type into psql (planned for its values, as
/// psql's are): the list, the job, or the page of events (without the API's check that the job
/// exists). Returns the rows read.
async fn query(
    pool: &PgPool,
    endpoint: usize,
    t: &Targets,
    n: usize,
) -> Result<usize, sqlx::Error> {
    let list = |state: Option<&'static str>, kind: Option<&'static str>, before: Option<Uuid>| {
        sqlx::query(LIST_SQL)
            .bind(state)
            .bind(kind)
            .bind(before)
            .bind(51i64)
            .persistent(false)
    };
    let q = match endpoint {
        0 => list(None, None, None),
        1 => list(Some("failed"), None, None),
        2 => list(Some("failed"), Some("vacuum"), None),
        3 => list(Some("cancelled"), Some("restore"), None),
        4 => list(None, None, Some(t.deep_cursor)),
        5 => sqlx::query(GET_SQL)
            .bind(t.show_ids[n % t.show_ids.len()])
            .persistent(false),
        6 => sqlx::query(EVENTS_SQL)
            .bind(t.big_job)
            .bind(0i64)
            .bind(200i64)
            .persistent(false),
        _ => sqlx::query(EVENTS_SQL)
            .bind(t.big_job)
            .bind(t.late_after)
            .bind(200i64)
            .persistent(false),
    };
    Ok(q.fetch_all(pool).await?.len())
}

/// One request as the client saw it.
struct Sample {
    endpoint: usize,
    start_ms: u64,
    latency_us: u64,
    ok: bool,
    bytes: u64,
}

/// Runs this program again as the load client (`client MODE TARGET PLAN SECONDS CONCURRENCY
/// WARMUP OUT`) and reads back its samples.
async fn run_client(
    concurrency: usize,
    mode: &str,
    target: &str,
    plan: &std::path::Path,
    seconds: u64,
    warmup: u64,
) -> Vec<Sample> {
    let out = std::env::temp_dir().join(format!(
        "api_load_{mode}_{}_{}.txt",
        std::process::id(),
        unix_ms()
    ));
    let status = tokio::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("client")
        .arg(mode)
        .arg(target)
        .arg(plan)
        .arg(seconds.to_string())
        .arg(concurrency.to_string())
        .arg(warmup.to_string())
        .arg(&out)
        .status()
        .await
        .expect("client runs");
    assert!(status.success(), "load client failed");
    let text = std::fs::read_to_string(&out).expect("client samples");
    let _ = std::fs::remove_file(&out);
    text.lines()
        .map(|l| {
            let f: Vec<u64> = l.split(' ').map(|x| x.parse().expect("sample")).collect();
            Sample {
                endpoint: f[0] as usize,
                start_ms: f[1],
                latency_us: f[2],
                ok: f[3] == 1,
                bytes: f[4],
            }
        })
        .collect()
}

/// The client process: `concurrency` loops, each sending the endpoints in turn until the time
/// is up; writes one line per request after the warm-up.
async fn client(argv: &[String]) {
    let [mode, target, plan, seconds, concurrency, warmup, out] = argv else {
        panic!("client MODE TARGET PLAN SECONDS CONCURRENCY WARMUP OUT");
    };
    let t: Arc<Targets> =
        Arc::new(serde_json::from_slice(&std::fs::read(plan).expect("plan")).expect("plan json"));
    let concurrency: usize = concurrency.parse().expect("concurrency");
    let warmup = Duration::from_secs(warmup.parse().expect("warmup"));
    let seconds = Duration::from_secs(seconds.parse().expect("seconds"));
    let http = reqwest::Client::new();
    let pool = match mode.as_str() {
        "sql" => Some(
            sqlx::postgres::PgPoolOptions::new()
                .max_connections(concurrency as u32)
                .connect(target)
                .await
                .expect("connect"),
        ),
        _ => None,
    };
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let end = measure_from + seconds;
    let mut set = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (t, http, pool, target) = (t.clone(), http.clone(), pool.clone(), target.clone());
        set.spawn(async move {
            let mut samples = vec![];
            let mut n = w;
            while Instant::now() < end {
                let endpoint = n % ENDPOINTS.len();
                let start_ms = unix_ms();
                let started = Instant::now();
                let (ok, bytes) = match &pool {
                    Some(pool) => match query(pool, endpoint, &t, n / ENDPOINTS.len()).await {
                        Ok(rows) => (true, rows as u64),
                        Err(_) => (false, 0),
                    },
                    None => {
                        let r = http
                            .get(format!(
                                "{target}{}",
                                path(endpoint, &t, n / ENDPOINTS.len())
                            ))
                            .bearer_auth(TOKEN)
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status() == 200 => match r.bytes().await {
                                Ok(b) => (true, b.len() as u64),
                                Err(_) => (false, 0),
                            },
                            _ => (false, 0),
                        }
                    }
                };
                if started >= measure_from {
                    samples.push(Sample {
                        endpoint,
                        start_ms,
                        latency_us: started.elapsed().as_micros() as u64,
                        ok,
                        bytes,
                    });
                }
                n += 1;
            }
            samples
        });
    }
    let mut text = String::new();
    while let Some(samples) = set.join_next().await {
        for s in samples.expect("client task") {
            text.push_str(&format!(
                "{} {} {} {} {}\n",
                s.endpoint, s.start_ms, s.latency_us, s.ok as u8, s.bytes
            ));
        }
    }
    std::fs::write(out, text).expect("write samples");
}

/// requests, req/s, p50, p95, p99, max, errors, average body (rows for SQL).
fn row(samples: &[&Sample], rows: bool) -> String {
    if samples.is_empty() {
        return "0 | — | — | — | — | — | — | — |".into();
    }
    let mut us: Vec<u64> = samples.iter().map(|s| s.latency_us).collect();
    us.sort_unstable();
    let pct = |p: f64| us[((us.len() as f64 * p).ceil() as usize).clamp(1, us.len()) - 1];
    let first = samples.iter().map(|s| s.start_ms).min().unwrap_or(0);
    let last = samples
        .iter()
        .map(|s| s.start_ms + s.latency_us / 1000)
        .max()
        .unwrap_or(0);
    let secs = ((last - first) as f64 / 1000.0).max(0.001);
    let errors = samples.iter().filter(|s| !s.ok).count();
    let avg = samples.iter().map(|s| s.bytes).sum::<u64>() / samples.len() as u64;
    let body = if rows {
        format!("{avg} rows")
    } else if avg >= 10_000 {
        format!("{} KiB", avg / 1024)
    } else {
        format!("{avg} B")
    };
    format!(
        "{} | {:.0} | {} | {} | {} | {} | {errors} | {body}",
        samples.len(),
        samples.len() as f64 / secs,
        ms(pct(0.50)),
        ms(pct(0.95)),
        ms(pct(0.99)),
        ms(*us.last().expect("samples")),
    )
}

fn ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

const PRUNE_DEADLINE: Duration = Duration::from_secs(600);

/// Polls until no finished job is past the TTL; returns when (Unix ms), or None at the deadline.
async fn wait_pruned(pool: &PgPool, ttl_days: u32, from: u64) -> Option<u64> {
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM upkeep.jobs WHERE finished_at < now() - make_interval(days => $1)",
        )
        .bind(ttl_days as i32)
        .fetch_one(pool)
        .await
        .expect("expired left");
        if left == 0 {
            return Some(unix_ms());
        }
        if unix_ms() - from > PRUNE_DEADLINE.as_millis() as u64 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Samples `pg_stat_activity` every 20 ms: the daemon's longest open transaction, and each
/// pruning statement (a `DELETE` from the queue's tables, by backend and start) at the longest
/// it was seen running.
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Seen>,
}

#[derive(Default)]
struct Seen {
    any_ms: i64,
    prune_ms: std::collections::HashMap<(i32, i64), i64>,
}

impl Seen {
    /// Pruning statements seen, their median and longest (ms), and the longest of any.
    fn summary(&self) -> (usize, i64, i64, i64) {
        let mut d: Vec<i64> = self.prune_ms.values().copied().collect();
        d.sort_unstable();
        let median = d.get(d.len() / 2).copied().unwrap_or(0);
        (d.len(), median, d.last().copied().unwrap_or(0), self.any_ms)
    }
}

impl Sampler {
    async fn start(db_url: &str) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let mut c = PgConnection::connect(db_url).await.expect("sampler");
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen = Seen::default();
                while !stop.load(Ordering::SeqCst) {
                    let rows: Vec<(i32, i64, i64, bool)> = sqlx::query_as(
                        "SELECT pid, (extract(epoch FROM query_start) * 1e6)::bigint, \
                                (extract(epoch FROM clock_timestamp() - xact_start) * 1000)::bigint, \
                                query LIKE 'DELETE FROM upkeep.%' \
                         FROM pg_stat_activity WHERE datname = current_database() \
                         AND application_name = 'upkeep' AND xact_start IS NOT NULL AND state <> 'idle'",
                    )
                    .fetch_all(&mut c)
                    .await
                    .expect("sample");
                    for (pid, started, ms, prune) in rows {
                        seen.any_ms = seen.any_ms.max(ms);
                        if prune {
                            let e = seen.prune_ms.entry((pid, started)).or_default();
                            *e = (*e).max(ms);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                seen
            })
        };
        Sampler { stop, task }
    }

    async fn stop(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("sampler")
    }
}
