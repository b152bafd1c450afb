//! `backup`: Dify's database (pg_dump, streamed), its whole storage (content-addressed, so an
//! unchanged object is never written twice) and every dataset's vectors (Parquet, portable to
//! any store) into one set of a repository on any storage backend; the manifest, written
//! last, pins every file by size and SHA-256. The set is verified before retention may
//! remove anything older.

mod database;
mod retention;
mod storage;
mod vectors;
pub mod verify;

use chrono::{DateTime, Utc};
use opendal::Operator;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use utoipa::ToSchema;

use super::{JobCtx, JobError, JobKind, Progress, SpecError, storage_param};
use crate::backup::repo::{self, FileEntry, Manifest};
use crate::config::Settings;
use crate::storage::StorageConfig;

pub use database::count_rows;
pub use retention::Retention;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Dify's database (and the plugin daemon's, when it exists) as pg_dump archives.
    Database,
    /// Every object under Dify's storage root.
    Storage,
    /// Every dataset's and app's vector records, read from the store they are in.
    Vectors,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Database => "database",
            Part::Storage => "storage",
            Part::Vectors => "vectors",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupParams {
    /// The repository. Default: `UPKEEP_BACKUP_TARGET` (a storage config as JSON), else
    /// `UPKEEP_BACKUP_DIR` (a local directory).
    #[serde(default)]
    #[schema(value_type = Option<StorageConfig>)]
    pub target: Option<Value>,
    /// What to back up. Default: the database, plus the storage and the vectors when Dify's
    /// env configures them.
    #[serde(default)]
    pub parts: Option<Vec<Part>>,
    /// Kept in the manifest, e.g. `pre-upgrade`.
    #[serde(default)]
    pub label: Option<String>,
    /// Older complete sets to remove once this one is verified; objects no set references any
    /// more go with them. Nothing is removed when absent.
    #[serde(default)]
    pub retention: Option<Retention>,
    /// Storage objects in flight at once (1..=64).
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Read and hash every storage object, even those the previous set's index says are
    /// unchanged (same size and modification time, and ETag where the storage has them).
    #[serde(default)]
    pub rehash: bool,
}

fn default_concurrency() -> u32 {
    8
}

pub struct Backup;

/// The repository a job names, or the one the env names.
pub fn repo_config(
    value: Option<&Value>,
    field: &str,
    settings: &Settings,
) -> Result<StorageConfig, SpecError> {
    match value {
        Some(v) => storage_param::parse(v, field),
        None => match &settings.backup.target {
            Some(v) => StorageConfig::from_value(v.clone()).map_err(|e| {
                SpecError::invalid(
                    format!("params.{field}"),
                    format!(
                        "not given, and {} is not a usable storage config: {}: {}",
                        settings.backup.target_source, e.field, e.message
                    ),
                )
            }),
            None => Err(SpecError::invalid(
                format!("params.{field}"),
                "not given, and neither UPKEEP_BACKUP_TARGET nor UPKEEP_BACKUP_DIR is set: \
                 name the backup repository",
            )),
        },
    }
}

/// The storage Dify is configured with, if it is.
fn dify_storage(settings: &Settings) -> Result<StorageConfig, String> {
    StorageConfig::from_env(&settings.storage).map_err(|e| e.to_string())
}

fn vectors_configured(settings: &Settings) -> bool {
    let env = &settings.vector_store;
    crate::vector::StoreConfig::from_env(&env.kind, env).is_ok()
}

