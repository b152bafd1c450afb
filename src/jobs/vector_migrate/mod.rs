//! `vector_migrate`: moves knowledge bases and annotation replies to another vector store by
//! copying the stored vectors (no re-embedding), the way `flask vdb-migrate` should: every
//! record kind and metadata key as found, Dify's exact target layout, records the source lacks
//! from Dify's `embeddings` cache (or an embeddings endpoint), a verification per dataset, and
//! only then `datasets.index_struct` switches, in one short transaction. Datasets run in
//! parallel (`copy` does one); this file selects them, checkpoints what they report, and
//! switches. A dataset that fails keeps pointing at its old store.
//!
//! The files of this folder: `params`; `unit` (what they share); `units` (which datasets and
//! apps, from where to where); `copy` (one unit), `fill` (records the source lacks, changes
//! made meanwhile), `verify`; `plan` (the dry run). None imports another both ways.

mod children;
mod copy;
mod fill;
mod params;
mod plan;
pub mod rollback;
pub mod unit;
pub mod units;
mod verify;

pub use params::{MissingVectors, Scope, VectorMigrateParams};

use super::fanout;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{JobCtx, JobError, JobKind, Progress, SpecError};
use crate::config::Settings;
use crate::dify::shape;
use crate::dify::vector_records::{self, Dataset};
use crate::vector::StoreConfig;
use crate::vector::embeddings::Embedder;
use crate::vector::redis_flags::RedisFlags;
use crate::vector::store::VectorStore;
use unit::{Outcome, Report, Shared, Unit, UnitState};
use units::{annotation_source, apps, invalid, source_config, target_config, units};

pub struct VectorMigrate;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    done: Vec<Outcome>,
    /// Units being copied, by dataset (or app) id.
    current: BTreeMap<Uuid, UnitState>,
}

impl JobKind for VectorMigrate {
    const KIND: &'static str = "vector_migrate";
    type Params = VectorMigrateParams;
    type Plan = crate::jobs::contract::vector_migrate::VectorMigratePlan;
    type Outcome = crate::jobs::contract::vector_migrate::VectorMigrateResult;
    type Detail = crate::jobs::contract::vector_migrate::VectorMigrateDetail;
    const PHASES: &'static [crate::jobs::contract::Phase] =
        crate::jobs::contract::vector_migrate::PHASES;

    fn resource_key(_: &VectorMigrateParams) -> Option<String> {
        Some("vectors".into())
    }

