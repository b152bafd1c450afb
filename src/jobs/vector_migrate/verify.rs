//! The check before a dataset switches: the target holds exactly the records Dify's tables
//! name, sampled copies equal the source's points, and Dify's own search finds them.

use std::collections::HashSet;

use super::unit::{Sampled, VECTOR_SAMPLE, absent_from, retried};
use crate::dify::vector_records::Record;
use crate::vector::AnyStore;
use crate::vector::store::{Location, Point, VectorError, VectorSource, VectorTarget};

/// Sampled points searched for with Dify's filter: each proves the filter and the vectors
/// work together; the vectors themselves are proven by the comparison.
const SEARCH_SAMPLE: usize = 2;

/// Ids named in a failed verification.
const LISTED: usize = 5;

/// What is checked: one group of the target against the records and the source.
pub struct Check<'a> {
    pub target: &'a AnyStore,
    pub at: &'a Location,
    pub source: &'a AnyStore,
    pub source_at: &'a Location,
    pub expected: &'a [Record],
    /// Ids per presence request.
    pub batch: usize,
}

/// The target holds exactly the unit's records; sampled copies equal the source's points
/// (within what a cosine store's renormalisation changes) and filled ones what was
/// written; Dify's own search (the group filter) finds sampled points first.
/// `exists`: whether the target collection exists at all.
pub async fn verify(
    check: &Check<'_>,
    exists: bool,
    sample: &[Sampled],
    filled: &[Point],
) -> Result<(), VectorError> {
    let Check {
        target,
        at,
        source,
        source_at,
        expected,
        batch,
    } = *check;
    // The fill found every other record there; the filled ones are checked here. With those
    // present, a count equal to the records' means nothing else is in the group.
    let filled_ids: Vec<String> = filled.iter().map(|p| p.id.clone()).collect();
    let lost = absent_from(target, at, &filled_ids, batch).await?;
    let counted = if exists {
        retried(|| target.count(at)).await?
    } else {
        0
    };
    if counted != expected.len() as u64 || !lost.is_empty() {
        return Err(mismatch(target, at, expected, batch).await);
    }
    let source_ids: Vec<String> = sample.iter().map(|s| s.source_id.clone()).collect();
    let originals = retried(|| source.fetch(source_at, &source_ids)).await?;
    let mut wanted: Vec<Point> = Vec::new();
    for s in sample {
        let Some(original) = originals.iter().find(|p| p.id == s.source_id) else {
            return Err(VectorError::Layout(format!(
                "verification: source point {} ({}) is gone from the source",
                s.source_id, s.doc_id
            )));
        };
        wanted.push(Point {
            id: s.doc_id.clone(),
            ..original.clone()
        });
    }
    wanted.extend(filled.iter().take(VECTOR_SAMPLE).cloned());
    let ids: Vec<String> = wanted.iter().map(|p| p.id.clone()).collect();
    let copies = retried(|| target.read_back(at, &ids)).await?;
    for want in &wanted {
        let Some(copy) = copies.iter().find(|c| c.id == want.id) else {
            return Err(VectorError::Layout(format!(
                "verification: {} is missing",
                want.id
            )));
        };
        if !same_direction(&want.vector, &copy.vector)
            || copy.metadata != want.metadata
            || copy.text != want.text
        {
            return Err(VectorError::Layout(format!(
                "verification: {} differs from what was copied",
                want.id
            )));
        }
    }
    for want in wanted.iter().take(SEARCH_SAMPLE) {
        // Dify's search, narrowed to the point's own document as a retrieval with a
        // document filter is (annotations have none).
        let documents: Vec<String> = want
            .metadata
            .get("document_id")
            .and_then(|d| d.as_str())
            .map(|d| vec![d.to_string()])
            .unwrap_or_default();
        let hits = retried(|| target.search(at, &want.vector, 3, &documents)).await?;
        let top = hits.first().map(|h| h.score).unwrap_or(f32::MIN);
        if !hits
            .iter()
            .any(|h| h.id == want.id && h.score >= top - 1e-5)
        {
            return Err(VectorError::Layout(format!(
                "verification: searching with {}'s own vector does not return it first",
                want.id
            )));
        }
    }
    Ok(())
}

/// What differs between the `doc_id`s at `at` and the records', as an error; the target's
/// ids are read a page at a time.
async fn mismatch(
    target: &AnyStore,
    at: &Location,
    expected: &[Record],
    batch: usize,
) -> VectorError {
    let wanted: HashSet<&str> = expected.iter().map(|r| r.doc_id.as_str()).collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut extra: Vec<String> = Vec::new();
    let mut held = 0usize;
    let mut twice = 0usize;
    let mut cursor: Option<String> = None;
    loop {
        let (ids, next) =
            match retried(|| target.doc_ids(at, cursor.as_deref(), batch.max(100))).await {
                Ok(page) => page,
                Err(e) => return e,
            };
        held += ids.len();
        for id in ids {
            if !wanted.contains(id.as_str()) {
                if extra.len() < LISTED {
                    extra.push(id);
                }
            } else if !seen.insert(id) {
                twice += 1;
            }
        }
        match next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|id| !seen.contains(*id))
        .take(LISTED)
        .collect();
    VectorError::Layout(format!(
        "verification: the target holds {held} points for this group, Dify's tables name {}; \
         missing e.g. {missing:?}; {twice} held more than once; not among Dify's records e.g. \
         {extra:?} (left by an earlier `flask vdb-migrate`, or records deleted meanwhile: Upkeep \
         deletes nothing it did not write)",
        wanted.len()
    ))
}

/// Equal once both are unit length, to float32 precision: Qdrant (cosine) normalises what
/// it stores, so a copy may differ from the source in the last bits (dify-reference §5.3).
fn same_direction(a: &[f32], b: &[f32]) -> bool {
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let (na, nb) = (norm(a), norm(b));
    a.len() == b.len()
        && na > 0.0
        && nb > 0.0
        && a.iter()
            .zip(b)
            .all(|(x, y)| (f64::from(*x) / na - f64::from(*y) / nb).abs() <= 1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_compare_after_normalising() {
        assert!(same_direction(&[3.0, 4.0], &[0.6, 0.8]));
        assert!(!same_direction(&[3.0, 4.0], &[0.8, 0.6]));
        assert!(!same_direction(&[0.0, 0.0], &[0.0, 0.0]));
        assert!(!same_direction(&[1.0], &[1.0, 0.0]));
    }
}