fn parts(params: &BackupParams, settings: &Settings) -> Result<Vec<Part>, SpecError> {
    let mut parts = match &params.parts {
        Some(p) if p.is_empty() => {
            return Err(SpecError::invalid(
                "params.parts",
                "must name at least one of database, storage, vectors (leave it out for all)",
            ));
        }
        Some(p) => p.clone(),
        None => {
            let mut p = vec![Part::Database];
            if dify_storage(settings).is_ok() {
                p.push(Part::Storage);
            }
            if vectors_configured(settings) {
                p.push(Part::Vectors);
            }
            p
        }
    };
    parts.sort();
    parts.dedup();
    if parts.contains(&Part::Storage)
        && let Err(e) = dify_storage(settings)
    {
        return Err(SpecError::invalid(
            "params.parts",
            format!("storage: Dify's storage is not usable: {e}"),
        ));
    }
    Ok(parts)
}

/// What a backup has done so far, committed with each batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    set: String,
    created_at: DateTime<Utc>,
    parts: Vec<Part>,
    database: database::State,
    storage: storage::State,
    vectors: vectors::State,
}

impl JobKind for Backup {
    const KIND: &'static str = "backup";
    type Params = BackupParams;
    type Plan = crate::jobs::contract::backup::BackupPlan;
    type Outcome = crate::jobs::contract::backup::BackupResult;
    type Detail = crate::jobs::contract::backup::BackupDetail;
    const PHASES: &'static [crate::jobs::contract::Phase] = crate::jobs::contract::backup::PHASES;

    fn resource_key(params: &BackupParams) -> Option<String> {
        // Two backups into one repository would race on its objects and retention.
        let repo = params
            .target
            .as_ref()
            .and_then(|v| StorageConfig::from_value(v.clone()).ok())
            .map_or_else(|| "default".to_string(), |c| c.describe());
        Some(format!("backup:{repo}"))
    }

    async fn validate(
        params: &BackupParams,
        pool: &PgPool,
        settings: &Settings,
    ) -> Result<(), SpecError> {
        storage_param::check_concurrency(params.concurrency)?;
        if let Some(label) = &params.label
            && (label.len() > 200 || label.chars().any(char::is_control))
        {
            return Err(SpecError::invalid(
                "params.label",
                "must be at most 200 characters, without control characters",
            ));
        }
        if let Some(r) = &params.retention {
            r.check()?;
        }
        let config = repo_config(params.target.as_ref(), "target", settings)?;
        storage_param::open(&config, "target")?;
        if let Ok(source) = dify_storage(settings) {
            let inside = match (source.local_root(), config.local_root()) {
                (Some(a), Some(b)) => {
                    let (a, b) = (
                        std::path::PathBuf::from(crate::storage::config::absolute(a)),
                        std::path::PathBuf::from(crate::storage::config::absolute(b)),
                    );
                    a.starts_with(&b) || b.starts_with(&a)
                }
                _ => source == config,
            };
            if inside {
                return Err(SpecError::invalid(
                    "params.target",
                    format!(
                        "{} is or overlaps Dify's own storage ({}): keep backups somewhere else",
                        config.describe(),
                        source.describe()
                    ),
                ));
            }
        }
        let parts = parts(params, settings)?;
        if parts.contains(&Part::Database) {
            database::check_tools(pool, settings)
                .await
                .map_err(|m| SpecError::invalid("params.parts", format!("database: {m}")))?;
        }
        Ok(())
    }

    async fn plan(params: BackupParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let (config, op) = open_repo(&params, ctx)?;
        let parts = parts(&params, &ctx.settings).map_err(storage_param::invalid)?;
        let existing = repo::complete_sets(&op).await.map_err(repo_failed)?;
        let mut result = json!({
            "target": config.describe(),
            "parts": parts,
            "sets_in_repository": existing.len(),
            "newest_set": existing.last(),
        });
        if parts.contains(&Part::Database) {
            result["database"] = database::plan(ctx).await?;
        }
        if parts.contains(&Part::Storage) {
            result["storage"] = storage::plan(ctx, &op).await?;
        }
        if parts.contains(&Part::Vectors) {
            result["vectors"] = vectors::plan(ctx).await?;
        }
        if let Some(r) = &params.retention {
            result["retention"] = json!({
                "would_keep_or_remove": retention::select(&op, r, None).await.map_err(repo_failed)?,
                "note": "applied only after the new set is verified",
            });
        }
        Ok(result)
    }

