//! Fan-out (`fan_out`): a big job split into child jobs that any daemon claims. Two and three
//! daemons on one database, one of them killed mid-child: the family ends like a lone run,
//! with every once-only step (storage's cross-check and database update, a dataset's switch)
//! done exactly once; cancel and retry reach the children; a per-kind limit holds.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::storage_migrate::migrate;
use crate::support::daemon::{Options, TestDaemon};
use crate::support::files::{TempTree, snapshot};
use crate::support::pg::{self, TestDb};
use crate::support::process::submit_to_a_doomed_daemon_with;

/// `tenants` tenants with `per_tenant` files each under `upload_files/<tenant>/`, a few of them
/// referenced by `upload_files` rows, and Dify's root-level secret key.
async fn tree(db: &TestDb, src: &TempTree, tenants: usize, per_tenant: usize) -> usize {
    for t in 0..tenants {
        let tenant = Uuid::new_v4();
        for i in 0..per_tenant {
            let key = format!("upload_files/{tenant}/{i}.bin");
            src.write(&key, format!("{key} {}", "x".repeat(i % 97)).as_bytes());
            if i % 50 == 0 {
                sqlx::query(
                    "INSERT INTO public.upload_files (tenant_id, storage_type, key, name, size, \
                     extension, created_by) VALUES ($1, 'opendal', $2, 'f', 1, 'bin', $1)",
                )
                .bind(tenant)
                .bind(&key)
                .execute(&db.pool)
                .await
                .expect("upload row");
            }
        }
        src.write(
            &format!("privkeys/{tenant}/private.pem"),
            format!("pem {t}").as_bytes(),
        );
    }
    src.write(".dify_secret_key", b"generated-secret\n");
    tenants * (per_tenant + 1) + 1
}

async fn children(db: &TestDb, parent: &str) -> Vec<(Uuid, String, i32)> {
    sqlx::query_as(
        "SELECT id, state, attempts FROM upkeep.jobs WHERE parent_id = $1::uuid ORDER BY id",
    )
    .bind(parent)
    .fetch_all(&db.pool)
    .await
    .expect("children")
}

/// Each attempt of each job in `ids`: who claimed it, when, and when that attempt ended (the
/// job's next state event).
async fn attempts(db: &TestDb, ids: &[Uuid]) -> Vec<(String, DateTime<Utc>, DateTime<Utc>)> {
    let events: Vec<(Uuid, DateTime<Utc>, Value)> = sqlx::query_as(
        "SELECT job_id, at, data FROM upkeep.job_events \
         WHERE job_id = ANY($1) AND type = 'state' ORDER BY id",
    )
    .bind(ids)
    .fetch_all(&db.pool)
    .await
    .expect("events");
    let mut out = vec![];
    for (i, (job, at, data)) in events.iter().enumerate() {
        if data["state"] != "running" {
            continue;
        }
        let end = events[i + 1..]
            .iter()
            .find(|(j, _, _)| j == job)
            .map(|(_, at, _)| *at)
            .unwrap_or_else(Utc::now);
        let worker = data["worker"].as_str().expect("worker").to_string();
        out.push((worker, *at, end));
    }
    out
}

fn daemon_of(worker: &str) -> &str {
    worker.rsplit_once('/').map_or(worker, |(d, _)| d)
}

/// Phases a job's progress events went through.
async fn phases(db: &TestDb, id: Uuid) -> BTreeSet<String> {
    sqlx::query_scalar::<_, Option<String>>(
        "SELECT DISTINCT data->>'phase' FROM upkeep.job_events WHERE job_id = $1 AND type = 'progress'",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await
    .expect("phases")
    .into_iter()
    .flatten()
    .collect()
}

async fn rescuer(db: &TestDb, name: &'static str, env: Vec<(&'static str, String)>) -> TestDaemon {
    TestDaemon::start(
        db,
        Options {
            workers: 2,
            lease_secs: 3,
            name,
            env,
            ..Default::default()
        },
    )
    .await
}

