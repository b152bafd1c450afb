//! A throwaway PostgreSQL cluster of one test's own (initdb + pg_ctl, trust auth, a free
//! port, a temporary directory), for faults that take the whole server away: restarting the
//! shared server would break every other test running beside. Stopped on drop, so also when
//! the test panics.

use std::process::Command;

use super::pg::TestDb;

/// The newest installed server's programs, as scripts/lib/postgres.sh finds them.
fn bin() -> String {
    let mut dirs: Vec<(u32, String)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server programs under /usr/lib/postgresql")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let dir = format!("{}/bin", e.path().display());
            std::path::Path::new(&format!("{dir}/initdb"))
                .exists()
                .then_some((major, dir))
        })
        .collect();
    dirs.sort();
    dirs.pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
        .1
}

pub struct Cluster {
    dir: String,
    pub port: u16,
}

/// `cmd` as the `postgres` user (initdb refuses root), panicking with its output on failure.
fn as_postgres<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .args(args)
        .output()
        .expect("runuser");
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = as_postgres(&["mktemp", "-d", "/tmp/upkeep-faults-pg-XXXXXX"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let cluster = Cluster { dir, port };
        as_postgres(&[
            &format!("{}/initdb", bin()),
            "-D",
            &cluster.data(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]);
        as_postgres(&cluster.pg_ctl("start"));
        cluster
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir)
    }

    /// `pg_ctl start` (logging to a file: a server writing to pg_ctl's stdout would keep the
    /// pipe open) or `pg_ctl stop` (fast: every connection is cut, transactions roll back).
    fn pg_ctl(&self, action: &str) -> Vec<String> {
        let mut args = vec![
            format!("{}/pg_ctl", bin()),
            "-D".into(),
            self.data(),
            "-w".into(),
            "-t".into(),
            "30".into(),
        ];
        if action == "start" {
            args.extend([
                "-l".into(),
                format!("{}/server.log", self.dir),
                "-o".into(),
                format!("-h 127.0.0.1 -p {} -k {} -c fsync=off", self.port, self.dir),
            ]);
        } else {
            args.extend(["-m".into(), "fast".into()]);
        }
        args.push(action.into());
        args
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A database on this cluster holding Dify's schema (the fixture) and Upkeep's migrations.
    pub async fn dify_database(&self) -> TestDb {
        let name = format!("upkeep_c_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&self.url("postgres"))
            .await
            .expect("connect to the cluster");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
        let url = self.url(&name);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect(&url)
            .await
            .expect("connect");
        upkeep::demo::fixture::load_dify_fixture(&pool)
            .await
            .expect("load fixture");
        upkeep::db::migrate(&pool).await.expect("migrate");
        // Dropping it tries the shared server, where no database has this name: a no-op.
        TestDb { pool, url, name }
    }

    /// Stops the server (fast: every connection is cut, open transactions roll back) and starts
    /// it again; returns once it accepts connections. Async, so daemons on this runtime keep
    /// running (and failing) while the server is away.
    pub async fn restart(&self) {
        for action in ["stop", "start"] {
            let out = tokio::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .args(self.pg_ctl(action))
                .output()
                .await
                .expect("pg_ctl");
            assert!(
                out.status.success(),
                "pg_ctl {action}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let args = self.pg_ctl("stop");
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(&args)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
