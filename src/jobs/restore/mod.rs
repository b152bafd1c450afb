//! `restore`: a set back into what this daemon is configured for, as Dify would see it: the
//! database `DB_*` names (not Upkeep's schema), the storage `STORAGE_TYPE` names, the vector
//! store `VECTOR_STORE` names (in that store's layout, with `index_struct` pointing at it). The
//! whole set is verified before anything is touched; a non-empty target is refused unless
//! `overwrite`; counts are compared with the manifest at the end.

pub mod database;
mod storage;
mod vectors;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::backup::verify::{check_set_param, open_source, resolve_set, verify_set};
use super::backup::{Part, repo_config};
use super::{JobCtx, JobError, JobKind, SpecError, storage_param};
use crate::backup::pg::PgTarget;
use crate::backup::repo::Manifest;
use crate::config::Settings;
use crate::dify::age;
use crate::storage::StorageConfig;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreParams {
    /// The repository. Default: `UPKEEP_BACKUP_TARGET`, else `UPKEEP_BACKUP_DIR`.
    #[serde(default)]
    #[schema(value_type = Option<StorageConfig>)]
    pub source: Option<Value>,
    /// A set id or `latest`.
    pub set: String,
    /// What to restore. Default: every part the set holds.
    #[serde(default)]
    pub parts: Option<Vec<Part>>,
    /// Restore over a database, storage or vector store that already holds data (Dify's tables
    /// are replaced in one transaction; objects and records with the same keys are replaced).
    #[serde(default)]
    pub overwrite: bool,
    /// Storage objects in flight at once (1..=64).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
}

fn default_concurrency() -> u32 {
    8
}

pub struct Restore;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    checked: bool,
    database: Option<Value>,
    storage: Option<Value>,
    vectors_done: Vec<Value>,
    vectors_current: Option<Uuid>,
    warnings: Vec<String>,
}

fn dify_storage(settings: &Settings) -> Result<StorageConfig, SpecError> {
    StorageConfig::from_env(&settings.storage).map_err(|e| {
        SpecError::invalid(
            "params.parts",
            format!("storage: Dify's storage is not usable: {e}"),
        )
    })
}

impl JobKind for Restore {
    const KIND: &'static str = "restore";
    type Params = RestoreParams;
    type Plan = crate::jobs::contract::restore::RestorePlan;
    type Outcome = crate::jobs::contract::restore::RestoreResult;
    type Detail = crate::jobs::contract::restore::RestoreDetail;
    const PHASES: &'static [crate::jobs::contract::Phase] = crate::jobs::contract::restore::PHASES;

    fn resource_key(_: &RestoreParams) -> Option<String> {
        // It writes Dify's storage: never beside a storage migration or cleanup.
        Some("storage".into())
    }

    async fn validate(
        params: &RestoreParams,
        _pool: &PgPool,
        settings: &Settings,
    ) -> Result<(), SpecError> {
        check_set_param(&params.set)?;
        storage_param::check_concurrency(params.concurrency)?;
        if params.parts.as_ref().is_some_and(Vec::is_empty) {
            return Err(SpecError::invalid(
                "params.parts",
                "must name at least one of database, storage, vectors (leave it out for all)",
            ));
        }
        let config = repo_config(params.source.as_ref(), "source", settings)?;
        storage_param::check_exists(&config, "source", params.source.is_some())?;
        storage_param::open(&config, "source")?;
        // Parts named explicitly must have somewhere to go; the set's own parts are checked when
        // the job has read its manifest.
        let named = |p| params.parts.as_ref().is_some_and(|ps| ps.contains(&p));
        if named(Part::Storage) {
            dify_storage(settings)?;
        }
        if named(Part::Vectors) {
            let env = &settings.vector_store;
            crate::vector::StoreConfig::from_env(&env.kind, env).map_err(|e| {
                SpecError::invalid(
                    "params.parts",
                    format!("vectors: Dify's vector store is not usable: {e} (VECTOR_STORE={}); set that in Dify's env", env.kind),
                )
            })?;
        }
        Ok(())
    }

    async fn plan(params: RestoreParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let (config, op) = open_source(params.source.as_ref(), ctx)?;
        let m = resolve_set(&op, &params.set).await?;
        let parts = parts(&params, &m)?;
        let refusals = refusals(ctx, &m, &parts, params.overwrite).await?;
        Ok(json!({
            "source": config.describe(),
            "set": m.set,
            "label": m.label,
            "dify": m.dify,
            "parts": parts,
            "would_refuse": refusals,
            "database": m.database.as_ref().map(|d| d.databases.iter().map(|db| json!({"name": db.name, "bytes": db.size, "tables": db.tables.len()})).collect::<Vec<_>>()),
            "storage": m.storage.as_ref().map(|s| json!({"objects": s.objects, "bytes": s.bytes, "into": dify_storage(&ctx.settings).map(|c| c.describe()).ok()})),
            "vectors": m.vectors.as_ref().map(|v| json!({"datasets": v.datasets.len(), "records": v.datasets.iter().map(|d| d.records).sum::<u64>(), "into": vectors::target(ctx).map(|c| c.describe()).ok()})),
        }))
    }

