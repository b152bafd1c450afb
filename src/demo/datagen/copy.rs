//! Streams rows into one table with `COPY ... FROM STDIN` in PostgreSQL's text format.
//!
//! Rows are encoded into a buffer that is sent whenever it passes [`CHUNK_BYTES`], so a table of
//! any size costs one buffer of memory and one round trip per chunk instead of one per row.
//!
//! Rows are written as Dify's newest schema has them; on an older release's schema, the
//! columns and tables that release lacks (and only those: `dify::shape` lists them) are left
//! out, so one generator fills every supported release.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike};
use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgCopyIn, PgPool, PgPoolCopyExt};
use uuid::Uuid;

use crate::dify::shape;

/// About 1 MiB per CopyData message: large enough that the per-message cost vanishes, small
/// enough to keep memory flat.
const CHUNK_BYTES: usize = 1 << 20;

/// One `COPY` in progress. Every row must get exactly as many fields as `columns` names.
pub(super) struct CopyWriter {
    /// None when this release has no such table: rows are dropped.
    copy: Option<PgCopyIn<PoolConnection<Postgres>>>,
    buf: Vec<u8>,
    columns: usize,
    /// Per column named: whether this database's table has it.
    keep: Vec<bool>,
    fields_in_row: usize,
    kept_in_row: usize,
    /// Where the field being written started, when its column is left out.
    drop_from: Option<usize>,
}

impl CopyWriter {
    /// Starts `COPY public.<table> (<columns>)`; `columns` is a comma-separated list.
    pub(super) async fn begin(
        pool: &PgPool,
        table: &str,
        columns: &str,
    ) -> Result<Self, sqlx::Error> {
        let names: Vec<&str> = columns.split(',').map(str::trim).collect();
        let present: Vec<String> = sqlx::query_scalar(
            "SELECT a.attname::text FROM pg_attribute a \
             WHERE a.attrelid = to_regclass('public.' || quote_ident($1)) \
               AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(table)
        .fetch_all(pool)
        .await?;
        let absent_table = present.is_empty() && shape::table_absent_up_to(table).is_some();
        // A column missing that no release lacks stays named, so COPY fails naming it.
        let keep: Vec<bool> = names
            .iter()
            .map(|n| {
                !absent_table && (present.iter().any(|p| p == n) || !shape::column_varies(table, n))
            })
            .collect();
        let copy = if absent_table {
            None
        } else {
            let kept: Vec<&str> = names
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(n, _)| *n)
                .collect();
            let statement = format!("COPY public.{table} ({}) FROM STDIN", kept.join(", "));
            Some(pool.copy_in_raw(&statement).await?)
        };
        Ok(Self {
            copy,
            buf: Vec::with_capacity(CHUNK_BYTES + 64 * 1024),
            columns: names.len(),
            keep,
            fields_in_row: 0,
            kept_in_row: 0,
            drop_from: None,
        })
    }

    /// Starts the next field: a separator, or a mark to drop it when its column is absent.
    fn sep(&mut self) {
        if let Some(from) = self.drop_from.take() {
            self.buf.truncate(from);
        }
        let keep = self.keep.get(self.fields_in_row).copied().unwrap_or(true);
        self.fields_in_row += 1;
        if !keep {
            self.drop_from = Some(self.buf.len());
            return;
        }
        if self.kept_in_row > 0 {
            self.buf.push(b'\t');
        }
        self.kept_in_row += 1;
    }

    pub(super) fn null(&mut self) -> &mut Self {
        self.sep();
        self.buf.extend_from_slice(b"\\N");
        self
    }

    pub(super) fn uuid(&mut self, id: Uuid) -> &mut Self {
        self.sep();
        let mut out = [0u8; 36];
        self.buf
            .extend_from_slice(id.hyphenated().encode_lower(&mut out).as_bytes());
        self
    }

    pub(super) fn opt_uuid(&mut self, id: Option<Uuid>) -> &mut Self {
        match id {
            Some(id) => self.uuid(id),
            None => self.null(),
        }
    }

