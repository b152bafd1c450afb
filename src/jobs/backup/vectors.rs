//! The vectors part: each dataset's (and each app's annotation replies') records, read through
//! the source trait from the store its `index_struct` names, into Parquet files of bounded size
//! under `objects/` (an unchanged file is not written twice), with a descriptor per dataset
//! saying where they came from. A resumed backup continues a dataset at its cursor.

use opendal::Operator;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Checkpoint, phase, repo_failed};
use crate::backup::repo::{self, Descriptor, FileEntry, RepoError, VectorFile, VectorsPart};
use crate::backup::vector_file::{self, Record};
use crate::dify::vector_records::{self, Dataset};
use crate::jobs::vector_migrate::units::{annotation_source, locate_source};
use crate::jobs::{JobCtx, JobError, Progress};
use crate::storage::transfer::{self, Sha256Sum, hex};
use crate::vector::StoreConfig;
use crate::vector::store::{Location, VectorError, VectorSource, VectorStore};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    finished: bool,
    pub done: Vec<Descriptor>,
    current: Option<Current>,
    pub bytes_written: u64,
    pub bytes_deduplicated: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Current {
    descriptor: Descriptor,
    cursor: Option<String>,
}

type Located = Result<(StoreConfig, Location), String>;

/// Every dataset with vectors and every app with annotation replies, where they are now.
async fn units(ctx: &JobCtx) -> Result<Vec<(Dataset, Located)>, JobError> {
    let settings = &ctx.settings;
    let mut units = Vec::new();
    for ds in vector_records::datasets(&ctx.pool, "", None, None).await? {
        let at = locate_source(&ds, None, settings, Ok(settings.vector_store.kind.clone()));
        units.push((ds, at));
    }
    let apps = vector_records::annotation_apps(&ctx.pool, None, None).await?;
    if !apps.is_empty() {
        let kind = annotation_source(None, &ctx.pool, settings, "").await?;
        for app in apps {
            let at = locate_source(&app, None, settings, kind.clone());
            units.push((app, at));
        }
    }
    Ok(units)
}

fn store_failed(what: &str, e: impl std::fmt::Display) -> JobError {
    JobError::failed("vector_store_failed", format!("{what}: {e}"))
}

fn unit_name(ds: &Dataset) -> String {
    let kind = if ds.annotations { "app" } else { "dataset" };
    format!("{kind} {}", ds.id)
}

pub async fn plan(ctx: &mut JobCtx) -> Result<Value, JobError> {
    let mut out = Vec::new();
    for (ds, at) in units(ctx).await? {
        out.push(match at {
            Ok((config, at)) => json!({
                "kind": if ds.annotations { "annotations" } else { "dataset" },
                "id": ds.id, "store": config.describe(), "collection": at.collection,
            }),
            Err(e) => json!({"id": ds.id, "problem": e}),
        });
    }
    Ok(json!({"datasets": out}))
}

pub async fn run(ctx: &mut JobCtx, op: &Operator, cp: &mut Checkpoint) -> Result<(), JobError> {
    if cp.vectors.finished {
        return Ok(());
    }
    let units = units(ctx).await?;
    let total = units.len() as u64;
    for (i, (ds, at)) in units.into_iter().enumerate() {
        if cp
            .vectors
            .done
            .iter()
            .any(|d| d.id == ds.id && d.kind == kind(&ds))
        {
            continue;
        }
        ctx.check_stop()?;
        let (config, at) = at.map_err(|e| {
            JobError::failed(
                "vectors_unreadable",
                format!(
                    "{}: {e}; the set would not hold its vectors",
                    unit_name(&ds)
                ),
            )
        })?;
        ctx.progress(
            Progress {
                done: i as u64,
                total: Some(total),
                unit: "datasets".into(),
                ..phase("back up vectors")
            },
            true,
        )
        .await?;
        let descriptor = back_up_unit(ctx, op, cp, &ds, &config, &at).await?;
        cp.vectors.done.push(descriptor);
        cp.vectors.current = None;
        ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
    }
    cp.vectors.finished = true;
    ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
    Ok(())
}

fn kind(ds: &Dataset) -> String {
    if ds.annotations {
        "annotations"
    } else {
        "dataset"
    }
    .to_string()
}

