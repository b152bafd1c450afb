use reqwest::Method;
use serde_json::json;

use crate::support::daemon::{Options, TOKEN, TestDaemon};
use crate::support::pg;

#[tokio::test]
async fn token_is_required_except_on_health() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let http = reqwest::Client::new();
    for path in ["/v1/jobs", "/v1/tenants", "/v1/preflight", "/metrics"] {
        let missing = http.get(format!("{}{path}", d.url)).send().await.unwrap();
        assert_eq!(missing.status(), 401, "{path} without a token");
        let body: serde_json::Value = missing.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized");
        assert_eq!(body["field"], serde_json::Value::Null);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("missing bearer token")
        );

        let wrong = http
            .get(format!("{}{path}", d.url))
            .bearer_auth("test-token-0123456789abcdeX")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
        let body: serde_json::Value = wrong.json().await.unwrap();
        assert_eq!(
            body,
            json!({"code": "unauthorized", "message": "invalid bearer token", "field": null})
        );

        let right = http
            .get(format!("{}{path}", d.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200, "{path} with the token");
    }
    // A job cannot be submitted without the token either, and nothing is queued.
    let resp = http
        .post(format!("{}/v1/jobs", d.url))
        .json(&json!({"kind": "vacuum"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM upkeep.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    for path in ["/", "/healthz", "/readyz", "/openapi.json", "/docs/"] {
        let resp = http.get(format!("{}{path}", d.url)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path} is open");
    }
    let (status, body) = d.call(Method::GET, "/healthz", None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    d.stop().await;
}

#[tokio::test]
async fn docs_page_works_offline() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let page = reqwest::get(format!("{}/docs/", d.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    // Every script and stylesheet the page loads is served by the daemon itself.
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
    ] {
        assert!(page.contains(asset), "page references {asset}");
        assert!(!page.contains("https://"), "no external asset in the page");
        let resp = reqwest::get(format!("{}/docs/{asset}", d.url))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{asset} served locally");
    }
    d.stop().await;
}

/// `/readyz` needs no token: it says whether the daemon is ready, never the database's words.
#[tokio::test]
async fn readyz_says_not_ready_without_the_database_s_error_text() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let ready = reqwest::get(format!("{}/readyz", d.url))
        .await
        .expect("answers");
    assert_eq!(ready.status(), 200);
    sqlx::query("ALTER TABLE upkeep.jobs RENAME TO jobs_elsewhere")
        .execute(&db.pool)
        .await
        .expect("rename");
    let not = reqwest::get(format!("{}/readyz", d.url))
        .await
        .expect("answers");
    assert_eq!(not.status(), 503);
    let body: serde_json::Value = not.json().await.expect("JSON");
    assert_eq!(body, json!({"status": "database unavailable"}));
    sqlx::query("ALTER TABLE upkeep.jobs_elsewhere RENAME TO jobs")
        .execute(&db.pool)
        .await
        .expect("rename back");
    d.stop().await;
}
