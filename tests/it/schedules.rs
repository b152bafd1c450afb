//! Schedules: the API round trip and its 400s, and the ticker's exactly-once guarantees with
//! two daemons on one database, after a long downtime, and while the resource is busy.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::daemon::{self, Options, TestDaemon};
use crate::support::pg::{self, TestDb};

/// An API-only daemon (queued jobs stay queued) whose ticker runs every `tick_ms`.
fn options(name: &'static str, tick_ms: u64) -> Options {
    Options {
        workers: 0,
        name,
        env: vec![("UPKEEP_SCHEDULE_TICK_MS", tick_ms.to_string())],
        ..Options::default()
    }
}

/// Ticks only at start: the test drives every later tick itself.
const NO_TICKS: u64 = 600_000;

async fn create(d: &TestDaemon, body: Value) -> Value {
    let (status, s) = d.call(Method::POST, "/v1/schedules", Some(body)).await;
    assert_eq!(status, 201, "{s}");
    s
}

fn id_of(v: &Value) -> Uuid {
    v["id"].as_str().and_then(|s| s.parse().ok()).expect("id")
}

/// `(idempotency_key, jobs)` for every job the schedule made.
async fn jobs_of(db: &TestDb, schedule: Uuid) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT idempotency_key, count(*) FROM upkeep.jobs WHERE idempotency_key LIKE $1 \
         GROUP BY 1 ORDER BY 1",
    )
    .bind(format!("schedule:{schedule}:%"))
    .fetch_all(&db.pool)
    .await
    .expect("count jobs")
}

fn key(schedule: Uuid, occurrence: DateTime<Utc>) -> String {
    format!(
        "schedule:{schedule}:{}",
        occurrence.to_rfc3339_opts(SecondsFormat::Secs, true)
    )
}

