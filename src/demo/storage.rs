//! The demo's storage folder, shaped like Dify's: a small generated object for every key the
//! demo database references, so `storage_migrate` can end "safe to switch"; orphaned objects
//! old enough for `orphan_files` to plan them (and one too young to); and Dify's log exports
//! of several ages for `purge_exports`.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::TryStreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use crate::dify::storage_refs;
use crate::jobs::purge::exports::EXPORT_PREFIX;

const DAY: Duration = Duration::from_secs(86_400);
/// Orphans per workspace past `orphan_files`' grace period (24 h; the README's example: 48 h).
const OLD_ORPHANS: usize = 3;
const ORPHAN_AGE: Duration = Duration::from_secs(10 * 86_400);
/// Export ages in days: the README's `older_than_days: 90` removes the first two, keeps the last.
const EXPORT_AGES_DAYS: [u64; 3] = [200, 120, 10];
const EXPORT_TABLES: [&str; 3] = ["messages", "conversations", "workflow_runs"];

#[derive(Debug, thiserror::Error)]
pub enum DemoStorageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading the keys the demo database references: {0}")]
    Db(#[from] sqlx::Error),
    #[error("the demo database references {0:?}, which is no key inside the storage folder")]
    BadKey(String),
}

/// What [`make`] wrote.
#[derive(Debug, Default)]
pub struct StorageSummary {
    /// One per key the database references.
    pub referenced: u64,
    /// Unreferenced and old enough for `orphan_files`.
    pub orphans: u64,
    /// Unreferenced but written just now: `orphan_files` keeps it (`too_young`).
    pub young_orphans: u64,
    /// Log exports older than 90 days, and younger ones.
    pub old_exports: u64,
    pub recent_exports: u64,
}

/// Writes the storage folder at `root` for the demo database behind `pool`. Objects the demo
/// wrote before are overwritten: every name is derived from the data, so reruns add nothing.
pub async fn make(root: &Path, pool: &PgPool) -> Result<StorageSummary, DemoStorageError> {
    let mut summary = StorageSummary::default();
    write(
        root,
        ".dify_secret_key",
        b"demo-secret-key-not-for-production",
    )?;
    let sources = storage_refs::present(pool).await?;
    if let Some(union) = storage_refs::union_sql(&sources) {
        let sql = format!(
            "SELECT DISTINCT key FROM ({union}) u WHERE key IS NOT NULL AND key <> '' ORDER BY key"
        );
        let mut keys = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).fetch(pool);
        while let Some(key) = keys.try_next().await? {
            write(root, &key, &content(&key))?;
            summary.referenced += 1;
        }
    }
    let tenants: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM public.tenants ORDER BY created_at, id")
            .fetch_all(pool)
            .await?;
    let now = SystemTime::now();
    for (t, tenant) in tenants.iter().enumerate() {
        for i in 0..OLD_ORPHANS {
            let ext = ["pdf", "png", "txt"][i % 3];
            let key = format!("upload_files/{tenant}/{}.{ext}", demo_id(tenant, i));
            write_aged(root, &key, &content(&key), now - ORPHAN_AGE)?;
            summary.orphans += 1;
        }
        let key = format!("tools/{tenant}/{}.png", demo_id(tenant, 100).simple());
        write_aged(root, &key, &content(&key), now - ORPHAN_AGE)?;
        summary.orphans += 1;
        if t == 0 {
            // An upload in flight: its row is not written yet.
            let key = format!("upload_files/{tenant}/{}.txt", demo_id(tenant, 200));
            write(root, &key, &content(&key))?;
            summary.young_orphans += 1;
        }
        for days in EXPORT_AGES_DAYS {
            let written = now - DAY * u32::try_from(days).unwrap_or(u32::MAX);
            for table in EXPORT_TABLES {
                let key = export_key(tenant, table, written);
                let body = format!(
                    "[{{\"id\": \"{}\", \"tenant_id\": \"{tenant}\"}}]",
                    demo_id(tenant, 300 + days as usize)
                );
                write_aged(root, &key, body.as_bytes(), written)?;
                if days > 90 {
                    summary.old_exports += 1;
                } else {
                    summary.recent_exports += 1;
                }
            }
        }
    }
    Ok(summary)
}

/// Dify's export name: `<prefix><tenant>/<table>/<YYYY-MM-DD>-<time.time()>.json`.
fn export_key(tenant: &Uuid, table: &str, written: SystemTime) -> String {
    let at: chrono::DateTime<chrono::Utc> = written.into();
    let epoch = at.timestamp_micros() as f64 / 1e6;
    format!(
        "{EXPORT_PREFIX}{tenant}/{table}/{}-{epoch:.6}.json",
        at.format("%Y-%m-%d")
    )
}

/// A stable id per (workspace, n), so a rerun overwrites what the last one wrote.
fn demo_id(tenant: &Uuid, n: usize) -> Uuid {
    let mut rng = fastrand::Rng::with_seed(tenant.as_u128() as u64 ^ (n as u64).rotate_left(32));
    let mut bytes = [0u8; 16];
    rng.fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// A few bytes of the key's type, so a downloaded demo file opens as what it claims to be.
fn content(key: &str) -> Vec<u8> {
    let ext = key.rsplit_once('.').map_or("", |(_, e)| e);
    match ext {
        "png" => PNG_1X1.to_vec(),
        "pdf" => format!(
            "%PDF-1.4\n% upkeep demo: {key}\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
        )
        .into_bytes(),
        "json" => format!("{{\"demo\": true, \"key\": \"{key}\"}}\n").into_bytes(),
        "pem" => b"-----BEGIN RSA PRIVATE KEY-----\nZGVtbyBrZXksIG5vdCBmb3IgdXNl\n-----END RSA PRIVATE KEY-----\n"
            .to_vec(),
        _ => format!("upkeep demo file {key}\n").into_bytes(),
    }
}

const PNG_1X1: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// `root/key`, refusing keys that would land outside `root`.
fn path_of(root: &Path, key: &str) -> Result<PathBuf, DemoStorageError> {
    let rel = Path::new(key);
    if key.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(DemoStorageError::BadKey(key.to_string()));
    }
    Ok(root.join(rel))
}

fn write(root: &Path, key: &str, body: &[u8]) -> Result<PathBuf, DemoStorageError> {
    let path = path_of(root, key)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DemoStorageError::Io { path, source }
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(&path, body).map_err(io(&path))?;
    Ok(path)
}

/// Writes an object and dates it `at`: `orphan_files` ages objects by their mtime.
fn write_aged(root: &Path, key: &str, body: &[u8], at: SystemTime) -> Result<(), DemoStorageError> {
    let path = write(root, key, body)?;
    let io = |source| DemoStorageError::Io {
        path: path.clone(),
        source,
    };
    std::fs::File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(at))
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_root() {
        let root = Path::new("/srv/demo");
        assert!(path_of(root, "upload_files/t/a.txt").is_ok());
        for bad in [
            "",
            "../etc/passwd",
            "/etc/passwd",
            "upload_files/../../x",
            "./a",
        ] {
            assert!(path_of(root, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn export_names_have_dify_s_layout() {
        let tenant = Uuid::nil();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_312_000);
        assert_eq!(
            export_key(&tenant, "messages", at),
            format!("{EXPORT_PREFIX}{tenant}/messages/2026-01-02-1767312000.000000.json")
        );
    }
}
