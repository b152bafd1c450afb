//! The check before a dataset switches: the target holds exactly the records Dify's tables
//! name, sampled copies equal the source's points, and Dify's own search finds them.

use std::collections::HashSet;

use super::vector_copy::{Sampled, VECTOR_SAMPLE, absent_from, retried};
use crate::dify::vector_records::Record;
use crate::vector::config::AnyStore;
use crate::vector::store::{Point, VectorError, VectorStore};

/// Sampled points searched for with Dify's filter: each proves the filter and the vectors
/// work together; the vectors themselves are proven by the comparison.
const SEARCH_SAMPLE: usize = 2;

/// Ids named in a failed verification.
const LISTED: usize = 5;

/// What is checked: one group of the target against the records and the source.
pub struct Check<'a> {
    pub target: &'a AnyStore,
    pub collection: &'a str,
    pub group: &'a str,
    pub source: &'a AnyStore,
    pub source_collection: &'a str,
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
        collection,
        group,
        source,
        source_collection,
        expected,
        batch,
    } = *check;
    // The fill found every other record there; the filled ones are checked here. With those
    // present, a count equal to the records' means nothing else is in the group.
    let filled_ids: Vec<String> = filled.iter().map(|p| p.id.clone()).collect();
    let lost = absent_from(target, collection, &filled_ids, batch).await?;
    let counted = if exists {
        retried(|| target.count(collection, group)).await?
    } else {
        0
    };
    if counted != expected.len() as u64 || !lost.is_empty() {
        return Err(mismatch(target, collection, group, expected).await);
    }
    let source_ids: Vec<String> = sample.iter().map(|s| s.source_id.clone()).collect();
    let originals = retried(|| source.get(source_collection, &source_ids)).await?;
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
    let copies = retried(|| target.get(collection, &ids)).await?;
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
        let hits = retried(|| target.search(collection, group, &want.vector, 3)).await?;
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

/// What differs between the group's ids and the records' `doc_id`s, as an error.
async fn mismatch(
    target: &AnyStore,
    collection: &str,
    group: &str,
    expected: &[Record],
) -> VectorError {
    let held: HashSet<String> = match retried(|| target.ids(collection, group)).await {
        Ok(ids) => ids.into_iter().collect(),
        Err(e) => return e,
    };
    let wanted: HashSet<&str> = expected.iter().map(|r| r.doc_id.as_str()).collect();
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|id| !held.contains(*id))
        .take(LISTED)
        .collect();
    let extra: Vec<&str> = held
        .iter()
        .map(String::as_str)
        .filter(|id| !wanted.contains(id))
        .take(LISTED)
        .collect();
    VectorError::Layout(format!(
        "verification: the target holds {} points for this group, Dify's tables name {}; \
         missing e.g. {missing:?}; not among Dify's records e.g. {extra:?} (left by an earlier \
         `flask vdb-migrate`, or records deleted meanwhile: Upkeep deletes nothing it did not \
         write)",
        held.len(),
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
