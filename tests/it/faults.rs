//! Issue 18, "faults beyond kills": one matrix of the job kinds that write × the faults a
//! deployment meets besides a killed daemon (kills at named points are in each kind's file).
//!
//! - `terminated`: every database connection of the daemon (pg_dump's included) cut with
//!   `pg_terminate_backend` while the job is paused at one of its named points (for
//!   purge_logs inside a batch's open transaction, for backup while pg_dump streams). The
//!   pause ends with a cancel, which the daemon must take on new connections; a retry on the
//!   same daemon finishes the job.
//! - `terminated_in_flight`: the same cut while the job's batch transaction waits on a row
//!   lock held by the test (purge_logs, orphan_records: the kinds that delete Dify's rows), so
//!   the fault lands on a statement in flight: the job goes back to the queue at its
//!   checkpoint by itself (an attempt spent) and finishes on new connections.
//! - `restarted`: Postgres stopped (fast: sessions cut, transactions rolled back) and started
//!   again under a running job, on a cluster of the test's own (see `restarted`): the job
//!   finishes by itself.
//! - `target_full` / `target_flaky`: the storage written to (moto behind a fault proxy) answers
//!   507 Insufficient Storage to every write after the first few until cleared, or 503 to two
//!   writes (which the storage layer's retries absorb); for vector_migrate the Qdrant
//!   stand-in refuses upserts. orphan_records writes no storage: it has no such cell.
//!
//! Every cell ends in the end state of a clean run once the job is resumed or retried (each
//! kind's own end-state check, shared with its test file), and a job that stops or fails on
//! the way has done nothing half: no row deleted without its export, no object deleted or
//! recorded that should not be, each dataset on its old store or wholly on the new one.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::daemon::{Options, TestDaemon};
use crate::support::dify_vectors::{
    Ds, assert_exactly, binding, dataset, index_struct, load, on_qdrant, vector_env,
};
use crate::support::fault_proxy::FaultProxy;
use crate::support::files::{TempTree, read_all, snapshot};
use crate::support::pg::{self, TestDb};
use crate::support::pg_cluster::Cluster;
use crate::support::servers::Moto;
use crate::support::vector_servers::{QdrantStandin, WeaviateServer};
use crate::{backup, orphan_files, orphan_records, purge_logs, storage_migrate};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    PurgeLogs,
    OrphanRecords,
    OrphanFiles,
    StorageMigrate,
    VectorMigrate,
    Backup,
    Restore,
}

impl Kind {
    /// Where `terminated` pauses the job: the Nth time it reaches one of its named points.
    fn pause(self) -> &'static str {
        match self {
            // Inside the third batch's transaction: its deletes are not committed yet.
            Kind::PurgeLogs => "purge_logs.mid_delete=pause@3",
            Kind::OrphanRecords => "orphan_records.batch_committed=pause@1",
            // The objects are checked and about to go; nothing deleted yet.
            Kind::OrphanFiles => "orphan_files.before_delete=pause@1",
            // Objects copied to the target, not yet recorded in the ledger.
            Kind::StorageMigrate => "storage_migrate.before_flush=pause@2",
            Kind::VectorMigrate => "vector_migrate.batch_written=pause@3",
            // pg_dump is streaming the dump: its connection is cut too.
            Kind::Backup => "backup.dump_chunk=pause@1",
            // The database part is restored; storage objects are on their way.
            Kind::Restore => "restore.storage_flushed=pause@1",
        }
    }

    /// A row lock, held as a busy Dify holds one, that the job's batch transaction waits on:
    /// a fault then lands on a statement in flight, inside the batch.
    fn lock(self) -> Option<&'static str> {
        match self {
            // The oldest message: purged in one of the first batches.
            Kind::PurgeLogs => {
                Some("SELECT id FROM public.messages ORDER BY created_at, id LIMIT 1 FOR UPDATE")
            }
            Kind::OrphanRecords => {
                Some("SELECT id FROM public.upload_files WHERE key LIKE '%/1.pdf' FOR UPDATE")
            }
            _ => None,
        }
    }
}

