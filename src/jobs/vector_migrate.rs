//! `vector_migrate`: moves knowledge bases to another vector store by copying the stored
//! vectors (no re-embedding), the way `flask vdb-migrate` should: every record kind and every
//! metadata key as found, Dify's exact target layout, records the source lacks taken from
//! Dify's `embeddings` cache, then a verification per dataset (count, every `doc_id`, sampled
//! vectors, a search with Dify's filter) before `datasets.index_struct` switches, in one short
//! transaction. A dataset that fails keeps pointing at its old store.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{JobCtx, JobError, JobKind, Progress, SpecError};
use crate::config::Settings;
use crate::dify::vector_records::{self, Dataset};
use crate::vector::config::StoreConfig;
use crate::vector::redis_flags::RedisFlags;
use crate::vector::store::{Point, VectorError, VectorStore};

/// Sampled points whose target vector is compared with the source's, per dataset.
const VECTOR_SAMPLE: usize = 16;
/// Sampled points searched for with Dify's filter, per dataset.
const SEARCH_SAMPLE: usize = 4;
/// Attempts per write before the dataset fails.
const WRITE_ATTEMPTS: u32 = 4;
/// Missing records named in a failure.
const MISSING_LISTED: usize = 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissingVectors {
    /// A record the source lacks fails its dataset.
    Fail,
    /// Take it from Dify's `embeddings` cache; fail the dataset if the cache lacks it too.
    #[default]
    EmbeddingCache,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorMigrateParams {
    /// The store to move to. Default: the one `VECTOR_STORE` names, configured as Dify is.
    #[serde(default)]
    #[schema(value_type = Option<StoreConfig>)]
    pub target: Option<Value>,
    /// The store to read. Default: per dataset, the one its `index_struct` names, configured
    /// from Dify's env.
    #[serde(default)]
    #[schema(value_type = Option<StoreConfig>)]
    pub source: Option<Value>,
    /// Only these datasets (default: every high-quality dataset not on the target yet).
    #[serde(default)]
    pub dataset_ids: Option<Vec<Uuid>>,
    #[serde(default)]
    pub tenant_ids: Option<Vec<Uuid>>,
    #[serde(default)]
    pub missing_vectors: MissingVectors,
    /// Points per read and per write, 1..=1000.
    #[serde(default = "default_batch")]
    #[schema(default = 256, minimum = 1, maximum = 1000)]
    pub batch_size: u32,
    /// Point each verified dataset at the target; false copies and verifies only.
    #[serde(default = "yes")]
    pub switch_over: bool,
}

fn default_batch() -> u32 {
    256
}
fn yes() -> bool {
    true
}

pub struct VectorMigrate;

/// How one dataset ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Outcome {
    dataset_id: Uuid,
    source: String,
    target: String,
    expected: u64,
    copied: u64,
    from_cache: u64,
    /// Source points no record of the dataset names (e.g. parent vectors `vdb-migrate` wrote).
    not_copied_strays: u64,
    verified: bool,
    switched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    missing: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    done: Vec<Outcome>,
    /// The dataset being copied and the source cursor after its last written batch.
    current: Option<(Uuid, Option<String>)>,
}

impl JobKind for VectorMigrate {
    const KIND: &'static str = "vector_migrate";
    type Params = VectorMigrateParams;

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
        let target = target_config(params, settings)?;
        if let Some(v) = &params.source {
            let source = parse(v, "source")?;
            if source == target {
                return Err(SpecError::invalid("params.source", "is the target itself"));
            }
        }
        for (field, ids, table) in [
            ("dataset_ids", &params.dataset_ids, "datasets"),
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
        Ok(())
    }

    async fn plan(params: VectorMigrateParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let target = target_config(&params, &ctx.settings).map_err(invalid)?;
        let datasets = selected(&params, &ctx.pool, target.kind()).await?;
        let mut planned = Vec::new();
        for ds in &datasets {
            ctx.check_stop()?;
            let expected = vector_records::expected(&ctx.pool, ds.id).await?;
            let wanted: HashSet<&str> = expected.iter().map(|r| r.doc_id.as_str()).collect();
            let mut entry = json!({
                "dataset_id": ds.id,
                "target": format!("{} {}", target.kind(), target_collection(ds, &target)),
                "expected": expected.len(),
            });
            match source_of(ds, &params, &ctx.settings) {
                Err(e) => entry["error"] = json!(e),
                Ok((config, collection)) => {
                    entry["source"] = json!(format!("{} {collection}", config.kind()));
                    match scan_source(&config, &collection, ds, &wanted, params.batch_size).await {
                        Ok(scan) => {
                            entry["source_points"] = json!(scan.points);
                            entry["dimension"] = json!(scan.dimension);
                            entry["missing_vectors"] = json!(wanted.len() as u64 - scan.matched);
                            entry["strays"] = json!(scan.points - scan.matched);
                            entry["estimated_bytes"] = json!(scan.bytes);
                        }
                        Err(e) => entry["error"] = json!(e.to_string()),
                    }
                }
            }
            planned.push(entry);
        }
        Ok(json!({"target": target.describe(), "datasets": planned}))
    }