#[tokio::test]
async fn storage_children_spread_over_three_daemons_one_killed_mid_child_and_the_switch_checks_run_once()
 {
    let db = pg::dify_database().await;
    let (src, dst) = (TempTree::new("src"), TempTree::new("dst"));
    let objects = tree(&db, &src, 8, 120).await;
    // One worker: the doomed daemon claims the parent, splits it, gives its slot back, takes
    // the first child and dies at that child's third ledger commit.
    let (client, id) = submit_to_a_doomed_daemon_with(
        &db,
        "storage_migrate.flushed=abort@3",
        &[],
        migrate(
            src.config(),
            dst.config(),
            json!({"fan_out": 4, "concurrency": 4}),
        ),
    )
    .await;
    let kids = children(&db, &id).await;
    assert_eq!(kids.len(), 4, "{kids:?}");
    let killed: Vec<Uuid> = kids
        .iter()
        .filter(|(_, state, _)| state == "running")
        .map(|(id, _, _)| *id)
        .collect();
    assert_eq!(
        killed.len(),
        1,
        "one child was running when the daemon died: {kids:?}"
    );
    let killed = killed[0];
    let before: Vec<String> =
        sqlx::query_scalar("SELECT key FROM upkeep.storage_objects WHERE job_id = $1")
            .bind(killed)
            .fetch_all(&db.pool)
            .await
            .expect("ledger");
    assert!(!before.is_empty(), "the killed child had verified objects");
    let mtimes: BTreeMap<String, std::time::SystemTime> = before
        .iter()
        .map(|k| {
            let m = std::fs::metadata(dst.root.join(k)).expect("copied");
            (k.clone(), m.modified().expect("mtime"))
        })
        .collect();

    // Two more daemons, each allowed one storage_migrate at a time although it has two workers.
    let limit = vec![("UPKEEP_KIND_LIMITS", "storage_migrate=1".to_string())];
    let a = rescuer(&db, "a", limit.clone()).await;
    let b = rescuer(&db, "b", limit).await;
    let done = a.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = &done["result"];
    assert_eq!(r["safe_to_switch"], true, "{r}");
    let n = |k: &str| r[k].as_u64().expect(k);
    assert_eq!(
        n("copied") + n("replaced") + n("already_there"),
        objects as u64,
        "{r}"
    );
    assert!(
        n("replaced") + n("already_there") <= 4,
        "only what was in flight at the kill: {r}"
    );
    assert_eq!(r["cross_check"]["unsafe"], 0, "{r}");
    assert_eq!(r["db"]["rows_updated"], 8 * 3, "{r}");
    assert_eq!(snapshot(&dst.config()).await, snapshot(&src.config()).await);

    let (status, page) = a
        .call(Method::GET, &format!("/v1/jobs?parent_id={id}"), None)
        .await;
    assert_eq!(status, 200, "{page}");
    let listed_ids: BTreeSet<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    let kid_ids: Vec<String> = kids.iter().map(|(k, _, _)| k.to_string()).collect();
    assert_eq!(
        listed_ids,
        kid_ids.iter().map(String::as_str).collect(),
        "{page}"
    );

    // Every child succeeded; the killed one was resumed by another daemon from its checkpoint:
    // what it had verified was not written again.
    let listed = r["children"].as_array().expect("children in the result");
    assert_eq!(listed.len(), 4, "{r}");
    assert_eq!(
        listed
            .iter()
            .map(|c| c["units"].as_u64().unwrap())
            .sum::<u64>(),
        8 * 2 + 1
    );
    for c in listed {
        assert_eq!(c["state"], "succeeded", "{c}");
    }
    let resumed = listed
        .iter()
        .find(|c| c["id"] == killed.to_string())
        .expect("the killed child");
    assert_eq!(resumed["attempts"], 2, "{resumed}");
    let workers: Vec<&str> = resumed["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| daemon_of(w.as_str().unwrap()))
        .collect();
    assert_eq!(workers[0], "proc", "{resumed}");
    assert_ne!(workers[1], "proc", "{resumed}");
    for (key, mtime) in &mtimes {
        let now = std::fs::metadata(dst.root.join(key))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(&now, mtime, "{key} was written again");
    }

    // The ledger is the parent's now, each key once; the switch checks ran in the parent only.
    let ids: Vec<Uuid> = kids.iter().map(|(id, _, _)| *id).collect();
    let (parent_rows, child_rows): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE job_id = $1::uuid), count(*) FILTER (WHERE job_id = ANY($2)) \
         FROM upkeep.storage_objects",
    )
    .bind(&id)
    .bind(&ids)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((parent_rows, child_rows), (objects as i64, 0));
    let parent_id: Uuid = id.parse().unwrap();
    // The parent's last progress over its children adds theirs up, with a rate and an ETA.
    let last: Value = sqlx::query_scalar(
        "SELECT data FROM upkeep.job_events WHERE job_id = $1 AND type = 'progress' \
         AND data->>'phase' = 'child jobs' ORDER BY id DESC LIMIT 1",
    )
    .bind(parent_id)
    .fetch_one(&db.pool)
    .await
    .expect("a child jobs progress");
    assert_eq!(last["done"], objects as u64, "{last}");
    assert_eq!(last["total"], objects as u64, "{last}");
    assert_eq!(last["unit"], "objects", "{last}");
    assert!(
        last["rate_per_s"].as_f64().is_some_and(|r| r > 0.0),
        "{last}"
    );
    assert_eq!(last["eta_s"], 0.0, "{last}");
    assert_eq!(last["detail"]["succeeded"], 4, "{last}");
    let parent_phases = phases(&db, parent_id).await;
    for p in [
        "child jobs",
        "cross-check database references",
        "update upload_files.storage_type",
    ] {
        assert!(
            parent_phases.contains(p),
            "parent lacks {p}: {parent_phases:?}"
        );
    }
    for child in &ids {
        let p = phases(&db, *child).await;
        assert!(p.contains("copy"), "{p:?}");
        assert!(
            !p.contains("cross-check database references")
                && !p.contains("update upload_files.storage_type"),
            "a child ran a once-only step: {p:?}"
        );
    }
    let types: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT storage_type FROM public.upload_files")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        types,
        vec!["local".to_string()],
        "every row points at the target"
    );

    // Children ran on more than one daemon, and neither limited daemon ran two at once.
    let runs = attempts(&db, &ids).await;
    let daemons: BTreeSet<&str> = runs.iter().map(|(w, _, _)| daemon_of(w)).collect();
    assert!(daemons.len() >= 2, "{runs:?}");
    for d in ["a", "b"] {
        let mut mine: Vec<_> = runs.iter().filter(|(w, _, _)| daemon_of(w) == d).collect();
        mine.sort_by_key(|(_, start, _)| *start);
        for pair in mine.windows(2) {
            assert!(
                pair[1].1 >= pair[0].2,
                "{d} ran two children at once: {pair:?}"
            );
        }
    }
    a.stop().await;
    b.stop().await;
    client.stop().await;
}

