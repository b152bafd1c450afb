//! What the files of `vector_migrate` share: a unit (one dataset, or one app's annotation
//! replies) with where its points are and go, its checkpointed state and outcome, and the
//! store calls one unit's copy makes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::{OnceCell, mpsc, oneshot};
use uuid::Uuid;

use super::params::MissingVectors;
use crate::dify::vector_records::{Dataset, Record};
use crate::vector::embeddings::Embedder;
use crate::vector::store::{
    Location, Page, Point, VectorError, VectorSource, VectorStore, VectorTarget,
};
use crate::vector::{AnyStore, StoreConfig};

/// Copied points whose target vector, text and metadata are compared with the source's.
pub const VECTOR_SAMPLE: usize = 16;
/// Attempts per store call before the unit fails.
const ATTEMPTS: u32 = 4;
/// Missing records named in a failure.
pub(super) const MISSING_LISTED: usize = 20;
/// A dataset, or an app's annotation replies, with where its points are and go.
pub struct Unit {
    pub ds: Dataset,
    /// The source store and where the unit is in it, or why there is none.
    pub source: Result<(StoreConfig, Location), String>,
    /// Where it goes in the target.
    pub at: Location,
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
    async fn ensure(&self, at: &Location, dim: usize) -> Result<(), VectorError> {
        let collection = at.collection.as_str();
        let cell = {
            let mut map = self
                .collections
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            map.entry(collection.to_string()).or_default().clone()
        };
        let made = *cell
            .get_or_try_init(|| async {
                retried(|| self.target.ensure(at, dim)).await?;
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
    /// The unit's place in the target held none of its points when this copy began and the
    /// copy was never interrupted: its pages are new there, and a store that must look up
    /// older rows before writing (Milvus) need not. A resumed copy looks up.
    #[serde(default)]
    pub fresh: bool,
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

/// How one unit (a dataset, or an app's annotation replies) ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
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
                Ok((config, at)) => format!("{} {}", config.kind(), at.collection),
                Err(_) => String::new(),
            },
            target: format!("{target_kind} {}", unit.at.collection),
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

/// Which of `ids` the target lacks at `at`, asked `batch` at a time.
pub async fn absent_from(
    target: &AnyStore,
    at: &Location,
    ids: &[String],
    batch: usize,
) -> Result<HashSet<String>, VectorError> {
    let mut absent = HashSet::new();
    for chunk in ids.chunks(batch) {
        let present: HashSet<String> = retried(|| target.present(at, chunk))
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

pub(super) struct Copy<'a> {
    pub(super) shared: &'a Shared,
    pub(super) unit: &'a Unit,
    pub(super) source: &'a AnyStore,
    pub(super) source_at: &'a Location,
    pub(super) expected: &'a [Record],
}

impl Copy<'_> {
    /// None: the target collection does not exist; Some(dimension) otherwise.
    pub(super) async fn target_dimension(&self) -> Result<Option<Option<usize>>, VectorError> {
        if let Some(dim) = self.shared.known(&self.unit.at.collection) {
            return Ok(Some(Some(dim)));
        }
        let info = self
            .shared
            .target
            .describe(&self.unit.at.collection)
            .await?;
        Ok(info.map(|i| i.dimension))
    }

    pub(super) async fn report(&self, reports: &mpsc::Sender<Report>, state: &UnitState) {
        self.report_with(reports, state, None).await
    }

    pub(super) async fn report_with(
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

    pub(super) async fn read(&self, cursor: Option<&str>) -> Result<Page, VectorError> {
        retried(|| {
            self.source
                .read_page(self.source_at, cursor, self.shared.batch, true)
        })
        .await
    }

    pub(super) async fn write(&self, points: &[Point]) -> Result<(), VectorError> {
        self.write_page(points, false).await
    }

    /// `new`: none of these doc_ids is in the target yet (see `UnitState::fresh`).
    pub(super) async fn write_page(&self, points: &[Point], new: bool) -> Result<(), VectorError> {
        let Some(first) = points.first() else {
            return Ok(());
        };
        let (target, at) = (&self.shared.target, &self.unit.at);
        self.shared.ensure(at, first.vector.len()).await?;
        if new {
            match target.write_new(at, points).await {
                Ok(()) => return Ok(()),
                // The store may have written them before it failed: the retries replace
                // whatever landed rather than add it again.
                Err(VectorError::Store { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        retried(|| target.write(at, points)).await
    }

    pub(super) async fn write_all(&self, points: &[Point]) -> Result<(), VectorError> {
        for chunk in points.chunks(self.shared.batch) {
            self.write(chunk).await?;
        }
        Ok(())
    }
}
