//! Queue benchmark: submit→start latency and jobs/s through one and two `upkeep serve`
//! processes on one database, beside a bare `FOR UPDATE SKIP LOCKED` loop doing the same
//! work on the same server (the ceiling of any Postgres queue). Run it with
//! `bench/queue.sh`; it prints a Markdown table.
//!
//! Each job is a dry-run `vacuum` of one table: a catalogue query, so the figures measure
//! the queue (HTTP, insert, NOTIFY, claim, events, fenced finish), not the work.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;

#[path = "common.rs"]
// The queue bench needs no generated Dify data.
#[allow(dead_code)]
mod common;
use common::{TOKEN, peak_rss, recreate, spawn_daemon, stop};

const JOBS: usize = 1000;

struct Args {
    pg: String,
    upkeep: String,
    jobs: usize,
    pace_per_s: f64,
}

fn args() -> Args {
    let mut a = Args {
        pg: "postgres://postgres@127.0.0.1:5432/postgres".into(),
        upkeep: "target/release/upkeep".into(),
        jobs: JOBS,
        pace_per_s: 50.0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--pg" => a.pg = value,
            "--upkeep" => a.upkeep = value,
            "--jobs" => a.jobs = value.parse().expect("--jobs N"),
            "--pace" => a.pace_per_s = value.parse().expect("--pace jobs/s"),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

#[tokio::main]
async fn main() {
    let a = args();
    let db_url = recreate(&a.pg, "upkeep_bench_queue", None).await;
    let pool = PgPool::connect(&db_url).await.expect("connect");
    upkeep::demo::fixture::load_dify_fixture(&pool)
        .await
        .expect("fixture");
    upkeep::db::migrate(&pool).await.expect("migrate");

    println!(
        "| setup | submit→start p50 | p99 | max | jobs/s (burst of {}) | peak RSS per daemon |",
        a.jobs
    );
    println!("|---|---|---|---|---|---|");
    for daemons in [1, 2] {
        let mut procs = vec![];
        let mut urls = vec![];
        for i in 0..daemons {
            let (child, url) = spawn_daemon(&a.upkeep, &db_url, &format!("bench{i}")).await;
            procs.push(child);
            urls.push(url);
        }
        let latency = upkeep_run(&pool, &urls, a.jobs, Some(a.pace_per_s)).await;
        let throughput = upkeep_run(&pool, &urls, a.jobs, None).await;
        let rss: Vec<String> = procs.iter().map(peak_rss).collect();
        for mut c in procs {
            stop(&mut c).await;
        }
        println!(
            "| Upkeep, {daemons} daemon{} × 4 workers | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} | {} |",
            if daemons > 1 { "s" } else { "" },
            latency.p50_ms,
            latency.p99_ms,
            latency.max_ms,
            throughput.jobs_per_s,
            rss.join(", ")
        );
    }
    for workers in [4, 8] {
        let latency = bare_run(&pool, workers, a.jobs, Some(a.pace_per_s)).await;
        let throughput = bare_run(&pool, workers, a.jobs, None).await;
        println!(
            "| bare SKIP LOCKED loop, {workers} workers (ceiling) | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} | — |",
            latency.p50_ms, latency.p99_ms, latency.max_ms, throughput.jobs_per_s
        );
    }
    println!();
    println!(
        "Latency: {} jobs submitted at {} jobs/s; time from the job's insert to its claim, by the database clock.",
        a.jobs, a.pace_per_s
    );
    println!(
        "Throughput: {} jobs submitted by 16 concurrent clients; jobs / (last finish - first insert).",
        a.jobs
    );
}

struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    jobs_per_s: f64,
}

async fn upkeep_run(pool: &PgPool, urls: &[String], jobs: usize, pace: Option<f64>) -> Figures {
    sqlx::query("TRUNCATE upkeep.jobs CASCADE")
        .execute(pool)
        .await
        .expect("truncate");
    let http = reqwest::Client::new();
    let body = json!({"kind": "vacuum", "dry_run": true, "params": {"tables": ["tenants"]}});
    let urls = urls.to_vec();
    let submit = move |i: usize| {
        let http = http.clone();
        let url = format!("{}/v1/jobs", urls[i % urls.len()]);
        let body = body.clone();
        async move {
            let r = http
                .post(url)
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .expect("submit");
            assert_eq!(r.status(), 202);
        }
    };
    match pace {
        Some(per_s) => {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_s));
            for i in 0..jobs {
                tick.tick().await;
                submit(i).await;
            }
        }
        None => {
            let mut set = tokio::task::JoinSet::new();
            let per = jobs / 16;
            for c in 0..16 {
                let submit = submit.clone();
                set.spawn(async move {
                    for i in 0..per {
                        submit(c * per + i).await;
                    }
                });
            }
            while set.join_next().await.is_some() {}
        }
    }
    let submitted = (jobs / 16) * 16;
    let n = if pace.is_some() { jobs } else { submitted };
    wait_done(
        pool,
        "SELECT count(*) FROM upkeep.jobs WHERE state = 'succeeded'",
        n,
    )
    .await;
    figures(
        pool,
        "upkeep.jobs",
        "created_at",
        "started_at",
        "finished_at",
    )
    .await
}

