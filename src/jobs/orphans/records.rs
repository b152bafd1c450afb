//! `orphan_records`: `upload_files` and `tool_files` rows nothing references any more, and
//! `message_files` rows whose message is gone. The references, a superset of what Dify's
//! command scans, are gathered in the database, in one statement, into a temporary table of
//! the run's own session (`refs`). Like `orphan_files`, a run without `confirm` records a plan
//! (one `INSERT ... SELECT` per table, never an id through the daemon); a run with `confirm`
//! deletes exactly the planned rows still unreferenced, re-checked against references gathered
//! afresh, in short transactions. Objects are left to `orphan_files`.

use chrono::{DateTime, Utc};
use opendal::{ErrorKind, Operator};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::plan;
use super::refs::{self, Refs, Session};
use crate::config::Settings;
use crate::dify::file_refs;
use crate::dify::shape;
use crate::jobs::{JobCtx, JobError, JobKind, Progress, SpecError, storage_param};

const BATCH: i64 = 1000;
const SAMPLE: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrphanRecordsParams {
    /// false: record a plan and delete nothing. true: delete what `plan_job_id` planned.
    #[serde(default)]
    pub confirm: bool,
    /// The finished plan to apply (a run of this kind without `confirm`).
    #[serde(default)]
    pub plan_job_id: Option<Uuid>,
    /// Rows (and, for `tool_files`, which has no timestamp, their objects) younger than this
    /// are never orphans. A confirming run applies its plan's value, and shows it.
    #[serde(default = "default_min_age")]
    pub min_age_hours: u32,
    /// Where `tool_files` objects are, for their age. Default: the storage `STORAGE_TYPE` names.
    #[serde(default)]
    #[schema(value_type = Option<crate::storage::StorageConfig>)]
    pub storage: Option<Value>,
}

fn default_min_age() -> u32 {
    24
}

pub struct OrphanRecords;

/// The three kinds of rows a plan can hold, as `table:id` items.
const TABLES: &[&str] = &["upload_files", "tool_files", "message_files"];

fn item(table: &str, id: Uuid) -> String {
    format!("{table}:{id}")
}

fn parse_item(item: &str) -> Option<(&'static str, Uuid)> {
    let (table, id) = item.split_once(':')?;
    let table = TABLES.iter().find(|t| **t == table)?;
    Some((table, Uuid::parse_str(id).ok()?))
}

impl JobKind for OrphanRecords {
    const KIND: &'static str = "orphan_records";
    type Params = OrphanRecordsParams;
    type Plan = crate::jobs::contract::orphan_records::OrphanRecordsPlan;
    type Outcome = crate::jobs::contract::orphan_records::OrphanRecordsResult;
    type Detail = crate::jobs::contract::orphan_records::OrphanRecordsDetail;
    const PHASES: &'static [crate::jobs::contract::Phase] =
        crate::jobs::contract::orphan_records::PHASES;

    fn resource_key(_: &OrphanRecordsParams) -> Option<String> {
        Some("dify:file_records".into())
    }

    async fn validate(
        params: &OrphanRecordsParams,
        pool: &PgPool,
        settings: &Settings,
    ) -> Result<(), SpecError> {
        let config = storage_param::resolve(params.storage.as_ref(), "storage", settings)?;
        storage_param::open(&config, "storage")?;
        shape::require(pool, Self::KIND, file_refs::NEEDS).await?;
        plan::check(
            pool,
            &settings.sealer,
            Self::KIND,
            params.confirm,
            params.plan_job_id,
            params.min_age_hours,
        )
        .await?;
        Ok(())
    }

    async fn settle(params: &mut OrphanRecordsParams, pool: &PgPool) -> Result<(), SpecError> {
        if let Some(plan) = plan::planned_params(pool, params.confirm, params.plan_job_id).await? {
            params.min_age_hours = plan::planned_min_age(&plan, params.min_age_hours);
        }
        Ok(())
    }

    async fn plan(params: OrphanRecordsParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        shape::require(&ctx.pool, Self::KIND, file_refs::NEEDS).await?;
        match params.plan_job_id.filter(|_| params.confirm) {
            Some(plan) => plan::preview(ctx, plan).await,
            None => make_plan(params, ctx).await,
        }
    }

