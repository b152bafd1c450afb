//! Every kind of bad input gets a 4xx with the whole error body asserted, and leaves no job.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::daemon::{Options, TOKEN, TestDaemon};
use crate::support::pg;

async fn job_count(db: &pg::TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM upkeep.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

fn err(code: &str, field: Option<&str>, message: &str) -> Value {
    json!({"code": code, "field": field, "message": message})
}

#[tokio::test]
async fn submit_rejects_bad_input_naming_the_field() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let cases: Vec<(Value, u16, Value)> = vec![
        (
            json!({"kind": "vacuum", "params": {}, "colour": 1}),
            400,
            err(
                "unknown_field",
                Some("colour"),
                "unknown field \"colour\"; accepted: kind, params, dry_run, idempotency_key",
            ),
        ),
        (
            json!({"kind": "vacuum", "params": {"tabels": ["messages"]}}),
            400,
            err(
                "unknown_field",
                Some("params.tabels"),
                "unknown field \"tabels\"; accepted: tables, mode, lock_timeout_ms",
            ),
        ),
        (
            json!({"kind": "defrag"}),
            400,
            err(
                "unknown_kind",
                Some("kind"),
                "unknown job kind \"defrag\"; this daemon runs: vacuum, storage_migrate, purge_logs, purge_exports, orphan_files, orphan_records, vector_migrate, vector_rollback, backup, backup_verify, restore",
            ),
        ),
        (
            json!({"params": {}}),
            400,
            err("invalid_field", Some("kind"), "is required"),
        ),
        (
            json!({"kind": "storage_migrate", "params": {"target": {"type": "local", "root": "/tmp", "path": "x"}}}),
            400,
            err(
                "unknown_field",
                Some("params.target.path"),
                "unknown field \"path\"; accepted: root",
            ),
        ),
        (
            json!({"kind": 7}),
            400,
            err("invalid_field", Some("kind"), "must be a string, not 7"),
        ),
        (
            json!({"kind": "vacuum", "params": {"mode": "fast"}}),
            400,
            err(
                "invalid_field",
                Some("params.mode"),
                "must be one of plain, analyze, full, not \"fast\"",
            ),
        ),
        (
            json!({"kind": "vacuum", "params": {"lock_timeout_ms": 0}}),
            400,
            err(
                "invalid_field",
                Some("params.lock_timeout_ms"),
                "must be between 1 and 3600000 milliseconds",
            ),
        ),
        (
            json!({"kind": "vacuum", "params": {"lock_timeout_ms": -5}}),
            400,
            err(
                "invalid_field",
                Some("params.lock_timeout_ms"),
                "must be a whole number from 0 to 4294967295, not -5",
            ),
        ),
        (
            json!({"kind": "vacuum", "params": {"tables": []}}),
            400,
            err(
                "invalid_field",
                Some("params.tables"),
                "must name at least one table (leave it out to vacuum every table)",
            ),
        ),
        (
            json!({"kind": "vacuum", "params": {"tables": ["messages", "nope"]}}),
            400,
            err(
                "invalid_field",
                Some("params.tables[1]"),
                "no table \"nope\" in schema public",
            ),
        ),
        (
            json!({"kind": "vacuum", "params": {"tables": ["messages", "messages"]}}),
            400,
            err(
                "invalid_field",
                Some("params.tables[1]"),
                "table \"messages\" is listed twice",
            ),
        ),
        (
            json!({"kind": "vacuum", "params": {"tables": ["x\"; DROP TABLE messages; --"]}}),
            400,
            err(
                "invalid_field",
                Some("params.tables[0]"),
                "no table \"x\\\"; DROP TABLE messages; --\" in schema public",
            ),
        ),
        (
            json!({"kind": "vacuum", "params": [1]}),
            400,
            err("invalid_field", Some("params"), "must be an object"),
        ),
        (
            json!({"kind": "vacuum", "idempotency_key": ""}),
            400,
            err(
                "invalid_field",
                Some("idempotency_key"),
                "must be 1 to 200 characters",
            ),
        ),
        (
            json!({"kind": "vacuum", "dry_run": "yes"}),
            400,
            err(
                "invalid_field",
                Some("dry_run"),
                "must be true or false, not \"yes\"",
            ),
        ),
    ];
    for (body, status, expected) in cases {
        let (got_status, got) = d.submit(body.clone()).await;
        assert_eq!((got_status, &got), (status, &expected), "request {body}");
    }
    // The injection attempt did nothing, and no job was half-created by any of them.
    assert_eq!(job_count(&db).await, 0);
    let tables: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE tablename = 'messages'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(tables, 1);
    d.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_the_error_body() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let http = reqwest::Client::new();
    let post = |body: &'static str, ct: &'static str| {
        http.post(format!("{}/v1/jobs", d.url))
            .bearer_auth(TOKEN)
            .header("Content-Type", ct)
            .body(body)
            .send()
    };
    let resp = post("{\"kind\": \"vacuum\",", "application/json")
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "invalid_json");
    assert_eq!(body["field"], Value::Null);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON: EOF"),
        "{body}"
    );

    let resp = post("kind=vacuum", "application/x-www-form-urlencoded")
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        err(
            "unsupported_media_type",
            None,
            "expected a JSON body with Content-Type: application/json"
        )
    );

    let big = format!(
        "{{\"kind\": \"vacuum\", \"idempotency_key\": \"{}\"}}",
        "x".repeat(2 * 1024 * 1024)
    );
    let resp = http
        .post(format!("{}/v1/jobs", d.url))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    // Declared with Content-Length, refused before it is read: the same JSON body.
    assert_eq!(resp.status(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large", "{body}");
    assert_eq!(job_count(&db).await, 0);
    d.stop().await;
}

#[tokio::test]
async fn a_method_a_path_does_not_take_gets_the_error_body_and_allow() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let id = "0192a000-0000-7000-8000-000000000000";
    for (method, path, allow) in [
        (
            reqwest::Method::GET,
            format!("/v1/jobs/{id}/cancel"),
            "POST",
        ),
        (
            reqwest::Method::PUT,
            "/v1/jobs".to_string(),
            "GET,HEAD,POST",
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/jobs/{id}"),
            "GET,HEAD",
        ),
        (reqwest::Method::POST, "/healthz".to_string(), "GET,HEAD"),
    ] {
        let resp = d.request(method.clone(), &path).send().await.unwrap();
        assert_eq!(resp.status(), 405, "{method} {path}");
        let mut allowed: Vec<String> = resp
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(',')
            .map(|m| m.trim().to_string())
            .collect();
        allowed.sort();
        assert_eq!(allowed.join(","), allow, "{method} {path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(
            body["code"], "method_not_allowed",
            "{method} {path}: {body}"
        );
        let message = body["message"].as_str().unwrap_or("");
        assert!(
            message.starts_with(&format!("{method} is not allowed here")),
            "{message}"
        );
    }
    d.stop().await;
}

