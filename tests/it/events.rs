//! Live events: in order, ending with the job, resumable with Last-Event-ID, and the same as
//! the JSON pages.

use reqwest::Method;
use serde_json::Value;

use crate::support::daemon::{Options, TestDaemon, vacuum};
use crate::support::pg;

#[tokio::test]
async fn sse_delivers_progress_in_order_and_resumes() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let tables = ["accounts", "apps", "conversations", "messages", "tenants"];
    let (_, job) = d.submit(vacuum(&tables)).await;
    let id = job["id"].as_str().unwrap();
    let all = d
        .stream(id, None, std::time::Duration::from_secs(60), |_| false)
        .await;

    let ids: Vec<i64> = all.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    assert_eq!(all.first().unwrap()["data"]["state"], "queued");
    assert_eq!(all.last().unwrap()["data"]["state"], "succeeded");
    let progress: Vec<&Value> = all
        .iter()
        .filter(|e| e["type"] == "progress")
        .map(|e| &e["data"])
        .collect();
    // One phase per table, in order, with done counting up to the total.
    let phases: Vec<&str> = progress
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    let mut distinct = phases.clone();
    distinct.dedup();
    let expected: Vec<String> = tables
        .iter()
        .map(|t| format!("vacuum public.{t}"))
        .chain(["finished".into()])
        .collect();
    assert_eq!(distinct, expected);
    let dones: Vec<u64> = progress
        .iter()
        .map(|p| p["done"].as_u64().unwrap())
        .collect();
    assert!(dones.windows(2).all(|w| w[0] <= w[1]), "{dones:?}");
    assert_eq!(progress.last().unwrap()["done"], 5);
    assert_eq!(progress.last().unwrap()["total"], 5);
    assert_eq!(progress.last().unwrap()["unit"], "tables");

    // Resuming after the third event replays exactly the rest.
    let resumed = d
        .stream(id, Some(ids[2]), std::time::Duration::from_secs(30), |_| {
            false
        })
        .await;
    assert_eq!(resumed, all[3..].to_vec());

    // The JSON pages hold the same events.
    let mut paged = vec![];
    let mut after = 0;
    loop {
        let (status, page) = d
            .call(
                Method::GET,
                &format!("/v1/jobs/{id}/events?after={after}&limit=3"),
                None,
            )
            .await;
        assert_eq!(status, 200);
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        paged.extend(items.iter().cloned());
        after = page["next_after"].as_i64().unwrap();
    }
    assert_eq!(paged, all);

    // The work and the attempt are counted in /metrics.
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("upkeep_processed_total{kind=\"vacuum\",unit=\"tables\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("upkeep_job_duration_seconds_count{kind=\"vacuum\",state=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("upkeep_jobs{state=\"succeeded\",kind=\"vacuum\"} 1"),
        "{metrics}"
    );
    d.stop().await;
}

#[tokio::test]
async fn bad_last_event_id_is_a_400() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(
        &db,
        Options {
            workers: 0,
            ..Options::default()
        },
    )
    .await;
    let (_, job) = d.submit(vacuum(&["tenants"])).await;
    let resp = d
        .request(
            Method::GET,
            &format!("/v1/jobs/{}/events", job["id"].as_str().unwrap()),
        )
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"code": "invalid_field", "field": "Last-Event-ID",
        "message": "must be an event id"})
    );
    d.stop().await;
}