    async fn validate(
        params: &VectorMigrateParams,
        pool: &PgPool,
        settings: &Settings,
    ) -> Result<(), SpecError> {
        if !(1..=1000).contains(&params.batch_size) {
            return Err(SpecError::invalid("params.batch_size", "must be 1 to 1000"));
        }
        if !(1..=32).contains(&params.concurrency) {
            return Err(SpecError::invalid("params.concurrency", "must be 1 to 32"));
        }
        if !(1..=fanout::MAX_CHILDREN).contains(&params.fan_out) {
            return Err(SpecError::invalid(
                "params.fan_out",
                format!("must be 1 to {}", fanout::MAX_CHILDREN),
            ));
        }
        match (params.missing_vectors, &params.embedding_endpoint) {
            (MissingVectors::Reembed, None) => {
                return Err(SpecError::invalid(
                    "params.embedding_endpoint",
                    "is required with missing_vectors: reembed",
                ));
            }
            (MissingVectors::Reembed, Some(ep)) => ep
                .check()
                .map_err(|m| SpecError::invalid("params.embedding_endpoint.url", m))?,
            (_, Some(_)) => {
                return Err(SpecError::invalid(
                    "params.embedding_endpoint",
                    "is only used with missing_vectors: reembed",
                ));
            }
            (_, None) => {}
        }
        shape::require(pool, Self::KIND, vector_records::NEEDS).await?;
        let (scope, knowledge, annotations) =
            (params.scope(), params.knowledge(), params.annotations());
        if params.dataset_ids.is_some() && !knowledge {
            return Err(SpecError::invalid(
                "params.dataset_ids",
                format!("names datasets, but scope is {scope:?}"),
            ));
        }
        if params.app_ids.is_some() && !annotations {
            return Err(SpecError::invalid(
                "params.app_ids",
                format!("names apps, but scope is {scope:?}"),
            ));
        }
        let target = target_config(params, settings)?;
        let source = source_config(params)?;
        if source.as_ref() == Some(&target) {
            return Err(SpecError::invalid("params.source", "is the target itself"));
        }
        for (field, ids, table) in [
            ("dataset_ids", &params.dataset_ids, "datasets"),
            ("app_ids", &params.app_ids, "apps"),
            ("tenant_ids", &params.tenant_ids, "tenants"),
        ] {
            let Some(ids) = ids else { continue };
            if ids.is_empty() {
                return Err(SpecError::invalid(
                    format!("params.{field}"),
                    "names nothing; leave it out for all",
                ));
            }
            let known: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT id FROM public.{table} WHERE id = ANY($1)"
            )))
            .bind(ids)
            .fetch_all(pool)
            .await?;
            if let Some(i) = ids.iter().position(|id| !known.contains(id)) {
                return Err(SpecError::invalid(
                    format!("params.{field}[{i}]"),
                    format!("no {} {} in {table}", &table[..table.len() - 1], ids[i]),
                ));
            }
        }
        if annotations && !apps(params, pool).await?.is_empty() {
            annotation_source(source.as_ref(), pool, settings, target.kind())
                .await?
                .map_err(|m| SpecError::invalid("params.source", m))?;
        }
        Ok(())
    }

    async fn plan(params: VectorMigrateParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        shape::require(&ctx.pool, Self::KIND, vector_records::NEEDS).await?;
        plan::plan(params, ctx).await
    }

    async fn run(params: VectorMigrateParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        shape::require(&ctx.pool, Self::KIND, vector_records::NEEDS).await?;
        let target_cfg = target_config(&params, &ctx.settings).map_err(invalid)?;
        if params.fan_out > 1 && ctx.parent_id.is_none() {
            return children::run_children(params, ctx, &target_cfg).await;
        }
        let revision = crate::dify::revision(&ctx.pool).await?;
        let target = target_cfg
            .open_target(revision.as_deref())
            .await
            .map_err(|e| JobError::failed("target_unreachable", e.to_string()))?;
        let embedder = match (&params.missing_vectors, &params.embedding_endpoint) {
            (MissingVectors::Reembed, Some(ep)) => Some(
                Embedder::new(ep.clone())
                    .map_err(|e| JobError::failed("invalid_params", e.to_string()))?,
            ),
            _ => None,
        };
        let redis = RedisFlags::from_env(&ctx.settings.vector_store);
        let units = units(&params, &ctx.pool, &ctx.settings, &target_cfg).await?;
        let mut cp: Checkpoint = ctx.checkpoint()?.unwrap_or_default();
        // A retried job tries its failed datasets again; finished ones stay done.
        cp.done.retain(|o| o.error.is_none());
        let mut total = 0u64;
        for unit in &units {
            total += vector_records::expected_count(&ctx.pool, &unit.ds).await? as u64;
        }
        let shared = Arc::new(Shared::new(
            ctx.pool.clone(),
            target,
            params.batch_size as usize,
            params.missing_vectors,
            embedder,
        ));
        let mut todo: VecDeque<Arc<Unit>> = units
            .into_iter()
            .filter(|u| !cp.done.iter().any(|o| o.id() == Some(u.ds.id)))
            .map(Arc::new)
            .collect();
        let (tx, mut rx) = mpsc::channel::<Report>(64);
        let mut running: JoinSet<(Arc<Unit>, Result<Outcome, JobError>)> = JoinSet::new();
        loop {
            while running.len() < params.concurrency as usize
                && let Some(unit) = todo.pop_front()
            {
                let state = cp.current.get(&unit.ds.id).cloned().unwrap_or_default();
                let (shared, tx) = (shared.clone(), tx.clone());
                running.spawn(async move {
                    let outcome = copy::run_unit(shared, unit.clone(), state, tx).await;
                    (unit, outcome)
                });
            }
            if running.is_empty() {
                break;
            }
            tokio::select! {
                // Reports first: a unit's last page is checkpointed before its end is seen.
                biased;
                Some(report) = rx.recv() => {
                    ctx.failpoint("vector_migrate.batch_written").await?;
                    let before = cp.current.get(&report.id);
                    ctx.count("points", report.state.written().saturating_sub(
                        before.map_or(0, UnitState::written)));
                    // A unit read to its end moves on to verification: shown at once.
                    let read_now = report.state.read_all && !before.is_some_and(|s| s.read_all);
                    cp.current.insert(report.id, report.state);
                    ctx.save_checkpoint(&ctx.pool.clone(), &cp).await?;
                    if let Some(saved) = report.saved {
                        let _ = saved.send(());
                    }
                    ctx.failpoint("vector_migrate.checkpointed").await?;
                    report_progress(ctx, &cp, total, read_now).await?;
                }
                Some(joined) = running.join_next() => {
                    let (unit, outcome) = joined.map_err(|e| {
                        JobError::failed("internal", format!("a dataset's task ended: {e}"))
                    })?;
                    let outcome = outcome?;
                    let verified = outcome.verified;
                    finish(ctx, &params, &mut cp, &unit, outcome, &target_cfg).await?;
                    if verified {
                        clear_flag(ctx, &redis, &unit.at.collection).await?;
                    }
                    report_progress(ctx, &cp, total, false).await?;
                }
                _ = ctx.stop_signal() => {}
            }
            ctx.check_stop()?;
        }
        report_progress(ctx, &cp, total, true).await?;
        let failed = cp.done.iter().filter(|o| o.error.is_some()).count();
        let mut result = json!({
            "target": target_cfg.describe(),
            "datasets": cp.done,
            "migrated": cp.done.iter().filter(|o| o.verified).count(),
            "switched": cp.done.iter().filter(|o| o.switched).count(),
            "failed": failed,
        });
        let notes = shared.target.notes();
        if !notes.is_empty() {
            result["target_notes"] = json!(notes);
        }
        if cp.done.iter().any(|o| o.app_id.is_some() && o.verified) {
            result["annotations"] = json!(annotation_note(&ctx.settings, target_cfg.kind()));
        }
        if failed > 0 {
            return Err(JobError::Failed {
                code: "datasets_failed",
                message: format!(
                    "{failed} of {} datasets failed and still point at their old store",
                    cp.done.len()
                ),
                result: Some(result),
            });
        }
        Ok(result)
    }
}

