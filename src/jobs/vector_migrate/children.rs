//! `fan_out`: datasets (and annotation apps) shared among child jobs, each a `vector_migrate`
//! of its own datasets that any daemon claims. A dataset is in exactly one child, which copies,
//! verifies and switches it with its checkpoint as a lone job does, so each switch happens
//! once. The parent waits, then merges their results.

use super::*;
use crate::jobs::contract::fanout::ChildJob;
use crate::jobs::fanout;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ParentCheckpoint {
    children: Vec<Uuid>,
    /// Datasets and apps given to each child.
    units: Vec<u64>,
}

pub(super) async fn run_children(
    params: VectorMigrateParams,
    ctx: &mut JobCtx,
    target_cfg: &StoreConfig,
) -> Result<Value, JobError> {
    let cp = match ctx.checkpoint::<ParentCheckpoint>()? {
        Some(cp) => cp,
        None => split(&params, ctx, target_cfg).await?,
    };
    let ends = fanout::wait(ctx, &cp.children, &cp.units, "points").await?;
    let result = merge(target_cfg, &ends);
    ctx.partial_result(result.clone());
    ctx.check_stop()?;
    if ends.iter().any(|e| !e.succeeded()) {
        return Err(fanout::children_failed(&ends, result));
    }
    Ok(result)
}

/// Shares the units by expected points (largest first, each to the least loaded child) and
/// queues the children.
async fn split(
    params: &VectorMigrateParams,
    ctx: &mut JobCtx,
    target_cfg: &StoreConfig,
) -> Result<ParentCheckpoint, JobError> {
    let units = units(params, &ctx.pool, &ctx.settings, target_cfg).await?;
    let mut sized = Vec::with_capacity(units.len());
    for unit in units {
        let n = vector_records::expected_count(&ctx.pool, &unit.ds).await? as u64;
        sized.push((n, unit.ds.id, unit.ds.annotations));
    }
    sized.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let n = (params.fan_out as usize).clamp(1, sized.len().max(1));
    let mut shares: Vec<(u64, Vec<Uuid>, Vec<Uuid>)> = vec![(0, Vec::new(), Vec::new()); n];
    for (points, id, annotations) in sized {
        let Some(least) = shares.iter_mut().min_by_key(|s| s.0) else {
            break;
        };
        least.0 += points;
        if annotations {
            least.2.push(id);
        } else {
            least.1.push(id);
        }
    }
    shares.retain(|(_, ds, apps)| !ds.is_empty() || !apps.is_empty());
    let counts: Vec<u64> = shares
        .iter()
        .map(|(_, ds, apps)| (ds.len() + apps.len()) as u64)
        .collect();
    let mut children = Vec::with_capacity(shares.len());
    for (_, datasets, apps) in shares {
        // Each child names exactly its share: a scope without ids would mean "all".
        let scope = match (datasets.is_empty(), apps.is_empty()) {
            (false, true) => Scope::Knowledge,
            (true, false) => Scope::Annotation,
            _ => Scope::All,
        };
        let child = VectorMigrateParams {
            scope: Some(scope),
            dataset_ids: (!datasets.is_empty()).then_some(datasets),
            app_ids: (!apps.is_empty()).then_some(apps),
            fan_out: 1,
            ..params.clone()
        };
        children.push(
            serde_json::to_value(child).map_err(|e| JobError::failed("internal", e.to_string()))?,
        );
    }
    let ids = fanout::spawn(ctx, children, |ids| ParentCheckpoint {
        children: ids,
        units: counts.clone(),
    })
    .await?;
    Ok(ParentCheckpoint {
        children: ids,
        units: counts,
    })
}

/// The family's result: every child's datasets, counts summed, and the children.
fn merge(target_cfg: &StoreConfig, ends: &[fanout::ChildEnd]) -> Value {
    let mut datasets = Vec::new();
    let mut notes: Vec<Value> = Vec::new();
    let mut annotations = None;
    let (mut migrated, mut switched, mut failed) = (0u64, 0u64, 0u64);
    for end in ends {
        let Some(r) = &end.result else { continue };
        datasets.extend(r["datasets"].as_array().cloned().unwrap_or_default());
        migrated += r["migrated"].as_u64().unwrap_or(0);
        switched += r["switched"].as_u64().unwrap_or(0);
        failed += r["failed"].as_u64().unwrap_or(0);
        for note in r["target_notes"].as_array().into_iter().flatten() {
            if !notes.contains(note) {
                notes.push(note.clone());
            }
        }
        if annotations.is_none() && r["annotations"].is_string() {
            annotations = Some(r["annotations"].clone());
        }
    }
    let children: Vec<ChildJob> = ends.iter().map(|e| e.summary.clone()).collect();
    let mut result = json!({
        "target": target_cfg.describe(),
        "datasets": datasets,
        "migrated": migrated,
        "switched": switched,
        "failed": failed,
        "children": children,
    });
    if !notes.is_empty() {
        result["target_notes"] = json!(notes);
    }
    if let Some(a) = annotations {
        result["annotations"] = a;
    }
    result
}