    /// Any text: tab, newline, carriage return and backslash are escaped as COPY requires.
    pub(super) fn text(&mut self, value: &str) -> &mut Self {
        self.sep();
        escape_into(&mut self.buf, value.as_bytes());
        self
    }

    pub(super) fn opt_text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(value) => self.text(value),
            None => self.null(),
        }
    }

    /// Integers, booleans and numeric literals: never contain a byte COPY would need escaped.
    pub(super) fn int(&mut self, value: i64) -> &mut Self {
        self.sep();
        let _ = write!(Fmt(&mut self.buf), "{value}");
        self
    }

    pub(super) fn float(&mut self, value: f64) -> &mut Self {
        self.sep();
        let _ = write!(Fmt(&mut self.buf), "{value}");
        self
    }

    pub(super) fn boolean(&mut self, value: bool) -> &mut Self {
        self.sep();
        self.buf.push(if value { b't' } else { b'f' });
        self
    }

    /// A numeric written with the scale Dify's Decimal columns hold, e.g. `0.0010000`.
    pub(super) fn decimal(&mut self, value: f64, scale: usize) -> &mut Self {
        self.sep();
        let _ = write!(Fmt(&mut self.buf), "{value:.scale$}");
        self
    }

    /// A naive UTC `timestamp without time zone` from Unix seconds and microseconds.
    pub(super) fn ts(&mut self, secs: i64, micros: u32) -> &mut Self {
        self.sep();
        push_timestamp(&mut self.buf, secs, micros);
        self
    }

    pub(super) fn opt_ts(&mut self, value: Option<(i64, u32)>) -> &mut Self {
        match value {
            Some((secs, micros)) => self.ts(secs, micros),
            None => self.null(),
        }
    }

    /// Ends the row and sends the buffer once it is a chunk long.
    pub(super) async fn end_row(&mut self) -> Result<(), sqlx::Error> {
        debug_assert_eq!(
            self.fields_in_row, self.columns,
            "a COPY row must fill every column it names"
        );
        if let Some(from) = self.drop_from.take() {
            self.buf.truncate(from);
        }
        self.buf.push(b'\n');
        self.fields_in_row = 0;
        self.kept_in_row = 0;
        match self.copy.as_mut() {
            None => self.buf.clear(),
            Some(copy) if self.buf.len() >= CHUNK_BYTES => {
                copy.send(self.buf.as_slice()).await?;
                self.buf.clear();
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Sends what is left and returns the number of rows the server stored.
    pub(super) async fn finish(mut self) -> Result<u64, sqlx::Error> {
        let Some(mut copy) = self.copy.take() else {
            return Ok(0);
        };
        if !self.buf.is_empty() {
            copy.send(self.buf.as_slice()).await?;
        }
        copy.finish().await
    }
}

/// Lets `write!` append to the byte buffer without an intermediate String.
struct Fmt<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

fn escape_into(buf: &mut Vec<u8>, bytes: &[u8]) {
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(escaped);
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

fn push_timestamp(buf: &mut Vec<u8>, secs: i64, micros: u32) {
    let Some(at) = DateTime::from_timestamp(secs, 0) else {
        // Out of chrono's range cannot come from the generator's clock arithmetic.
        buf.extend_from_slice(b"1970-01-01 00:00:00");
        return;
    };
    let at = at.naive_utc();
    let _ = write!(
        Fmt(buf),
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        at.year(),
        at.month(),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    if micros > 0 {
        let _ = write!(Fmt(buf), ".{micros:06}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_bytes_copy_text_format_reserves() {
        let mut buf = Vec::new();
        escape_into(&mut buf, "a\tb\nc\\d\re – é".as_bytes());
        assert_eq!(String::from_utf8_lossy(&buf), "a\\tb\\nc\\\\d\\re – é");
    }

    #[test]
    fn writes_naive_utc_timestamps() {
        let mut buf = Vec::new();
        push_timestamp(&mut buf, 1_719_830_400, 0);
        buf.push(b' ');
        push_timestamp(&mut buf, 1_719_830_401, 42);
        assert_eq!(
            String::from_utf8_lossy(&buf),
            "2024-07-01 10:40:00 2024-07-01 10:40:01.000042"
        );
    }
}