    async fn run(params: VectorMigrateParams, ctx: &mut JobCtx) -> Result<Value, JobError> {
        let target_cfg = target_config(&params, &ctx.settings).map_err(invalid)?;
        let target = target_cfg
            .open()
            .await
            .map_err(|e| JobError::failed("target_unreachable", e.to_string()))?;
        let redis = RedisFlags::from_env(&ctx.settings.vector_store);
        let datasets = selected(&params, &ctx.pool, target_cfg.kind()).await?;
        let mut cp: Checkpoint = ctx.checkpoint()?.unwrap_or_default();
        // A retried job tries its failed datasets again; finished ones stay done.
        cp.done.retain(|o| o.error.is_none());
        let mut total_expected = 0u64;
        for ds in &datasets {
            total_expected += vector_records::expected(&ctx.pool, ds.id).await?.len() as u64;
        }
        for ds in &datasets {
            if cp.done.iter().any(|o| o.dataset_id == ds.id) {
                continue;
            }
            ctx.check_stop()?;
            let outcome = migrate_one(
                &params,
                ctx,
                &mut cp,
                ds,
                &target_cfg,
                &target,
                total_expected,
            )
            .await?;
            if outcome.switched {
                let collection = target_collection(ds, &target_cfg);
                match &redis {
                    Ok(r) => {
                        if let Err(e) = r.clear(&collection).await {
                            ctx.warn(
                                format!("could not clear Redis key {}: {e}", r.key(&collection)),
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
            }
            cp.done.push(outcome);
            cp.current = None;
            ctx.save_checkpoint(&ctx.pool.clone(), &cp).await?;
        }
        let failed = cp.done.iter().filter(|o| o.error.is_some()).count();
        let result = json!({
            "target": target_cfg.describe(),
            "datasets": cp.done,
            "migrated": cp.done.iter().filter(|o| o.verified).count(),
            "switched": cp.done.iter().filter(|o| o.switched).count(),
            "failed": failed,
        });
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

fn invalid(e: SpecError) -> JobError {
    JobError::failed("invalid_params", e.to_string())
}

fn parse(v: &Value, field: &str) -> Result<StoreConfig, SpecError> {
    StoreConfig::from_value(v).map_err(|(path, message)| {
        let at = if path.is_empty() {
            String::new()
        } else {
            format!(".{path}")
        };
        SpecError::invalid(format!("params.{field}{at}"), message)
    })
}

fn target_config(
    params: &VectorMigrateParams,
    settings: &Settings,
) -> Result<StoreConfig, SpecError> {
    match &params.target {
        Some(v) => parse(v, "target"),
        None => {
            let env = &settings.vector_store;
            StoreConfig::from_env(&env.kind, env).map_err(|e| {
                SpecError::invalid(
                    "params.target",
                    format!(
                        "not given, and VECTOR_STORE={:?} cannot be used: {e}",
                        env.kind
                    ),
                )
            })
        }
    }
}

async fn selected(
    params: &VectorMigrateParams,
    pool: &PgPool,
    target: &str,
) -> Result<Vec<Dataset>, JobError> {
    Ok(vector_records::datasets(
        pool,
        target,
        params.dataset_ids.as_deref(),
        params.tenant_ids.as_deref(),
    )
    .await?)
}

/// `Vector_index_<id with _>_Node` (Dify's `gen_collection_name_by_id`).
fn generated_name(id: Uuid) -> String {
    format!("Vector_index_{}_Node", id.to_string().replace('-', "_"))
}

fn class_prefix(ds: &Dataset) -> Option<(String, String)> {
    let v: Value = serde_json::from_str(ds.index_struct.as_deref()?).ok()?;
    Some((
        v["type"].as_str()?.to_string(),
        v["vector_store"]["class_prefix"].as_str()?.to_string(),
    ))
}

/// Where the dataset's vectors are now: its `index_struct` (or Dify's generated name).
fn source_of(
    ds: &Dataset,
    params: &VectorMigrateParams,
    settings: &Settings,
) -> Result<(StoreConfig, String), String> {
    let (kind, collection) = class_prefix(ds)
        .unwrap_or_else(|| (settings.vector_store.kind.clone(), generated_name(ds.id)));
    let config = match &params.source {
        Some(v) => StoreConfig::from_value(v).map_err(|(_, m)| m)?,
        None => StoreConfig::from_env(&kind, &settings.vector_store)?,
    };
    if config.kind() != kind {
        return Err(format!(
            "its index_struct names {kind}, the source given is {}",
            config.kind()
        ));
    }
    Ok((config, collection))
}

/// Qdrant shares one collection per embedding model (`dataset_collection_bindings`).
fn target_collection(ds: &Dataset, target: &StoreConfig) -> String {
    match (target, &ds.binding_collection) {
        (StoreConfig::Qdrant { .. }, Some(binding)) => binding.clone(),
        _ => generated_name(ds.id),
    }
}

/// `index_struct` as Dify writes it (Python `json.dumps` separators).
fn index_struct(kind: &str, collection: &str) -> String {
    format!("{{\"type\": \"{kind}\", \"vector_store\": {{\"class_prefix\": \"{collection}\"}}}}")
}

struct Scan {
    points: u64,
    matched: u64,
    dimension: Option<usize>,
    bytes: u64,
}

async fn scan_source(
    config: &StoreConfig,
    collection: &str,
    ds: &Dataset,
    wanted: &HashSet<&str>,
    batch: u32,
) -> Result<Scan, VectorError> {
    let store = config.open().await?;
    let mut scan = Scan {
        points: 0,
        matched: 0,
        dimension: None,
        bytes: 0,
    };
    let group = ds.id.to_string();
    let mut cursor: Option<String> = None;
    loop {
        let page = store
            .read_page(collection, &group, cursor.as_deref(), batch as usize)
            .await?;
        for p in &page.points {
            scan.points += 1;
            scan.dimension.get_or_insert(p.vector.len());
            scan.bytes += (p.vector.len() * 4 + p.text.len()) as u64;
            if p.doc_id().is_some_and(|d| wanted.contains(d)) {
                scan.matched += 1;
            }
        }
        match page.next {
            Some(n) => cursor = Some(n),
            None => return Ok(scan),
        }
    }
}

/// Retries a write a few times (the store may be restarting) before giving up.
async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, VectorError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, VectorError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(VectorError::Store { .. }) if attempt < WRITE_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(250 * 2u64.pow(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Copies, completes, verifies and (maybe) switches one dataset. Store failures end the
/// dataset, not the job; database failures end the job.
async fn migrate_one<T: VectorStore>(
    params: &VectorMigrateParams,
    ctx: &mut JobCtx,
    cp: &mut Checkpoint,
    ds: &Dataset,
    target_cfg: &StoreConfig,
    target: &T,
    total_expected: u64,
) -> Result<Outcome, JobError> {
    let collection = target_collection(ds, target_cfg);
    let mut outcome = Outcome {
        dataset_id: ds.id,
        target: format!("{} {collection}", target_cfg.kind()),
        ..Outcome::default()
    };
    let (source_cfg, source_collection) = match source_of(ds, params, &ctx.settings) {
        Ok(s) => s,
        Err(e) => {
            outcome.error = Some(e);
            return Ok(outcome);
        }
    };
    outcome.source = format!("{} {source_collection}", source_cfg.kind());
    let expected = vector_records::expected(&ctx.pool, ds.id).await?;
    outcome.expected = expected.len() as u64;
    let step = match source_cfg.open().await {
        Ok(source) => {
            copy(
                params,
                ctx,
                cp,
                ds,
                &source,
                &source_collection,
                target,
                &collection,
                &expected,
                &mut outcome,
                total_expected,
            )
            .await?
        }
        Err(e) => Err(e),
    };
    if let Err(e) = step {
        outcome.error = Some(e.to_string());
    }
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
async fn copy<S: VectorStore, T: VectorStore>(
    params: &VectorMigrateParams,
    ctx: &mut JobCtx,
    cp: &mut Checkpoint,
    ds: &Dataset,
    source: &S,
    source_collection: &str,
    target: &T,
    collection: &str,
    expected: &[vector_records::Record],
    outcome: &mut Outcome,
    total_expected: u64,
) -> Result<Result<(), VectorError>, JobError> {
    let group = ds.id.to_string();
    let wanted: HashSet<&str> = expected.iter().map(|r| r.doc_id.as_str()).collect();
    let done_before: u64 = cp.done.iter().map(|o| o.expected).sum();
    let mut cursor = match &cp.current {
        Some((id, cursor)) if *id == ds.id => cursor.clone(),
        _ => None,
    };
    let mut sample: Vec<Point> = Vec::new();
    let mut dimension: Option<usize> = None;
    let source_exists = match source.describe(source_collection).await {
        Ok(info) => info.is_some(),
        Err(e) => return Ok(Err(e)),
    };
    let mut more = source_exists;
    while more {
        let page = match source
            .read_page(
                source_collection,
                &group,
                cursor.as_deref(),
                params.batch_size as usize,
            )
            .await
        {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let mut batch = Vec::with_capacity(page.points.len());
        for p in page.points {
            match p
                .doc_id()
                .filter(|d| wanted.contains(d))
                .map(str::to_string)
            {
                Some(doc_id) => batch.push(Point { id: doc_id, ..p }),
                None => outcome.not_copied_strays += 1,
            }
        }
        if let Some(first) = batch.first() {
            let dim = *dimension.get_or_insert(first.vector.len());
            if let Err(e) = with_retries(|| target.ensure_collection(collection, dim)).await {
                return Ok(Err(e));
            }
            if let Err(e) = with_retries(|| target.upsert(collection, &group, &batch)).await {
                return Ok(Err(e));
            }
            outcome.copied += batch.len() as u64;
            if sample.len() < VECTOR_SAMPLE {
                let room = VECTOR_SAMPLE - sample.len();
                sample.extend(batch.iter().take(room).cloned());
            }
        }
        ctx.failpoint("vector_migrate.batch_written").await?;
        cursor = page.next;
        cp.current = Some((ds.id, cursor.clone()));
        ctx.save_checkpoint(&ctx.pool.clone(), &*cp).await?;
        ctx.count("points", batch.len() as u64);
        ctx.progress(
            Progress {
                phase: format!("copy {}", ds.id),
                done: done_before + outcome.copied,
                total: Some(total_expected),
                unit: "points".into(),
                ..Default::default()
            },
            false,
        )
        .await?;
        more = cursor.is_some();
    }

    // What the target still lacks (the source never had it, or a resumed run skipped it).
    let mut absent = Vec::new();
    for chunk in expected.chunks(params.batch_size as usize) {
        let ids: Vec<String> = chunk.iter().map(|r| r.doc_id.clone()).collect();
        let found = match target.get(collection, &ids).await {
            Ok(found) => found,
            // Nothing was copied yet: every record is absent.
            Err(_) if target.describe(collection).await.ok().flatten().is_none() => Vec::new(),
            Err(e) => return Ok(Err(e)),
        };
        let present: HashSet<String> = found.into_iter().map(|p| p.id).collect();
        absent.extend(
            chunk
                .iter()
                .filter(|r| !present.contains(&r.doc_id))
                .cloned(),
        );
    }
    if !absent.is_empty() && params.missing_vectors == MissingVectors::EmbeddingCache {
        match from_cache(ctx, ds, &absent, dimension).await? {
            points if points.is_empty() => {}
            points => {
                let dim = points[0].vector.len();
                if let Err(e) = with_retries(|| target.ensure_collection(collection, dim)).await {
                    return Ok(Err(e));
                }
                for chunk in points.chunks(params.batch_size as usize) {
                    if let Err(e) = with_retries(|| target.upsert(collection, &group, chunk)).await
                    {
                        return Ok(Err(e));
                    }
                }
                outcome.from_cache = points.len() as u64;
                let filled: HashSet<String> = points.into_iter().map(|p| p.id).collect();
                absent.retain(|r| !filled.contains(&r.doc_id));
            }
        }
    }
    if !absent.is_empty() {
        outcome.missing = absent
            .iter()
            .take(MISSING_LISTED)
            .map(|r| format!("{} {}", r.kind, r.doc_id))
            .collect();
        return Ok(Err(VectorError::Layout(format!(
            "{} record(s) have no vector in the source{}",
            absent.len(),
            if params.missing_vectors == MissingVectors::EmbeddingCache {
                " nor in Dify's embeddings cache"
            } else {
                ""
            }
        ))));
    }

    if let Err(e) = verify(target, collection, &group, expected, &sample).await {
        return Ok(Err(e));
    }
    outcome.verified = true;
    ctx.failpoint("vector_migrate.verified").await?;
    if params.switch_over {
        outcome.switched = switch(ctx, cp, ds, target.kind(), collection).await?;
        if !outcome.switched {
            return Ok(Err(VectorError::Layout(
                "index_struct changed while the job ran; not switched".into(),
            )));
        }
    }
    Ok(Ok(()))
}

/// Points for records the source lacks, from Dify's `embeddings` cache, with the text and
/// metadata Dify would have written.
async fn from_cache(
    ctx: &JobCtx,
    ds: &Dataset,
    absent: &[vector_records::Record],
    dimension: Option<usize>,
) -> Result<Vec<Point>, JobError> {
    let (Some(model), Some(provider)) = (&ds.embedding_model, &ds.embedding_model_provider) else {
        return Ok(Vec::new());
    };
    let hashes: Vec<String> = absent.iter().map(|r| r.cache_hash.clone()).collect();
    let vectors = vector_records::cached_vectors(&ctx.pool, model, provider, &hashes).await?;
    let ids: Vec<String> = absent.iter().map(|r| r.doc_id.clone()).collect();
    let rows = vector_records::rebuilt(&ctx.pool, ds.id, &ids).await?;
    let hash_of: BTreeMap<&str, &str> = absent
        .iter()
        .map(|r| (r.doc_id.as_str(), r.cache_hash.as_str()))
        .collect();
    let mut points = Vec::new();
    for (doc_id, text, doc_hash, document_id, kind) in rows {
        let Some(vector) = hash_of.get(doc_id.as_str()).and_then(|h| vectors.get(*h)) else {
            continue;
        };
        if dimension.is_some_and(|d| d != vector.len()) {
            continue;
        }
        let mut metadata = Map::new();
        metadata.insert("doc_id".into(), json!(doc_id));
        metadata.insert("doc_hash".into(), json!(doc_hash));
        metadata.insert("document_id".into(), json!(document_id.to_string()));
        metadata.insert("dataset_id".into(), json!(ds.id.to_string()));
        if kind == "summary" {
            metadata.insert("doc_type".into(), json!("text"));
            metadata.insert("is_summary".into(), json!(true));
        }
        points.push(Point {
            id: doc_id,
            vector: vector.clone(),
            text,
            metadata,
        });
    }
    Ok(points)
}

/// The target holds exactly the dataset's records, the sampled vectors equal the source's
/// (within what a cosine store's renormalisation changes), and Dify's own search finds them.
async fn verify<T: VectorStore>(
    target: &T,
    collection: &str,
    group: &str,
    expected: &[vector_records::Record],
    sample: &[Point],
) -> Result<(), VectorError> {
    let counted = target.count(collection, group).await?;
    if counted != expected.len() as u64 {
        return Err(VectorError::Layout(format!(
            "verification: the target holds {counted} points for this dataset, Dify's tables name {}",
            expected.len()
        )));
    }
    let ids: Vec<String> = sample.iter().map(|p| p.id.clone()).collect();
    let copies = target.get(collection, &ids).await?;
    for source in sample {
        let Some(copy) = copies.iter().find(|c| c.id == source.id) else {
            return Err(VectorError::Layout(format!(
                "verification: {} is missing",
                source.id
            )));
        };
        let cos = cosine(&source.vector, &copy.vector);
        if cos < 0.999_99 || copy.metadata != source.metadata || copy.text != source.text {
            return Err(VectorError::Layout(format!(
                "verification: {} differs from the source (cosine {cos})",
                source.id
            )));
        }
    }
    for source in sample.iter().take(SEARCH_SAMPLE) {
        let hits = target.search(collection, group, &source.vector, 3).await?;
        let top = hits.first().map(|h| h.score).unwrap_or(f32::MIN);
        let found = hits
            .iter()
            .any(|h| h.id == source.id && h.score >= top - 1e-5);
        if !found {
            return Err(VectorError::Layout(format!(
                "verification: searching with {}'s own vector does not return it first",
                source.id
            )));
        }
    }
    Ok(())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Points the dataset at the target, if nobody changed its `index_struct` meanwhile; records
/// the previous value for `vector_rollback`; commits with the checkpoint.
async fn switch(
    ctx: &mut JobCtx,
    cp: &Checkpoint,
    ds: &Dataset,
    kind: &str,
    collection: &str,
) -> Result<bool, JobError> {
    let new = index_struct(kind, collection);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_index_struct_as_dify_writes_them() {
        let id = Uuid::parse_str("3f1c2a4b-0000-4000-8000-00000000009e").expect("uuid");
        assert_eq!(
            generated_name(id),
            "Vector_index_3f1c2a4b_0000_4000_8000_00000000009e_Node"
        );
        assert_eq!(
            index_struct("qdrant", "Vector_index_x_Node"),
            r#"{"type": "qdrant", "vector_store": {"class_prefix": "Vector_index_x_Node"}}"#
        );
    }
}
