//! The jobs endpoints' success paths: submit, list, show, idempotency, resource keys, cancel
//! and retry of queued and finished jobs, and the read-only Dify endpoints.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::daemon::{Options, TestDaemon, vacuum};
use crate::support::pg;

fn api_only() -> Options {
    Options {
        workers: 0,
        ..Options::default()
    }
}

#[tokio::test]
async fn submit_shows_list_and_paginates() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, api_only()).await;
    let (status, job) = d.submit(json!({"kind": "vacuum", "dry_run": true})).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["kind"], "vacuum");
    assert_eq!(job["state"], "queued");
    assert_eq!(job["dry_run"], true);
    assert_eq!(job["attempts"], 0);
    // Defaults are filled in, so what runs is what the view shows.
    assert_eq!(
        job["params"],
        json!({"tables": null, "mode": "analyze", "lock_timeout_ms": 5000})
    );
    for key in [
        "progress",
        "result",
        "error",
        "started_at",
        "finished_at",
        "parent_id",
    ] {
        assert_eq!(job[key], Value::Null, "{key}");
    }
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(d.job(&id).await["id"], id.as_str());

    // Dry runs take no resource, so several can queue; list them newest first, 2 a page.
    let mut ids = vec![id];
    for _ in 0..4 {
        let (s, j) = d.submit(json!({"kind": "vacuum", "dry_run": true})).await;
        assert_eq!(s, 202);
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    ids.reverse();
    let mut seen = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/jobs?limit=2&kind=vacuum&state=queued&cursor={c}"),
            None => "/v1/jobs?limit=2&kind=vacuum&state=queued".into(),
        };
        let (s, page) = d.call(Method::GET, &path, None).await;
        assert_eq!(s, 200);
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(items.iter().map(|j| j["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let (_, page) = d.call(Method::GET, "/v1/jobs?state=running", None).await;
    assert_eq!(page, json!({"items": [], "next_cursor": null}));
    d.stop().await;
}

#[tokio::test]
async fn idempotency_key_returns_the_same_job_or_conflicts() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, api_only()).await;
    let body =
        json!({"kind": "vacuum", "params": {"mode": "plain"}, "idempotency_key": "nightly-1"});
    let (s1, first) = d.submit(body.clone()).await;
    let (s2, again) = d.submit(body).await;
    assert_eq!((s1, s2), (202, 202));
    assert_eq!(first["id"], again["id"]);
    // Spelling out a default is the same request.
    let (s3, same) = d
        .submit(
            json!({"kind": "vacuum", "params": {"mode": "plain", "lock_timeout_ms": 5000},
            "idempotency_key": "nightly-1"}),
        )
        .await;
    assert_eq!((s3, &same["id"]), (202, &first["id"]));
    let (status, conflict) = d
        .submit(
            json!({"kind": "vacuum", "params": {"mode": "full"}, "idempotency_key": "nightly-1"}),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        conflict,
        json!({"code": "idempotency_conflict", "field": "idempotency_key", "message": format!(
            "idempotency key \"nightly-1\" was already used for job {} with a different request",
            first["id"].as_str().unwrap())})
    );
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM upkeep.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    d.stop().await;
}

