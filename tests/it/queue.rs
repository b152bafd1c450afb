//! The queue's guarantees: no job runs twice, leases fence old owners, exhausted jobs fail,
//! a panic fails only its job, cancel reaches a running job.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use upkeep::queue::{self, FenceError, JobState, Lease, NewJob};

use crate::support::daemon::{Options, TestDaemon, vacuum};
use crate::support::pg;

fn new_job(tables: &[&str]) -> NewJob {
    NewJob {
        kind: "vacuum".into(),
        params: json!({"tables": tables, "mode": "plain", "lock_timeout_ms": 5000}),
        dry_run: false,
        idempotency_key: None,
        resource_key: None,
        parent_id: None,
        max_attempts: 5,
    }
}

#[tokio::test]
async fn two_daemons_never_run_a_job_twice() {
    let db = pg::dify_database().await;
    const JOBS: usize = 300;
    for _ in 0..JOBS {
        queue::submit(&db.pool, &Default::default(), new_job(&["tenants"]))
            .await
            .unwrap();
    }
    let a = TestDaemon::start(
        &db,
        Options {
            workers: 4,
            name: "a",
            ..Options::default()
        },
    )
    .await;
    let b = TestDaemon::start(
        &db,
        Options {
            workers: 4,
            name: "b",
            ..Options::default()
        },
    )
    .await;
    pg::wait_until(
        &db,
        "SELECT count(*) = 300 FROM upkeep.jobs WHERE state IN ('succeeded', 'failed', 'cancelled')",
        Duration::from_secs(120),
    )
    .await;
    let (succeeded, once): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'succeeded'), count(*) FILTER (WHERE attempts = 1) \
         FROM upkeep.jobs",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((succeeded, once), (JOBS as i64, JOBS as i64));
    // Exactly one start per job, and both daemons took part.
    let starts: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE data->>'state' = 'running'), \
                count(*) FILTER (WHERE data->>'state' = 'succeeded') \
         FROM upkeep.job_events GROUP BY job_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(starts.len(), JOBS);
    assert!(
        starts.iter().all(|s| *s == (1, 1)),
        "a job started or ended twice"
    );
    let workers: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT split_part(data->>'worker', '/', 1) FROM upkeep.job_events \
         WHERE data->>'state' = 'running' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(workers, ["a", "b"]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_expired_lease_is_rescued_and_the_old_owner_is_fenced_off() {
    let db = pg::dify_database().await;
    let job = queue::submit(&db.pool, &Default::default(), new_job(&["tenants"]))
        .await
        .unwrap()
        .into_row();
    let lease_time = Duration::from_secs(30);
    let first = queue::claim(&db.pool, "worker-a", lease_time)
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(first.row.id, job.id);
    assert_eq!(first.rescued_from, None);
    let a = Lease::new(db.pool.clone(), job.id, first.row.attempts, lease_time);
    assert!(
        !a.save(
            &db.pool,
            Some(&json!({"phase": "a"})),
            Some(&json!({"step": 1}))
        )
        .await
        .unwrap()
    );
    // While A's lease is live nobody else can claim the job.
    assert!(
        queue::claim(&db.pool, "worker-b", lease_time)
            .await
            .unwrap()
            .is_none()
    );

    sqlx::query(
        "UPDATE upkeep.jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(job.id)
    .execute(&db.pool)
    .await
    .unwrap();
    let second = queue::claim(&db.pool, "worker-b", lease_time)
        .await
        .unwrap()
        .expect("rescued");
    assert_eq!(second.rescued_from.as_deref(), Some("worker-a"));
    assert_eq!(second.row.attempts, 2);
    // B resumes from A's checkpoint.
    assert_eq!(second.row.checkpoint, Some(json!({"step": 1})));

    // Every write A still tries is refused.
    assert!(matches!(a.heartbeat().await, Err(FenceError::Lost)));
    assert!(matches!(
        a.save(&db.pool, None, Some(&json!({"step": 99}))).await,
        Err(FenceError::Lost)
    ));
    assert!(matches!(
        a.finish(JobState::Succeeded, Some(&json!({"by": "a"})), None, "a")
            .await,
        Err(FenceError::Lost)
    ));
    assert!(matches!(a.requeue("a").await, Err(FenceError::Lost)));
    assert!(matches!(
        a.event(upkeep::queue::EventType::Log, json!({"message": "late"}))
            .await,
        Err(FenceError::Lost)
    ));

    let b = Lease::new(db.pool.clone(), job.id, second.row.attempts, lease_time);
    let done = b
        .finish(JobState::Succeeded, Some(&json!({"by": "b"})), None, "b")
        .await
        .unwrap();
    assert_eq!(done.state(), JobState::Succeeded);
    assert_eq!(done.result, Some(json!({"by": "b"})));
    assert_eq!(done.checkpoint, Some(json!({"step": 1})));
    let rescued: String = sqlx::query_scalar(
        "SELECT data->>'message' FROM upkeep.job_events WHERE job_id = $1 AND attempt = 2 \
         AND data->>'state' = 'running'",
    )
    .bind(job.id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(rescued, "lease of worker-a expired; resumed by worker-b");
}

#[tokio::test]
async fn a_job_whose_workers_keep_dying_fails_instead_of_looping() {
    let db = pg::dify_database().await;
    let mut job = new_job(&["tenants"]);
    job.max_attempts = 2;
    let job = queue::submit(&db.pool, &Default::default(), job)
        .await
        .unwrap()
        .into_row();
    for worker in ["w1", "w2"] {
        queue::claim(&db.pool, worker, Duration::from_secs(30))
            .await
            .unwrap()
            .expect("claim");
        sqlx::query("UPDATE upkeep.jobs SET lease_expires_at = now() - interval '1 second'")
            .execute(&db.pool)
            .await
            .unwrap();
    }
    assert!(
        queue::claim(&db.pool, "w3", Duration::from_secs(30))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(queue::fail_exhausted(&db.pool).await.unwrap(), 1);
    let row = queue::get(&db.pool, job.id).await.unwrap();
    assert_eq!(row.state(), JobState::Failed);
    assert_eq!(row.error.unwrap()["code"], "attempts_exhausted");
}

#[tokio::test]
async fn finished_jobs_are_pruned_after_their_ttl() {
    let db = pg::dify_database().await;
    let old = queue::submit(&db.pool, &Default::default(), new_job(&["tenants"]))
        .await
        .unwrap()
        .into_row();
    let recent = queue::submit(&db.pool, &Default::default(), new_job(&["apps"]))
        .await
        .unwrap()
        .into_row();
    let running = queue::submit(&db.pool, &Default::default(), new_job(&["accounts"]))
        .await
        .unwrap()
        .into_row();
    sqlx::query(
        "UPDATE upkeep.jobs SET state = 'succeeded', finished_at = now() - make_interval(days => \
         CASE WHEN id = $1 THEN 31 ELSE 29 END) WHERE id IN ($1, $2)",
    )
    .bind(old.id)
    .bind(recent.id)
    .execute(&db.pool)
    .await
    .unwrap();
    // More than fit in one pruning delete, in the event log and in a ledger.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO upkeep.job_events (job_id, type, data) \
         SELECT '{0}', 'progress', '{{}}' FROM generate_series(1, 12000); \
         INSERT INTO upkeep.storage_objects (job_id, key, size, sha256, outcome) \
         SELECT '{0}', 'k' || g, 0, sha256(''), 'copied' FROM generate_series(1, 6000) g;",
        old.id
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let count = |sql: &'static str, id: uuid::Uuid| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let events_sql = "SELECT count(*) FROM upkeep.job_events WHERE job_id = $1";
    let recent_events = count(events_sql, recent.id).await;
    assert_eq!(queue::prune_finished(&db.pool, 30).await.unwrap(), 1);
    assert!(matches!(
        queue::get(&db.pool, old.id).await,
        Err(queue::QueueError::NotFound(_))
    ));
    assert_eq!(count(events_sql, old.id).await, 0);
    assert_eq!(
        count(
            "SELECT count(*) FROM upkeep.storage_objects WHERE job_id = $1",
            old.id
        )
        .await,
        0
    );
    assert_eq!(count(events_sql, recent.id).await, recent_events);
    assert!(queue::get(&db.pool, recent.id).await.is_ok());
    assert!(queue::get(&db.pool, running.id).await.is_ok());
}

#[tokio::test]
async fn a_panicking_job_fails_alone() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(
        &db,
        Options {
            workers: 1,
            failpoints: "vacuum.before_table=panic@1",
            ..Options::default()
        },
    )
    .await;
    let (_, first) = d.submit(vacuum(&["tenants"])).await;
    let first = d.wait_finished(first["id"].as_str().unwrap()).await;
    assert_eq!(first["state"], "failed");
    assert_eq!(
        first["error"],
        json!({"code": "panicked",
        "message": "the job panicked: failpoint vacuum.before_table"})
    );
    // The same single worker goes on to run the next job.
    let (_, second) = d.submit(vacuum(&["tenants"])).await;
    let second = d.wait_finished(second["id"].as_str().unwrap()).await;
    assert_eq!(second["state"], "succeeded", "{second}");
    d.stop().await;
}

#[tokio::test]
async fn cancel_reaches_a_running_job_at_its_next_batch() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(
        &db,
        Options {
            workers: 1,
            failpoints: "vacuum.before_table=pause@2",
            ..Options::default()
        },
    )
    .await;
    let (_, job) = d.submit(vacuum(&["accounts", "apps", "tenants"])).await;
    let id = job["id"].as_str().unwrap();
    d.wait_event(id, |e| {
        e["data"]["message"] == "failpoint vacuum.before_table reached"
    })
    .await;
    let (status, view) = d
        .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 202);
    assert_eq!(
        (view["state"].as_str(), view["cancel_requested"].as_bool()),
        (Some("running"), Some(true))
    );
    let done = d.wait_finished(id).await;
    assert_eq!(done["state"], "cancelled");
    let checkpoint: serde_json::Value =
        sqlx::query_scalar("SELECT checkpoint FROM upkeep.jobs WHERE id = $1")
            .bind(uuid::Uuid::parse_str(id).unwrap())
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let done_tables: Vec<&str> = checkpoint["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["table"].as_str().unwrap())
        .collect();
    assert_eq!(done_tables, ["accounts"]);
    d.stop().await;
}

#[tokio::test]
async fn cancel_interrupts_a_statement_waiting_on_a_lock() {
    let db = pg::dify_database().await;
    let holder = pg::hold_lock(&db, "tenants").await;
    let d = TestDaemon::start(
        &db,
        Options {
            workers: 1,
            ..Options::default()
        },
    )
    .await;
    let (_, job) = d
        .submit(
            json!({"kind": "vacuum", "params": {"tables": ["tenants"], "lock_timeout_ms": 600000}}),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    // The VACUUM is now waiting for the lock (its backend shows it).
    pg::wait_until(
        &db,
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE 'VACUUM%tenants%' AND wait_event_type = 'Lock')",
        Duration::from_secs(30),
    )
    .await;
    let (status, _) = d
        .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 202);
    let done = d.wait_finished(id).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    holder.rollback().await.unwrap();
    d.stop().await;
}