    async fn run(params: BackupParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let (config, op) = open_repo(&params, ctx)?;
        let mut cp: Checkpoint = match ctx.checkpoint()? {
            Some(cp) => cp,
            None => Checkpoint {
                set: repo::set_id(ctx.job_id),
                created_at: Utc::now(),
                parts: parts(&params, &ctx.settings).map_err(storage_param::invalid)?,
                database: Default::default(),
                storage: Default::default(),
                vectors: Default::default(),
            },
        };
        ctx.log(
            format!(
                "backing up {} into set {} of {}",
                join(&cp.parts),
                cp.set,
                config.describe()
            ),
            json!({"set": cp.set}),
        )
        .await?;
        if cp.parts.contains(&Part::Database) {
            database::run(ctx, &op, &mut cp).await?;
        }
        if cp.parts.contains(&Part::Storage) {
            storage::run(
                ctx,
                &op,
                &mut cp,
                params.concurrency as usize,
                params.rehash,
            )
            .await?;
        }
        if cp.parts.contains(&Part::Vectors) {
            vectors::run(ctx, &op, &mut cp).await?;
        }
        let manifest = finish(ctx, &op, &cp, &params).await?;
        ctx.progress(phase("verify the set"), true).await?;
        let check = verify::verify_set(ctx, &op, &manifest, false).await?;
        if !check.problems.is_empty() {
            return Err(JobError::Failed {
                code: "verify_failed",
                message: check.message(&manifest.set),
                result: Some(json!({"set": manifest.set, "verify": check})),
            });
        }
        record_set(ctx, &config, &manifest).await?;
        let retention = match &params.retention {
            Some(r) => Some(retention::apply(ctx, &op, r, &manifest.set).await?),
            None => None,
        };
        let (written, deduplicated) = (
            cp.storage.bytes_written + cp.vectors.bytes_written + cp.database.bytes(),
            cp.storage.bytes_deduplicated + cp.vectors.bytes_deduplicated,
        );
        let files =
            manifest.files.len() as u64 + manifest.storage.as_ref().map_or(0, |s| s.objects);
        ctx.progress(
            Progress {
                done: files,
                total: Some(files),
                ..phase("finished")
            },
            true,
        )
        .await?;
        Ok(json!({
            "set": manifest.set,
            "target": config.describe(),
            "label": manifest.label,
            "parts": cp.parts,
            "bytes_written": written,
            "bytes_deduplicated": deduplicated,
            "counts": {
                "tables": manifest.database.as_ref().map(|d| d.databases.iter().map(|db| db.tables.len()).sum::<usize>()),
                "rows": manifest.database.as_ref().map(|d| d.databases.iter().flat_map(|db| db.tables.values()).sum::<i64>()),
                "objects": manifest.storage.as_ref().map(|s| s.objects),
                "object_bytes": manifest.storage.as_ref().map(|s| s.bytes),
                "records": manifest.vectors.as_ref().map(|v| v.datasets.iter().map(|d| d.records).sum::<u64>()),
            },
            "database": manifest.database.as_ref().map(|d| json!({
                "restarts": d.restarts,
                "snapshot_taken_at": d.snapshot_taken_at,
                "databases": d.databases.iter().map(|db| json!({"name": db.name, "bytes": db.size, "tables": db.tables.len()})).collect::<Vec<_>>(),
            })),
            "storage": manifest.storage.as_ref().map(|s| json!({
                "objects": s.objects, "bytes": s.bytes,
                "objects_written": cp.storage.objects_written, "bytes_written": cp.storage.bytes_written,
                "objects_deduplicated": s.objects - cp.storage.objects_written, "bytes_deduplicated": cp.storage.bytes_deduplicated,
                "objects_unchanged_not_read": cp.storage.objects_unchanged,
                "previous_set": cp.storage.previous_set.as_deref().filter(|s| !s.is_empty()),
                "vanished": cp.storage.vanished,
            })),
            "vectors": manifest.vectors.as_ref().map(|v| v.datasets.iter().map(|d| json!({
                "kind": d.kind, "id": d.id, "store": d.store, "collection": d.collection, "records": d.records,
            })).collect::<Vec<_>>()),
            "dify": manifest.dify,
            "verified": true,
            "retention": retention,
        }))
    }
}