#[tokio::test]
async fn one_active_job_per_resource_then_cancel_and_retry() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, api_only()).await;
    let (_, first) = d.submit(vacuum(&["tenants"])).await;
    let id = first["id"].as_str().unwrap();
    let (status, busy) = d.submit(vacuum(&["apps"])).await;
    assert_eq!(status, 409);
    assert_eq!(
        busy,
        json!({"code": "resource_busy", "field": null, "message": format!(
            "job {id} (vacuum, queued) already holds resource \"postgres:vacuum\"")})
    );
    // Cancelling the queued job frees the resource at once.
    let (status, cancelled) = d
        .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 202);
    assert_eq!(cancelled["state"], "cancelled");
    assert!(cancelled["finished_at"].is_string());
    let (status, again) = d
        .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        again,
        json!({"code": "invalid_state", "field": "state",
        "message": format!("job {id} is cancelled: cancel is not possible")})
    );
    let (status, second) = d.submit(vacuum(&["apps"])).await;
    assert_eq!(status, 202);
    // Retrying the cancelled one now clashes with the new active job.
    let (status, clash) = d
        .call(Method::POST, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_eq!(status, 409, "{clash}");
    assert_eq!(clash["code"], "resource_busy");
    assert!(
        clash["message"]
            .as_str()
            .unwrap()
            .contains(second["id"].as_str().unwrap())
    );
    let (status, _) = d
        .call(
            Method::POST,
            &format!("/v1/jobs/{}/cancel", second["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let (status, retried) = d
        .call(Method::POST, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_eq!(status, 202);
    assert_eq!(retried["state"], "queued");
    assert_eq!(retried["finished_at"], Value::Null);
    assert_eq!(retried["cancel_requested"], false);
    let (status, not_again) = d
        .call(Method::POST, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        not_again["message"],
        format!("job {id} is queued: retry is not possible")
    );
    d.stop().await;
}

#[tokio::test]
async fn tenants_preflight_and_metrics() {
    let db = pg::dify_database().await;
    let t1 = uuid::Uuid::new_v4();
    let t2 = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO public.tenants (id, name, created_at) VALUES ($1, 'admin''s Workspace', '2025-01-01'), \
         ($2, 'Ops', '2025-02-01')",
    )
    .bind(t1)
    .bind(t2)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::raw_sql("DELETE FROM public.alembic_version; INSERT INTO public.alembic_version VALUES ('d9e8f7a6b5c4')")
        .execute(&db.pool)
        .await
        .unwrap();
    let d = TestDaemon::start(&db, api_only()).await;
    let (status, page) = d.call(Method::GET, "/v1/tenants?limit=1", None).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"][0]["id"], t1.to_string());
    assert_eq!(page["items"][0]["name"], "admin's Workspace");
    assert_eq!(page["items"][0]["plan"], "basic");
    assert_eq!(page["items"][0]["status"], "normal");
    assert_eq!(page["items"][0]["created_at"], "2025-01-01T00:00:00Z");
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, page2) = d
        .call(
            Method::GET,
            &format!("/v1/tenants?limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(page2["items"][0]["id"], t2.to_string());
    assert_eq!(page2["next_cursor"], Value::Null);

    let (status, pf) = d.call(Method::GET, "/v1/preflight", None).await;
    assert_eq!(status, 200, "{pf}");
    assert_eq!(
        pf["dify"],
        json!({"revision": "d9e8f7a6b5c4", "known": true, "release": "1.15.0"})
    );
    assert_eq!(pf["database"]["reachable"], true);
    assert!(!pf["database"]["url"].as_str().unwrap().contains("password"));
    assert_eq!(pf["storage"]["type"], "opendal");
    assert_eq!(pf["storage"]["reachable"], true);
    assert_eq!(pf["vector_store"]["type"], "weaviate");
    assert_eq!(pf["vector_store"]["reachable"], Value::Null);
    let messages = pf["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "messages")
        .unwrap();
    assert_eq!(messages["exists"], true);

    let (_, _) = d.submit(vacuum(&["tenants"])).await;
    let text = d.metrics().await;
    assert!(
        text.contains("upkeep_jobs{state=\"queued\",kind=\"vacuum\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE upkeep_job_duration_seconds histogram"));
    d.stop().await;
}

/// Every release's Alembic head (dify/schemas/README.md and dify-reference), and a head no
/// release has.
const HEADS: &[(&str, Option<&str>)] = &[
    ("c3d4e5f6a7b8", Some("main @76391b0 (after 1.15.0)")),
    ("d9e8f7a6b5c4", Some("1.15.0")),
    ("a4f2d8c9b731", Some("1.14.2")),
    ("6b5f9f8b1a2c", Some("1.13.3")),
    ("788d3099ae3a", Some("1.12.1")),
    ("905527cc8fd3", Some("1.11.4")),
    ("09cfdda155d1", Some("1.10.1")),
    ("ae662b25d9bc", Some("1.9.2")),
    ("b95962a3885c", Some("1.8.1")),
    ("532b3f888abf", Some("1.7.2")),
    ("4474872b0ee6", Some("1.4.2 / 1.4.3")),
    ("2adcbe1f5dfb", Some("1.4.1")),
    ("d28f2004b072", Some("1.4.0")),
    ("f051706725cc", Some("1.0.1")),
    ("08ec4f75af5e", Some("1.0.0")),
    ("a91b476a53de", Some("0.15.3 to 0.15.8")),
    // Between 0.15's head and 1.0.0's: a database mid-upgrade, no release.
    ("ddcc8bbef391", None),
    ("0123456789ab", None),
];

#[tokio::test]
async fn preflight_names_every_release_from_0_15_3_and_no_other_head() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, api_only()).await;
    for (head, release) in HEADS {
        sqlx::query("DELETE FROM public.alembic_version")
            .execute(&db.pool)
            .await
            .expect("clear alembic_version");
        sqlx::query("INSERT INTO public.alembic_version VALUES ($1)")
            .bind(head)
            .execute(&db.pool)
            .await
            .expect("set the head");
        let (_, pf) = d.call(Method::GET, "/v1/preflight", None).await;
        assert_eq!(
            pf["dify"],
            json!({"revision": head, "known": release.is_some(), "release": release}),
            "{head}"
        );
    }
    d.stop().await;
}
