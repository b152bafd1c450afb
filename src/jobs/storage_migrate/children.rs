//! `fan_out`: the copy split into child jobs by tenant prefix. The parent queues them, waits,
//! then takes their ledgers over as its own, so the database update, the cross-check and the
//! source deletion run once, in the parent, exactly as after a copy of its own.

use super::*;
use crate::jobs::contract::fanout::ChildJob;

/// Prefixes this many segments deep are one unit of the split: `upload_files/<tenant_id>`.
pub(super) const UNIT_DEPTH: usize = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Children {
    ids: Vec<Uuid>,
    /// Prefixes given to each child.
    units: Vec<u64>,
    /// How each ended, once all have.
    #[serde(default)]
    pub(super) ends: Vec<ChildJob>,
}

/// The parent's copy phase: split, queue the children (once), wait for them, merge.
pub(super) async fn copy_in_children(
    params: &StorageMigrateParams,
    ctx: &mut JobCtx,
    src: &Operator,
    cp: &mut Checkpoint,
) -> Result<(), JobError> {
    let children = match cp.children.clone() {
        Some(children) => children,
        None => {
            ctx.progress(split_progress(0), true).await?;
            let prefixes = prefix_paths(params).map_err(invalid)?;
            let units = crate::storage::listing::units(src, &prefixes, UNIT_DEPTH).await?;
            ctx.progress(split_progress(units.len() as u64), true)
                .await?;
            let shares = fanout::shares(&units, params.fan_out as usize);
            let counts: Vec<u64> = shares.iter().map(|s| s.len() as u64).collect();
            let mut child_params = Vec::with_capacity(shares.len());
            for share in shares {
                let child = StorageMigrateParams {
                    prefixes: Some(share),
                    fan_out: 1,
                    update_db: false,
                    delete_source: false,
                    ..params.clone()
                };
                child_params.push(
                    serde_json::to_value(child)
                        .map_err(|e| JobError::failed("internal", e.to_string()))?,
                );
            }
            let base = cp.clone();
            let ids = fanout::spawn(ctx, child_params, |ids| Checkpoint {
                children: Some(Children {
                    ids,
                    units: counts.clone(),
                    ends: Vec::new(),
                }),
                ..base
            })
            .await?;
            Children {
                ids,
                units: counts,
                ends: Vec::new(),
            }
        }
    };
    let ends = fanout::wait(ctx, &children.ids, &children.units, "objects").await?;
    cp.vanished = 0;
    for end in &ends {
        let r = end.result.as_ref().unwrap_or(&Value::Null);
        cp.vanished += r["vanished_from_source"].as_u64().unwrap_or(0);
    }
    cp.children = Some(Children {
        ends: ends.iter().map(|e| e.summary.clone()).collect(),
        ..children
    });
    let merged = json!({
        "children": ends.iter().map(|e| &e.summary).collect::<Vec<_>>(),
    });
    ctx.partial_result(merged.clone());
    ctx.check_stop()?;
    if ends.iter().any(|e| !e.succeeded()) {
        ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
        return Err(fanout::children_failed(&ends, merged));
    }
    adopt_ledgers(ctx, &ends).await
}

/// Moves the children's verified objects into the parent's ledger, a child per transaction
/// (again on a resume: a child already taken over has nothing left). The children's shares
/// never overlap, so no key is recorded twice.
async fn adopt_ledgers(ctx: &mut JobCtx, ends: &[fanout::ChildEnd]) -> Result<(), JobError> {
    for end in ends {
        ctx.check_stop()?;
        sqlx::query("UPDATE upkeep.storage_objects SET job_id = $1 WHERE job_id = $2")
            .bind(ctx.job_id)
            .bind(end.id)
            .execute(&ctx.pool)
            .await?;
    }
    Ok(())
}

fn split_progress(units: u64) -> Progress {
    Progress {
        phase: "split into child jobs".into(),
        done: units,
        unit: "prefixes".into(),
        ..Default::default()
    }
}

/// What a child reports: its share of the copy, verified.
pub(super) async fn child_result(
    ctx: &JobCtx,
    params: &StorageMigrateParams,
    cp: &Checkpoint,
) -> Result<Value, JobError> {
    let Ledger {
        copied,
        copied_bytes,
        replaced,
        replaced_bytes,
        already,
        already_bytes,
    } = Ledger::of(ctx).await?;
    let result = json!({
        "prefixes": params.prefixes.as_ref().map_or(0, Vec::len),
        "copied": copied,
        "replaced": replaced,
        "already_there": already,
        "failed": cp.failed,
        "vanished_from_source": cp.vanished,
        "bytes_copied": copied_bytes + replaced_bytes,
        "bytes_verified": copied_bytes + replaced_bytes + already_bytes,
        "failures": cp.failures,
    });
    if cp.failed > 0 {
        return Err(JobError::Failed {
            code: "objects_failed",
            message: format!("{} object(s) of this share could not be copied", cp.failed),
            result: Some(result),
        });
    }
    Ok(result)
}