    async fn run(params: OrphanRecordsParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        shape::require(&ctx.pool, Self::KIND, file_refs::NEEDS).await?;
        match params.plan_job_id.filter(|_| params.confirm) {
            Some(plan) => apply_plan(plan, ctx).await,
            None => make_plan(params, ctx).await,
        }
    }
}

fn phase(name: &str) -> Progress {
    Progress {
        phase: name.into(),
        unit: "rows".into(),
        ..Default::default()
    }
}

/// Opens the run's session and gathers the references there (the shape check at the start made
/// sure every table needed to decide is there).
async fn gather(ctx: &mut JobCtx) -> Result<Refs, JobError> {
    ctx.progress(phase("gather references"), true).await?;
    Refs::gather(ctx).await
}

/// What one table's plan found: rows planned, rows spared as too young, the first planned ids.
struct Found {
    planned: u64,
    too_young: u64,
    sample: Vec<Uuid>,
}

async fn make_plan(params: OrphanRecordsParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
    let config = storage_param::resolve(params.storage.as_ref(), "storage", &ctx.settings)
        .map_err(storage_param::invalid)?;
    let op = storage_param::open(&config, "storage").map_err(storage_param::invalid)?;
    // A rerun after a kill starts over: the plan is only usable once its run has succeeded.
    sqlx::query("DELETE FROM upkeep.orphan_plan WHERE job_id = $1")
        .bind(ctx.job_id)
        .execute(&ctx.pool)
        .await?;
    let mut refs = gather(ctx).await?;
    let found = plan_tables(&params, ctx, &op, &mut refs).await;
    let (read, skipped) = (
        std::mem::take(&mut refs.read),
        std::mem::take(&mut refs.skipped),
    );
    refs.close().await;
    let mut counts = serde_json::Map::new();
    let mut sample = Vec::new();
    for (table, found) in TABLES.iter().zip(found?) {
        counts.insert(
            table.to_string(),
            json!({"orphans": found.planned, "too_young": found.too_young}),
        );
        let room = SAMPLE.saturating_sub(sample.len());
        sample.extend(found.sample.iter().take(room).map(|id| item(table, *id)));
    }
    Ok(json!({
        "plan_job_id": (!ctx.dry_run).then_some(ctx.job_id),
        "min_age_hours": params.min_age_hours,
        "tables": counts,
        "sample": sample,
        "references_read": read,
        "references_absent_in_this_dify": skipped,
    }))
}

/// Plans each of `TABLES`, in that order.
async fn plan_tables(
    params: &OrphanRecordsParams,
    ctx: &mut JobCtx,
    op: &Operator,
    refs: &mut Refs,
) -> Result<Vec<Found>, JobError> {
    let hours = i32::try_from(params.min_age_hours).unwrap_or(i32::MAX);
    let cutoff = Utc::now() - chrono::Duration::hours(i64::from(hours));
    let mut found = Vec::with_capacity(TABLES.len());
    // message_files' plan reads no gathered reference: it runs beside upload_files' (one
    // statement on one core) on a session of its own, and is reported in its turn.
    let mut dangling = None;
    for table in TABLES {
        ctx.check_stop()?;
        ctx.progress(
            Progress {
                detail: Some(json!({"table": table})),
                ..phase(&format!("find orphaned {table}"))
            },
            false,
        )
        .await?;
        let f = match *table {
            "upload_files" => {
                let mut beside = Session::open(ctx).await?;
                let both = tokio::try_join!(
                    plan_in_db(ctx, &mut refs.session, table, cutoff),
                    plan_in_db(ctx, &mut beside, "message_files", cutoff),
                );
                beside.close().await;
                let (f, d) = both?;
                dangling = Some(d);
                f
            }
            "tool_files" => plan_tool_files(ctx, op, refs, cutoff).await?,
            _ => match dangling.take() {
                Some(d) => d,
                None => plan_in_db(ctx, &mut refs.session, table, cutoff).await?,
            },
        };
        ctx.failpoint("orphan_records.table_planned").await?;
        ctx.progress(
            Progress {
                done: f.planned,
                detail: Some(json!({"table": table})),
                ..phase(&format!("find orphaned {table}"))
            },
            true,
        )
        .await?;
        found.push(f);
    }
    Ok(found)
}

