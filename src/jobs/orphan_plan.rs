//! The plan/confirm model the orphan jobs share: a run without `confirm` records its items in
//! `upkeep.orphan_plan`; a run with `confirm` names that finished run and handles exactly them.

use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::{JobCtx, JobError, SpecError};
use crate::secrets::Sealer;

/// Checks `min_age_hours`, `confirm` and `plan_job_id` together; returns the plan's params
/// (secrets opened with `sealer`, to compare with the confirm's) when confirming.
pub async fn check(
    pool: &PgPool,
    sealer: &Sealer,
    kind: &str,
    confirm: bool,
    plan_job_id: Option<Uuid>,
    min_age_hours: u32,
) -> Result<Option<Value>, SpecError> {
    if min_age_hours > 24 * 3650 {
        return Err(SpecError::invalid(
            "params.min_age_hours",
            "must be at most 87600",
        ));
    }
    let field = "params.plan_job_id";
    let plan = match (confirm, plan_job_id) {
        (false, None) => return Ok(None),
        (false, Some(_)) => {
            return Err(SpecError::invalid(field, "only applies with confirm: true"));
        }
        (true, None) => {
            return Err(SpecError::invalid(
                field,
                "is required with confirm: true (run once without confirm to make the plan)",
            ));
        }
        (true, Some(plan)) => plan,
    };
    let row: Option<(String, String, Value, bool)> =
        sqlx::query_as("SELECT kind, state, params, dry_run FROM upkeep.jobs WHERE id = $1")
            .bind(plan)
            .fetch_optional(pool)
            .await?;
    let Some((job_kind, state, plan_params, dry_run)) = row else {
        return Err(SpecError::invalid(field, format!("no job {plan}")));
    };
    if job_kind != kind || plan_params["confirm"] == json!(true) {
        return Err(SpecError::invalid(
            field,
            format!(
                "job {plan} is a {job_kind} job{}, not the plan of an {kind} job (the plan is the \
                 {kind} run without confirm)",
                if plan_params["confirm"] == json!(true) {
                    " that confirmed a plan"
                } else {
                    ""
                }
            ),
        ));
    }
    if dry_run {
        return Err(SpecError::invalid(
            field,
            format!("job {plan} was a dry run; plan without dry_run to record the list"),
        ));
    }
    if state != "succeeded" {
        return Err(SpecError::invalid(
            field,
            format!("plan {plan} is {state}, not succeeded"),
        ));
    }
    let plan_params = sealer
        .open(plan_params)
        .map_err(|e| SpecError::invalid(field, format!("plan {plan}: {e}")))?;
    Ok(Some(plan_params))
}

/// A confirming run's plan params (`None` when not confirming), for the values it applies.
pub async fn planned_params(
    pool: &PgPool,
    confirm: bool,
    plan_job_id: Option<Uuid>,
) -> Result<Option<Value>, SpecError> {
    let Some(plan) = plan_job_id.filter(|_| confirm) else {
        return Ok(None);
    };
    Ok(
        sqlx::query_scalar("SELECT params FROM upkeep.jobs WHERE id = $1")
            .bind(plan)
            .fetch_optional(pool)
            .await?,
    )
}

/// The plan's `min_age_hours` (a plan made before that param existed: `current`).
pub fn planned_min_age(plan: &Value, current: u32) -> u32 {
    plan["min_age_hours"]
        .as_u64()
        .and_then(|h| u32::try_from(h).ok())
        .unwrap_or(current)
}

/// A dry run of a confirming run: how many planned items are still to handle.
pub async fn preview(ctx: &JobCtx, plan: Uuid) -> Result<Value, JobError> {
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM upkeep.orphan_plan WHERE job_id = $1 AND outcome IS NULL",
    )
    .bind(plan)
    .fetch_one(&ctx.pool)
    .await?;
    Ok(json!({
        "plan_job_id": plan,
        "would_check_and_delete": pending,
        "note": "each item is checked again when it is deleted",
    }))
}
