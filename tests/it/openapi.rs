use crate::support::daemon::{Options, TestDaemon};
use crate::support::pg;

/// `openapi/openapi.json` is generated from the code: regenerate it with
/// `cargo run -- openapi > openapi/openapi.json` when this fails.
#[test]
fn committed_document_is_current() {
    let generated = upkeep::api::openapi()
        .to_pretty_json()
        .expect("document serialises");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
    let committed = std::fs::read_to_string(path).expect("openapi/openapi.json exists");
    assert!(
        committed.trim_end() == generated.trim_end(),
        "openapi/openapi.json is stale: run `cargo run -- openapi > openapi/openapi.json`"
    );
}

#[tokio::test]
async fn served_document_is_the_generated_one() {
    let db = pg::dify_database().await;
    let d = TestDaemon::start(&db, Options::default()).await;
    let served: serde_json::Value = reqwest::get(format!("{}/openapi.json", d.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let generated = serde_json::to_value(upkeep::api::openapi()).unwrap();
    assert_eq!(served, generated);
    assert_eq!(served["openapi"], "3.1.0");
    // Each job kind's params are a typed schema.
    let params = &served["components"]["schemas"]["VacuumParams"]["properties"];
    assert_eq!(params["mode"]["$ref"], "#/components/schemas/VacuumMode");
    assert_eq!(params["lock_timeout_ms"]["default"], 5000);
    d.stop().await;
}