#[tokio::test]
async fn cancel_reaches_every_child_and_retry_brings_them_back() {
    let db = pg::dify_database().await;
    let (src, dst) = (TempTree::new("src"), TempTree::new("dst"));
    let objects = tree(&db, &src, 3, 150).await;
    // Every child pauses at its first ledger commit until it is told to stop.
    let paused = |name| Options {
        workers: 2,
        failpoints: "storage_migrate.flushed=pause",
        name,
        ..Default::default()
    };
    let a = TestDaemon::start(&db, paused("a")).await;
    let b = TestDaemon::start(&db, paused("b")).await;
    let (status, job) = a
        .submit(migrate(src.config(), dst.config(), json!({"fan_out": 3})))
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    a.wait_event(&id, |e| {
        e["type"] == "progress"
            && e["data"]["phase"] == "child jobs"
            && e["data"]["detail"]["running"] == 3
    })
    .await;
    let kids = children(&db, &id).await;
    assert_eq!(kids.len(), 3);
    for (child, _, _) in &kids {
        a.wait_event(&child.to_string(), |e| {
            e["data"]["message"] == "failpoint storage_migrate.flushed reached"
        })
        .await;
    }
    let (status, body) = a
        .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let cancelled = a.wait_finished(&id).await;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    let ended: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT state, finished_at FROM upkeep.jobs WHERE parent_id = $1::uuid")
            .bind(&id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let parent_end: DateTime<Utc> = cancelled["finished_at"].as_str().unwrap().parse().unwrap();
    for (state, at) in &ended {
        assert_eq!(state, "cancelled");
        assert!(*at <= parent_end, "the parent ended before a child");
    }
    a.stop().await;
    b.stop().await;

    // Retried on a daemon without the pause: the children resume and the family finishes.
    let c = TestDaemon::start(
        &db,
        Options {
            workers: 2,
            name: "c",
            ..Default::default()
        },
    )
    .await;
    let (status, body) = c
        .call(Method::POST, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let done = c.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = &done["result"];
    let n = |k: &str| r[k].as_u64().unwrap();
    assert_eq!(
        n("copied") + n("replaced") + n("already_there"),
        objects as u64,
        "{r}"
    );
    for c in r["children"].as_array().unwrap() {
        assert_eq!(c["state"], "succeeded", "{c}");
        assert_eq!(c["attempts"], 2, "{c}");
    }
    assert_eq!(snapshot(&dst.config()).await, snapshot(&src.config()).await);
    c.stop().await;
}

#[tokio::test]
async fn fan_out_is_checked_and_a_dry_run_shows_the_split() {
    let db = pg::dify_database().await;
    let (src, dst) = (TempTree::new("src"), TempTree::new("dst"));
    tree(&db, &src, 5, 3).await;
    let d = TestDaemon::start(&db, Options::default()).await;
    for bad in [json!(0), json!(65), json!("4")] {
        let (status, body) = d
            .submit(migrate(src.config(), dst.config(), json!({"fan_out": bad})))
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["field"], "params.fan_out", "{body}");
    }
    let (status, body) = d
        .submit(json!({"kind": "vector_migrate", "params": {"fan_out": 100}}))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "params.fan_out", "{body}");
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM upkeep.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(queued, 0);
    let mut body = migrate(src.config(), dst.config(), json!({"fan_out": 4}));
    body["dry_run"] = json!(true);
    let (status, job) = d.submit(body).await;
    assert_eq!(status, 202, "{job}");
    let plan = d.wait_finished(job["id"].as_str().unwrap()).await;
    assert_eq!(plan["state"], "succeeded", "{plan}");
    // Five tenants under upload_files and under privkeys, and the secret key at the root.
    assert_eq!(
        plan["result"]["fan_out"],
        json!({"children": 4, "prefixes": 11}),
        "{plan}"
    );
    let spawned: i64 =
        sqlx::query_scalar("SELECT count(*) FROM upkeep.jobs WHERE parent_id IS NOT NULL")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(spawned, 0, "a dry run queues no children");
    d.stop().await;
}

