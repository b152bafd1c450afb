//! Restoring the vectors part into the store `VECTOR_STORE` names, in Dify's layout for that
//! store, whatever store the set was taken from; each dataset's `index_struct` then points at
//! it. A dataset interrupted mid-way is finished with writes keyed by `doc_id`, so nothing is
//! written twice.

use opendal::Operator;
use serde_json::{Value, json};
use uuid::Uuid;

use super::Checkpoint;
use crate::backup::repo::{Descriptor, Manifest, RepoError};
use crate::backup::vector_file;
use crate::dify::vector_records::{self, Dataset};
use crate::jobs::backup::repo_failed;
use crate::jobs::{JobCtx, JobError, Progress};
use crate::vector::store::{Point, VectorTarget};
use crate::vector::{AnyStore, StoreConfig};

const WRITE_BATCH: usize = 256;

pub fn target(ctx: &JobCtx) -> Result<StoreConfig, JobError> {
    let env = &ctx.settings.vector_store;
    StoreConfig::from_env(&env.kind, env).map_err(|e| {
        JobError::failed(
            "vector_store_unusable",
            format!(
                "Dify's vector store is not usable: {e} (VECTOR_STORE={}); set that in Dify's env",
                env.kind
            ),
        )
    })
}

fn failed(d: &Descriptor, e: impl std::fmt::Display) -> JobError {
    JobError::failed("vector_store_failed", format!("{} {}: {e}", d.kind, d.id))
}

/// The dataset as the (restored) database has it, else as the descriptor describes it.
pub async fn dataset(ctx: &JobCtx, d: &Descriptor) -> Result<Dataset, JobError> {
    let has_tables: bool = sqlx::query_scalar(
        "SELECT to_regclass('public.datasets') IS NOT NULL AND to_regclass('public.apps') IS NOT NULL",
    )
    .fetch_one(&ctx.pool)
    .await?;
    let found = if !has_tables {
        Vec::new()
    } else if d.kind == "annotations" {
        vector_records::annotation_apps(&ctx.pool, Some(&[d.id]), None).await?
    } else {
        vector_records::datasets(&ctx.pool, "", Some(&[d.id]), None).await?
    };
    Ok(found.into_iter().next().unwrap_or(Dataset {
        id: d.id,
        tenant_id: d.tenant_id,
        index_struct: None,
        embedding_model: d.model.clone(),
        embedding_model_provider: d.provider.clone(),
        binding_collection: None,
        annotations: d.kind == "annotations",
        parts: Default::default(),
    }))
}

pub async fn run(
    ctx: &mut JobCtx,
    repo_op: &Operator,
    m: &Manifest,
    cp: &mut Checkpoint,
) -> Result<Value, JobError> {
    let Some(part) = &m.vectors else {
        return Ok(Value::Null);
    };
    let config = target(ctx)?;
    let revision = crate::dify::revision(&ctx.pool).await?;
    let store = config
        .open_target(revision.as_deref())
        .await
        .map_err(|e| JobError::failed("vector_store_failed", e.to_string()))?;
    let total = part.datasets.len() as u64;
    for (i, d) in part.datasets.iter().enumerate() {
        if cp
            .vectors_done
            .iter()
            .any(|v| v["id"] == json!(d.id) && v["kind"] == json!(d.kind))
        {
            continue;
        }
        ctx.check_stop()?;
        ctx.progress(
            Progress {
                phase: "restore vectors".into(),
                done: i as u64,
                total: Some(total),
                unit: "datasets".into(),
                ..Default::default()
            },
            true,
        )
        .await?;
        let outcome = restore_one(ctx, repo_op, &config, &store, d, cp).await?;
        cp.vectors_done.push(outcome);
        cp.vectors_current = None;
        ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
    }
    Ok(json!({"store": config.describe(), "datasets": cp.vectors_done}))
}

async fn restore_one(
    ctx: &mut JobCtx,
    repo_op: &Operator,
    config: &StoreConfig,
    store: &AnyStore,
    d: &Descriptor,
    cp: &mut Checkpoint,
) -> Result<Value, JobError> {
    let ds = dataset(ctx, d).await?;
    let at = config.locate(&ds, None);
    let mut outcome = json!({
        "kind": d.kind, "id": d.id, "from": format!("{} {}", d.store, d.collection),
        "to": format!("{} {}", config.kind(), at.collection), "records": {"set": d.records, "restored": 0},
    });
    let Some(dimension) = d.dimension.filter(|_| d.records > 0) else {
        return Ok(outcome);
    };
    store
        .ensure(&at, dimension)
        .await
        .map_err(|e| failed(d, e))?;
    // An interrupted attempt may have written some of these: write by doc_id then.
    let resumed = cp.vectors_current == Some(d.id);
    cp.vectors_current = Some(d.id);
    ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
    for f in &d.parts {
        ctx.check_stop()?;
        let bytes = repo_op
            .read(&f.path)
            .await
            .map_err(|e| repo_failed(RepoError::storage(&f.path, e)))?
            .to_bytes();
        let records = vector_file::decode(bytes)
            .map_err(|e| JobError::failed("bad_vector_file", format!("{}: {e}", f.path)))?;
        let points: Vec<Point> = records
            .into_iter()
            .map(|r| Point {
                id: r.doc_id,
                vector: r.vector,
                text: r.text,
                metadata: r.metadata,
            })
            .collect();
        for chunk in points.chunks(WRITE_BATCH) {
            let written = if resumed {
                store.write(&at, chunk).await
            } else {
                store.write_new(&at, chunk).await
            };
            written.map_err(|e| failed(d, e))?;
        }
        ctx.failpoint("restore.vector_file").await?;
    }
    let count = store.count(&at).await.map_err(|e| failed(d, e))?;
    outcome["records"]["restored"] = json!(count);
    if count != d.records {
        return Err(JobError::failed(
            "vectors_mismatch",
            format!(
                "{} {}: {} holds {count} records after the restore, the set {}",
                d.kind, d.id, at.collection, d.records
            ),
        ));
    }
    if d.kind == "dataset" {
        let index_struct = config.index_struct(&at);
        sqlx::query("UPDATE public.datasets SET index_struct = $2 WHERE id = $1")
            .bind(d.id)
            .bind(&index_struct)
            .execute(&ctx.pool)
            .await?;
        outcome["index_struct"] = json!(index_struct);
    }
    Ok(outcome)
}

/// Whether the store already holds records where the set's datasets would go.
pub async fn occupied(ctx: &JobCtx, m: &Manifest) -> Result<Vec<(Uuid, String, u64)>, JobError> {
    let Some(part) = &m.vectors else {
        return Ok(Vec::new());
    };
    let config = target(ctx)?;
    let store = config
        .open()
        .await
        .map_err(|e| JobError::failed("vector_store_failed", e.to_string()))?;
    let mut found = Vec::new();
    for d in &part.datasets {
        let at = config.locate(&dataset(ctx, d).await?, None);
        let exists = crate::vector::store::VectorStore::describe(&store, &at.collection)
            .await
            .map_err(|e| failed(d, e))?
            .is_some();
        if exists {
            let n = store.count(&at).await.map_err(|e| failed(d, e))?;
            if n > 0 {
                found.push((d.id, at.collection.clone(), n));
            }
        }
    }
    Ok(found)
}
