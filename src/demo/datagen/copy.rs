//! Streams rows into one table with `COPY ... FROM STDIN` in PostgreSQL's text format.
//!
//! Rows are encoded into a buffer that is sent whenever it passes [`CHUNK_BYTES`], so a table of
//! any size costs one buffer of memory and one round trip per chunk instead of one per row.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike};
use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgCopyIn, PgPool, PgPoolCopyExt};
use uuid::Uuid;

/// About 1 MiB per CopyData message: large enough that the per-message cost vanishes, small
/// enough to keep memory flat.
const CHUNK_BYTES: usize = 1 << 20;

/// One `COPY` in progress. Every row must get exactly as many fields as `columns` names.
pub(super) struct CopyWriter {
    copy: PgCopyIn<PoolConnection<Postgres>>,
    buf: Vec<u8>,
    columns: usize,
    fields_in_row: usize,
}

impl CopyWriter {
    /// Starts `COPY public.<table> (<columns>)`; `columns` is a comma-separated list.
    pub(super) async fn begin(
        pool: &PgPool,
        table: &str,
        columns: &str,
    ) -> Result<Self, sqlx::Error> {
        let statement = format!("COPY public.{table} ({columns}) FROM STDIN");
        let copy = pool.copy_in_raw(&statement).await?;
        Ok(Self {
            copy,
            buf: Vec::with_capacity(CHUNK_BYTES + 64 * 1024),
            columns: columns.split(',').count(),
            fields_in_row: 0,
        })
    }

    fn sep(&mut self) {
        if self.fields_in_row > 0 {
            self.buf.push(b'\t');
        }
        self.fields_in_row += 1;
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
        self.buf.push(b'\n');
        self.fields_in_row = 0;
        if self.buf.len() >= CHUNK_BYTES {
            self.copy.send(self.buf.as_slice()).await?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Sends what is left and returns the number of rows the server stored.
    pub(super) async fn finish(mut self) -> Result<u64, sqlx::Error> {
        if !self.buf.is_empty() {
            self.copy.send(self.buf.as_slice()).await?;
        }
        self.copy.finish().await
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