/// Where a scene's job writes its files.
enum Target {
    Local,
    /// S3 through a fault proxy at this URL.
    S3(String),
}

const BUCKET: &str = "dify";
const OBJECTS: usize = 240;

/// One kind's world before its job: data, servers, the job to run and its end-state checks.
enum Scene {
    Purge {
        w: purge_logs::World,
        storage: Value,
        _tree: Option<TempTree>,
    },
    Records {
        db: TestDb,
        kept: Uuid,
        plan_id: String,
        storage: Value,
        _tree: TempTree,
    },
    Files {
        db: TestDb,
        storage: Value,
        files: orphan_files::Files,
        plan_id: String,
        _tree: Option<TempTree>,
    },
    Migrate {
        db: TestDb,
        src: TempTree,
        dst: Value,
        _dst: Option<TempTree>,
    },
    Vectors {
        db: TestDb,
        w: Box<WeaviateServer>,
        q: Box<QdrantStandin>,
        shared: String,
        datasets: Vec<Ds>,
    },
    Backup {
        local: backup::Local,
        /// The backup's `target` param (`{}`: `UPKEEP_BACKUP_DIR`).
        target: Value,
    },
    Restore {
        local: backup::Local,
        /// Dify's storage the restore writes to, and the env that names it.
        storage: Value,
        env: Vec<(&'static str, String)>,
        set: String,
        tables: std::collections::BTreeMap<String, (i64, String)>,
        files: std::collections::BTreeMap<String, (u64, String)>,
    },
}

fn storage_of(target: &Target, label: &str) -> (Value, Option<TempTree>) {
    match target {
        Target::Local => {
            let tree = TempTree::new(label);
            (tree.config(), Some(tree))
        }
        Target::S3(url) => (backup::s3_at(url, BUCKET), None),
    }
}

async fn run(d: &TestDaemon, body: Value) -> Value {
    let (status, job) = d.submit(body).await;
    assert_eq!(status, 202, "{job}");
    d.wait_finished(job["id"].as_str().expect("id")).await
}

impl Scene {
    /// Builds `kind`'s world on `db`; plans and first backups run here, before any fault.
    async fn prepare(kind: Kind, db: TestDb, target: &Target) -> Scene {
        match kind {
            Kind::PurgeLogs => {
                let (storage, _tree) = storage_of(target, "exports");
                Scene::Purge {
                    w: purge_logs::world(db).await,
                    storage,
                    _tree,
                }
            }
            Kind::OrphanRecords => {
                let kept = orphan_records::orphans_and_a_kept_row(&db).await;
                let tree = TempTree::new("records");
                let storage = tree.config();
                let d = TestDaemon::start(&db, Options::default()).await;
                let plan = run(
                    &d,
                    json!({"kind": "orphan_records", "params": {"storage": storage}}),
                )
                .await;
                assert_eq!(plan["result"]["tables"]["upload_files"]["orphans"], 2500);
                d.stop().await;
                Scene::Records {
                    db,
                    kept,
                    plan_id: plan["id"].as_str().expect("id").into(),
                    storage,
                    _tree: tree,
                }
            }
            Kind::OrphanFiles => {
                let (storage, tree) = storage_of(target, "orphans");
                let files = orphan_files::seed(&db, &storage).await;
                let min_age_hours = match &tree {
                    Some(tree) => {
                        orphan_files::age(tree, &files.orphans);
                        48
                    }
                    None => 0,
                };
                let d = TestDaemon::start(&db, Options::default()).await;
                let plan = run(
                    &d,
                    json!({"kind": "orphan_files", "params": {"storage": storage, "min_age_hours": min_age_hours}}),
                )
                .await;
                assert_eq!(plan["result"]["orphans"], files.orphans.len(), "{plan}");
                d.stop().await;
                Scene::Files {
                    db,
                    storage,
                    files,
                    plan_id: plan["id"].as_str().expect("id").into(),
                    _tree: tree,
                }
            }
            Kind::StorageMigrate => {
                let src = TempTree::new("src");
                for i in 0..OBJECTS as u32 {
                    src.write(
                        &format!("upload_files/t{}/{i}.bin", i % 3),
                        &i.to_le_bytes().repeat(40),
                    );
                }
                let (dst, _dst) = storage_of(target, "dst");
                Scene::Migrate { db, src, dst, _dst }
            }
            Kind::VectorMigrate => {
                let (w, q) = (
                    WeaviateServer::start().await,
                    QdrantStandin::start("1.8.3").await,
                );
                let tenant = Uuid::new_v4();
                let (b, shared) = binding(&db, "dataset").await;
                let first = dataset(&db, tenant, b, 90, false, 31).await;
                let second = dataset(&db, tenant, b, 50, true, 32).await;
                load(&w, &first, false, &[], 0).await;
                load(&w, &second, true, &[], 0).await;
                Scene::Vectors {
                    db,
                    w: Box::new(w),
                    q: Box::new(q),
                    shared,
                    datasets: vec![first, second],
                }
            }
            Kind::Backup => {
                let target = match target {
                    Target::Local => json!({}),
                    Target::S3(url) => backup::s3_at(url, BUCKET),
                };
                Scene::Backup {
                    local: backup::local(OBJECTS).await,
                    target,
                }
            }
            Kind::Restore => {
                let local = backup::local(30).await;
                let d = daemon(&local.db, local.env.clone(), "").await;
                let done = run(
                    &d,
                    json!({"kind": "backup", "params": {"parts": ["database", "storage"]}}),
                )
                .await;
                assert_eq!(done["state"], "succeeded", "{done}");
                d.stop().await;
                let tables = backup::table_digests(&local.db).await;
                let files = snapshot(&local.src.tree.config()).await;
                // What a restore brings back: rows and objects lost since.
                sqlx::query("DELETE FROM public.upload_files WHERE key LIKE '%000_.txt'")
                    .execute(&local.db.pool)
                    .await
                    .expect("delete");
                for key in files.keys().filter(|k| k.contains("/001")) {
                    std::fs::remove_file(format!("{}/{key}", local.src.tree.path())).expect("rm");
                }
                // Restored into Dify's storage of the env: the local one, or an S3 bucket (an
                // empty one: a restore may land on another backend than the one backed up).
                let (storage, env) = match target {
                    Target::Local => (local.src.tree.config(), local.env.clone()),
                    Target::S3(url) => {
                        let mut env = vec![
                            ("STORAGE_TYPE", "s3".to_string()),
                            ("S3_BUCKET_NAME", BUCKET.to_string()),
                            ("S3_ENDPOINT", url.clone()),
                            ("S3_REGION", "us-east-1".to_string()),
                            ("S3_ACCESS_KEY", "test".to_string()),
                            ("S3_SECRET_KEY", "test".to_string()),
                            ("S3_ADDRESS_STYLE", "path".to_string()),
                        ];
                        env.extend(
                            local
                                .env
                                .iter()
                                .filter(|(k, _)| *k == "UPKEEP_BACKUP_DIR")
                                .cloned(),
                        );
                        (backup::s3_at(url, BUCKET), env)
                    }
                };
                Scene::Restore {
                    set: done["result"]["set"].as_str().expect("set").into(),
                    storage,
                    env,
                    local,
                    tables,
                    files,
                }
            }
        }
    }