async fn back_up_unit(
    ctx: &mut JobCtx,
    op: &Operator,
    cp: &mut Checkpoint,
    ds: &Dataset,
    config: &StoreConfig,
    at: &Location,
) -> Result<Descriptor, JobError> {
    let name = unit_name(ds);
    let store = config.open().await.map_err(|e| store_failed(&name, e))?;
    let info = store
        .describe(&at.collection)
        .await
        .map_err(|e| store_failed(&name, e))?;
    let mut current = match cp.vectors.current.take() {
        Some(c) if c.descriptor.id == ds.id && c.descriptor.kind == kind(ds) => c,
        _ => Current {
            descriptor: Descriptor {
                format: "upkeep-vectors/1".into(),
                kind: kind(ds),
                id: ds.id,
                tenant_id: ds.tenant_id,
                store: config.kind().into(),
                collection: at.collection.clone(),
                dimension: info.as_ref().and_then(|i| i.dimension),
                metric: info
                    .as_ref()
                    .map_or_else(|| "cosine".into(), |i| i.distance.clone()),
                layout: info.as_ref().map_or_else(String::new, |i| i.layout.clone()),
                model: ds.embedding_model.clone(),
                provider: ds.embedding_model_provider.clone(),
                records: 0,
                parts: Vec::new(),
            },
            cursor: None,
        },
    };
    if info.is_none() {
        // Dify creates a collection with the first document: none yet, nothing to keep.
        return Ok(current.descriptor);
    }
    let rows = vector_file::rows_per_file(current.descriptor.dimension.unwrap_or(1536));
    loop {
        ctx.check_stop()?;
        let page = store
            .read_page(at, current.cursor.as_deref(), rows, true)
            .await
            .map_err(|e: VectorError| store_failed(&name, e))?;
        if !page.points.is_empty() {
            let records: Vec<Record> = page
                .points
                .into_iter()
                .map(|p| Record {
                    doc_id: p.doc_id().map_or_else(|| p.id.clone(), str::to_string),
                    text: p.text,
                    metadata: p.metadata,
                    vector: p.vector,
                })
                .collect();
            if current.descriptor.dimension.is_none() {
                current.descriptor.dimension = records.first().map(|r| r.vector.len());
            }
            let file = store_file(ctx, op, cp, &records).await?;
            ctx.failpoint("backup.vector_file").await?;
            current.descriptor.records += file.rows;
            current.descriptor.parts.push(file);
        }
        // The last page is committed by the caller, with the dataset marked done: a cursor of
        // None would otherwise read as "start over".
        let Some(next) = page.next else {
            return Ok(current.descriptor);
        };
        current.cursor = Some(next);
        cp.vectors.current = Some(current.clone());
        ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
        ctx.failpoint("backup.vector_page").await?;
    }
}

/// One Parquet file under `objects/`, unless those bytes are there already.
async fn store_file(
    ctx: &JobCtx,
    op: &Operator,
    cp: &mut Checkpoint,
    records: &[Record],
) -> Result<VectorFile, JobError> {
    let bytes =
        vector_file::encode(records).map_err(|e| JobError::failed("internal", e.to_string()))?;
    let size = bytes.len() as u64;
    let sha: Sha256Sum = Sha256::digest(&bytes).into();
    let path = repo::object_path(&sha);
    let there = transfer::target_size(op, &path)
        .await
        .map_err(|e| JobError::failed("target_failed", format!("repository: {e}")))?;
    let written = there != Some(size);
    if written {
        op.write_with(&path, bytes)
            .content_type("application/vnd.apache.parquet")
            .await
            .map_err(|e| repo_failed(RepoError::storage(&path, e)))?;
        cp.vectors.bytes_written += size;
    } else {
        cp.vectors.bytes_deduplicated += size;
    }
    sqlx::query(
        "INSERT INTO upkeep.backup_files (job_id, part, path, size, sha256, written) \
         VALUES ($1, 'vectors', $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(ctx.job_id)
    .bind(&path)
    .bind(size as i64)
    .bind(sha.to_vec())
    .bind(written)
    .execute(&ctx.pool)
    .await?;
    Ok(VectorFile {
        path,
        rows: records.len() as u64,
        size,
        sha256: hex(&sha),
    })
}

/// A descriptor file per dataset, for readers of the set other than Upkeep.
pub async fn write_descriptors(
    _ctx: &mut JobCtx,
    op: &Operator,
    cp: &Checkpoint,
) -> Result<(VectorsPart, Vec<FileEntry>), JobError> {
    let mut files = Vec::new();
    for d in &cp.vectors.done {
        let path = repo::descriptor_path(&cp.set, &format!("{}-{}", d.kind, d.id));
        let body = serde_json::to_vec_pretty(d)
            .map_err(|e| JobError::failed("internal", e.to_string()))?;
        files.push(FileEntry {
            path: path.clone(),
            size: body.len() as u64,
            sha256: hex(&Sha256::digest(&body)),
        });
        op.write_with(&path, body)
            .content_type("application/json")
            .await
            .map_err(|e| repo_failed(RepoError::storage(&path, e)))?;
    }
    Ok((
        VectorsPart {
            store: cp
                .vectors
                .done
                .first()
                .map_or_else(String::new, |d| d.store.clone()),
            datasets: cp.vectors.done.clone(),
        },
        files,
    ))
}