/// Polls (every 20 ms, up to 30 s) until `sql` with `$1 = id` is true.
async fn poll(db: &TestDb, sql: &'static str, id: Uuid) {
    let wait = async {
        loop {
            let done: bool = sqlx::query_scalar(sql)
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .expect("condition");
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("not reached within 30 s: {sql}"));
}

#[tokio::test]
async fn schedule_api_round_trip_and_field_errors() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, options("api", NO_TICKS)).await;

    let berlin = create(
        &d,
        json!({"kind": "vacuum", "params": {"mode": "plain"}, "cron": " 0  3 * * *",
               "timezone": "Europe/Berlin"}),
    )
    .await;
    // Params are normalised as POST /v1/jobs does; the expression is stored single-spaced.
    assert_eq!(
        berlin["params"],
        json!({"tables": null, "mode": "plain", "lock_timeout_ms": 5000})
    );
    assert_eq!(berlin["kind"], "vacuum");
    assert_eq!(berlin["cron"], "0 3 * * *");
    assert_eq!(berlin["timezone"], "Europe/Berlin");
    assert_eq!(berlin["dry_run"], false);
    assert_eq!(berlin["enabled"], true);
    for k in ["last_occurrence", "last_job_id", "last_outcome"] {
        assert_eq!(berlin[k], Value::Null, "{k}");
    }
    // 03:00 in Berlin is 01:00 or 02:00 UTC, within the next day.
    let next: DateTime<Utc> = berlin["next_run_at"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("next_run_at");
    let now = Utc::now();
    assert!(
        next > now && next <= now + chrono::Duration::days(1),
        "{next}"
    );
    assert_eq!(next.format("%M:%S").to_string(), "00:00");
    assert!(
        ["01", "02"].contains(&next.format("%H").to_string().as_str()),
        "{next}"
    );

    // UTC is the default zone; secrets in params are redacted in every view.
    let s3 = json!({"type": "s3", "bucket_name": "dify", "endpoint": "http://127.0.0.1:9",
        "access_key": "AKIDEXAMPLE", "secret_key": "do-not-show", "address_style": "path"});
    let utc = create(
        &d,
        json!({"kind": "purge_exports", "params": {"older_than_days": 90, "storage": s3},
               "dry_run": true, "cron": "30 4 * * 0"}),
    )
    .await;
    assert_eq!(utc["timezone"], "UTC");
    assert_eq!(utc["dry_run"], true);
    assert_eq!(utc["params"]["storage"]["secret_key"], "***");
    assert_eq!(utc["params"]["storage"]["access_key"], "***");
    assert_eq!(utc["params"]["storage"]["bucket_name"], "dify");
    let stored: Value = sqlx::query_scalar("SELECT params FROM upkeep.schedules WHERE id = $1")
        .bind(id_of(&utc))
        .fetch_one(&db.pool)
        .await
        .expect("stored params");
    // Sealed at rest (secrets.rs); the daemons' key opens it.
    assert!(!stored.to_string().contains("do-not-show"), "{stored}");
    let opened = upkeep::secrets::Sealer::new(Some(crate::support::daemon::SECRET_KEY))
        .open(stored)
        .expect("opens");
    assert_eq!(opened["storage"]["secret_key"], "do-not-show");

    let (status, got) = d
        .call(
            Method::GET,
            &format!("/v1/schedules/{}", id_of(&berlin)),
            None,
        )
        .await;
    assert_eq!((status, &got), (200, &berlin));

    // Newest first, one a page.
    let (status, page) = d.call(Method::GET, "/v1/schedules?limit=1", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"], json!([utc]));
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, page) = d
        .call(
            Method::GET,
            &format!("/v1/schedules?limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(page, json!({"items": [berlin], "next_cursor": null}));
    let (status, err) = d.call(Method::GET, "/v1/schedules?limit=0", None).await;
    assert_eq!((status, err["field"].as_str()), (400, Some("limit")));

    // Every bad request names its field and stores nothing.
    let base = json!({"kind": "vacuum", "cron": "0 3 * * *"});
    let with = |patch: Value| {
        let mut b = base.clone();
        for (k, v) in patch.as_object().expect("object") {
            b[k] = v.clone();
        }
        b
    };
    for (body, code, field) in [
        (with(json!({"cron": "0 3 * *"})), "invalid_field", "cron"),
        (with(json!({"cron": "61 3 * * *"})), "invalid_field", "cron"),
        (
            with(json!({"cron": "0 3 * * * Europe/Berlin"})),
            "invalid_field",
            "cron",
        ),
        (with(json!({"cron": "0 0 30 2 *"})), "invalid_field", "cron"),
        (
            with(json!({"timezone": "Mars/Olympus"})),
            "invalid_field",
            "timezone",
        ),
        (
            with(json!({"params": {"mode": "fast"}})),
            "invalid_field",
            "params.mode",
        ),
        (
            with(json!({"params": {"lock_timeout_ms": 0}})),
            "invalid_field",
            "params.lock_timeout_ms",
        ),
        (
            with(json!({"params": {"tables": ["nope"]}})),
            "invalid_field",
            "params.tables[0]",
        ),
        (
            with(json!({"params": {"tabels": []}})),
            "unknown_field",
            "params.tabels",
        ),
        (with(json!({"params": [1]})), "invalid_field", "params"),
        (with(json!({"kind": "nope"})), "unknown_kind", "kind"),
        (with(json!({"every": "day"})), "unknown_field", "every"),
        (json!({"kind": "vacuum"}), "invalid_field", "cron"),
    ] {
        let (status, err) = d
            .call(Method::POST, "/v1/schedules", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body} -> {err}");
        assert_eq!(err["code"], code, "{body} -> {err}");
        assert_eq!(err["field"], field, "{body} -> {err}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM upkeep.schedules")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(n, 2);

    // Behind the token like every /v1 endpoint.
    let anon = reqwest::get(format!("{}/v1/schedules", d.url))
        .await
        .expect("answers");
    assert_eq!(anon.status(), 401);

    let path = format!("/v1/schedules/{}", id_of(&berlin));
    let resp = d
        .request(Method::DELETE, &path)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    for method in [Method::GET, Method::DELETE] {
        let (status, err) = d.call(method, &path, None).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (404, Some("not_found")),
            "{err}"
        );
    }
    let (status, err) = d.call(Method::GET, "/v1/schedules/nope", None).await;
    assert_eq!((status, err["field"].as_str()), (400, Some("id")), "{err}");
    d.stop().await;
}

#[tokio::test]
async fn schedule_two_daemons_submit_each_occurrence_once() {
    let db = pg::dify_database().await;
    let a = TestDaemon::start(&db, options("a", 50)).await;
    let b = TestDaemon::start(&db, options("b", 50)).await;
    // Yearly, so no new occurrence can arrive while the test runs.
    let s = create(
        &a,
        json!({"kind": "vacuum", "dry_run": true, "cron": "0 0 1 1 *"}),
    )
    .await;
    let id = id_of(&s);
    let occurrence: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE upkeep.schedules SET next_run_at = date_trunc('year', now(), 'UTC') \
         WHERE id = $1 RETURNING next_run_at",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .expect("make it due");
    let expected = vec![(key(id, occurrence), 1)];

    poll(
        &db,
        "SELECT EXISTS (SELECT 1 FROM upkeep.schedules WHERE id = $1 AND next_run_at > now())",
        id,
    )
    .await;
    assert_eq!(jobs_of(&db, id).await, expected);
    let (_, view) = a
        .call(Method::GET, &format!("/v1/schedules/{id}"), None)
        .await;
    assert_eq!(view["last_outcome"], "queued", "{view}");
    assert_eq!(
        view["last_occurrence"]
            .as_str()
            .and_then(|s| s.parse::<DateTime<Utc>>().ok()),
        Some(occurrence)
    );
    let job_id = view["last_job_id"]
        .as_str()
        .expect("last_job_id")
        .to_string();
    let job = a.job(&job_id).await;
    assert_eq!(job["idempotency_key"], expected[0].0.as_str());
    assert_eq!(
        (&job["kind"], &job["dry_run"]),
        (&json!("vacuum"), &json!(true))
    );

    // A daemon that died after submitting but before moving the row on: the row is due again
    // for the same occurrence. Both daemons and four more tickers race for it.
    sqlx::query("UPDATE upkeep.schedules SET next_run_at = $2 WHERE id = $1")
        .bind(id)
        .bind(occurrence)
        .execute(&db.pool)
        .await
        .expect("due again");
    let settings = daemon::settings(&db.url, &options("extra", NO_TICKS));
    let extra = futures_util::future::join_all(
        (0..4).map(|_| upkeep::schedules::tick(&db.pool, &settings)),
    )
    .await;
    assert!(extra.iter().all(Result::is_ok), "{extra:?}");
    poll(
        &db,
        "SELECT EXISTS (SELECT 1 FROM upkeep.schedules WHERE id = $1 AND next_run_at > now())",
        id,
    )
    .await;
    // Further ticks, now that nothing is due, change nothing either.
    for _ in 0..3 {
        let due = upkeep::schedules::tick(&db.pool, &settings)
            .await
            .expect("tick");
        assert_eq!(due, 0);
    }
    assert_eq!(jobs_of(&db, id).await, expected);
    let (_, view) = b
        .call(Method::GET, &format!("/v1/schedules/{id}"), None)
        .await;
    assert_eq!(view["last_job_id"], job_id.as_str());
    assert_eq!(view["last_outcome"], "queued");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn schedule_three_hours_down_runs_once_not_36_times() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, options("d", NO_TICKS)).await;
    let s = create(
        &d,
        json!({"kind": "vacuum", "dry_run": true, "cron": "*/5 * * * *"}),
    )
    .await;
    let id = id_of(&s);
    // Every daemon was down for three hours: 36 occurrences were missed.
    let now: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE upkeep.schedules SET next_run_at = date_trunc('minute', now()) - interval '3 hours' \
         WHERE id = $1 RETURNING now()",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .expect("three hours late");
    let settings = daemon::settings(&db.url, &options("ticker", NO_TICKS));
    assert_eq!(
        upkeep::schedules::tick(&db.pool, &settings)
            .await
            .expect("tick"),
        1
    );
    let (_, view) = d
        .call(Method::GET, &format!("/v1/schedules/{id}"), None)
        .await;
    let at = |k: &str| -> DateTime<Utc> {
        view[k]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {view}"))
    };
    // The one run is the latest occurrence, and the next is the one after it.
    let last = at("last_occurrence");
    assert!(
        last <= Utc::now() && now - last < chrono::Duration::minutes(6),
        "{view}"
    );
    assert_eq!(at("next_run_at") - last, chrono::Duration::minutes(5));
    assert_eq!(jobs_of(&db, id).await, vec![(key(id, last), 1)]);
    assert_eq!(
        upkeep::schedules::tick(&db.pool, &settings)
            .await
            .expect("tick"),
        0
    );
    assert_eq!(jobs_of(&db, id).await.len(), 1);
    d.stop().await;
}

#[tokio::test]
async fn schedule_skips_an_occurrence_while_its_resource_is_busy() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, options("d", NO_TICKS)).await;
    // A vacuum holds `postgres:vacuum` (no workers: it stays queued).
    let (status, holder) = d.submit(daemon::vacuum(&["tenants"])).await;
    assert_eq!(status, 202, "{holder}");
    let s = create(&d, json!({"kind": "vacuum", "cron": "0 0 1 1 *"})).await;
    let id = id_of(&s);
    sqlx::query(
        "UPDATE upkeep.schedules SET next_run_at = date_trunc('year', now(), 'UTC') WHERE id = $1",
    )
    .bind(id)
    .execute(&db.pool)
    .await
    .expect("make it due");
    let settings = daemon::settings(&db.url, &options("ticker", NO_TICKS));
    upkeep::schedules::tick(&db.pool, &settings)
        .await
        .expect("tick");
    let (_, view) = d
        .call(Method::GET, &format!("/v1/schedules/{id}"), None)
        .await;
    assert_eq!(view["last_outcome"], "skipped: busy", "{view}");
    assert_eq!(view["last_job_id"], Value::Null);
    // Still advanced: the skipped run does not wait and pile up.
    let next: DateTime<Utc> = view["next_run_at"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("next_run_at");
    assert!(next > Utc::now(), "{view}");
    assert!(jobs_of(&db, id).await.is_empty());
    d.stop().await;
}