    fn db(&self) -> &TestDb {
        match self {
            Scene::Purge { w, .. } => &w.db,
            Scene::Records { db, .. }
            | Scene::Files { db, .. }
            | Scene::Migrate { db, .. }
            | Scene::Vectors { db, .. } => db,
            Scene::Backup { local, .. } | Scene::Restore { local, .. } => &local.db,
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Scene::Vectors { w, q, .. } => vector_env(w, q),
            Scene::Backup { local, .. } => local.env.clone(),
            Scene::Restore { env, .. } => env.clone(),
            _ => vec![],
        }
    }

    fn body(&self) -> Value {
        match self {
            Scene::Purge { storage, .. } => {
                json!({"kind": "purge_logs", "params": {"days": 30, "batch": 100, "lock_timeout_ms": 60000, "storage": storage}})
            }
            Scene::Records {
                plan_id, storage, ..
            } => {
                json!({"kind": "orphan_records", "params": {"storage": storage, "confirm": true, "plan_job_id": plan_id}})
            }
            Scene::Files {
                plan_id, storage, ..
            } => {
                json!({"kind": "orphan_files", "params": {"storage": storage, "confirm": true, "plan_job_id": plan_id}})
            }
            Scene::Migrate { src, dst, .. } => {
                storage_migrate::migrate(src.config(), dst.clone(), json!({"concurrency": 4}))
            }
            Scene::Vectors { .. } => {
                json!({"kind": "vector_migrate", "params": {"batch_size": 20, "concurrency": 2}})
            }
            Scene::Backup { target, .. } => {
                let mut params = json!({"parts": ["database", "storage"], "concurrency": 4});
                if target.get("type").is_some() {
                    params["target"] = target.clone();
                }
                json!({"kind": "backup", "params": params})
            }
            Scene::Restore { set, .. } => {
                json!({"kind": "restore", "params": {"set": set, "overwrite": true, "concurrency": 4}})
            }
        }
    }