async fn wait_done(pool: &PgPool, sql: &'static str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done: i64 = sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await
            .expect("count");
        if done as usize >= n {
            return;
        }
        assert!(Instant::now() < deadline, "jobs did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn figures(
    pool: &PgPool,
    table: &str,
    created: &str,
    started: &str,
    finished: &str,
) -> Figures {
    let sql = format!(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms), \
           (SELECT (count(*) / extract(epoch FROM max({finished}) - min({created})))::float8 FROM {table}) \
         FROM (SELECT (extract(epoch FROM {started} - {created}) * 1000)::float8 AS ms FROM {table}) t"
    );
    let (p50, p99, max, rate): (f64, f64, f64, f64) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await
        .expect("figures");
    Figures {
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
        jobs_per_s: rate,
    }
}

/// The ceiling: the least a Postgres queue can do per job (insert + NOTIFY, claim with SKIP
/// LOCKED, the same catalogue query as the work, mark done).
async fn bare_run(pool: &PgPool, workers: usize, jobs: usize, pace: Option<f64>) -> Figures {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS bench_q; CREATE UNLOGGED TABLE bench_q (id bigserial PRIMARY KEY, \
         state text NOT NULL DEFAULT 'queued', created_at timestamptz NOT NULL DEFAULT clock_timestamp(), \
         started_at timestamptz, finished_at timestamptz); \
         CREATE INDEX ON bench_q (id) WHERE state = 'queued';",
    )
    .execute(pool)
    .await
    .expect("bench_q");
    let stop = tokio_util::sync::CancellationToken::new();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let pool = pool.clone();
        let stop = stop.clone();
        set.spawn(async move {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await.expect("listen");
            listener.listen("bench_q").await.expect("listen");
            loop {
                let claimed: Option<i64> = sqlx::query_scalar(
                    "UPDATE bench_q SET state = 'running', started_at = clock_timestamp() WHERE id = \
                     (SELECT id FROM bench_q WHERE state = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id",
                )
                .fetch_optional(&pool)
                .await
                .expect("claim");
                match claimed {
                    Some(id) => {
                        let _: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_class WHERE relname = 'tenants'")
                            .fetch_one(&pool)
                            .await
                            .expect("work");
                        sqlx::query("UPDATE bench_q SET state = 'done', finished_at = clock_timestamp() WHERE id = $1")
                            .bind(id)
                            .execute(&pool)
                            .await
                            .expect("finish");
                    }
                    None => {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = listener.recv() => {}
                            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        }
                    }
                }
            }
        });
    }
    let insert = |pool: PgPool| async move {
        sqlx::raw_sql("INSERT INTO bench_q DEFAULT VALUES; NOTIFY bench_q;")
            .execute(&pool)
            .await
            .expect("insert");
    };
    match pace {
        Some(per_s) => {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_s));
            for _ in 0..jobs {
                tick.tick().await;
                insert(pool.clone()).await;
            }
        }
        None => {
            let mut clients = tokio::task::JoinSet::new();
            for _ in 0..16 {
                let pool = pool.clone();
                clients.spawn(async move {
                    for _ in 0..jobs / 16 {
                        insert(pool.clone()).await;
                    }
                });
            }
            while clients.join_next().await.is_some() {}
        }
    }
    let n = if pace.is_some() {
        jobs
    } else {
        (jobs / 16) * 16
    };
    wait_done(pool, "SELECT count(*) FROM bench_q WHERE state = 'done'", n).await;
    stop.cancel();
    while set.join_next().await.is_some() {}
    figures(pool, "bench_q", "created_at", "started_at", "finished_at").await
}
