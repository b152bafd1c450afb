//! Writing one purge batch's rows to storage in Dify's export layout, and proving they are
//! there before anything is deleted: `free_plan_tenant_expired_logs/{tenant}/{table}/
//! {YYYY-MM-DD}-{epoch}.json`, one JSON array per table and tenant.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::DateTime;
use futures_util::{StreamExt, TryStreamExt, stream};
use opendal::Operator;
use uuid::Uuid;

use super::exports::EXPORT_PREFIX;
use crate::jobs::JobError;

/// Files of one batch written at once.
const PARALLEL_WRITES: usize = 8;

/// The key Dify's command would give a file written at `stamp_us` (microseconds since the
/// epoch, UTC): the date, then Python's `time.time()` as a decimal.
pub fn export_key(tenant: Uuid, table: &str, stamp_us: i64) -> String {
    let secs = stamp_us.div_euclid(1_000_000);
    let micros = stamp_us.rem_euclid(1_000_000);
    let date = DateTime::from_timestamp(secs, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".into());
    format!("{EXPORT_PREFIX}{tenant}/{table}/{date}-{secs}.{micros:06}.json")
}

/// The files of one batch: JSON arrays per tenant and table. They are built while the rows
/// are read, before the batch has its time stamp (the names are given when written), so the
/// rows are held once, as the bytes to write.
#[derive(Default)]
pub struct Files(BTreeMap<(Uuid, &'static str), Vec<u8>>);

impl Files {
    /// Appends one row (JSON text) to the file of `tenant` and `table`.
    pub fn push(&mut self, tenant: Uuid, table: &'static str, row: &str) {
        let body = self.0.entry((tenant, table)).or_default();
        body.extend_from_slice(if body.is_empty() { b"[" } else { b", " });
        crate::dify::log_tables::ensure_ascii(row, body);
    }

    /// Takes in the files of `other` (read apart, e.g. another table's).
    pub fn merge(&mut self, other: Files) {
        for (key, body) in other.0 {
            match self.0.get_mut(&key) {
                Some(mine) => {
                    mine.extend_from_slice(b", ");
                    mine.extend_from_slice(body.get(1..).unwrap_or_default());
                }
                None => {
                    self.0.insert(key, body);
                }
            }
        }
    }

    /// The names of the files when written at `stamp_us`.
    pub fn keys(&self, stamp_us: i64) -> Vec<String> {
        self.0
            .keys()
            .map(|(tenant, table)| export_key(*tenant, table, stamp_us))
            .collect()
    }

    pub fn bytes(&self) -> u64 {
        self.0.values().map(|b| b.len() as u64 + 1).sum()
    }

    /// Writes every file under its name at `stamp_us`, reads each back and compares it byte
    /// for byte.
    pub async fn write_verified(self, op: &Operator, stamp_us: i64) -> Result<(), JobError> {
        // Named first: a closure over the borrowed table names is not `Send` for every lifetime.
        let named: Vec<(String, Vec<u8>)> = self
            .0
            .into_iter()
            .map(|((tenant, table), body)| (export_key(tenant, table, stamp_us), body))
            .collect();
        stream::iter(named.into_iter().map(|(key, mut body)| {
            async move {
                body.push(b']');
                // One buffer, shared by the write and the comparison (no copy).
                let body = Bytes::from(body);
                op.write(&key, body.clone())
                    .await
                    .map_err(|e| export_failed(&key, &e.to_string()))?;
                read_back_equal(op, &key, &body).await
            }
        }))
        .buffer_unordered(PARALLEL_WRITES)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }
}

/// Reads `key` back as a stream (OpenDAL's local reads come in chunks of at most 2 MiB) and
/// compares it with `body`: a file whole beside its own bytes would double what a batch in
/// flight holds.
async fn read_back_equal(op: &Operator, key: &str, body: &[u8]) -> Result<(), JobError> {
    let failed = |e: &dyn std::fmt::Display| export_failed(key, &format!("reading it back: {e}"));
    let reader = op.reader(key).await.map_err(|e| failed(&e))?;
    let mut chunks = reader.into_bytes_stream(..).await.map_err(|e| failed(&e))?;
    let mut at = 0usize;
    while let Some(chunk) = chunks.try_next().await.map_err(|e| failed(&e))? {
        let end = at + chunk.len();
        if body.get(at..end) != Some(&chunk[..]) {
            return Err(export_failed(
                key,
                &format!(
                    "read back, it differs from the {} bytes written within bytes {at}..{end}",
                    body.len()
                ),
            ));
        }
        at = end;
    }
    if at != body.len() {
        return Err(export_failed(
            key,
            &format!("read back {at} bytes of the {} written", body.len()),
        ));
    }
    Ok(())
}

/// Removes files an earlier attempt of the same batch wrote that this attempt did not (the
/// rows changed in between): the export then holds exactly what was deleted.
pub async fn remove_stale(op: &Operator, stale: Vec<String>) -> Result<(), JobError> {
    if stale.is_empty() {
        return Ok(());
    }
    op.delete_iter(stale)
        .await
        .map_err(|e| JobError::failed("export_failed", format!("removing a stale export: {e}")))
}

fn export_failed(key: &str, why: &str) -> JobError {
    JobError::failed(
        "export_failed",
        format!("exporting {key}: {why}; the batch's rows were not deleted"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_files_as_dify_does() {
        let tenant = Uuid::parse_str("3f8a2b1c-1d2e-4f5a-8b9c-0d1e2f3a4b5c").expect("uuid");
        let key = export_key(tenant, "messages", 1_767_312_000_012_345);
        assert_eq!(
            key,
            "free_plan_tenant_expired_logs/3f8a2b1c-1d2e-4f5a-8b9c-0d1e2f3a4b5c/messages/2026-01-02-1767312000.012345.json"
        );
    }

    #[tokio::test]
    async fn the_read_back_catches_any_difference_across_chunks() {
        let dir = std::env::temp_dir().join(format!("upkeep-readback-{}", Uuid::new_v4()));
        let op = Operator::new(opendal::services::Fs::default().root(&dir.to_string_lossy()))
            .expect("fs operator");
        let body: Vec<u8> = (0..(5 << 20) + 1000).map(|i| i as u8).collect();
        op.write("f.json", body.clone()).await.expect("write");
        assert!(read_back_equal(&op, "f.json", &body).await.is_ok());
        // A byte changed in a later chunk, a file cut short, a file longer than written.
        let mut changed = body.clone();
        changed[(4 << 20) + 7] ^= 1;
        assert!(read_back_equal(&op, "f.json", &changed).await.is_err());
        assert!(
            read_back_equal(&op, "f.json", &body[..body.len() - 1])
                .await
                .is_err()
        );
        let mut longer = body.clone();
        longer.push(b']');
        assert!(read_back_equal(&op, "f.json", &longer).await.is_err());
        assert!(read_back_equal(&op, "missing.json", &body).await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_json_array_per_tenant_and_table() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut files = Files::default();
        files.push(a, "messages", r#"{"id":1}"#);
        let mut other = Files::default();
        other.push(a, "messages", r#"{"id":"é"}"#);
        other.push(b, "messages", r#"{"id":3}"#);
        files.merge(other);
        assert_eq!(files.keys(1).len(), 2);
        let first = files.0.values().next().expect("a file");
        assert_eq!(first, br#"[{"id":1}, {"id":"\u00e9"}"#);
    }
}
