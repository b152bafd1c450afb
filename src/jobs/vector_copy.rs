//! One knowledge base (or one app's annotation replies) of a `vector_migrate`, from source to
//! target: copy the stored points page by page (the next page is read while the current one
//! is written), take what the source lacks from Dify's `embeddings` cache or an embeddings
//! endpoint, bring it along with what Dify changed meanwhile (`vector_fill`), then verify.
//! Runs as its own task; each written page is reported to the job, which checkpoints it.
//! Store failures end this unit, not the job; database failures end both.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::{OnceCell, mpsc, oneshot};
use uuid::Uuid;

use super::JobError;
use super::vector_fill::{contents, same_records};
use super::vector_verify::{Check, verify};
use crate::dify::vector_records::{self, Dataset, Record};
use crate::vector::config::{AnyStore, StoreConfig};
use crate::vector::embeddings::Embedder;
use crate::vector::store::{Page, Point, VectorError, VectorStore};

/// Copied points whose target vector, text and metadata are compared with the source's.
pub const VECTOR_SAMPLE: usize = 16;
/// Attempts per store call before the unit fails.
const ATTEMPTS: u32 = 4;
/// Missing records named in a failure.
pub(super) const MISSING_LISTED: usize = 20;
/// Times a unit re-reads Dify's tables to bring the copy along with changes before it gives up.
const CATCH_UP_ROUNDS: usize = 4;

/// What to do with a record the source store lacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissingVectors {
    /// It fails its dataset.
    Fail,
    /// Take it from Dify's `embeddings` cache; fail the dataset if the cache lacks it too.
    #[default]
    EmbeddingCache,
    /// The cache, then the embeddings endpoint in `embedding_endpoint`.
    Reembed,
}

/// A dataset, or an app's annotation replies, with where its points are and go.
pub struct Unit {
    pub ds: Dataset,
    /// The source store and collection, or why there is none.
    pub source: Result<(StoreConfig, String), String>,
    pub collection: String,
}

/// What is shared by the units of one job.
pub struct Shared {
    pub pool: PgPool,
    pub target: AnyStore,
    pub batch: usize,
    pub missing: MissingVectors,
    pub embedder: Option<Embedder>,
    /// Target collections made sure of in this run, with their dimension: datasets of one
    /// embedding model share one Qdrant collection, and only one of them creates it.
    collections: std::sync::Mutex<HashMap<String, Arc<OnceCell<usize>>>>,
}

impl Shared {
    pub fn new(
        pool: PgPool,
        target: AnyStore,
        batch: usize,
        missing: MissingVectors,
        embedder: Option<Embedder>,
    ) -> Self {
        Shared {
            pool,
            target,
            batch,
            missing,
            embedder,
            collections: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The dimension of a collection made sure of in this run (it exists), if any.
    fn known(&self, collection: &str) -> Option<usize> {
        let map = self
            .collections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(collection).and_then(|cell| cell.get().copied())
    }

    /// Creates the target collection as Dify would, once per run, and checks that `dim`
    /// matches what it holds.
    async fn ensure(&self, collection: &str, dim: usize) -> Result<(), VectorError> {
        let cell = {
            let mut map = self
                .collections
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            map.entry(collection.to_string()).or_default().clone()
        };
        let made = *cell
            .get_or_try_init(|| async {
                retried(|| self.target.ensure_collection(collection, dim)).await?;
                Ok::<usize, VectorError>(dim)
            })
            .await?;
        if made != dim {
            return Err(VectorError::Layout(format!(
                "collection {collection} holds {made}-dimensional vectors, this dataset's are {dim}"
            )));
        }
        Ok(())
    }
}

/// A copied point kept for verification: its id in the source and its `doc_id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Sampled {
    pub doc_id: String,
    pub source_id: String,
}

/// How far a unit got; checkpointed after every written page.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UnitState {
    /// The source cursor after the last written page.
    pub cursor: Option<String>,
    /// Every source page is written.
    pub read_all: bool,
    pub copied: u64,
    pub strays: u64,
    /// The copied points with the smallest `doc_id`s: the same sample whether or not the
    /// copy was interrupted and resumed.
    pub sample: Vec<Sampled>,
    /// Records the source lacked, from the cache and from the endpoint: checkpointed before
    /// they are written, so a run resumed after the writes reports them too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filled: Option<(u64, u64)>,
}