/// Three datasets over three children on two daemons; the first daemon dies right after its
/// child switched a dataset. That switch is not made again, and the others are made once.
#[tokio::test]
async fn vector_children_switch_each_dataset_exactly_once_across_a_kill() {
    use crate::support::dify_vectors::{
        assert_exactly, binding, dataset, index_struct, load, on_qdrant, vector_env,
    };
    use crate::support::vector_servers::{QdrantStandin, WeaviateServer};
    let db = pg::dify_database().await;
    let (w, q) = (
        WeaviateServer::start().await,
        QdrantStandin::start("1.8.3").await,
    );
    let tenant = Uuid::new_v4();
    let (binding, shared) = binding(&db, "dataset").await;
    let first = dataset(&db, tenant, binding, 90, false, 7).await;
    let second = dataset(&db, tenant, binding, 60, true, 8).await;
    let third = dataset(&db, tenant, binding, 40, false, 9).await;
    load(&w, &first, false, &[], 0).await;
    load(&w, &second, true, &[], 0).await;
    load(&w, &third, false, &[], 0).await;
    let env = vector_env(&w, &q);
    let body = json!({"kind": "vector_migrate", "params": {"batch_size": 20, "fan_out": 3}});
    let (client, id) =
        submit_to_a_doomed_daemon_with(&db, "vector_migrate.switched=abort@1", &env, body).await;
    let switched_before: i64 = sqlx::query_scalar("SELECT count(*) FROM upkeep.vector_switches")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(switched_before, 1, "the daemon died right after one switch");

    let b = rescuer(&db, "b", env.clone()).await;
    let done = b.wait_finished(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let r = &done["result"];
    assert_eq!(r["switched"], 3, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    let ids: BTreeSet<String> = r["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["dataset_id"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = [&first, &second, &third]
        .iter()
        .map(|d| d.id.to_string())
        .collect();
    assert_eq!(ids, expected, "each dataset once in the merged result");
    let per_dataset: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT dataset_id, count(*) FROM upkeep.vector_switches GROUP BY dataset_id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(per_dataset.len(), 3, "{per_dataset:?}");
    assert!(per_dataset.iter().all(|(_, n)| *n == 1), "{per_dataset:?}");
    for ds in [&first, &second, &third] {
        assert_eq!(index_struct(&db, ds.id).await, on_qdrant(&shared));
    }
    assert_exactly(&q, &shared, &[&first, &second, &third], &[]).await;
    let children = r["children"].as_array().unwrap();
    assert_eq!(children.len(), 3, "{r}");
    let killed = children
        .iter()
        .find(|c| c["attempts"] == 2)
        .expect("the killed child was resumed");
    let workers: Vec<&str> = killed["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| daemon_of(w.as_str().unwrap()))
        .collect();
    assert_eq!(workers, vec!["proc", "b"], "{killed}");
    b.stop().await;
    client.stop().await;
}