/// Dify finds annotation replies in the store `VECTOR_STORE` names: nothing in the database
/// says where they are, so nothing is switched for them.
fn annotation_note(settings: &Settings, target: &str) -> String {
    if settings.vector_store.kind == target {
        format!(
            "annotation replies are in {target}, where VECTOR_STORE={target} makes Dify read them"
        )
    } else {
        format!(
            "annotation replies are copied to {target}; Dify reads them from the store VECTOR_STORE \
             names ({}), so set VECTOR_STORE={target} to use them",
            settings.vector_store.kind
        )
    }
}

/// Done points over every unit: finished ones and the pages of those in flight.
async fn report_progress(
    ctx: &mut JobCtx,
    cp: &Checkpoint,
    total: u64,
    force: bool,
) -> Result<(), JobError> {
    let finished = |id: &Uuid| cp.done.iter().any(|o| o.id() == Some(*id));
    let done = cp.done.iter().map(Outcome::written).sum::<u64>()
        + cp.current
            .iter()
            .filter(|(id, _)| !finished(id))
            .map(|(_, s)| s.written())
            .sum::<u64>();
    let running = || cp.current.iter().filter(|(id, _)| !finished(id));
    let detail = json!({
        "datasets_done": cp.done.len(),
        "datasets_running": running().count(),
        "datasets_verifying": running().filter(|(_, s)| s.read_all).count(),
        "failed": cp.done.iter().filter(|o| o.error.is_some()).count(),
    });
    ctx.progress(
        Progress {
            phase: "copy".into(),
            done,
            total: Some(total.max(done)),
            unit: "points".into(),
            detail: Some(detail),
            ..Default::default()
        },
        force,
    )
    .await
}

