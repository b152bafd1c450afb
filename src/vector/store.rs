//! A vector store as a migration needs it, split by direction: a **source** streams a
//! dataset's records by a resumable cursor; a **target** keeps Dify's layout and is addressed
//! by Dify's `doc_id`, whatever the store's own primary key is. Each store is one adapter
//! (`Adapter`) listed once in the registry (`vector/mod.rs`). Points carry Dify's record as
//! Dify's own query path reads it back: the text, every metadata key as found, the vector.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::config::Component;
use crate::dify::index_struct;
use crate::dify::vector_records::Dataset;

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    /// The store answered with an error (or not at all): worth retrying.
    #[error("{store} {call}: {message}")]
    Store {
        store: &'static str,
        call: &'static str,
        message: String,
    },
    /// The store holds something Upkeep cannot copy faithfully.
    #[error("{0}")]
    Layout(String),
    /// Configuration (URL, key) Upkeep cannot use.
    #[error("{0}")]
    Config(String),
}

impl VectorError {
    /// A client's error may quote the URL it was given: never with its password.
    pub fn store(store: &'static str, call: &'static str, message: impl ToString) -> Self {
        VectorError::Store {
            store,
            call,
            message: crate::secrets::scrub(&message.to_string()),
        }
    }
}

/// One record: a segment, child chunk, attachment, summary or annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// From a source: the store's own id for it (Weaviate object UUID, Qdrant point id,
    /// Milvus primary key). To and from a target: Dify's `doc_id`.
    pub id: String,
    pub vector: Vec<f32>,
    /// `page_content` (Weaviate's `text` property).
    pub text: String,
    /// Every metadata key as found (`doc_id`, `document_id`, `dataset_id`, `doc_hash`, ...).
    pub metadata: Map<String, Value>,
}

impl Point {
    /// Dify's `doc_id`: the id the database knows the record by.
    pub fn doc_id(&self) -> Option<&str> {
        self.metadata.get("doc_id").and_then(Value::as_str)
    }
}

/// Where Dify keeps one dataset's (or one app's annotation replies') records in a store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The collection, class or table.
    pub collection: String,
    /// Dify's `group_id` (the dataset or app id): the filter where a store shares one
    /// collection between datasets (Qdrant's binding collections); unused elsewhere.
    pub group: String,
}

/// What a collection looks like, as far as copying it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionInfo {
    /// Unknown for an empty Weaviate class (dimension comes from the vectors).
    pub dimension: Option<usize>,
    pub distance: String,
    /// Which of Dify's layouts the collection is (e.g. Weaviate `legacy` / `named`).
    pub layout: String,
}

/// A page of points and where the next one starts (None: the end).
#[derive(Debug, Default)]
pub struct Page {
    pub points: Vec<Point>,
    pub next: Option<String>,
}

/// A search hit: the `doc_id` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub score: f32,
}

/// A server that answered: its version and what else an operator should know of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub version: String,
    pub detail: Option<String>,
}

/// What every store answers, in either direction.
pub trait VectorStore: Send + Sync {
    fn kind(&self) -> &'static str;

    /// The server's version, proving it answers (and with the credentials given).
    fn health(&self) -> impl Future<Output = Result<Health, VectorError>> + Send;

    /// None when the collection does not exist.
    fn describe(
        &self,
        collection: &str,
    ) -> impl Future<Output = Result<Option<CollectionInfo>, VectorError>> + Send;

    /// What this server lacks of Dify's layout for the store (an index method, a text search
    /// configuration), found when it was opened: shown in dry runs and results, never hidden.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A store records are read from.
pub trait VectorSource: VectorStore {
    /// The points at `at` after `cursor`, with payload, and with vectors if `vectors` (a dry
    /// run counts without them). Never loads more than `limit` points.
    fn read_page(
        &self,
        at: &Location,
        cursor: Option<&str>,
        limit: usize,
        vectors: bool,
    ) -> impl Future<Output = Result<Page, VectorError>> + Send;

    /// The points with these source ids (vectors included), to compare copies with.
    fn fetch(
        &self,
        at: &Location,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Point>, VectorError>> + Send;
}

/// A store records are written to, in Dify's layout, addressed by `doc_id`.
pub trait VectorTarget: VectorStore {
    /// Writes what this Dify release reads (its Alembic revision; None or unknown: a release
    /// newer than Upkeep knows). Only Weaviate's layout has changed across releases.
    fn for_release(&mut self, _revision: Option<&str>) {}

