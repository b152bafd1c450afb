//! One knowledge base (or one app's annotation replies) of a `vector_migrate`, from source to
//! target: copy the stored points page by page (up to two pages are read ahead while two are
//! being written), take what the source lacks from Dify's `embeddings` cache or an embeddings
//! endpoint, bring it along with what Dify changed meanwhile (`fill`), then verify.
//! Runs as its own task; each written page is reported to the job, which checkpoints it.
//! Store failures end this unit, not the job; database failures end both.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;

use chrono::Utc;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use tokio::sync::{mpsc, oneshot};

use super::super::JobError;
use super::fill::{contents, same_records};
use super::unit::{
    Copy, Outcome, Report, Sampled, Shared, Unit, UnitState, VECTOR_SAMPLE, absent_from, retried,
};
use super::verify::{Check, verify};
use crate::dify::vector_records::{self, Record};
use crate::vector::store::{Page, Point, VectorError, VectorStore, VectorTarget};

/// Pages of one unit being written at once: while the target takes one, the next is on its
/// way, so a slow read or a busy client never leaves the target idle.
const IN_FLIGHT: usize = 2;

/// Pages read and waiting for a write slot. A page takes about as long to read and parse as
/// the target takes to write one, so with a single page waiting any hiccup on this side (a
/// slow answer, a busy core) left the target with one page instead of two.
const READ_AHEAD: usize = 2;

/// Times a unit re-reads Dify's tables to bring the copy along with changes before it gives up.
const CATCH_UP_ROUNDS: usize = 4;

