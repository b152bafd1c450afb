//! Submitting a job: idempotency keys and the one-active-job-per-resource rule, both enforced
//! by unique indexes so that several daemons (and racing clients) agree.

use serde_json::json;
use uuid::Uuid;

use super::{EventType, JobRow, QueueError, append_event};
use crate::secrets::Sealer;

#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    /// Normalised params (defaults filled in), as the job will read them.
    pub params: serde_json::Value,
    pub dry_run: bool,
    pub idempotency_key: Option<String>,
    pub resource_key: Option<String>,
    pub parent_id: Option<Uuid>,
    pub max_attempts: i32,
}

#[derive(Debug)]
pub enum Submitted {
    Created(JobRow),
    /// The same idempotency key and the same request: the job made the first time.
    Existing(JobRow),
}

impl Submitted {
    pub fn into_row(self) -> JobRow {
        match self {
            Submitted::Created(r) | Submitted::Existing(r) => r,
        }
    }
}

const RESOURCE_INDEX: &str = "jobs_one_active_per_resource";

/// Queues `job`, its secrets sealed with `sealer` (see `secrets`).
pub async fn submit(
    pool: &sqlx::PgPool,
    sealer: &Sealer,
    job: NewJob,
) -> Result<Submitted, QueueError> {
    if let Some(key) = &job.idempotency_key
        && let Some(existing) = by_idempotency_key(pool, key).await?
    {
        return same_request(sealer, existing, &job);
    }
    let sealed = sealer.seal(job.params.clone())?;
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query_as::<_, JobRow>(
        "INSERT INTO upkeep.jobs (id, kind, params, dry_run, idempotency_key, resource_key, \
         parent_id, max_attempts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (idempotency_key) DO NOTHING RETURNING *",
    )
    .bind(Uuid::now_v7())
    .bind(&job.kind)
    .bind(&sealed)
    .bind(job.dry_run)
    .bind(&job.idempotency_key)
    .bind(&job.resource_key)
    .bind(job.parent_id)
    .bind(job.max_attempts)
    .fetch_optional(&mut *tx)
    .await;
    let row = match inserted {
        Ok(Some(row)) => row,
        // A racing request with the same key won: answer as if we had come second.
        Ok(None) => {
            drop(tx);
            let key = job.idempotency_key.as_deref().unwrap_or_default();
            let existing = by_idempotency_key(pool, key)
                .await?
                .ok_or_else(|| QueueError::Db(sqlx::Error::RowNotFound))?;
            return same_request(sealer, existing, &job);
        }
        Err(e) if is_resource_clash(&e) => {
            drop(tx);
            return Err(resource_busy(pool, job.resource_key.unwrap_or_default()).await);
        }
        Err(e) => return Err(e.into()),
    };
    append_event(
        &mut *tx,
        row.id,
        EventType::State,
        None,
        json!({"state": "queued", "message": "job queued"}),
    )
    .await?;
    tx.commit().await?;
    Ok(Submitted::Created(row))
}

pub(crate) fn is_resource_clash(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.constraint())
        .is_some_and(|c| c == RESOURCE_INDEX)
}

/// The error for a clash on `resource_key`, naming the job that holds it.
pub(crate) async fn resource_busy(pool: &sqlx::PgPool, resource_key: String) -> QueueError {
    let holder = sqlx::query_as::<_, (Uuid, String, String)>(
        "SELECT id, kind, state FROM upkeep.jobs \
         WHERE resource_key = $1 AND state IN ('queued', 'running') LIMIT 1",
    )
    .bind(&resource_key)
    .fetch_optional(pool)
    .await;
    match holder {
        Ok(Some((job_id, kind, state))) => QueueError::ResourceBusy {
            resource_key,
            job_id,
            kind,
            state,
        },
        // The holder finished between the clash and this look-up; the caller may simply retry.
        Ok(None) => QueueError::ResourceBusy {
            resource_key,
            job_id: Uuid::nil(),
            kind: String::new(),
            state: "finished".into(),
        },
        Err(e) => QueueError::Db(e),
    }
}

async fn by_idempotency_key(pool: &sqlx::PgPool, key: &str) -> Result<Option<JobRow>, QueueError> {
    Ok(
        sqlx::query_as::<_, JobRow>("SELECT * FROM upkeep.jobs WHERE idempotency_key = $1")
            .bind(key)
            .fetch_optional(pool)
            .await?,
    )
}

/// Sealed values differ at each sealing: params compare opened.
fn same_request(sealer: &Sealer, existing: JobRow, job: &NewJob) -> Result<Submitted, QueueError> {
    let params = sealer.open(existing.params.clone())?;
    if existing.kind == job.kind && params == job.params && existing.dry_run == job.dry_run {
        Ok(Submitted::Existing(existing))
    } else {
        Err(QueueError::IdempotencyMismatch {
            key: job.idempotency_key.clone().unwrap_or_default(),
            job_id: existing.id,
        })
    }
}

/// Queues a child job of `parent` (of the parent's kind, params already sealed) inside the
/// caller's transaction, so the parent's checkpoint naming it commits with it (`jobs::fanout`).
/// No resource key: the parent holds it for the whole family.
pub async fn submit_child(
    tx: &mut sqlx::PgConnection,
    parent: Uuid,
    kind: &str,
    sealed_params: &serde_json::Value,
) -> Result<Uuid, QueueError> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO upkeep.jobs (id, kind, params, parent_id, max_attempts) \
         VALUES ($1, $2, $3, $4, 5)",
    )
    .bind(id)
    .bind(kind)
    .bind(sealed_params)
    .bind(parent)
    .execute(&mut *tx)
    .await?;
    append_event(
        &mut *tx,
        id,
        EventType::State,
        None,
        json!({"state": "queued", "message": format!("queued by its parent {parent}")}),
    )
    .await?;
    Ok(id)
}