/// A unit's end: switch it if verified (and asked to), record it, clear Dify's Redis flag.
async fn finish(
    ctx: &mut JobCtx,
    params: &VectorMigrateParams,
    cp: &mut Checkpoint,
    unit: &Unit,
    mut outcome: Outcome,
    target: &StoreConfig,
) -> Result<(), JobError> {
    // A failed unit keeps its state, so a retry resumes it where it stopped, unless it
    // cannot be completed from there.
    if outcome.error.is_none() || outcome.restart {
        cp.current.remove(&unit.ds.id);
    }
    if outcome.verified {
        ctx.failpoint("vector_migrate.verified").await?;
    }
    let id = unit.ds.id;
    let kind = if unit.ds.annotations {
        "app"
    } else {
        "dataset"
    };
    outcome.switched = outcome.verified && params.switch_over && !unit.ds.annotations;
    cp.done.push(outcome);
    // The switch commits with the checkpoint that records it.
    let switched = cp.done[cp.done.len() - 1].switched
        && switch(ctx, cp, &unit.ds, target.index_struct(&unit.at)).await?;
    if switched {
        ctx.failpoint("vector_migrate.switched").await?;
    }
    let last = cp.done.len() - 1;
    if cp.done[last].switched && !switched {
        cp.done[last].switched = false;
        cp.done[last].error = Some("index_struct changed while the job ran; not switched".into());
    }
    if !switched {
        ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
    }
    let o = &cp.done[last];
    let data = serde_json::to_value(o).unwrap_or(Value::Null);
    match &o.error {
        None => {
            let message = format!(
                "{kind} {id}: {} points ({} from the cache, {} re-embedded), verified{}",
                o.written(),
                o.from_cache,
                o.reembedded,
                if o.switched { ", switched" } else { "" }
            );
            ctx.log(message, data).await?;
        }
        Some(e) => ctx.warn(format!("{kind} {id} failed: {e}"), data).await?,
    }
    Ok(())
}

/// Dify skips its "does the collection exist?" check while `vector_indexing_<name>` lives:
/// after writing a collection, the key goes. Best effort: the job does not fail for it.
async fn clear_flag(
    ctx: &JobCtx,
    redis: &Result<RedisFlags, String>,
    collection: &str,
) -> Result<(), JobError> {
    match redis {
        Ok(r) => {
            if let Err(e) = r.clear(collection).await {
                ctx.warn(
                    format!("could not clear Redis key {}: {e}", r.key(collection)),
                    Value::Null,
                )
                .await?;
            }
        }
        Err(e) => {
            ctx.warn(format!("Redis not cleared: {e}"), Value::Null)
                .await?
        }
    }
    Ok(())
}

/// Points the dataset at the target, if nobody changed its `index_struct` meanwhile; records
/// the previous value for `vector_rollback`; commits with the checkpoint.
async fn switch(
    ctx: &mut JobCtx,
    cp: &Checkpoint,
    ds: &Dataset,
    new: String,
) -> Result<bool, JobError> {
    let mut tx = ctx.pool.begin().await?;
    sqlx::query("SELECT set_config('lock_timeout', '5s', true)")
        .execute(&mut *tx)
        .await?;
    let updated = sqlx::query(
        "UPDATE public.datasets SET index_struct = $2 \
         WHERE id = $1 AND index_struct IS NOT DISTINCT FROM $3",
    )
    .bind(ds.id)
    .bind(&new)
    .bind(&ds.index_struct)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO upkeep.vector_switches (job_id, dataset_id, previous, switched_to) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (job_id, dataset_id) DO NOTHING",
    )
    .bind(ctx.job_id)
    .bind(ds.id)
    .bind(&ds.index_struct)
    .bind(&new)
    .execute(&mut *tx)
    .await?;
    ctx.save_checkpoint(&mut *tx, cp).await?;
    tx.commit().await?;
    Ok(true)
}