    async fn run(params: RestoreParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let (config, op) = open_source(params.source.as_ref(), ctx)?;
        let m = resolve_set(&op, &params.set).await?;
        let parts = parts(&params, &m)?;
        let mut cp: Checkpoint = ctx.checkpoint()?.unwrap_or_default();
        if !cp.checked {
            let check = verify_set(ctx, &op, &m, true).await?;
            if !check.problems.is_empty() {
                return Err(JobError::Failed {
                    code: "verify_failed",
                    message: format!("nothing was restored: {}", check.message(&m.set)),
                    result: Some(json!({"set": m.set, "verify": check})),
                });
            }
            let refused = refusals(ctx, &m, &parts, params.overwrite).await?;
            if let Some(first) = refused.first() {
                return Err(JobError::Failed {
                    code: REFUSALS
                        .iter()
                        .find(|c| first["code"] == **c)
                        .copied()
                        .unwrap_or("target_not_empty"),
                    message: format!(
                        "nothing was restored: {}",
                        refused
                            .iter()
                            .filter_map(|r| r["message"].as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    result: Some(json!({"set": m.set, "refused": refused})),
                });
            }
            cp.warnings = connected_clients(ctx).await?;
            for w in &cp.warnings {
                ctx.warn(w.clone(), Value::Null).await?;
            }
            cp.checked = true;
            ctx.save_checkpoint(&ctx.pool.clone(), &cp).await?;
        }
        if parts.contains(&Part::Database) && cp.database.is_none() {
            cp.database = Some(restore_database(ctx, &op, &m, params.overwrite).await?);
            ctx.save_checkpoint(&ctx.pool.clone(), &cp).await?;
        }
        if parts.contains(&Part::Storage) && cp.storage.is_none() {
            let target = dify_storage(&ctx.settings).map_err(storage_param::invalid)?;
            let dst = storage_param::open(&target, "storage").map_err(storage_param::invalid)?;
            let mut result = storage::run(ctx, &op, &dst, &m, params.concurrency as usize).await?;
            result["into"] = json!(target.describe());
            cp.storage = Some(result);
            ctx.save_checkpoint(&ctx.pool.clone(), &cp).await?;
        }
        let vectors = if parts.contains(&Part::Vectors) {
            vectors::run(ctx, &op, &m, &mut cp).await?
        } else {
            Value::Null
        };
        Ok(json!({
            "source": config.describe(),
            "set": m.set,
            "dify": m.dify,
            "parts": parts,
            "database": cp.database,
            "storage": cp.storage,
            "vectors": vectors,
            "warnings": cp.warnings,
        }))
    }
}

fn parts(params: &RestoreParams, m: &Manifest) -> Result<Vec<Part>, JobError> {
    let held: Vec<Part> = [Part::Database, Part::Storage, Part::Vectors]
        .into_iter()
        .filter(|p| m.parts().contains(&p.name()))
        .collect();
    match &params.parts {
        None => Ok(held),
        Some(wanted) => {
            if let Some(p) = wanted.iter().find(|p| !held.contains(p)) {
                return Err(JobError::failed(
                    "part_not_in_set",
                    format!(
                        "set {} holds no {} part (it holds: {})",
                        m.set,
                        p.name(),
                        m.parts().join(", ")
                    ),
                ));
            }
            let mut w = wanted.clone();
            w.sort();
            w.dedup();
            Ok(w)
        }
    }
}

/// The codes a refused restore fails with.
const REFUSALS: &[&str] = &[
    "target_unconfigured",
    "dify_revision_newer",
    "target_not_empty",
];

/// Why restoring `parts` of `m` here would be refused; empty when it may go ahead.
async fn refusals(
    ctx: &JobCtx,
    m: &Manifest,
    parts: &[Part],
    overwrite: bool,
) -> Result<Vec<Value>, JobError> {
    let mut out = Vec::new();
    if parts.contains(&Part::Database) {
        let current = crate::dify::revision(&ctx.pool).await.unwrap_or(None);
        if let (Some(set_rev), Some(here)) = (&m.dify.revision, &current)
            && let (Some(a), Some(b)) = (age(set_rev), age(here))
            && a < b
        {
            out.push(json!({"code": "dify_revision_newer", "message": format!(
                "the set was taken at Dify revision {set_rev} ({}), newer than this database's {here} ({}): the Dify that uses this database cannot read it; upgrade Dify first",
                crate::dify::release_of(set_rev).unwrap_or("?"), crate::dify::release_of(here).unwrap_or("?"))}));
        }
        let main = PgTarget::from_url(&ctx.settings.database_url)
            .map_err(|e| JobError::failed("restore_failed", e.to_string()))?;
        let count = m.database.as_ref().map_or(0, |d| d.databases.len());
        for i in 0..count {
            let name = target_database(ctx, i, &main);
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&ctx.pool)
                    .await?;
            if !exists || overwrite {
                continue;
            }
            let mut conn = database::connect(ctx, &name).await?;
            let tables = database::user_tables(&mut conn).await?;
            if tables > 0 {
                out.push(json!({"code": "target_not_empty", "part": "database", "message": format!(
                    "database {name} already has {tables} table(s) outside schema upkeep (pass overwrite: true to replace them)")}));
            }
        }
    }
    // A part with nowhere to go would fail after the database was already restored.
    if parts.contains(&Part::Storage)
        && let Err(e) = dify_storage(&ctx.settings)
    {
        out.push(
            json!({"code": "target_unconfigured", "part": "storage", "message": e.to_string()}),
        );
        return Ok(out);
    }
    if parts.contains(&Part::Vectors)
        && let Err(e) = vectors::target(ctx)
    {
        out.push(
            json!({"code": "target_unconfigured", "part": "vectors", "message": e.to_string()}),
        );
        return Ok(out);
    }
    if parts.contains(&Part::Storage) && !overwrite {
        let target = dify_storage(&ctx.settings).map_err(storage_param::invalid)?;
        let dst = storage_param::open(&target, "storage").map_err(storage_param::invalid)?;
        let mut listing = crate::storage::listing::Listing::new(
            &dst,
            crate::storage::transfer::Side::Target,
            vec![String::new()],
        );
        if let Some(batch) = listing.next_batch(1).await? {
            out.push(json!({"code": "target_not_empty", "part": "storage", "message": format!(
                "the storage {} already holds objects (e.g. {}) (pass overwrite: true to restore over them)",
                target.describe(), batch[0].0)}));
        }
    }
    if parts.contains(&Part::Vectors) && !overwrite {
        let occupied = vectors::occupied(ctx, m).await?;
        if let Some((id, collection, n)) = occupied.first() {
            out.push(json!({"code": "target_not_empty", "part": "vectors", "message": format!(
                "the vector store already holds {n} record(s) in {collection} (dataset {id}), and records of {} more dataset(s) are there too (pass overwrite: true)",
                occupied.len() - 1)}));
        }
    }
    Ok(out)
}

/// Where the set's `i`th database goes: Dify's (first) to this daemon's database, the plugin
/// daemon's to `DB_PLUGIN_DATABASE`.
fn target_database(ctx: &JobCtx, i: usize, main: &PgTarget) -> String {
    if i == 0 {
        main.database()
    } else {
        ctx.settings.backup.plugin_database.clone()
    }
}

/// Dify's api and worker hold connections with no application name of ours.
async fn connected_clients(ctx: &JobCtx) -> Result<Vec<String>, JobError> {
    let others: Vec<(Option<String>, Option<String>, i64)> = sqlx::query_as(
        "SELECT application_name, host(client_addr), count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND backend_type = 'client backend' AND application_name NOT IN ('upkeep', 'pg_restore', 'pg_dump') \
         GROUP BY 1, 2",
    )
    .fetch_all(&ctx.pool)
    .await?;
    Ok(others
        .into_iter()
        .map(|(app, addr, n)| {
            format!(
                "{n} other connection(s) to the database ({}{}): stop Dify's api and worker while restoring",
                app.filter(|a| !a.is_empty()).unwrap_or_else(|| "no application name".into()),
                addr.map(|a| format!(" from {a}")).unwrap_or_default()
            )
        })
        .collect())
}

async fn restore_database(
    ctx: &mut JobCtx,
    op: &opendal::Operator,
    m: &Manifest,
    overwrite: bool,
) -> Result<Value, JobError> {
    let Some(part) = &m.database else {
        return Ok(Value::Null);
    };
    database::check_tool(ctx, m).await?;
    let main = PgTarget::from_url(&ctx.settings.database_url)
        .map_err(|e| JobError::failed("restore_failed", e.to_string()))?;
    let mut out = Vec::new();
    for (i, db) in part.databases.iter().enumerate() {
        // Dify's goes where this daemon's DB_* point, the plugin daemon's to DB_PLUGIN_DATABASE.
        let name = target_database(ctx, i, &main);
        if i > 0 {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(&name)
                    .fetch_one(&ctx.pool)
                    .await?;
            if !exists {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "CREATE DATABASE {}",
                    crate::db::quote_ident(&name)
                )))
                .execute(&ctx.pool)
                .await?;
            }
        }
        ctx.progress(
            crate::jobs::Progress {
                phase: format!("restore database {name}"),
                done: i as u64,
                total: Some(part.databases.len() as u64),
                unit: "databases".into(),
                ..Default::default()
            },
            true,
        )
        .await?;
        database::pg_restore(ctx, op, db, &main.with_database(&name), overwrite).await?;
        let found = database::counts_of(ctx, &name).await?;
        let (matches, tables) = database::compare(&db.tables, &found);
        if !matches {
            return Err(JobError::Failed {
                code: "counts_differ",
                message: format!(
                    "database {name}: row counts after the restore differ from the set's"
                ),
                result: Some(json!({"database": name, "tables": tables})),
            });
        }
        out.push(json!({"name": name, "from": db.name, "matches": matches, "tables": tables}));
    }
    Ok(json!({"databases": out}))
}
