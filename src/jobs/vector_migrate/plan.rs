//! `vector_migrate`'s dry run: per dataset and app, the records Dify's tables name, what the
//! source holds of them (read without vectors), what Dify's `embeddings` cache has of the
//! rest, and the bytes a copy moves. Writes nothing.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sqlx::PgPool;

use super::super::{JobCtx, JobError};
use super::params::VectorMigrateParams;
use super::unit::Outcome;
use super::units::{invalid, target_config, units};
use crate::dify::vector_records::{self, Dataset};
use crate::vector::StoreConfig;
use crate::vector::store::{Location, VectorError, VectorSource, VectorStore};

/// What a run would do, per dataset and app, reading the source without vectors.
pub async fn plan(params: VectorMigrateParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
    let target_cfg = target_config(&params, &ctx.settings).map_err(invalid)?;
    let revision = crate::dify::revision(&ctx.pool).await?;
    let target = target_cfg.open_target(revision.as_deref()).await;
    let units = units(&params, &ctx.pool, &ctx.settings, &target_cfg).await?;
    let mut planned = Vec::new();
    for unit in &units {
        ctx.check_stop()?;
        let expected = vector_records::expected(&ctx.pool, &unit.ds).await?;
        let o = Outcome::new(unit, target_cfg.kind());
        let mut entry = json!({
            "source": o.source, "target": o.target, "expected": expected.len(),
        });
        match (o.dataset_id, o.app_id) {
            (Some(id), _) => entry["dataset_id"] = json!(id),
            (_, Some(id)) => entry["app_id"] = json!(id),
            _ => {}
        }
        if let Ok(target) = &target
            && let Ok(Some(info)) = target.describe(&unit.at.collection).await
        {
            entry["target_dimension"] = json!(info.dimension);
        }
        match &unit.source {
            Err(e) => entry["error"] = json!(e),
            Ok((config, at)) => match scan(config, at, &expected, params.batch_size).await {
                Ok(scan) => {
                    let cached = cached(&ctx.pool, &unit.ds, &scan.missing).await?;
                    entry["source_points"] = json!(scan.points);
                    entry["dimension"] = json!(scan.dimension);
                    entry["missing_vectors"] = json!(scan.missing.len());
                    entry["missing_in_cache"] = json!(cached);
                    entry["strays"] = json!(scan.points - scan.matched);
                    entry["estimated_bytes"] = json!(scan.bytes);
                }
                Err(e) => entry["error"] = json!(e.to_string()),
            },
        }
        planned.push(entry);
    }
    let mut result = json!({"target": target_cfg.describe(), "datasets": planned});
    // What the target lacks of Dify's layout, or why it could not be asked.
    match &target {
        Ok(t) if !t.notes().is_empty() => result["target_notes"] = json!(t.notes()),
        Ok(_) => {}
        Err(e) => result["target_error"] = json!(e.to_string()),
    }
    Ok(result)
}

/// What a dry run learns of a source collection, without reading vectors.
struct Scan {
    points: u64,
    matched: u64,
    dimension: Option<usize>,
    bytes: u64,
    /// Records the source lacks.
    missing: Vec<vector_records::Record>,
}

async fn scan(
    config: &StoreConfig,
    at: &Location,
    expected: &[vector_records::Record],
    batch: u32,
) -> Result<Scan, VectorError> {
    let store = config.open().await?;
    let mut wanted: BTreeMap<&str, bool> = expected
        .iter()
        .map(|r| (r.doc_id.as_str(), false))
        .collect();
    let mut scan = Scan {
        points: 0,
        matched: 0,
        dimension: None,
        bytes: 0,
        missing: Vec::new(),
    };
    if let Some(info) = store.describe(&at.collection).await? {
        scan.dimension = info.dimension;
        let mut cursor: Option<String> = None;
        loop {
            let page = store
                .read_page(at, cursor.as_deref(), batch as usize, false)
                .await?;
            for p in &page.points {
                scan.points += 1;
                if let Some(seen) = p.doc_id().and_then(|d| wanted.get_mut(d)) {
                    *seen = true;
                    scan.matched += 1;
                    let metadata = serde_json::to_vec(&p.metadata).map_or(0, |m| m.len());
                    let vector = scan.dimension.unwrap_or(0) * 4;
                    scan.bytes += (vector + p.text.len() + metadata) as u64;
                }
            }
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
    }
    scan.missing = expected
        .iter()
        .filter(|r| wanted.get(r.doc_id.as_str()) == Some(&false))
        .cloned()
        .collect();
    Ok(scan)
}

/// How many of the records the source lacks Dify's `embeddings` cache holds.
async fn cached(
    pool: &PgPool,
    ds: &Dataset,
    missing: &[vector_records::Record],
) -> Result<usize, JobError> {
    let (Some(model), Some(provider)) = (&ds.embedding_model, &ds.embedding_model_provider) else {
        return Ok(0);
    };
    let mut found = 0;
    for chunk in missing.chunks(1000) {
        let hashes: Vec<String> = chunk.iter().map(|r| r.cache_hash.clone()).collect();
        found += vector_records::cached_count(pool, model, provider, &hashes).await? as usize;
    }
    Ok(found)
}