#[tokio::test]
async fn paths_and_queries_are_checked() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let missing = "0192f0c1-0000-7000-8000-000000000000";
    let cases: Vec<(Method, String, u16, Value)> = vec![
        (
            Method::GET,
            "/v1/jobs/not-a-uuid".into(),
            400,
            err("invalid_field", Some("id"), "\"not-a-uuid\" is not a UUID"),
        ),
        (
            Method::GET,
            format!("/v1/jobs/{missing}"),
            404,
            err("not_found", Some("id"), &format!("job {missing} not found")),
        ),
        (
            Method::POST,
            format!("/v1/jobs/{missing}/cancel"),
            404,
            err("not_found", Some("id"), &format!("job {missing} not found")),
        ),
        (
            Method::POST,
            format!("/v1/jobs/{missing}/retry"),
            404,
            err("not_found", Some("id"), &format!("job {missing} not found")),
        ),
        (
            Method::GET,
            format!("/v1/jobs/{missing}/events"),
            404,
            err("not_found", Some("id"), &format!("job {missing} not found")),
        ),
        (
            Method::GET,
            "/v1/jobs?state=sleeping".into(),
            400,
            err(
                "invalid_field",
                Some("state"),
                "must be one of queued, running, succeeded, failed, cancelled, not \"sleeping\"",
            ),
        ),
        (
            Method::GET,
            "/v1/jobs?kind=defrag".into(),
            400,
            err(
                "unknown_kind",
                Some("kind"),
                "unknown job kind \"defrag\"; this daemon runs: vacuum, storage_migrate, purge_logs, purge_exports, orphan_files, orphan_records, vector_migrate, vector_rollback, backup, backup_verify, restore",
            ),
        ),
        (
            Method::GET,
            "/v1/jobs?limit=0".into(),
            400,
            err("invalid_field", Some("limit"), "must be between 1 and 200"),
        ),
        (
            Method::GET,
            "/v1/jobs?limit=ten".into(),
            400,
            err("invalid_field", Some("limit"), "must be a whole number"),
        ),
        (
            Method::GET,
            "/v1/jobs?cursor=abc".into(),
            400,
            err(
                "invalid_field",
                Some("cursor"),
                "is not a UUID (like 0192a000-0000-7000-8000-000000000000)",
            ),
        ),
        (
            Method::GET,
            "/v1/jobs?page=2".into(),
            400,
            err(
                "unknown_field",
                Some("page"),
                "unknown field \"page\"; accepted: state, kind, parent_id, limit, cursor",
            ),
        ),
        (
            Method::GET,
            "/v1/tenants?limit=5000".into(),
            400,
            err("invalid_field", Some("limit"), "must be between 1 and 1000"),
        ),
        (
            Method::GET,
            "/v1/nothing".into(),
            404,
            err("not_found", None, "no such endpoint"),
        ),
    ];
    for (method, path, status, expected) in cases {
        let (got_status, got) = d.call(method.clone(), &path, None).await;
        assert_eq!((got_status, &got), (status, &expected), "{method} {path}");
    }
    d.stop().await;
}

