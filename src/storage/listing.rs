//! Listing a storage root (or some prefixes of it) as object keys with their sizes, in
//! batches: what a migration or a backup walks.

use futures_util::TryStreamExt;
use opendal::{EntryMode, Operator};

use super::transfer::Side;
use crate::jobs::JobError;

/// The source's object keys (never directories), prefix by prefix, in batches.
pub struct Listing<'a> {
    op: &'a Operator,
    side: Side,
    pending: std::vec::IntoIter<String>,
    current: Option<opendal::Lister>,
}

impl<'a> Listing<'a> {
    pub fn new(op: &'a Operator, side: Side, prefixes: Vec<String>) -> Listing<'a> {
        Listing {
            op,
            side,
            pending: prefixes.into_iter(),
            current: None,
        }
    }

    /// Keys with the size the listing gave (0 when it did not say).
    pub async fn next_batch(&mut self, n: usize) -> Result<Option<Vec<(String, u64)>>, JobError> {
        let mut batch = Vec::with_capacity(n);
        while batch.len() < n {
            if self.current.is_none() {
                let Some(prefix) = self.pending.next() else {
                    break;
                };
                if prefix.is_empty() {
                    self.current = self.list("").await?;
                    continue;
                }
                // A prefix may name a root-level file (`.dify_secret_key`) as well as a directory.
                if let Ok(meta) = self.op.stat(&prefix).await
                    && meta.mode() == EntryMode::FILE
                {
                    batch.push((prefix.clone(), meta.content_length()));
                }
                self.current = self.list(&format!("{prefix}/")).await?;
                continue;
            }
            let Some(lister) = self.current.as_mut() else {
                continue;
            };
            match lister.try_next().await {
                Ok(Some(entry)) => {
                    let meta = entry.metadata();
                    if meta.mode() == EntryMode::FILE && !entry.path().ends_with('/') {
                        batch.push((entry.path().to_string(), meta.content_length()));
                    }
                }
                Ok(None) => self.current = None,
                Err(e) => return Err(self.failed("", e)),
            }
        }
        Ok((!batch.is_empty()).then_some(batch))
    }

    async fn list(&self, path: &str) -> Result<Option<opendal::Lister>, JobError> {
        match self.op.lister_with(path).recursive(true).await {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.failed(path, e)),
        }
    }

    fn failed(&self, path: &str, e: opendal::Error) -> JobError {
        let code = match self.side {
            Side::Source => "source_failed",
            Side::Target => "target_failed",
        };
        JobError::failed(code, format!("{code}: listing {path:?}: {e}"))
    }
}

/// The units a copy is split into for child jobs: every path `depth` segments deep under the
/// root (Dify keeps files under `<kind>/<tenant_id>/`, so depth 2 is one tenant's files of one
/// kind), and every file found above that depth. `prefixes` deeper than `depth` stay whole.
pub async fn units(
    op: &Operator,
    prefixes: &[String],
    depth: usize,
) -> Result<Vec<String>, JobError> {
    let mut units = Vec::new();
    let mut pending: Vec<String> = prefixes.to_vec();
    while let Some(path) = pending.pop() {
        let segments = path.split('/').filter(|s| !s.is_empty()).count();
        if segments >= depth {
            units.push(path);
            continue;
        }
        let dir = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        // A prefix may name a root-level file as well as a directory.
        if !path.is_empty()
            && let Ok(meta) = op.stat(&path).await
            && meta.mode() == EntryMode::FILE
        {
            units.push(path.clone());
        }
        let entries = match op.list(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(JobError::failed(
                    "source_failed",
                    format!("source_failed: listing {dir:?}: {e}"),
                ));
            }
        };
        for entry in entries {
            let p = entry.path();
            // Some services list the directory itself (`/` for the root).
            if p == dir || p.is_empty() || p == "/" {
                continue;
            }
            match p.strip_suffix('/') {
                Some(sub) => pending.push(sub.to_string()),
                None => units.push(p.to_string()),
            }
        }
    }
    units.sort();
    units.dedup();
    Ok(units)
}
