//! The plan and confirm engine the orphan jobs share: a run without `confirm` records its
//! items in `upkeep.orphan_plan`; a run with `confirm` names that finished run and handles
//! exactly them, page by page, each item checked again by the job's own `Decide`.

use std::future::Future;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::jobs::{JobCtx, JobError, Progress, SpecError};
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

/// One planned item: an object key or a `table:id`, and what the object was when planned.
#[derive(Debug, Clone)]
pub struct Planned {
    pub item: String,
    pub size: Option<i64>,
    pub last_modified: Option<DateTime<Utc>>,
}

/// Adds items to this run's plan (a resumed plan run records each once).
pub async fn record(ctx: &JobCtx, items: &[Planned]) -> Result<(), JobError> {
    if items.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = items.iter().map(|p| p.item.as_str()).collect();
    let sizes: Vec<Option<i64>> = items.iter().map(|p| p.size).collect();
    let times: Vec<Option<DateTime<Utc>>> = items.iter().map(|p| p.last_modified).collect();
    sqlx::query(
        "INSERT INTO upkeep.orphan_plan (job_id, item, size, last_modified) \
         SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::timestamptz[]) \
         ON CONFLICT (job_id, item) DO NOTHING",
    )
    .bind(ctx.job_id)
    .bind(&names)
    .bind(&sizes)
    .bind(&times)
    .execute(&ctx.pool)
    .await?;
    Ok(())
}

/// How a confirm handles one page of planned items: each one checked again and deleted or
/// kept, its outcome (`deleted`, `gone`, `referenced`, `changed`) returned in order. Deletes
/// that must commit with their outcomes run in the transaction returned; the outcomes are
/// recorded in it (or in one of their own) and committed together.
pub trait Decide {
    fn decide(
        &mut self,
        ctx: &mut JobCtx,
        page: &[Planned],
    ) -> impl Future<
        Output = Result<(Vec<&'static str>, Option<Transaction<'static, Postgres>>), JobError>,
    > + Send;
}

/// Handles every item of `plan` not handled yet, a page at a time, in item order; the plan's
/// outcomes are the checkpoint, so a resumed confirm goes on where the last one committed.
/// Returns how many items the plan holds.
pub async fn confirm<D: Decide>(
    ctx: &mut JobCtx,
    plan: Uuid,
    page_size: i64,
    phase: Progress,
    committed: &str,
    decide: &mut D,
) -> Result<i64, JobError> {
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM upkeep.orphan_plan WHERE job_id = $1")
            .bind(plan)
            .fetch_one(&ctx.pool)
            .await?;
    let mut after = String::new();
    loop {
        ctx.check_stop()?;
        let page: Vec<(String, Option<i64>, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT item, size, last_modified FROM upkeep.orphan_plan \
             WHERE job_id = $1 AND outcome IS NULL AND item > $2 ORDER BY item LIMIT $3",
        )
        .bind(plan)
        .bind(&after)
        .bind(page_size)
        .fetch_all(&ctx.pool)
        .await?;
        let Some((last, _, _)) = page.last() else {
            break;
        };
        after = last.clone();
        let page: Vec<Planned> = page
            .into_iter()
            .map(|(item, size, last_modified)| Planned {
                item,
                size,
                last_modified,
            })
            .collect();
        let (outcomes, tx) = decide.decide(ctx, &page).await?;
        let mut tx = match tx {
            Some(tx) => tx,
            None => ctx.pool.begin().await?,
        };
        let items: Vec<&str> = page.iter().map(|p| p.item.as_str()).collect();
        sqlx::query(
            "UPDATE upkeep.orphan_plan p SET outcome = o.outcome, handled_by = $2 \
             FROM unnest($3::text[], $4::text[]) AS o(item, outcome) \
             WHERE p.job_id = $1 AND p.item = o.item",
        )
        .bind(plan)
        .bind(ctx.job_id)
        .bind(&items)
        .bind(&outcomes)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        ctx.failpoint(committed).await?;
        let handled: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM upkeep.orphan_plan WHERE job_id = $1 AND outcome IS NOT NULL",
        )
        .bind(plan)
        .fetch_one(&ctx.pool)
        .await?;
        ctx.progress(
            Progress {
                done: handled as u64,
                total: Some(total as u64),
                ..phase.clone()
            },
            false,
        )
        .await?;
    }
    Ok(total)
}

/// This confirm's outcomes per (the item's table, for `table:id` items, else ``) and
/// outcome; items an earlier confirm handled count as `handled_by_an_earlier_confirm`, so
/// confirming a plan twice reports 0 deleted the second time.
pub async fn outcomes(ctx: &JobCtx, plan: Uuid) -> Result<Vec<(String, String, i64)>, JobError> {
    Ok(sqlx::query_as(
        "SELECT CASE WHEN item ~ '^[a-z_]+:[0-9a-f-]{36}$' THEN split_part(item, ':', 1) ELSE '' END, \
         CASE WHEN handled_by = $2 THEN outcome ELSE 'handled_by_an_earlier_confirm' END, count(*) \
         FROM upkeep.orphan_plan WHERE job_id = $1 AND outcome IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(plan)
    .bind(ctx.job_id)
    .fetch_all(&ctx.pool)
    .await?)
}

/// Up to `limit` items this confirm kept, with why.
pub async fn kept(ctx: &JobCtx, plan: Uuid, limit: i64) -> Result<Vec<(String, String)>, JobError> {
    Ok(sqlx::query_as(
        "SELECT item, outcome FROM upkeep.orphan_plan WHERE job_id = $1 AND handled_by = $3 \
         AND outcome IN ('referenced', 'changed') ORDER BY item LIMIT $2",
    )
    .bind(plan)
    .bind(limit)
    .bind(ctx.job_id)
    .fetch_all(&ctx.pool)
    .await?)
}