impl UnitState {
    /// Points in the target for this unit so far.
    pub fn written(&self) -> u64 {
        self.copied + self.filled.map_or(0, |(c, r)| c + r)
    }
}

/// A unit's progress, for the job to checkpoint: after a page is written, or before records
/// the source lacks are written (then `saved` says when the checkpoint is committed).
pub struct Report {
    pub id: Uuid,
    pub state: UnitState,
    pub saved: Option<oneshot::Sender<()>>,
}

/// How one unit ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub dataset_id: Option<Uuid>,
    /// For annotation replies: the app.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub app_id: Option<Uuid>,
    pub source: String,
    pub target: String,
    pub expected: u64,
    pub copied: u64,
    pub from_cache: u64,
    pub reembedded: u64,
    /// Source points no record of the dataset names (e.g. parent vectors `vdb-migrate` wrote).
    pub not_copied_strays: u64,
    /// Records Dify added or edited, and deleted, while the dataset was being copied.
    #[serde(skip_serializing_if = "is_zero", default)]
    pub changed_during_copy: u64,
    #[serde(skip_serializing_if = "is_zero", default)]
    pub removed_during_copy: u64,
    pub verified: bool,
    pub switched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub missing: Vec<String>,
    /// The copy cannot be completed from where it is: a retry starts the unit over.
    #[serde(skip)]
    pub restart: bool,
    /// When this attempt took the unit up and put it down.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub finished_at: Option<DateTime<Utc>>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Outcome {
    pub fn new(unit: &Unit, target_kind: &str) -> Self {
        let (dataset_id, app_id) = if unit.ds.annotations {
            (None, Some(unit.ds.id))
        } else {
            (Some(unit.ds.id), None)
        };
        Outcome {
            dataset_id,
            app_id,
            source: match &unit.source {
                Ok((config, collection)) => format!("{} {collection}", config.kind()),
                Err(_) => String::new(),
            },
            target: format!("{target_kind} {}", unit.collection),
            ..Outcome::default()
        }
    }

    pub fn id(&self) -> Option<Uuid> {
        self.dataset_id.or(self.app_id)
    }

    /// Points now in the target for this unit.
    pub fn written(&self) -> u64 {
        self.copied + self.from_cache + self.reembedded
    }
}

/// Which of `ids` the target collection lacks, asked `batch` at a time.
pub async fn absent_from(
    target: &AnyStore,
    collection: &str,
    ids: &[String],
    batch: usize,
) -> Result<HashSet<String>, VectorError> {
    let mut absent = HashSet::new();
    for chunk in ids.chunks(batch) {
        let present: HashSet<String> = retried(|| target.present(collection, chunk))
            .await?
            .into_iter()
            .collect();
        absent.extend(chunk.iter().filter(|id| !present.contains(*id)).cloned());
    }
    Ok(absent)
}