/// The unreferenced rows of a table whose age is a column, as `(id, created)`: upload_files
/// rows no gathered reference names, message_files rows whose message is gone. Dify writes
/// naive UTC.
fn unreferenced(table: &str) -> String {
    match table {
        "upload_files" => format!(
            "SELECT u.id, u.created_at AT TIME ZONE 'UTC' FROM public.upload_files u \
             WHERE NOT EXISTS (SELECT 1 FROM {} r WHERE r.id = u.id)",
            refs::TABLE
        ),
        // No reference to gather: a message_files row is an orphan when its message is gone.
        _ => "SELECT mf.id, mf.created_at AT TIME ZONE 'UTC' FROM public.message_files mf \
              WHERE NOT EXISTS (SELECT 1 FROM public.messages m WHERE m.id = mf.message_id)"
            .into(),
    }
}

/// Plans one table in one statement on `session`: the anti-join, the plan recorded
/// (unless a dry run) with one `INSERT ... SELECT`, the counts and a sample, no id passing
/// through the daemon. Rows go in in id order, so the plan's index grows at its end.
async fn plan_in_db(
    ctx: &JobCtx,
    session: &mut Session,
    table: &str,
    cutoff: DateTime<Utc>,
) -> Result<Found, JobError> {
    // The candidates are read once; both counts come from one pass over them.
    let sql = format!(
        "WITH c (id, created) AS MATERIALIZED ({}), \
         ins AS (INSERT INTO upkeep.orphan_plan (job_id, item, last_modified) \
                 SELECT $1, $3 || ':' || id, created FROM c \
                 WHERE $5 AND (created IS NULL OR created <= $2) ORDER BY id) \
         SELECT count(*) FILTER (WHERE created IS NULL OR created <= $2), \
                count(*) FILTER (WHERE created > $2), \
                ARRAY(SELECT id FROM c WHERE created IS NULL OR created <= $2 ORDER BY id LIMIT $4) \
         FROM c",
        unreferenced(table)
    );
    let (job, record) = (ctx.job_id, !ctx.dry_run);
    let (planned, too_young, sample): (i64, i64, Vec<Uuid>) = session
        .run(ctx, |conn| {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(job)
                .bind(cutoff)
                .bind(table)
                .bind(SAMPLE as i64)
                .bind(record)
                .fetch_one(conn)
        })
        .await?;
    Ok(Found {
        planned: planned as u64,
        too_young: too_young as u64,
        sample,
    })
}

/// tool_files has no timestamp: its object's age stands in, so its unreferenced rows come to
/// the daemon a page at a time, to be looked up in storage.
async fn plan_tool_files(
    ctx: &mut JobCtx,
    op: &Operator,
    refs: &mut Refs,
    cutoff: DateTime<Utc>,
) -> Result<Found, JobError> {
    let sql = format!(
        "SELECT t.id, t.file_key::text FROM public.tool_files t WHERE t.id > $1 \
         AND NOT EXISTS (SELECT 1 FROM {} r WHERE r.id = t.id) ORDER BY t.id LIMIT $2",
        refs::TABLE
    );
    let mut after = Uuid::nil();
    let mut found = Found {
        planned: 0,
        too_young: 0,
        sample: Vec::new(),
    };
    loop {
        ctx.check_stop()?;
        let rows: Vec<(Uuid, Option<String>)> = refs
            .session
            .run(ctx, |conn| {
                sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                    .bind(after)
                    .bind(BATCH)
                    .fetch_all(conn)
            })
            .await?;
        let Some((last, _)) = rows.last() else {
            break;
        };
        after = *last;
        let mut items = Vec::new();
        for (id, key) in rows {
            let created = match key {
                Some(key) => object_time(op, &key).await?,
                None => None,
            };
            if created.is_some_and(|t| t > cutoff) {
                found.too_young += 1;
                continue;
            }
            found.planned += 1;
            if found.sample.len() < SAMPLE {
                found.sample.push(id);
            }
            items.push(plan::Planned {
                item: item("tool_files", id),
                size: None,
                last_modified: created,
            });
        }
        if !ctx.dry_run {
            plan::record(ctx, &items).await?;
        }
        ctx.progress(
            Progress {
                done: found.planned,
                detail: Some(json!({"table": "tool_files"})),
                ..phase("find orphaned tool_files")
            },
            false,
        )
        .await?;
    }
    Ok(found)
}