    /// Creates the collection exactly as Dify would; Ok if it already exists as Dify made it
    /// (what Dify would have added since, such as an index, is added).
    fn ensure(
        &self,
        at: &Location,
        dimension: usize,
    ) -> impl Future<Output = Result<(), VectorError>> + Send;

    /// Writes points keyed by their `doc_id` (`Point::id`): a rerun replaces, never adds.
    fn write(
        &self,
        at: &Location,
        points: &[Point],
    ) -> impl Future<Output = Result<(), VectorError>> + Send;

    /// Writes points whose `doc_id`s the caller knows are not at `at` yet (the first, never
    /// interrupted pass over a location that was empty): a store whose writes are not keyed by
    /// `doc_id` may skip its look-up of older rows. Elsewhere the same as `write`.
    fn write_new(
        &self,
        at: &Location,
        points: &[Point],
    ) -> impl Future<Output = Result<(), VectorError>> + Send {
        self.write(at, points)
    }

    /// Which of these `doc_id`s are there (no payload or vectors read).
    fn present(
        &self,
        at: &Location,
        doc_ids: &[String],
    ) -> impl Future<Output = Result<Vec<String>, VectorError>> + Send;

    /// Points at `at`, exactly.
    fn count(&self, at: &Location) -> impl Future<Output = Result<u64, VectorError>> + Send;

    /// The points with these `doc_id`s, vectors included, as Dify reads them back.
    fn read_back(
        &self,
        at: &Location,
        doc_ids: &[String],
    ) -> impl Future<Output = Result<Vec<Point>, VectorError>> + Send;

    /// The `doc_id`s at `at` after `cursor`, a page at a time (a cursor of the store's own).
    fn doc_ids(
        &self,
        at: &Location,
        cursor: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<String>, Option<String>), VectorError>> + Send;

    /// Dify's own search at `at`: its group filter where it has one, and its
    /// `document_id`-in-list filter when `document_ids` is not empty. Hits name `doc_id`s.
    fn search(
        &self,
        at: &Location,
        vector: &[f32],
        limit: usize,
        document_ids: &[String],
    ) -> impl Future<Output = Result<Vec<Hit>, VectorError>> + Send;

    /// Removes every point with these `doc_id`s.
    fn remove(
        &self,
        at: &Location,
        doc_ids: &[String],
    ) -> impl Future<Output = Result<(), VectorError>> + Send;
}

/// One store: its configuration (from Dify's env, or a job's params) and Dify's rules for it.
/// Adding a store is a file implementing this and one line in the registry.
pub trait Adapter: VectorSource + VectorTarget + Sized {
    /// `VECTOR_STORE` and `index_struct.type` value.
    const KIND: &'static str;
    /// The params form: Dify's variable names for the store, lowercased, without the prefix.
    type Config: Debug + Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync;

    /// From Dify's env, as Dify reads it; errors name the variable.
    fn from_env(env: &Component) -> Result<Self::Config, String>;

    /// What the params form cannot say by its shape: `(field, message)`.
    fn check(_config: &Self::Config) -> Result<(), (String, String)> {
        Ok(())
    }

    /// Where it is, without credentials.
    fn location(config: &Self::Config) -> String;

    /// Connects (and asks what the server needs to be asked once).
    fn open(config: &Self::Config) -> impl Future<Output = Result<Self, VectorError>> + Send;

    /// Where Dify keeps `ds` in this store; `class_prefix` is what its `index_struct` names
    /// when that names this store.
    fn locate(ds: &Dataset, class_prefix: Option<&str>) -> Location {
        Location {
            collection: class_prefix
                .map(str::to_string)
                .unwrap_or_else(|| index_struct::generated_name(ds.id)),
            group: ds.id.to_string(),
        }
    }

    /// `datasets.index_struct` pointing at `at`, as Dify writes it.
    fn index_struct(at: &Location) -> String {
        index_struct::render(Self::KIND, &at.collection)
    }
}

/// A batch with each `doc_id` (`Point::id`) once, its last copy kept: a store cannot upsert
/// one key twice in one statement.
pub fn last_per_doc_id(points: &[Point]) -> Cow<'_, [Point]> {
    let mut seen = HashSet::new();
    if points.iter().all(|p| seen.insert(p.id.as_str())) {
        return Cow::Borrowed(points);
    }
    let last: HashMap<&str, usize> = points
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.as_str(), i))
        .collect();
    Cow::Owned(
        points
            .iter()
            .enumerate()
            .filter(|(i, p)| last.get(p.id.as_str()) == Some(i))
            .map(|(_, p)| p.clone())
            .collect(),
    )
}
