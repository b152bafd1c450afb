//! The check before a dataset switches: the target holds exactly the records Dify's tables
//! name, sampled copies equal the source's points, and Dify's own search finds them.

use std::collections::HashSet;

use super::vector_copy::{Sampled, VECTOR_SAMPLE, retried};
use crate::dify::vector_records::Record;
use crate::vector::config::AnyStore;
use crate::vector::store::{Point, VectorError, VectorStore};

/// Sampled points searched for with Dify's filter: each proves the filter and the vectors
/// work together; the vectors themselves are proven by the comparison.
const SEARCH_SAMPLE: usize = 2;

/// Ids named in a failed verification.
const LISTED: usize = 5;

/// A collection in a store.
#[derive(Clone, Copy)]
pub struct Place<'a> {
    pub store: &'a AnyStore,
    pub collection: &'a str,
}

/// The target holds exactly the unit's records; sampled copies equal the source's points
/// (within what a cosine store's renormalisation changes) and filled ones what was
/// written; Dify's own search (the group filter) finds sampled points first.
pub async fn verify(
    target: Place<'_>,
    source: Place<'_>,
    group: &str,
    expected: &[Record],
    exists: bool,
    sample: &[Sampled],
    filled: &[Point],
) -> Result<(), VectorError> {
    let (collection, target) = (target.collection, target.store);
    // The group's ids equal the records' doc_ids: every record there, nothing else.
    let held: HashSet<String> = if exists {
        retried(|| target.ids(collection, group))
            .await?
            .into_iter()
            .collect()
    } else {
        HashSet::new()
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
    if !missing.is_empty() || !extra.is_empty() {
        return Err(VectorError::Layout(format!(
            "verification: the target holds {} points for this group, Dify's tables name {}; \
             missing e.g. {missing:?}; not among Dify's records e.g. {extra:?} (left by an \
             earlier `flask vdb-migrate`, or records deleted meanwhile: Upkeep deletes nothing it \
             did not write)",
            held.len(),
            wanted.len()
        )));
    }
    let source_ids: Vec<String> = sample.iter().map(|s| s.source_id.clone()).collect();
    let originals = retried(|| source.store.get(source.collection, &source_ids)).await?;
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