    /// After a job stopped or failed part-way: nothing done by half.
    async fn check_stopped(&self, job: &Value) {
        match self {
            Scene::Purge { w, storage, .. } => {
                let files = read_all(storage, "").await;
                purge_logs::every_deleted_row_is_exported(w, &files).await;
            }
            Scene::Records { db, kept, .. } => {
                assert!(orphan_records::exists(db, "upload_files", *kept).await);
            }
            Scene::Files { storage, files, .. } => {
                let now = snapshot(storage).await;
                for key in files.referenced.iter().chain(&files.untouchable) {
                    assert!(now.contains_key(key), "{key} was deleted: {job}");
                }
            }
            Scene::Migrate { db, src, dst, .. } => {
                // Whatever the ledger holds as verified is on the target with the source's bytes.
                let (source, target) = (snapshot(&src.config()).await, snapshot(dst).await);
                let id = job["id"].as_str().expect("id");
                for key in storage_migrate::ledger(db, id).await.keys() {
                    assert_eq!(target.get(key), source.get(key), "{key}: {job}");
                }
            }
            Scene::Vectors {
                db,
                q,
                shared,
                datasets,
                ..
            } => {
                // Each dataset is on Weaviate still, or whole on Qdrant and switched.
                for ds in datasets {
                    let at = index_struct(db, ds.id).await;
                    if at.contains("weaviate") {
                        continue;
                    }
                    assert_eq!(at, on_qdrant(shared), "{job}");
                    assert_exactly(q, shared, &[ds], &[]).await;
                }
            }
            Scene::Backup { .. } | Scene::Restore { .. } => {}
        }
    }