/// Every documented path with every method, with a malformed and an oversize body, with and
/// without the token: whatever the status, an error is the one JSON body.
#[tokio::test]
async fn every_route_and_method_answers_errors_with_the_error_body() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let (_, doc) = d.call(Method::GET, "/openapi.json", None).await;
    let id = "0192a000-0000-7000-8000-000000000000";
    let mut paths: Vec<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(|p| p.replace("{id}", id))
        .collect();
    paths.extend(["/nothing".to_string(), "/console/x/nope.js".to_string()]);
    let big = "x".repeat(2 * 1024 * 1024);
    let http = reqwest::Client::new();
    let mut checked = 0;
    for path in &paths {
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            for (body, token) in [("{", true), ("{", false), (big.as_str(), true)] {
                let mut req = http
                    .request(method.clone(), format!("{}{path}", d.url))
                    .header("Content-Type", "application/json")
                    .body(body.to_string());
                if token {
                    req = req.bearer_auth(TOKEN);
                }
                let resp = req.send().await.expect("the daemon answers");
                let status = resp.status();
                if status.is_success() {
                    continue;
                }
                let what = format!(
                    "{method} {path} ({} bytes, token {token}): {status}",
                    body.len()
                );
                let text = resp.text().await.unwrap_or_default();
                let parsed: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("{what}: not JSON: {text:?}"));
                assert!(parsed["code"].is_string(), "{what}: {parsed}");
                assert!(parsed["message"].is_string(), "{what}: {parsed}");
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "only {checked} error answers were checked");
    d.stop().await;
}
