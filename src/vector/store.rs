//! A vector store as a migration needs it: one trait, one adapter per store (`weaviate`,
//! `qdrant`). Points carry Dify's record as Dify's own query path reads it back: the text,
//! every metadata key as found, and the vector.

use std::future::Future;

use serde_json::{Map, Value};

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
    pub fn store(store: &'static str, call: &'static str, message: impl ToString) -> Self {
        VectorError::Store {
            store,
            call,
            message: message.to_string(),
        }
    }
}

/// One record: a segment, child chunk, attachment, summary or annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The store's own id for it (Weaviate object UUID, Qdrant point id).
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

#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub score: f32,
}

/// `collection` is the physical name; `group` is Dify's `group_id` (the dataset, or the app for
/// annotations) where the store shares a collection between groups, ignored where it does not.
pub trait VectorStore: Send + Sync {
    fn kind(&self) -> &'static str;

    /// The server's version, proving it answers (and with the credentials given).
    fn health(&self) -> impl Future<Output = Result<String, VectorError>> + Send;

    /// None when the collection does not exist.
    fn describe(
        &self,
        collection: &str,
    ) -> impl Future<Output = Result<Option<CollectionInfo>, VectorError>> + Send;

    /// The points of `group` after `cursor`, with payload, and with vectors if `vectors`
    /// (a dry run counts without them).
    fn read_page(
        &self,
        collection: &str,
        group: &str,
        cursor: Option<&str>,
        limit: usize,
        vectors: bool,
    ) -> impl Future<Output = Result<Page, VectorError>> + Send;

    /// Creates the collection exactly as Dify would; Ok if it already exists as Dify made it.
    fn ensure_collection(
        &self,
        collection: &str,
        dimension: usize,
    ) -> impl Future<Output = Result<(), VectorError>> + Send;

    /// Writes points under their own ids: a rerun overwrites instead of duplicating.
    fn upsert(
        &self,
        collection: &str,
        group: &str,
        points: &[Point],
    ) -> impl Future<Output = Result<(), VectorError>> + Send;

    fn count(
        &self,
        collection: &str,
        group: &str,
    ) -> impl Future<Output = Result<u64, VectorError>> + Send;

    /// The points with these ids (vectors included), for verification.
    fn get(
        &self,
        collection: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Point>, VectorError>> + Send;

    /// Which of these ids the collection holds (no payload or vectors read).
    fn present(
        &self,
        collection: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<String>, VectorError>> + Send;

    /// The id of every point of `group` (no payload or vectors read).
    fn ids(
        &self,
        collection: &str,
        group: &str,
    ) -> impl Future<Output = Result<Vec<String>, VectorError>> + Send;

    /// Nearest points of `group`, with Dify's own filter.
    fn search(
        &self,
        collection: &str,
        group: &str,
        vector: &[f32],
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Hit>, VectorError>> + Send;

    /// Deletes exactly these points (what Upkeep wrote, on rollback of a failed copy).
    fn delete(
        &self,
        collection: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<(), VectorError>> + Send;
}