    /// The job's end is a clean run's: each kind's own end-state check.
    async fn check_end(&self, d: &TestDaemon, done: &Value) {
        assert_eq!(done["state"], "succeeded", "{done}");
        match self {
            Scene::Purge { w, storage, .. } => {
                purge_logs::check_end_state(w, &w.tenants, done, storage, true).await;
            }
            Scene::Records { db, kept, .. } => {
                // Every planned row deleted exactly once, across the attempts.
                assert_eq!(
                    done["result"]["tables"]["upload_files"],
                    json!({"deleted": 2500}),
                    "{done}"
                );
                let left: i64 = sqlx::query_scalar("SELECT count(*) FROM public.upload_files")
                    .fetch_one(&db.pool)
                    .await
                    .expect("count");
                assert_eq!(left, 1);
                assert!(orphan_records::exists(db, "upload_files", *kept).await);
            }
            Scene::Files { storage, files, .. } => {
                assert_eq!(done["result"]["planned"], files.orphans.len(), "{done}");
                let now = snapshot(storage).await;
                let mut want: Vec<&String> =
                    files.referenced.iter().chain(&files.untouchable).collect();
                want.sort();
                assert_eq!(now.keys().collect::<Vec<_>>(), want, "{done}");
            }
            Scene::Migrate { db, src, dst, .. } => {
                assert_eq!(snapshot(dst).await, snapshot(&src.config()).await);
                let id = done["id"].as_str().expect("id");
                assert_eq!(storage_migrate::ledger(db, id).await.len(), OBJECTS);
                let r = &done["result"];
                let n = |k: &str| r[k].as_u64().unwrap_or(0);
                assert_eq!(
                    n("copied") + n("replaced") + n("already_there"),
                    OBJECTS as u64,
                    "{r}"
                );
            }
            Scene::Vectors {
                db,
                q,
                shared,
                datasets,
                ..
            } => {
                assert_eq!(done["result"]["switched"], 2, "{done}");
                let units: Vec<&Ds> = datasets.iter().collect();
                assert_exactly(q, shared, &units, &[]).await;
                for ds in datasets {
                    assert_eq!(index_struct(db, ds.id).await, on_qdrant(shared));
                }
                let switches: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM upkeep.vector_switches")
                        .fetch_one(&db.pool)
                        .await
                        .expect("switches");
                assert_eq!(switches, 2, "each dataset switched once");
            }
            Scene::Backup { local, target } => {
                let source = match target.get("type") {
                    Some(_) => json!({"source": target}),
                    None => json!({}),
                };
                backup::check_set(d, &local.db, done, source, OBJECTS).await;
            }
            Scene::Restore {
                local,
                storage,
                tables,
                files,
                ..
            } => {
                assert_eq!(&backup::table_digests(&local.db).await, tables);
                assert_eq!(&snapshot(storage).await, files);
            }
        }
    }
}

/// A daemon on `db` with Dify's `env` and `failpoints`, on a 3 s lease: a job whose end it
/// could not record (the database away) goes back to the queue soon.
async fn daemon(
    db: &TestDb,
    env: Vec<(&'static str, String)>,
    failpoints: &'static str,
) -> TestDaemon {
    TestDaemon::start(
        db,
        Options {
            failpoints,
            lease_secs: 3,
            env,
            ..Options::default()
        },
    )
    .await
}

async fn submit(d: &TestDaemon, body: Value) -> String {
    let (status, job) = d.submit(body).await;
    assert_eq!(status, 202, "{job}");
    job["id"].as_str().expect("id").to_string()
}

async fn retry(d: &TestDaemon, id: &str) -> Value {
    let (status, body) = d
        .call(Method::POST, &format!("/v1/jobs/{id}/retry"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    d.wait_finished(id).await
}

/// Cuts every connection the daemon (and the pg_dump / pg_restore it runs, which it names
/// `upkeep` too) holds to `db`; the test's own pool is left alone. Returns the state of each
/// connection cut (`idle`, `active`, `idle in transaction`).
async fn terminate_daemon_connections(db: &TestDb) -> Vec<String> {
    use sqlx::Connection;
    // Another client of the same database, which must outlive the cut.
    let mut bystander = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    let cut: Vec<String> = sqlx::query_scalar(
        // Chosen first, then cut: in one WHERE the planner may call pg_terminate_backend
        // before the other conditions, on every backend of the server.
        "WITH daemon AS MATERIALIZED ( \
           SELECT pid, coalesce(state, '') AS state FROM pg_stat_activity \
           WHERE datname = current_database() AND pid <> pg_backend_pid() \
             AND application_name IN ('upkeep', 'pg_dump', 'pg_restore')) \
         SELECT state FROM daemon WHERE pg_terminate_backend(pid)",
    )
    .fetch_all(&db.pool)
    .await
    .expect("terminate");
    assert!(!cut.is_empty(), "the daemon held no connection to cut");
    bystander
        .ping()
        .await
        .expect("only the daemon's connections were cut");
    cut
}

/// Holds `kind`'s row lock in a transaction of the test's own, submits the job, and returns
/// once one of the daemon's statements waits on that lock.
async fn blocked_mid_batch(
    scene: &Scene,
    d: &TestDaemon,
    lock: &str,
) -> (String, sqlx::Transaction<'static, sqlx::Postgres>) {
    let mut dify = scene.db().pool.begin().await.expect("begin");
    let locked = sqlx::query(sqlx::AssertSqlSafe(lock.to_string()))
        .execute(&mut *dify)
        .await
        .expect("lock a row");
    assert_eq!(locked.rows_affected(), 1, "{lock}");
    let id = submit(d, scene.body()).await;
    pg::wait_until(
        scene.db(),
        "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
         AND application_name = 'upkeep' AND wait_event_type = 'Lock')",
        std::time::Duration::from_secs(60),
    )
    .await;
    (id, dify)
}

/// The job's end after a fault that took its database connections: it finishes by itself.
/// A statement the fault failed sends the job back to the queue at its checkpoint (an attempt
/// spent, a `queued` event saying why); `requeued`: whether that must have happened.
async fn finished_by_itself(d: &TestDaemon, id: &str, fault: &str, requeued: bool) -> Value {
    let end = d.wait_finished(id).await;
    assert_eq!(end["state"], "succeeded", "after {fault}: {end}");
    let (status, events) = d
        .call(
            Method::GET,
            &format!("/v1/jobs/{id}/events?limit=1000"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{events}");
    let requeues = events["items"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| {
            e["data"]["state"] == "queued"
                && e["data"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("the database connection was lost"))
        })
        .count();
    eprintln!(
        "after {fault}: {requeues} requeue(s), {} attempts",
        end["attempts"]
    );
    if requeued {
        assert_eq!(requeues, 1, "after {fault}: {events}");
        assert_eq!(end["attempts"], 2, "{end}");
    }
    end
}

/// The daemon's connections cut while its batch transaction waits on a row lock: the
/// statement in flight fails, the transaction is gone, and the job goes back to the queue at
/// its checkpoint and finishes on a new connection, nothing lost or done twice.
async fn terminated_in_flight(kind: Kind) {
    let scene = Scene::prepare(kind, pg::dify_database().await, &Target::Local).await;
    let d = daemon(scene.db(), scene.env(), "").await;
    let lock = kind.lock().expect("a kind with a row lock");
    let (id, dify) = blocked_mid_batch(&scene, &d, lock).await;
    terminate_daemon_connections(scene.db()).await;
    dify.rollback().await.expect("release the lock");
    let done = finished_by_itself(&d, &id, "terminate", true).await;
    scene.check_end(&d, &done).await;
    d.stop().await;
}

#[tokio::test]
async fn terminated_in_flight_purge_logs() {
    terminated_in_flight(Kind::PurgeLogs).await;
}

#[tokio::test]
async fn terminated_in_flight_orphan_records() {
    terminated_in_flight(Kind::OrphanRecords).await;
}

async fn terminated(kind: Kind) {
    let scene = Scene::prepare(kind, pg::dify_database().await, &Target::Local).await;
    let d = daemon(scene.db(), scene.env(), kind.pause()).await;
    let id = submit(&d, scene.body()).await;
    d.wait_event(&id, |e| e["data"]["data"]["failpoint"].is_string())
        .await;
    let cut = terminate_daemon_connections(scene.db()).await;
    if let Kind::PurgeLogs | Kind::Backup = kind {
        // The batch's transaction, or pg_dump's snapshot, went with its connection.
        assert!(
            cut.iter().any(|s| s != "idle"),
            "no transaction was cut: {cut:?}"
        );
    }

    // The daemon takes the cancel on new connections; the job stops at its pause.
    let (status, body) = d
        .call(Method::POST, &format!("/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    let stopped = d.wait_finished(&id).await;
    assert_eq!(stopped["state"], "cancelled", "{stopped}");
    scene.check_stopped(&stopped).await;

    let done = retry(&d, &id).await;
    scene.check_end(&d, &done).await;
    d.stop().await;
}

#[tokio::test]
async fn terminated_purge_logs() {
    terminated(Kind::PurgeLogs).await;
}

#[tokio::test]
async fn terminated_orphan_records() {
    terminated(Kind::OrphanRecords).await;
}

#[tokio::test]
async fn terminated_orphan_files() {
    terminated(Kind::OrphanFiles).await;
}

#[tokio::test]
async fn terminated_storage_migrate() {
    terminated(Kind::StorageMigrate).await;
}

#[tokio::test]
async fn terminated_vector_migrate() {
    terminated(Kind::VectorMigrate).await;
}

#[tokio::test]
async fn terminated_backup() {
    terminated(Kind::Backup).await;
}

#[tokio::test]
async fn terminated_restore() {
    terminated(Kind::Restore).await;
}

/// Postgres restarted under a running job, on a cluster of the test's own. Two kinds only:
/// each cell costs an initdb, and what a restart adds to `terminated` (the server refusing
/// connections for a while, every session gone at once) is the daemon's, not the kind's.
/// `purge_logs` writes Dify's tables most (batches of deletes after their exports): the restart
/// lands while its batch waits on a row lock. `storage_migrate` writes an object store and its
/// ledger in turns: the restart lands after its first progress, wherever the copy is.
async fn restarted(kind: Kind) {
    let cluster = Cluster::start();
    let scene = Scene::prepare(kind, cluster.dify_database().await, &Target::Local).await;
    let d = daemon(scene.db(), scene.env(), "").await;
    let (id, _dify) = match kind.lock() {
        Some(lock) => {
            let (id, dify) = blocked_mid_batch(&scene, &d, lock).await;
            (id, Some(dify))
        }
        None => {
            let id = submit(&d, scene.body()).await;
            d.wait_event(&id, |e| {
                e["type"] == "progress" && e["data"]["done"].as_u64() > Some(0)
            })
            .await;
            (id, None)
        }
    };
    assert_eq!(d.job(&id).await["state"], "running");
    // The lock's transaction goes with the restart.
    cluster.restart().await;
    // A job between statements meets no error at all (the pool reconnects).
    let done = finished_by_itself(&d, &id, "a restart", false).await;
    scene.check_end(&d, &done).await;
    d.stop().await;
}

#[tokio::test]
async fn restarted_purge_logs() {
    restarted(Kind::PurgeLogs).await;
}

#[tokio::test]
async fn restarted_storage_migrate() {
    restarted(Kind::StorageMigrate).await;
}

/// The failure code of a job whose target refuses its writes.
fn full_code(kind: Kind) -> &'static str {
    match kind {
        Kind::PurgeLogs => "export_failed",
        Kind::StorageMigrate | Kind::Backup => "target_failed",
        Kind::OrphanFiles | Kind::Restore => "storage_failed",
        Kind::VectorMigrate => "datasets_failed",
        Kind::OrphanRecords => unreachable!("orphan_records writes no storage"),
    }
}

/// The target failing mid-write: S3 (moto) behind a fault proxy whose writes fail with
/// `status` after `pass` writes went through, `times` times (None: until healed); for
/// `vector_migrate`, the Qdrant stand-in's upserts (RESOURCE_EXHAUSTED for a full store).
async fn target_fails(kind: Kind, pass: u64, status: StatusCode, times: Option<u64>) {
    let s3 = match kind {
        Kind::VectorMigrate => None,
        _ => {
            let moto = Moto::start().await;
            moto.create_bucket(BUCKET).await;
            let proxy = FaultProxy::start(&moto.endpoint()).await;
            Some((moto, proxy))
        }
    };
    let target = s3
        .as_ref()
        .map_or(Target::Local, |(_, p)| Target::S3(p.url.clone()));
    let scene = Scene::prepare(kind, pg::dify_database().await, &target).await;
    match (&s3, &scene) {
        (Some((_, proxy)), _) => proxy.fail_writes(pass, status, times),
        (None, Scene::Vectors { q, .. }) => {
            assert!(times.is_none(), "the stand-in fails until healed");
            q.fail_after(pass as u32, "RESOURCE_EXHAUSTED", &["Upsert"])
                .await
        }
        _ => unreachable!(),
    }
    let d = daemon(scene.db(), scene.env(), "").await;
    let id = submit(&d, scene.body()).await;
    let end = d.wait_finished(&id).await;
    eprintln!(
        "{kind:?} with its target failing: {} {}",
        end["state"], end["error"]
    );
    if let Some((_, proxy)) = &s3 {
        assert!(proxy.failed() >= 1, "no write reached the fault: {end}");
    }
    let done = if times.is_none() {
        assert_eq!(end["state"], "failed", "{end}");
        assert_eq!(end["error"]["code"], full_code(kind), "{end}");
        scene.check_stopped(&end).await;
        match (&s3, &scene) {
            (Some((_, proxy)), _) => {
                // A full target ends the job at the first refused write: at most the writes
                // in flight beside it are refused too (each body's concurrency is 4; a purge
                // writes a batch's 8 export files at once).
                let in_flight = if kind == Kind::PurgeLogs { 8 } else { 4 };
                assert!(
                    proxy.failed() <= in_flight,
                    "{} writes refused",
                    proxy.failed()
                );
                proxy.heal();
            }
            (None, Scene::Vectors { q, .. }) => q.heal().await,
            _ => unreachable!(),
        }
        retry(&d, &id).await
    } else {
        end
    };
    scene.check_end(&d, &done).await;
    d.stop().await;
}

#[tokio::test]
async fn target_full_purge_logs() {
    target_fails(Kind::PurgeLogs, 10, StatusCode::INSUFFICIENT_STORAGE, None).await;
}

#[tokio::test]
async fn target_full_orphan_files() {
    target_fails(Kind::OrphanFiles, 0, StatusCode::INSUFFICIENT_STORAGE, None).await;
}

#[tokio::test]
async fn target_full_storage_migrate() {
    target_fails(
        Kind::StorageMigrate,
        50,
        StatusCode::INSUFFICIENT_STORAGE,
        None,
    )
    .await;
}

#[tokio::test]
async fn target_full_backup() {
    target_fails(Kind::Backup, 20, StatusCode::INSUFFICIENT_STORAGE, None).await;
}

#[tokio::test]
async fn target_full_restore() {
    target_fails(Kind::Restore, 10, StatusCode::INSUFFICIENT_STORAGE, None).await;
}

#[tokio::test]
async fn target_full_vector_migrate() {
    target_fails(
        Kind::VectorMigrate,
        3,
        StatusCode::INSUFFICIENT_STORAGE,
        None,
    )
    .await;
}

#[tokio::test]
async fn target_flaky_purge_logs() {
    target_fails(
        Kind::PurgeLogs,
        10,
        StatusCode::SERVICE_UNAVAILABLE,
        Some(2),
    )
    .await;
}

#[tokio::test]
async fn target_flaky_storage_migrate() {
    target_fails(
        Kind::StorageMigrate,
        50,
        StatusCode::SERVICE_UNAVAILABLE,
        Some(2),
    )
    .await;
}

#[tokio::test]
async fn target_flaky_backup() {
    target_fails(Kind::Backup, 20, StatusCode::SERVICE_UNAVAILABLE, Some(2)).await;
}
