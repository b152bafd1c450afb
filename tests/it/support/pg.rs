//! One fresh database per test on the test server (`UPKEEP_TEST_PG_URL`, default the local
//! Postgres on 127.0.0.1:5432). Dify-shaped databases are copied from a template that holds
//! the fixture and Upkeep's migrations, built once per fixture version under an advisory lock.

use std::hash::{Hash, Hasher};

use sqlx::{Connection, PgConnection, PgPool};

pub fn server_url() -> String {
    std::env::var("UPKEEP_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

pub fn url_for(db: &str) -> String {
    let server = server_url();
    let base = server.split('?').next().unwrap_or(&server).to_string();
    let (prefix, _) = base.rsplit_once('/').expect("server URL names a database");
    format!("{prefix}/{db}")
}

pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime: use a thread with its own to drop the database.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(mut c) = PgConnection::connect(&server_url()).await {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        )))
                        .execute(&mut c)
                        .await;
                    }
                });
            }
        })
        .join();
    }
}

async fn admin() -> PgConnection {
    PgConnection::connect(&server_url())
        .await
        .unwrap_or_else(|e| panic!("test Postgres at {} is not reachable: {e}", server_url()))
}

async fn create(template: Option<&str>) -> TestDb {
    let name = format!("upkeep_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = admin().await;
    let sql = match template {
        Some(t) => format!("CREATE DATABASE \"{name}\" TEMPLATE \"{t}\""),
        None => format!("CREATE DATABASE \"{name}\""),
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let url = url_for(&name);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect(&url)
        .await
        .expect("connect to test database");
    TestDb { pool, url, name }
}

/// A fresh, empty database.
pub async fn empty_database() -> TestDb {
    create(None).await
}

/// A fresh database with Dify's schema (the project's fixture), no data, and Upkeep's
/// migrations applied.
pub async fn dify_database() -> TestDb {
    let template = template().await;
    create(Some(&template)).await
}

async fn template() -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    upkeep::demo::fixture::DIFY_SCHEMA_SQL.hash(&mut h);
    for m in upkeep::db::MIGRATOR.iter() {
        m.checksum.hash(&mut h);
    }
    let name = format!("upkeep_tpl_{:016x}", h.finish());
    let mut conn = admin().await;
    sqlx::query("SELECT pg_advisory_lock(4242)")
        .execute(&mut conn)
        .await
        .expect("lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .expect("look up template");
    if !exists {
        let building = format!("{name}_building");
        for sql in [
            format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{building}\""),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("template");
        }
        {
            let pool = PgPool::connect(&url_for(&building))
                .await
                .expect("connect template");
            upkeep::demo::fixture::load_dify_fixture(&pool)
                .await
                .expect("load fixture");
            upkeep::db::migrate(&pool).await.expect("migrate");
            pool.close().await;
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{building}\" RENAME TO \"{name}\""
        )))
        .execute(&mut conn)
        .await
        .expect("publish template");
    }
    sqlx::query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut conn)
        .await
        .expect("unlock");
    name
}

/// Waits until `sql` (a boolean query) is true, re-checking whenever a job event is recorded
/// (NOTIFY), with a slow re-check as the fallback. Panics after `deadline`.
pub async fn wait_until(db: &TestDb, sql: &'static str, deadline: std::time::Duration) {
    let mut listener = sqlx::postgres::PgListener::connect(&db.url)
        .await
        .expect("listen");
    listener.listen("upkeep_events").await.expect("listen");
    let wait = async {
        loop {
            let done: bool = sqlx::query_scalar(sql)
                .fetch_one(&db.pool)
                .await
                .expect("condition");
            if done {
                return;
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), listener.recv()).await;
        }
    };
    tokio::time::timeout(deadline, wait)
        .await
        .unwrap_or_else(|_| panic!("condition not reached within {deadline:?}: {sql}"));
}

/// Holds an ACCESS EXCLUSIVE lock on `public.<table>` until the transaction is rolled back
/// or dropped: what a busy Dify (or a migration) looks like to a job.
pub async fn hold_lock(db: &TestDb, table: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = db.pool.begin().await.expect("begin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE public.\"{table}\" IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await
    .expect("lock");
    tx
}

pub const REAL_SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/dify/schema.sql");

/// Dify's real schema, or None (after saying why) where this checkout has no copy. CI must
/// have it: there a missing file fails the test instead of skipping it.
pub fn real_schema(test: &str) -> Option<String> {
    match std::fs::read_to_string(REAL_SCHEMA) {
        Ok(sql) => Some(sql),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{test}: Dify's schema {REAL_SCHEMA} is required in CI: {e}")
        }
        Err(e) => {
            eprintln!("{test}: skipped, Dify's schema {REAL_SCHEMA} is not readable here: {e}");
            None
        }
    }
}

/// Loads the real dump on a connection of its own: it empties `search_path` and changes other
/// session settings, which must not leak into the pool.
pub async fn load_real_schema(db: &TestDb, sql: String) {
    let mut conn = PgConnection::connect(&db.url)
        .await
        .expect("connect to load schema.sql");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .expect("schema.sql loads");
    conn.close().await.expect("close the loading connection");
}

/// A fresh database holding Dify's full real schema (134 tables), or None where this checkout
/// has no copy of it (see `real_schema`).
pub async fn real_dify_database(test: &str) -> Option<TestDb> {
    let sql = real_schema(test)?;
    let db = empty_database().await;
    load_real_schema(&db, sql).await;
    Some(db)
}

pub const RELEASE_SCHEMAS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/dify/schemas");

/// A fresh database holding the real schema of Dify `version` (made by that release's own
/// migrations, `../shared/dify/schemas/<version>.sql`) stamped with its Alembic `head`, or
/// None where this checkout has no copy (CI must: there a missing file fails the test).
pub async fn release_database(version: &str, head: &str) -> Option<TestDb> {
    let path = format!("{RELEASE_SCHEMAS}/{version}.sql");
    let sql = match std::fs::read_to_string(&path) {
        Ok(sql) => sql,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("Dify {version}'s schema {path} is required in CI: {e}")
        }
        Err(e) => {
            eprintln!("Dify {version}: skipped, its schema {path} is not readable here: {e}");
            return None;
        }
    };
    let db = empty_database().await;
    load_real_schema(&db, sql).await;
    sqlx::query("INSERT INTO public.alembic_version (version_num) VALUES ($1)")
        .bind(head)
        .execute(&db.pool)
        .await
        .expect("stamp the release's head");
    Some(db)
}
