//! Records a copy cannot take from the source store: rebuilt as Dify would have written them,
//! their vectors from Dify's `embeddings` cache or an embeddings endpoint; and the catch-up
//! with what Dify added, edited or deleted in a dataset while it was being copied.

use std::collections::{HashMap, HashSet};

use super::super::JobError;
use super::params::MissingVectors;
use super::unit::{Copy, MISSING_LISTED, Outcome, retried};
use crate::dify::vector_records::{self, Record};
use crate::vector::store::{Point, VectorError, VectorTarget};

/// Points rebuilt from Dify's tables and where their vectors came from.
#[derive(Default)]
pub(super) struct Rebuilt {
    pub(super) points: Vec<Point>,
    pub(super) from_cache: u64,
    pub(super) reembedded: u64,
}

impl Copy<'_> {
    /// Points for `records` as Dify would have written them, their vectors from the cache
    /// and then the endpoint; an error naming those neither has (in `outcome.missing`).
    pub(super) async fn rebuild(
        &self,
        records: &[&Record],
        dimension: Option<usize>,
        outcome: &mut Outcome,
    ) -> Result<Result<Rebuilt, VectorError>, JobError> {
        let mut done = Rebuilt::default();
        let mut wrong_size = 0usize;
        if self.shared.missing != MissingVectors::Fail {
            let points = self.cached_points(records).await?;
            done.from_cache = keep_sized(points, dimension, &mut done.points, &mut wrong_size);
        }
        if self.shared.missing == MissingVectors::Reembed {
            let have: HashSet<&str> = done.points.iter().map(|p| p.id.as_str()).collect();
            let left: Vec<&Record> = records
                .iter()
                .copied()
                .filter(|r| !have.contains(r.doc_id.as_str()))
                .collect();
            let points = match self.reembed(&left).await? {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            done.reembedded = keep_sized(points, dimension, &mut done.points, &mut wrong_size);
        }
        let have: HashSet<&str> = done.points.iter().map(|p| p.id.as_str()).collect();
        let still: Vec<&&Record> = records
            .iter()
            .filter(|r| !have.contains(r.doc_id.as_str()))
            .collect();
        if still.is_empty() {
            return Ok(Ok(done));
        }
        outcome.missing = still
            .iter()
            .take(MISSING_LISTED)
            .map(|r| format!("{} {}", r.kind, r.doc_id))
            .collect();
        let whence = match self.shared.missing {
            MissingVectors::Fail => "",
            MissingVectors::EmbeddingCache => " nor in Dify's embeddings cache",
            MissingVectors::Reembed => {
                " nor in Dify's embeddings cache, and the endpoint cannot embed them (attachments)"
            }
        };
        let sized = if wrong_size > 0 {
            format!("; {wrong_size} found had the wrong dimension")
        } else {
            String::new()
        };
        Ok(Err(VectorError::Layout(format!(
            "{} record(s) have no vector in the source{whence}{sized}",
            still.len()
        ))))
    }

    /// Brings the copy along with what Dify changed in the dataset's tables while it was
    /// copied (`before`: the records the copy started from). Points of records Dify deleted
    /// go, as Dify's own delete would have removed them from the store it was using; records
    /// it added or edited are rebuilt from the cache (Dify embedded them through it) or the
    /// endpoint, overwriting a stale copy.
    pub(super) async fn catch_up(
        &self,
        before: &[Record],
        now: &[Record],
        outcome: &mut Outcome,
    ) -> Result<Result<Vec<Point>, VectorError>, JobError> {
        let had: HashMap<&str, &str> = before
            .iter()
            .map(|r| (r.doc_id.as_str(), r.cache_hash.as_str()))
            .collect();
        let has: HashSet<&str> = now.iter().map(|r| r.doc_id.as_str()).collect();
        let removed: Vec<String> = before
            .iter()
            .filter(|r| !has.contains(r.doc_id.as_str()))
            .map(|r| r.doc_id.clone())
            .collect();
        let changed: Vec<&Record> = now
            .iter()
            .filter(|r| had.get(r.doc_id.as_str()) != Some(&r.cache_hash.as_str()))
            .collect();
        let target = &self.shared.target;
        let exists = match self.target_dimension().await {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        if !removed.is_empty()
            && exists.is_some()
            && let Err(e) = retried(|| target.remove(&self.unit.at, &removed)).await
        {
            return Ok(Err(e));
        }
        let dimension = exists.flatten();
        let rebuilt = match self.rebuild(&changed, dimension, outcome).await? {
            Ok(r) => r,
            Err(e) => {
                outcome.restart = true;
                return Ok(Err(VectorError::Layout(format!(
                    "Dify changed the dataset during the copy and the changes cannot all be \
                     brought along ({e}); a retry copies it again from the source"
                ))));
            }
        };
        outcome.from_cache += rebuilt.from_cache;
        outcome.reembedded += rebuilt.reembedded;
        outcome.changed_during_copy += changed.len() as u64;
        outcome.removed_during_copy += removed.len() as u64;
        Ok(self
            .write_all(&rebuilt.points)
            .await
            .map(|()| rebuilt.points))
    }

    /// Points for `absent` records from Dify's `embeddings` cache, with the text and metadata
    /// Dify would have written.
    async fn cached_points(&self, absent: &[&Record]) -> Result<Vec<Point>, JobError> {
        let ds = &self.unit.ds;
        let (Some(model), Some(provider)) = (&ds.embedding_model, &ds.embedding_model_provider)
        else {
            return Ok(Vec::new());
        };
        let mut points = Vec::new();
        for chunk in absent.chunks(self.shared.batch) {
            let hashes: Vec<String> = chunk.iter().map(|r| r.cache_hash.clone()).collect();
            let vectors =
                vector_records::cached_vectors(&self.shared.pool, model, provider, &hashes).await?;
            let hash_of: HashMap<&str, &str> = chunk
                .iter()
                .map(|r| (r.doc_id.as_str(), r.cache_hash.as_str()))
                .collect();
            let ids: Vec<String> = chunk.iter().map(|r| r.doc_id.clone()).collect();
            for r in vector_records::rebuilt(&self.shared.pool, ds, &ids).await? {
                if let Some(v) = hash_of.get(r.doc_id.as_str()).and_then(|h| vectors.get(*h)) {
                    points.push(Point {
                        id: r.doc_id,
                        vector: v.clone(),
                        text: r.text,
                        metadata: r.metadata,
                    });
                }
            }
        }
        Ok(points)
    }

    /// Points for `absent` text records from the embeddings endpoint.
    async fn reembed(
        &self,
        absent: &[&Record],
    ) -> Result<Result<Vec<Point>, VectorError>, JobError> {
        let Some(embedder) = &self.shared.embedder else {
            return Ok(Ok(Vec::new()));
        };
        let ds = &self.unit.ds;
        let model = ds.embedding_model.as_deref().unwrap_or_default();
        let mut points = Vec::new();
        for chunk in absent.chunks(self.shared.batch) {
            let ids: Vec<String> = chunk
                .iter()
                .filter(|r| r.kind != "attachment")
                .map(|r| r.doc_id.clone())
                .collect();
            if ids.is_empty() {
                continue;
            }
            let rebuilt = vector_records::rebuilt(&self.shared.pool, ds, &ids).await?;
            let texts: Vec<String> = rebuilt.iter().map(|r| r.text.clone()).collect();
            let vectors = match retried(|| embedder.embed(model, &texts)).await {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            points.extend(rebuilt.into_iter().zip(vectors).map(|(r, vector)| Point {
                id: r.doc_id,
                vector,
                text: r.text,
                metadata: r.metadata,
            }));
        }
        Ok(Ok(points))
    }
}

/// Moves points whose dimension fits the collection into `into`; returns how many.
fn keep_sized(
    points: Vec<Point>,
    dimension: Option<usize>,
    into: &mut Vec<Point>,
    wrong: &mut usize,
) -> u64 {
    let want = dimension.or_else(|| into.first().map(|p| p.vector.len()));
    let mut kept = 0;
    for p in points {
        if want.is_some_and(|d| d != p.vector.len()) {
            *wrong += 1;
        } else {
            into.push(p);
            kept += 1;
        }
    }
    kept
}

/// The same records with the same contents (`cache_hash` is the text's hash).
pub(super) fn same_records(a: &[Record], b: &[Record]) -> bool {
    a.len() == b.len() && contents(a) == contents(b)
}

pub(super) fn contents(records: &[Record]) -> Vec<(&str, &str)> {
    let mut k: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r.doc_id.as_str(), r.cache_hash.as_str()))
        .collect();
    k.sort_unstable();
    k
}