async fn object_time(op: &Operator, key: &str) -> Result<Option<DateTime<Utc>>, JobError> {
    match op.stat(key).await {
        Ok(meta) => Ok(meta
            .last_modified()
            .map(|t| DateTime::<Utc>::from(std::time::SystemTime::from(t)))),
        // The row points at nothing: no age to wait for.
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(JobError::failed(
            "storage_failed",
            format!("reading {key}: {e}"),
        )),
    }
}

/// A page of planned rows, checked against the references gathered afresh and the live id
/// columns, deleted in the transaction that records the outcomes.
struct Rows {
    refs: Refs,
    id_selects: Vec<String>,
}

impl plan::Decide for Rows {
    async fn decide(
        &mut self,
        ctx: &mut JobCtx,
        page: &[plan::Planned],
    ) -> Result<
        (
            Vec<&'static str>,
            Option<sqlx::Transaction<'static, sqlx::Postgres>>,
        ),
        JobError,
    > {
        let parsed: Vec<Option<(&str, Uuid)>> = page.iter().map(|p| parse_item(&p.item)).collect();
        let ids: Vec<Uuid> = parsed.iter().flatten().map(|(_, id)| *id).collect();
        let gathered = self.refs.gathered(&ids).await?;
        let live = file_refs::live_id_refs(&ctx.pool, &self.id_selects, &ids).await?;
        let mut tx = ctx.pool.begin().await?;
        sqlx::query("SET LOCAL lock_timeout = '5s'")
            .execute(&mut *tx)
            .await?;
        let mut outcomes = Vec::with_capacity(page.len());
        for entry in &parsed {
            // An item this version cannot read is left alone.
            let Some((table, id)) = entry else {
                outcomes.push("referenced");
                continue;
            };
            let referenced = match *table {
                // A dangling message_files row stays only if its message came back.
                "message_files" => sqlx::query_scalar::<_, bool>(
                    "SELECT EXISTS (SELECT 1 FROM public.message_files mf JOIN public.messages m \
                     ON m.id = mf.message_id WHERE mf.id = $1)",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?,
                _ => gathered.contains(id) || live.contains(id),
            };
            let outcome = if referenced {
                "referenced"
            } else {
                let sql: &'static str = match *table {
                    "upload_files" => "DELETE FROM public.upload_files WHERE id = $1",
                    "tool_files" => "DELETE FROM public.tool_files WHERE id = $1",
                    _ => "DELETE FROM public.message_files WHERE id = $1",
                };
                let n = sqlx::query(sql)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n == 1 { "deleted" } else { "gone" }
            };
            outcomes.push(outcome);
        }
        Ok((outcomes, Some(tx)))
    }
}

/// Gathers the references afresh, then deletes the plan's rows page by page.
async fn apply_plan(plan_id: Uuid, ctx: &mut JobCtx) -> Result<Value, JobError> {
    let id_selects = file_refs::id_column_selects(&ctx.pool).await?;
    let mut rows = Rows {
        refs: gather(ctx).await?,
        id_selects,
    };
    let total = plan::confirm(
        ctx,
        plan_id,
        BATCH,
        phase("delete planned rows"),
        "orphan_records.batch_committed",
        &mut rows,
    )
    .await;
    rows.refs.close().await;
    let total = total?;
    let counts = plan::outcomes(ctx, plan_id).await?;
    let deleted: i64 = counts
        .iter()
        .filter(|(_, outcome, _)| outcome == "deleted")
        .map(|(_, _, n)| n)
        .sum();
    let mut per_table = serde_json::Map::new();
    for (table, outcome, n) in counts {
        let entry = per_table.entry(table).or_insert_with(|| json!({}));
        entry[outcome] = json!(n);
    }
    let kept: Vec<String> = plan::kept(ctx, plan_id, SAMPLE as i64)
        .await?
        .into_iter()
        .map(|(item, _)| item)
        .collect();
    Ok(json!({
        "plan_job_id": plan_id,
        "planned": total,
        "deleted": deleted,
        "tables": per_table,
        "kept_referenced_sample": kept,
        "note": "the objects of deleted upload_files/tool_files rows are now orphan files: plan an orphan_files run to remove them",
    }))
}
