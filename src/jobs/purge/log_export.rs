//! Writing one purge batch's rows to storage in Dify's export layout, and proving they are
//! there before anything is deleted: `free_plan_tenant_expired_logs/{tenant}/{table}/
//! {YYYY-MM-DD}-{epoch}.json`, one JSON array per table and tenant.

use std::collections::BTreeMap;

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

/// The files of one batch: JSON arrays keyed by their storage key.
#[derive(Default)]
pub struct Files(BTreeMap<String, Vec<u8>>);

impl Files {
    /// Appends one row (JSON text) to the file of `tenant` and `table`.
    pub fn push(&mut self, tenant: Uuid, table: &str, stamp_us: i64, row: &str) {
        let body = self
            .0
            .entry(export_key(tenant, table, stamp_us))
            .or_default();
        body.extend_from_slice(if body.is_empty() { b"[" } else { b", " });
        let mut escaped = String::with_capacity(row.len());
        crate::dify::log_tables::ensure_ascii(row, &mut escaped);
        body.extend_from_slice(escaped.as_bytes());
    }

    pub fn keys(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    pub fn bytes(&self) -> u64 {
        self.0.values().map(|b| b.len() as u64 + 1).sum()
    }

    /// Writes every file, reads each back and compares it byte for byte.
    pub async fn write_verified(self, op: &Operator) -> Result<(), JobError> {
        stream::iter(self.0.into_iter().map(|(key, mut body)| async move {
            body.push(b']');
            op.write(&key, body.clone())
                .await
                .map_err(|e| export_failed(&key, &e.to_string()))?;
            let back = op
                .read(&key)
                .await
                .map_err(|e| export_failed(&key, &format!("reading it back: {e}")))?;
            if back.to_vec() != body {
                return Err(export_failed(
                    &key,
                    &format!(
                        "read back {} bytes that differ from the {} written",
                        back.len(),
                        body.len()
                    ),
                ));
            }
            Ok(())
        }))
        .buffer_unordered(PARALLEL_WRITES)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }
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

    #[test]
    fn one_json_array_per_tenant_and_table() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut files = Files::default();
        files.push(a, "messages", 1, r#"{"id":1}"#);
        files.push(a, "messages", 1, r#"{"id":"é"}"#);
        files.push(b, "messages", 1, r#"{"id":3}"#);
        assert_eq!(files.keys().len(), 2);
        let first = files.0.values().next().expect("a file");
        assert_eq!(first, br#"[{"id":1}, {"id":"\u00e9"}"#);
    }
}