fn join(parts: &[Part]) -> String {
    parts
        .iter()
        .map(|p| p.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn open_repo(params: &BackupParams, ctx: &JobCtx) -> Result<(StorageConfig, Operator), JobError> {
    let config = repo_config(params.target.as_ref(), "target", &ctx.settings)
        .map_err(storage_param::invalid)?;
    let op = storage_param::open(&config, "target").map_err(storage_param::invalid)?;
    Ok((config, op))
}

pub fn repo_failed(e: repo::RepoError) -> JobError {
    match e {
        repo::RepoError::Incomplete(_) => JobError::failed("set_incomplete", e.to_string()),
        repo::RepoError::BadManifest { .. } => JobError::failed("bad_manifest", e.to_string()),
        repo::RepoError::Storage { .. } => JobError::failed("target_failed", e.to_string()),
    }
}

fn phase(name: &str) -> Progress {
    Progress {
        phase: name.into(),
        unit: "files".into(),
        ..Default::default()
    }
}

/// Writes the storage index and then the manifest: the set is complete from here on.
async fn finish(
    ctx: &mut JobCtx,
    op: &Operator,
    cp: &Checkpoint,
    params: &BackupParams,
) -> Result<Manifest, JobError> {
    ctx.progress(phase("write the manifest"), true).await?;
    let mut files: Vec<FileEntry> = Vec::new();
    let database = cp.database.manifest();
    if let Some(db) = &database {
        for d in &db.databases {
            files.push(FileEntry {
                path: d.path.clone(),
                size: d.size,
                sha256: d.sha256.clone(),
            });
        }
    }
    let storage = if cp.parts.contains(&Part::Storage) {
        let part = storage::write_index(ctx, op, cp).await?;
        files.push(part.index.clone());
        Some(part)
    } else {
        None
    };
    let vectors = if cp.parts.contains(&Part::Vectors) {
        let (part, descriptor_files) = vectors::write_descriptors(ctx, op, cp).await?;
        for d in &part.datasets {
            files.extend(d.parts.iter().map(|f| FileEntry {
                path: f.path.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
            }));
        }
        files.extend(descriptor_files);
        Some(part)
    } else {
        None
    };
    let revision = crate::dify::revision(&ctx.pool).await.unwrap_or(None);
    let manifest = Manifest {
        format: repo::FORMAT.into(),
        set: cp.set.clone(),
        label: params.label.clone(),
        job_id: ctx.job_id,
        created_at: cp.created_at,
        completed_at: Utc::now(),
        upkeep_version: env!("CARGO_PKG_VERSION").into(),
        dify: repo::DifyInfo {
            release: revision
                .as_deref()
                .and_then(crate::dify::release_of)
                .map(str::to_string),
            revision,
        },
        database,
        storage,
        vectors,
        files,
    };
    let body = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| JobError::failed("internal", e.to_string()))?;
    ctx.failpoint("backup.before_manifest").await?;
    let path = repo::manifest_path(&cp.set);
    op.write(&path, body)
        .await
        .map_err(|e| repo_failed(repo::RepoError::storage(&path, e)))?;
    Ok(manifest)
}

/// The catalogue row preflight reads.
async fn record_set(ctx: &JobCtx, config: &StorageConfig, m: &Manifest) -> Result<(), JobError> {
    crate::backup::sets::record(&ctx.pool, &config.describe(), ctx.job_id, m).await?;
    Ok(())
}