/// Retries a store call a few times (the store may be restarting) before giving up.
pub async fn retried<T, F, Fut>(mut call: F) -> Result<T, VectorError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, VectorError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(VectorError::Store { .. }) if attempt < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(250 * 2u64.pow(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Copies, completes and verifies one unit, resuming from `state`.
pub async fn run_unit(
    shared: Arc<Shared>,
    unit: Arc<Unit>,
    state: UnitState,
    reports: mpsc::Sender<Report>,
) -> Result<Outcome, JobError> {
    let mut outcome = Outcome::new(&unit, shared.target.kind());
    outcome.started_at = Some(Utc::now());
    let (source_cfg, source_collection) = match &unit.source {
        Ok(s) => s,
        Err(e) => {
            outcome.error = Some(e.clone());
            return Ok(outcome);
        }
    };
    let expected = vector_records::expected(&shared.pool, &unit.ds).await?;
    outcome.expected = expected.len() as u64;
    let step = match source_cfg.open().await {
        Err(e) => Err(e),
        Ok(source) => {
            let copy = Copy {
                shared: &shared,
                unit: &unit,
                source: &source,
                source_collection,
                expected: &expected,
            };
            copy.run(state, &reports, &mut outcome).await?
        }
    };
    match step {
        Ok(()) => outcome.verified = true,
        Err(e) => outcome.error = Some(e.to_string()),
    }
    outcome.finished_at = Some(Utc::now());
    Ok(outcome)
}

pub(super) struct Copy<'a> {
    pub(super) shared: &'a Shared,
    pub(super) unit: &'a Unit,
    pub(super) source: &'a AnyStore,
    pub(super) source_collection: &'a str,
    pub(super) expected: &'a [Record],
}

impl Copy<'_> {
    pub(super) fn group(&self) -> String {
        self.unit.ds.id.to_string()
    }

    /// None: the target collection does not exist; Some(dimension) otherwise.
    pub(super) async fn target_dimension(&self) -> Result<Option<Option<usize>>, VectorError> {
        if let Some(dim) = self.shared.known(&self.unit.collection) {
            return Ok(Some(Some(dim)));
        }
        let info = self.shared.target.describe(&self.unit.collection).await?;
        Ok(info.map(|i| i.dimension))
    }

    async fn report(&self, reports: &mpsc::Sender<Report>, state: &UnitState) {
        self.report_with(reports, state, None).await
    }

    async fn report_with(
        &self,
        reports: &mpsc::Sender<Report>,
        state: &UnitState,
        saved: Option<oneshot::Sender<()>>,
    ) {
        // The job stopped listening only when it is ending: nothing left to report to.
        let _ = reports
            .send(Report {
                id: self.unit.ds.id,
                state: state.clone(),
                saved,
            })
            .await;
    }

    async fn read(&self, cursor: Option<&str>) -> Result<Page, VectorError> {
        let group = self.group();
        retried(|| {
            self.source.read_page(
                self.source_collection,
                &group,
                cursor,
                self.shared.batch,
                true,
            )
        })
        .await
    }

    async fn write(&self, points: &[Point]) -> Result<(), VectorError> {
        let Some(first) = points.first() else {
            return Ok(());
        };
        self.shared
            .ensure(&self.unit.collection, first.vector.len())
            .await?;
        let group = self.group();
        retried(|| {
            self.shared
                .target
                .upsert(&self.unit.collection, &group, points)
        })
        .await
    }

    /// The whole unit; `Err(JobError)` only for the database, a store failure is the inner one.
    async fn run(
        &self,
        mut state: UnitState,
        reports: &mpsc::Sender<Report>,
        outcome: &mut Outcome,
    ) -> Result<Result<(), VectorError>, JobError> {
        if !state.read_all
            && let Err(e) = self.copy(&mut state, reports).await
        {
            return Ok(Err(e));
        }
        outcome.copied = state.copied;
        outcome.not_copied_strays = state.strays;
        let filled = match self.fill(&mut state, reports, outcome).await? {
            Ok(filled) => filled,
            Err(e) => return Ok(Err(e)),
        };
        // Filled by an earlier attempt: the target has them, this one found none absent.
        if let (Some((cached, reembedded)), true) = (state.filled, filled.is_empty()) {
            outcome.from_cache = cached;
            outcome.reembedded = reembedded;
        }
        let mut records = self.expected.to_vec();
        // Each record's last written version, by doc_id.
        let mut written: BTreeMap<String, Point> =
            filled.into_iter().map(|p| (p.id.clone(), p)).collect();
        // Sampled copies of records Dify changed or deleted meanwhile are not the source's.
        let mut sample = state.sample.clone();
        let mut now = vector_records::expected(&self.shared.pool, &self.unit.ds).await?;
        for _ in 0..CATCH_UP_ROUNDS {
            if !same_records(&records, &now) {
                let had: HashMap<&str, &str> = records
                    .iter()
                    .map(|r| (r.doc_id.as_str(), r.cache_hash.as_str()))
                    .collect();
                let unchanged: HashSet<(&str, &str)> = contents(&now).into_iter().collect();
                sample.retain(|s| {
                    had.get(s.doc_id.as_str())
                        .is_some_and(|h| unchanged.contains(&(s.doc_id.as_str(), *h)))
                });
                match self.catch_up(&records, &now, outcome).await? {
                    Ok(points) => written.extend(points.into_iter().map(|p| (p.id.clone(), p))),
                    Err(e) => return Ok(Err(e)),
                }
                records = now;
                now = vector_records::expected(&self.shared.pool, &self.unit.ds).await?;
                continue;
            }
            let named: HashSet<&str> = records.iter().map(|r| r.doc_id.as_str()).collect();
            let filled: Vec<Point> = written
                .values()
                .filter(|p| named.contains(p.id.as_str()))
                .cloned()
                .collect();
            let exists = match self.target_dimension().await {
                Ok(d) => d.is_some(),
                Err(e) => return Ok(Err(e)),
            };
            let group = self.group();
            let check = Check {
                target: &self.shared.target,
                collection: &self.unit.collection,
                group: &group,
                source: self.source,
                source_collection: self.source_collection,
                expected: &records,
                batch: self.shared.batch,
            };
            if let Err(e) = verify(&check, exists, &sample, &filled).await {
                return Ok(Err(e));
            }
            // Unchanged while it was verified: what was verified is what Dify's tables name.
            now = vector_records::expected(&self.shared.pool, &self.unit.ds).await?;
            if same_records(&records, &now) {
                outcome.expected = records.len() as u64;
                return Ok(Ok(()));
            }
        }
        outcome.restart = true;
        Ok(Err(VectorError::Layout(format!(
            "Dify kept changing the dataset during {CATCH_UP_ROUNDS} checks; retry when it is quiet"
        ))))
    }

    /// Source pages to the target under Dify's `doc_id`s; the read of the next page overlaps
    /// the write of this one. Each written page is reported before the next is written.
    async fn copy(
        &self,
        state: &mut UnitState,
        reports: &mpsc::Sender<Report>,
    ) -> Result<(), VectorError> {
        if self
            .source
            .describe(self.source_collection)
            .await?
            .is_none()
        {
            // Nothing stored: every record is left to the cache or the endpoint.
            state.read_all = true;
            return Ok(());
        }
        let wanted: HashSet<&str> = self.expected.iter().map(|r| r.doc_id.as_str()).collect();
        let mut page = self.read(state.cursor.as_deref()).await?;
        loop {
            let mut batch = Vec::with_capacity(page.points.len());
            for p in page.points {
                match p
                    .doc_id()
                    .filter(|d| wanted.contains(d))
                    .map(str::to_string)
                {
                    Some(doc_id) => {
                        state.sample.push(Sampled {
                            doc_id: doc_id.clone(),
                            source_id: p.id.clone(),
                        });
                        batch.push(Point { id: doc_id, ..p });
                    }
                    None => state.strays += 1,
                }
            }
            state.sample.sort();
            state.sample.dedup();
            state.sample.truncate(VECTOR_SAMPLE);
            let next = page.next.take();
            let (written, next_page) = tokio::join!(self.write(&batch), async {
                match &next {
                    Some(cursor) => Some(self.read(Some(cursor)).await),
                    None => None,
                }
            });
            written?;
            state.copied += batch.len() as u64;
            state.read_all = next.is_none();
            state.cursor = next;
            self.report(reports, state).await;
            match next_page {
                None => return Ok(()),
                Some(p) => page = p?,
            }
        }
    }

    /// Records Dify's tables name that the target lacks (the source never had them), from
    /// the cache and then the endpoint. Returns the points written this way.
    async fn fill(
        &self,
        state: &mut UnitState,
        reports: &mpsc::Sender<Report>,
        outcome: &mut Outcome,
    ) -> Result<Result<Vec<Point>, VectorError>, JobError> {
        let target = &self.shared.target;
        let collection = &self.unit.collection;
        let exists = match self.target_dimension().await {
            Ok(dimension) => dimension,
            Err(e) => return Ok(Err(e)),
        };
        let absent: Vec<&Record> = if exists.is_none() {
            self.expected.iter().collect()
        } else {
            let ids: Vec<String> = self.expected.iter().map(|r| r.doc_id.clone()).collect();
            match absent_from(target, collection, &ids, self.shared.batch).await {
                Ok(gone) => self
                    .expected
                    .iter()
                    .filter(|r| gone.contains(r.doc_id.as_str()))
                    .collect(),
                Err(e) => return Ok(Err(e)),
            }
        };
        if absent.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let rebuilt = match self.rebuild(&absent, exists.flatten(), outcome).await? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        outcome.from_cache = rebuilt.from_cache;
        outcome.reembedded = rebuilt.reembedded;
        // Checkpointed before the writes: a run resumed after them finds nothing absent and
        // still reports where these came from.
        state.filled = Some((outcome.from_cache, outcome.reembedded));
        let (saved, checkpointed) = oneshot::channel();
        self.report_with(reports, state, Some(saved)).await;
        if checkpointed.await.is_err() {
            return Ok(Err(VectorError::Layout("the job is stopping".into())));
        }
        Ok(self
            .write_all(&rebuilt.points)
            .await
            .map(|()| rebuilt.points))
    }

    pub(super) async fn write_all(&self, points: &[Point]) -> Result<(), VectorError> {
        for chunk in points.chunks(self.shared.batch) {
            self.write(chunk).await?;
        }
        Ok(())
    }
}
