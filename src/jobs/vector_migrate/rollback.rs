//! `vector_rollback`: points datasets back at the store they used before a `vector_migrate`
//! switched them (recorded in `upkeep.vector_switches`), touching no data in either store.
//! A dataset whose `index_struct` changed since the switch is left alone and reported.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::Settings;
use crate::dify::index_struct;
use crate::jobs::{JobCtx, JobError, JobKind, SpecError};
use crate::vector::redis_flags::RedisFlags;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorRollbackParams {
    /// Datasets a `vector_migrate` switched.
    pub dataset_ids: Vec<Uuid>,
}

pub struct VectorRollback;

/// The latest switch of a dataset: what it pointed at before, and what the switch wrote.
#[derive(Debug, sqlx::FromRow)]
struct Switch {
    dataset_id: Uuid,
    previous: Option<String>,
    switched_to: String,
}

async fn latest(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Switch>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (dataset_id) dataset_id, previous, switched_to \
         FROM upkeep.vector_switches WHERE dataset_id = ANY($1) \
         ORDER BY dataset_id, switched_at DESC",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
}

impl JobKind for VectorRollback {
    const KIND: &'static str = "vector_rollback";
    type Params = VectorRollbackParams;
    type Plan = crate::jobs::contract::vector_rollback::VectorRollbackPlan;
    type Outcome = crate::jobs::contract::vector_rollback::VectorRollbackResult;
    type Detail = crate::jobs::contract::vector_rollback::VectorRollbackDetail;
    const PHASES: &'static [crate::jobs::contract::Phase] =
        crate::jobs::contract::vector_rollback::PHASES;

    fn resource_key(_: &VectorRollbackParams) -> Option<String> {
        Some("vectors".into())
    }

    async fn validate(
        params: &VectorRollbackParams,
        pool: &PgPool,
        _settings: &Settings,
    ) -> Result<(), SpecError> {
        if params.dataset_ids.is_empty() {
            return Err(SpecError::invalid("params.dataset_ids", "names no dataset"));
        }
        let switched: Vec<Uuid> = latest(pool, &params.dataset_ids)
            .await?
            .into_iter()
            .map(|s| s.dataset_id)
            .collect();
        if let Some(i) = params
            .dataset_ids
            .iter()
            .position(|id| !switched.contains(id))
        {
            return Err(SpecError::invalid(
                format!("params.dataset_ids[{i}]"),
                format!(
                    "dataset {} was never switched by vector_migrate: nothing to roll back to",
                    params.dataset_ids[i]
                ),
            ));
        }
        Ok(())
    }

    async fn plan(params: VectorRollbackParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let switches = latest(&ctx.pool, &params.dataset_ids).await?;
        Ok(json!({"datasets": switches.iter().map(|s| json!({
            "dataset_id": s.dataset_id, "back_to": s.previous, "from": s.switched_to,
        })).collect::<Vec<_>>()}))
    }

    async fn run(params: VectorRollbackParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let redis = RedisFlags::from_env(&ctx.settings.vector_store);
        let mut outcomes = Vec::new();
        for s in latest(&ctx.pool, &params.dataset_ids).await? {
            ctx.check_stop()?;
            // Only if it still points where the migration put it (a rerun finds it restored).
            let restored = sqlx::query(
                "UPDATE public.datasets SET index_struct = $2 \
                 WHERE id = $1 AND index_struct IS NOT DISTINCT FROM $3",
            )
            .bind(s.dataset_id)
            .bind(&s.previous)
            .bind(&s.switched_to)
            .execute(&ctx.pool)
            .await?
            .rows_affected()
                == 1;
            let current: Option<String> =
                sqlx::query_scalar("SELECT index_struct FROM public.datasets WHERE id = $1")
                    .bind(s.dataset_id)
                    .fetch_optional(&ctx.pool)
                    .await?
                    .flatten();
            let state = if restored {
                "restored"
            } else if current == s.previous {
                "already_restored"
            } else {
                "changed_since"
            };
            if restored
                && let (Ok(r), Some((_, name))) =
                    (&redis, s.previous.as_deref().and_then(index_struct::parse))
                && let Err(e) = r.clear(&name).await
            {
                ctx.warn(
                    format!("could not clear {}: {e}", r.key(&name)),
                    Value::Null,
                )
                .await?;
            }
            outcomes.push(json!({
                "dataset_id": s.dataset_id, "state": state, "index_struct": current,
            }));
        }
        Ok(json!({ "datasets": outcomes }))
    }
}