/// Copies, completes and verifies one unit, resuming from `state`.
pub async fn run_unit(
    shared: Arc<Shared>,
    unit: Arc<Unit>,
    state: UnitState,
    reports: mpsc::Sender<Report>,
) -> Result<Outcome, JobError> {
    let mut outcome = Outcome::new(&unit, shared.target.kind());
    outcome.started_at = Some(Utc::now());
    let (source_cfg, source_at) = match &unit.source {
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
                source_at,
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

impl Copy<'_> {
    /// The whole unit; `Err(JobError)` only for the database, a store failure is the inner one.
    async fn run(
        &self,
        mut state: UnitState,
        reports: &mpsc::Sender<Report>,
        outcome: &mut Outcome,
    ) -> Result<Result<(), VectorError>, JobError> {
        // What a fresh, uninterrupted copy wrote is all its place holds: known, not asked.
        let mut written = None;
        if !state.read_all {
            match self.copy(&mut state, reports).await {
                Ok(copied) => written = copied,
                Err(e) => return Ok(Err(e)),
            }
        }
        outcome.copied = state.copied;
        outcome.not_copied_strays = state.strays;
        let filled = match self.fill(&mut state, reports, outcome, written).await? {
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
            let check = Check {
                target: &self.shared.target,
                at: &self.unit.at,
                source: self.source,
                source_at: self.source_at,
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

    /// Source pages to the target under Dify's `doc_id`s, up to `IN_FLIGHT` pages written at
    /// once while up to `READ_AHEAD` more are read, so the target never waits on this side
    /// (the read, the parse, the request). Pages are reported in source order, each once it
    /// and every page before it are written: a checkpoint never covers a page still in flight
    /// or only read.
    /// Returns the doc_ids written when the copy was fresh (see `UnitState::fresh`): then
    /// nothing else is in its place.
    async fn copy(
        &self,
        state: &mut UnitState,
        reports: &mpsc::Sender<Report>,
    ) -> Result<Option<HashSet<String>>, VectorError> {
        if self
            .source
            .describe(&self.source_at.collection)
            .await?
            .is_none()
        {
            // Nothing stored: every record is left to the cache or the endpoint.
            state.read_all = true;
            return Ok(None);
        }
        let wanted: HashSet<&str> = self.expected.iter().map(|r| r.doc_id.as_str()).collect();
        let untouched = state.cursor.is_none() && state.copied == 0 && state.strays == 0;
        state.fresh = untouched && self.target_is_empty().await?;
        // A doc_id the source holds twice is written over itself, not added twice.
        let mut copied: HashSet<String> = HashSet::new();
        // The state once every page read so far is written.
        let mut ahead = state.clone();
        let mut writes = FuturesOrdered::new();
        // The doc_ids of each page in flight, in the order of `writes`.
        let mut flying: VecDeque<HashSet<String>> = VecDeque::new();
        let read_from =
            |cursor: Option<String>| Box::pin(async move { self.read(cursor.as_deref()).await });
        let mut reading = Some(read_from(state.cursor.clone()));
        // Pages read, not yet handed to a write, and the cursor after the last one read.
        let mut pages: VecDeque<Page> = VecDeque::new();
        let mut unread: Option<String> = None;
        loop {
            // Until a page is read and a write slot is free, or every page is written; the next
            // page is read whenever fewer than `READ_AHEAD` wait.
            loop {
                if reading.is_none() && pages.len() < READ_AHEAD {
                    reading = unread.take().map(|c| read_from(Some(c)));
                }
                let ready = !pages.is_empty() && writes.len() < IN_FLIGHT;
                let finished = pages.is_empty() && reading.is_none() && writes.is_empty();
                if ready || finished {
                    break;
                }
                tokio::select! {
                    Some(done) = writes.next(), if !writes.is_empty() => {
                        flying.pop_front();
                        *state = done?;
                        self.report(reports, state).await;
                    }
                    read = some(&mut reading), if reading.is_some() => {
                        reading = None;
                        match read {
                            Ok(read) => {
                                unread = read.next.clone();
                                pages.push_back(read);
                            }
                            Err(e) => {
                                // What is in flight lands first: a retry resumes after it.
                                self.drain(&mut writes, &mut flying, state, reports).await?;
                                return Err(e);
                            }
                        }
                    }
                }
            }
            let Some(Page { points, next }) = pages.pop_front() else {
                return Ok(state.fresh.then_some(copied));
            };
            let (batch, new) = take_page(points, &wanted, &mut ahead, &mut copied);
            ahead.copied += batch.len() as u64;
            ahead.read_all = next.is_none();
            ahead.cursor = next;
            // A doc_id already in flight is written after it, as the source orders them.
            let ids: HashSet<String> = batch.iter().map(|p| p.id.clone()).collect();
            if flying.iter().any(|f| !f.is_disjoint(&ids)) {
                self.drain(&mut writes, &mut flying, state, reports).await?;
            }
            let snapshot = ahead.clone();
            writes.push_back(async move { self.write_page(&batch, new).await.map(|()| snapshot) });
            flying.push_back(ids);
        }
    }

    /// Waits for every page in flight, reporting each as it lands.
    async fn drain<F>(
        &self,
        writes: &mut FuturesOrdered<F>,
        flying: &mut VecDeque<HashSet<String>>,
        state: &mut UnitState,
        reports: &mpsc::Sender<Report>,
    ) -> Result<(), VectorError>
    where
        F: Future<Output = Result<UnitState, VectorError>>,
    {
        while let Some(done) = writes.next().await {
            flying.pop_front();
            *state = done?;
            self.report(reports, state).await;
        }
        Ok(())
    }

    /// Whether the unit's place in the target holds nothing (or does not exist yet).
    async fn target_is_empty(&self) -> Result<bool, VectorError> {
        if self.target_dimension().await?.is_none() {
            return Ok(true);
        }
        Ok(retried(|| self.shared.target.count(&self.unit.at)).await? == 0)
    }

    /// Records Dify's tables name that the target lacks (the source never had them), from
    /// the cache and then the endpoint. Returns the points written this way.
    async fn fill(
        &self,
        state: &mut UnitState,
        reports: &mpsc::Sender<Report>,
        outcome: &mut Outcome,
        written: Option<HashSet<String>>,
    ) -> Result<Result<Vec<Point>, VectorError>, JobError> {
        let target = &self.shared.target;
        let exists = match self.target_dimension().await {
            Ok(dimension) => dimension,
            Err(e) => return Ok(Err(e)),
        };
        let absent: Vec<&Record> = if exists.is_none() {
            self.expected.iter().collect()
        } else if let Some(written) = &written {
            self.expected
                .iter()
                .filter(|r| !written.contains(&r.doc_id))
                .collect()
        } else {
            let ids: Vec<String> = self.expected.iter().map(|r| r.doc_id.clone()).collect();
            match absent_from(target, &self.unit.at, &ids, self.shared.batch).await {
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
}

/// A page's points under their `doc_id`s, those no record names counted as strays, the
/// sample kept; and whether none was met before in a fresh copy (see `UnitState::fresh`).
fn take_page(
    points: Vec<Point>,
    wanted: &HashSet<&str>,
    state: &mut UnitState,
    copied: &mut HashSet<String>,
) -> (Vec<Point>, bool) {
    let mut batch = Vec::with_capacity(points.len());
    let mut new = state.fresh;
    for p in points {
        match p
            .doc_id()
            .filter(|d| wanted.contains(d))
            .map(str::to_string)
        {
            Some(doc_id) => {
                if state.fresh {
                    new &= copied.insert(doc_id.clone());
                }
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
    (batch, new)
}

/// The future in `slot`, if any (a `select!` branch guarded by `slot.is_some()`).
async fn some<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}
