//! A thin hand-written protobuf layer for the parts of Milvus' gRPC API that
//! the Milvus adapter uses, plus [`Rpc`], a generic unary caller over one
//! tonic channel.
//!
//! Messages, field numbers and wire types follow the milvus-proto files
//! (`common.proto`, `schema.proto`, `milvus.proto`; Apache-2.0, packages
//! `milvus.proto.common`, `milvus.proto.schema`, `milvus.proto.milvus`).
//! Only the fields we send or read (and a few cheap neighbours) are declared;
//! prost skips unknown fields when decoding, so a newer server's extra
//! response fields are harmless. Proto names are turned into Rust names the
//! way prost-build does (`collectionID` -> `collection_id`, `autoID` ->
//! `auto_id`, `IDs` -> `ids`, enum values lose their enum-name prefix).
//!
//! Enum-typed fields are plain `i32` on the wire (as in prost-build output);
//! the `enumeration = "..."` attribute gives typed getters/setters
//! (`field.data_type()`, `field.set_data_type(DataType::Int64)`).

// Like prost-build output: the oneof variant names are the proto's (`Data::BoolData`, ...).
#![allow(clippy::enum_variant_names, clippy::derive_partial_eq_without_eq)]

use std::collections::HashMap;

// ───────────────────────────── common.proto ─────────────────────────────

/// `milvus.proto.common.ErrorCode` (deprecated by Milvus in favour of
/// `Status.code`, still filled by servers). Kept for reference; the
/// `Status.error_code` field is a plain i32 so unknown values decode fine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorCode {
    Success = 0,
    UnexpectedError = 1,
    ConnectFailed = 2,
    PermissionDenied = 3,
    CollectionNotExists = 4,
    IllegalArgument = 5,
    IllegalDimension = 7,
    IllegalIndexType = 8,
    IllegalCollectionName = 9,
    IllegalTopk = 10,
    IllegalRowRecord = 11,
    IllegalVectorId = 12,
    IllegalSearchResult = 13,
    FileNotFound = 14,
    MetaFailed = 15,
    CacheFailed = 16,
    CannotCreateFolder = 17,
    CannotCreateFile = 18,
    CannotDeleteFolder = 19,
    CannotDeleteFile = 20,
    BuildIndexError = 21,
    IllegalNlist = 22,
    IllegalMetricType = 23,
    OutOfMemory = 24,
    IndexNotExist = 25,
    EmptyCollection = 26,
    UpdateImportTaskFailure = 27,
    CollectionNameNotFound = 28,
    CreateCredentialFailure = 29,
    UpdateCredentialFailure = 30,
    DeleteCredentialFailure = 31,
    GetCredentialFailure = 32,
    ListCredUsersFailure = 33,
    GetUserFailure = 34,
    CreateRoleFailure = 35,
    DropRoleFailure = 36,
    OperateUserRoleFailure = 37,
    SelectRoleFailure = 38,
    SelectUserFailure = 39,
    SelectResourceFailure = 40,
    OperatePrivilegeFailure = 41,
    SelectGrantFailure = 42,
    RefreshPolicyInfoCacheFailure = 43,
    ListPolicyFailure = 44,
    NotShardLeader = 45,
    NoReplicaAvailable = 46,
    SegmentNotFound = 47,
    ForceDeny = 48,
    RateLimit = 49,
    NodeIdNotMatch = 50,
    UpsertAutoIdTrue = 51,
    InsufficientMemoryToLoad = 52,
    MemoryQuotaExhausted = 53,
    DiskQuotaExhausted = 54,
    TimeTickLongDelay = 55,
    NotReadyServe = 56,
    NotReadyCoordActivating = 57,
    CreatePrivilegeGroupFailure = 58,
    DropPrivilegeGroupFailure = 59,
    ListPrivilegeGroupsFailure = 60,
    OperatePrivilegeGroupFailure = 61,
    SchemaMismatch = 62,
    DataCoordNa = 100,
    DdRequestRace = 1000,
}

/// `milvus.proto.common.IndexState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum IndexState {
    None = 0,
    Unissued = 1,
    InProgress = 2,
    Finished = 3,
    Failed = 4,
    Retry = 5,
}

/// `milvus.proto.common.ConsistencyLevel`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ConsistencyLevel {
    Strong = 0,
    /// pymilvus' default.
    Session = 1,
    Bounded = 2,
    Eventually = 3,
    Customized = 4,
}

/// `milvus.proto.common.LoadState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum LoadState {
    NotExist = 0,
    NotLoad = 1,
    Loading = 2,
    Loaded = 3,
}

/// `milvus.proto.common.PlaceholderType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PlaceholderType {
    None = 0,
    BinaryVector = 100,
    FloatVector = 101,
    Float16Vector = 102,
    BFloat16Vector = 103,
    SparseFloatVector = 104,
    Int8Vector = 105,
    Int64 = 5,
    /// Raw query text (full-text search through a BM25 function).
    VarChar = 21,
    EmbListBinaryVector = 300,
    EmbListFloatVector = 301,
    EmbListFloat16Vector = 302,
    EmbListBFloat16Vector = 303,
    EmbListSparseFloatVector = 304,
    EmbListInt8Vector = 305,
}

/// `milvus.proto.common.DslType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DslType {
    Dsl = 0,
    /// What every current SDK sends for a boolean filter expression.
    BoolExprV1 = 1,
}

/// `milvus.proto.common.Status`. Success is `code == 0 && error_code == 0`
/// (pymilvus' `is_successful`); see [`Status::is_success`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    /// Deprecated legacy code, an [`ErrorCode`].
    #[prost(enumeration = "ErrorCode", tag = "1")]
    pub error_code: i32,
    #[prost(string, tag = "2")]
    pub reason: String,
    /// The current error code (0 = success, 100 = collection not found, ...).
    #[prost(int32, tag = "3")]
    pub code: i32,
    #[prost(bool, tag = "4")]
    pub retriable: bool,
    #[prost(string, tag = "5")]
    pub detail: String,
    #[prost(map = "string, string", tag = "6")]
    pub extra_info: HashMap<String, String>,
}

impl Status {
    /// pymilvus' `is_successful`: both the new `code` and the legacy
    /// `error_code` are 0.
    pub fn is_success(&self) -> bool {
        self.code == 0 && self.error_code == 0
    }
}

/// `milvus.proto.common.KeyValuePair`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct KeyValuePair {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

impl KeyValuePair {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// `milvus.proto.common.KeyDataPair`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyDataPair {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
}

/// `milvus.proto.common.MsgBase`, minimal. Every request carries it as field
/// 1 ("not useful for now"); SDKs leave it unset.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MsgBase {
    /// A `milvus.proto.common.MsgType` (e.g. 100 = CreateCollection).
    #[prost(int32, tag = "1")]
    pub msg_type: i32,
    #[prost(int64, tag = "2")]
    pub msg_id: i64,
    #[prost(uint64, tag = "3")]
    pub timestamp: u64,
    #[prost(int64, tag = "4")]
    pub source_id: i64,
    #[prost(int64, tag = "5")]
    pub target_id: i64,
    #[prost(map = "string, string", tag = "6")]
    pub properties: HashMap<String, String>,
}

/// `milvus.proto.common.PlaceholderValue`: `values` holds nq rows; a float
/// vector row is its f32s as little-endian bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PlaceholderValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(enumeration = "PlaceholderType", tag = "2")]
    pub r#type: i32,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub values: Vec<Vec<u8>>,
    #[prost(bool, tag = "4")]
    pub element_level: bool,
}

/// `milvus.proto.common.PlaceholderGroup`; sent encoded in
/// `SearchRequest.placeholder_group`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PlaceholderGroup {
    #[prost(message, repeated, tag = "1")]
    pub placeholders: Vec<PlaceholderValue>,
}

impl PlaceholderGroup {
    /// The group pymilvus sends for dense float query vectors: one
    /// placeholder tagged `$0` of type FloatVector, one row per vector.
    pub fn float_vectors<'a>(vectors: impl IntoIterator<Item = &'a [f32]>) -> Self {
        let values = vectors
            .into_iter()
            .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        Self {
            placeholders: vec![PlaceholderValue {
                tag: "$0".to_owned(),
                r#type: PlaceholderType::FloatVector as i32,
                values,
                element_level: false,
            }],
        }
    }
}

// ───────────────────────────── schema.proto ─────────────────────────────

/// `milvus.proto.schema.DataType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DataType {
    None = 0,
    Bool = 1,
    Int8 = 2,
    Int16 = 3,
    Int32 = 4,
    Int64 = 5,
    Float = 10,
    Double = 11,
    String = 20,
    VarChar = 21,
    Array = 22,
    Json = 23,
    Geometry = 24,
    Text = 25,
    Timestamptz = 26,
    Mol = 27,
    Date = 28,
    Time = 29,
    Decimal = 30,
    Uuid = 31,
    BinaryVector = 100,
    FloatVector = 101,
    Float16Vector = 102,
    BFloat16Vector = 103,
    SparseFloatVector = 104,
    Int8Vector = 105,
    ArrayOfVector = 106,
    ArrayOfStruct = 200,
    Struct = 201,
}

/// `milvus.proto.schema.FunctionType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum FunctionType {
    Unknown = 0,
    Bm25 = 1,
    TextEmbedding = 2,
    Rerank = 3,
    MinHash = 4,
    MolFingerprint = 5,
}

/// `milvus.proto.schema.FieldState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum FieldState {
    FieldCreated = 0,
    FieldCreating = 1,
    FieldDropping = 2,
    FieldDropped = 3,
}

/// `milvus.proto.schema.FieldSchema`. `type_params` carry `dim`,
/// `max_length`, `enable_analyzer`, ... as strings (pymilvus JSON-encodes
/// non-string values, so `dim` = "4", booleans = "true").
#[derive(Clone, PartialEq, prost::Message)]
pub struct FieldSchema {
    #[prost(int64, tag = "1")]
    pub field_id: i64,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(bool, tag = "3")]
    pub is_primary_key: bool,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(enumeration = "DataType", tag = "5")]
    pub data_type: i32,
    #[prost(message, repeated, tag = "6")]
    pub type_params: Vec<KeyValuePair>,
    #[prost(message, repeated, tag = "7")]
    pub index_params: Vec<KeyValuePair>,
    #[prost(bool, tag = "8")]
    pub auto_id: bool,
    #[prost(enumeration = "FieldState", tag = "9")]
    pub state: i32,
    #[prost(enumeration = "DataType", tag = "10")]
    pub element_type: i32,
    #[prost(message, optional, tag = "11")]
    pub default_value: Option<ValueField>,
    #[prost(bool, tag = "12")]
    pub is_dynamic: bool,
    #[prost(bool, tag = "13")]
    pub is_partition_key: bool,
    #[prost(bool, tag = "14")]
    pub is_clustering_key: bool,
    #[prost(bool, tag = "15")]
    pub nullable: bool,
    #[prost(bool, tag = "16")]
    pub is_function_output: bool,
}

/// `milvus.proto.schema.FunctionSchema` (e.g. a BM25 function from a VarChar
/// input field to a SparseFloatVector output field).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FunctionSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int64, tag = "2")]
    pub id: i64,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(enumeration = "FunctionType", tag = "4")]
    pub r#type: i32,
    #[prost(string, repeated, tag = "5")]
    pub input_field_names: Vec<String>,
    #[prost(int64, repeated, tag = "6")]
    pub input_field_ids: Vec<i64>,
    #[prost(string, repeated, tag = "7")]
    pub output_field_names: Vec<String>,
    #[prost(int64, repeated, tag = "8")]
    pub output_field_ids: Vec<i64>,
    #[prost(message, repeated, tag = "9")]
    pub params: Vec<KeyValuePair>,
}

/// `milvus.proto.schema.CollectionSchema`; sent *encoded* in
/// `CreateCollectionRequest.schema`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CollectionSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub description: String,
    /// Deprecated; set `FieldSchema.auto_id` on the primary field instead.
    #[prost(bool, tag = "3")]
    pub auto_id: bool,
    #[prost(message, repeated, tag = "4")]
    pub fields: Vec<FieldSchema>,
    #[prost(bool, tag = "5")]
    pub enable_dynamic_field: bool,
    #[prost(message, repeated, tag = "6")]
    pub properties: Vec<KeyValuePair>,
    #[prost(message, repeated, tag = "7")]
    pub functions: Vec<FunctionSchema>,
    #[prost(string, tag = "8")]
    pub db_name: String,
    #[prost(int32, tag = "10")]
    pub version: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BoolArray {
    #[prost(bool, repeated, tag = "1")]
    pub data: Vec<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct IntArray {
    #[prost(int32, repeated, tag = "1")]
    pub data: Vec<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LongArray {
    #[prost(int64, repeated, tag = "1")]
    pub data: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FloatArray {
    #[prost(float, repeated, tag = "1")]
    pub data: Vec<f32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DoubleArray {
    #[prost(double, repeated, tag = "1")]
    pub data: Vec<f64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BytesArray {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub data: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StringArray {
    #[prost(string, repeated, tag = "1")]
    pub data: Vec<String>,
}

/// `milvus.proto.schema.ArrayArray`: one `ScalarField` per row of an Array
/// field.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayArray {
    #[prost(message, repeated, tag = "1")]
    pub data: Vec<ScalarField>,
    #[prost(enumeration = "DataType", tag = "2")]
    pub element_type: i32,
}

/// `milvus.proto.schema.JSONArray`: one JSON document (UTF-8 JSON text) per
/// row.
#[derive(Clone, PartialEq, prost::Message)]
pub struct JsonArray {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub data: Vec<Vec<u8>>,
}

/// `milvus.proto.schema.ValueField` (a field's default value).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueField {
    #[prost(oneof = "value_field::Data", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub data: Option<value_field::Data>,
}

pub mod value_field {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        #[prost(bool, tag = "1")]
        BoolData(bool),
        #[prost(int32, tag = "2")]
        IntData(i32),
        #[prost(int64, tag = "3")]
        LongData(i64),
        #[prost(float, tag = "4")]
        FloatData(f32),
        #[prost(double, tag = "5")]
        DoubleData(f64),
        #[prost(string, tag = "6")]
        StringData(String),
        #[prost(bytes = "vec", tag = "7")]
        BytesData(Vec<u8>),
    }
}

/// `milvus.proto.schema.ScalarField`: a column of scalar values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScalarField {
    #[prost(oneof = "scalar_field::Data", tags = "1, 2, 3, 4, 5, 6, 7, 8, 9")]
    pub data: Option<scalar_field::Data>,
    /// Per-row validity (false = null); newer servers put it here rather
    /// than in `FieldData.valid_data`.
    #[prost(bool, repeated, tag = "17")]
    pub valid_data: Vec<bool>,
}

pub mod scalar_field {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        /// Bool
        #[prost(message, tag = "1")]
        BoolData(super::BoolArray),
        /// Int8, Int16, Int32
        #[prost(message, tag = "2")]
        IntData(super::IntArray),
        /// Int64
        #[prost(message, tag = "3")]
        LongData(super::LongArray),
        /// Float
        #[prost(message, tag = "4")]
        FloatData(super::FloatArray),
        /// Double
        #[prost(message, tag = "5")]
        DoubleData(super::DoubleArray),
        /// VarChar, String
        #[prost(message, tag = "6")]
        StringData(super::StringArray),
        #[prost(message, tag = "7")]
        BytesData(super::BytesArray),
        /// Array
        #[prost(message, tag = "8")]
        ArrayData(super::ArrayArray),
        /// JSON
        #[prost(message, tag = "9")]
        JsonData(super::JsonArray),
    }
}

/// `milvus.proto.schema.SparseFloatArray`: one row per sparse vector, each
/// row is (u32 index LE, f32 value LE) pairs sorted by index.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SparseFloatArray {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub contents: Vec<Vec<u8>>,
    #[prost(int64, tag = "2")]
    pub dim: i64,
}

/// `milvus.proto.schema.VectorField`: a column of vectors; dense data is
/// flattened (rows × dim).
#[derive(Clone, PartialEq, prost::Message)]
pub struct VectorField {
    #[prost(int64, tag = "1")]
    pub dim: i64,
    #[prost(oneof = "vector_field::Data", tags = "2, 3, 4, 5, 6, 7")]
    pub data: Option<vector_field::Data>,
    #[prost(bool, repeated, tag = "9")]
    pub valid_data: Vec<bool>,
}

pub mod vector_field {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        #[prost(message, tag = "2")]
        FloatVector(super::FloatArray),
        #[prost(bytes = "vec", tag = "3")]
        BinaryVector(Vec<u8>),
        #[prost(bytes = "vec", tag = "4")]
        Float16Vector(Vec<u8>),
        #[prost(bytes = "vec", tag = "5")]
        Bfloat16Vector(Vec<u8>),
        #[prost(message, tag = "6")]
        SparseFloatVector(super::SparseFloatArray),
        #[prost(bytes = "vec", tag = "7")]
        Int8Vector(Vec<u8>),
    }
}

/// `milvus.proto.schema.FieldData`: one column of an insert, or of a
/// query/search result.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FieldData {
    #[prost(enumeration = "DataType", tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub field_name: String,
    #[prost(oneof = "field_data::Field", tags = "3, 4")]
    pub field: Option<field_data::Field>,
    #[prost(int64, tag = "5")]
    pub field_id: i64,
    #[prost(bool, tag = "6")]
    pub is_dynamic: bool,
    /// Legacy per-row validity (false = null) for nullable fields.
    #[prost(bool, repeated, tag = "7")]
    pub valid_data: Vec<bool>,
}

pub mod field_data {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Field {
        #[prost(message, tag = "3")]
        Scalars(super::ScalarField),
        #[prost(message, tag = "4")]
        Vectors(super::VectorField),
    }
}

/// `milvus.proto.schema.IDs`: primary keys.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ids {
    #[prost(oneof = "ids::IdField", tags = "1, 2")]
    pub id_field: Option<ids::IdField>,
}

pub mod ids {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum IdField {
        #[prost(message, tag = "1")]
        IntId(super::LongArray),
        #[prost(message, tag = "2")]
        StrId(super::StringArray),
    }
}

/// `milvus.proto.schema.SearchResultData`. Hits of all queries are
/// concatenated: query i has `topks[i]` hits; `ids`, `scores` and every
/// column of `fields_data` are laid out in that order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchResultData {
    #[prost(int64, tag = "1")]
    pub num_queries: i64,
    #[prost(int64, tag = "2")]
    pub top_k: i64,
    #[prost(message, repeated, tag = "3")]
    pub fields_data: Vec<FieldData>,
    #[prost(float, repeated, tag = "4")]
    pub scores: Vec<f32>,
    #[prost(message, optional, tag = "5")]
    pub ids: Option<Ids>,
    #[prost(int64, repeated, tag = "6")]
    pub topks: Vec<i64>,
    #[prost(string, repeated, tag = "7")]
    pub output_fields: Vec<String>,
    #[prost(message, optional, tag = "8")]
    pub group_by_field_value: Option<FieldData>,
    #[prost(int64, tag = "9")]
    pub all_search_count: i64,
    #[prost(float, repeated, tag = "10")]
    pub distances: Vec<f32>,
    #[prost(float, repeated, tag = "12")]
    pub recalls: Vec<f32>,
    #[prost(string, tag = "13")]
    pub primary_field_name: String,
}

/// `milvus.proto.schema.TemplateValue`: a value bound to a `{name}`
/// placeholder of a filter expression (`expr_template_values`), so values
/// never have to be spliced into the expression text.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TemplateValue {
    #[prost(oneof = "template_value::Val", tags = "1, 2, 3, 4, 5")]
    pub val: Option<template_value::Val>,
}

pub mod template_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Val {
        #[prost(bool, tag = "1")]
        BoolVal(bool),
        #[prost(int64, tag = "2")]
        Int64Val(i64),
        #[prost(double, tag = "3")]
        FloatVal(f64),
        #[prost(string, tag = "4")]
        StringVal(String),
        #[prost(message, tag = "5")]
        ArrayVal(super::TemplateArrayValue),
    }
}

/// `milvus.proto.schema.TemplateArrayValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TemplateArrayValue {
    #[prost(oneof = "template_array_value::Data", tags = "1, 2, 3, 4, 5, 6")]
    pub data: Option<template_array_value::Data>,
}

pub mod template_array_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        #[prost(message, tag = "1")]
        BoolData(super::BoolArray),
        #[prost(message, tag = "2")]
        LongData(super::LongArray),
        #[prost(message, tag = "3")]
        DoubleData(super::DoubleArray),
        #[prost(message, tag = "4")]
        StringData(super::StringArray),
        #[prost(message, tag = "5")]
        ArrayData(super::TemplateArrayValueArray),
        #[prost(message, tag = "6")]
        JsonData(super::JsonArray),
    }
}

/// `milvus.proto.schema.TemplateArrayValueArray`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TemplateArrayValueArray {
    #[prost(message, repeated, tag = "1")]
    pub data: Vec<TemplateArrayValue>,
}

// ───────────────────────────── milvus.proto ─────────────────────────────

/// `GetVersion(GetVersionRequest) -> GetVersionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetVersionRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetVersionResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `HasCollection(HasCollectionRequest) -> BoolResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HasCollectionRequest {
    #[prost(message, optional, tag = "1")]
    pub base: Option<MsgBase>,
    #[prost(string, tag = "2")]
    pub db_name: String,
    #[prost(string, tag = "3")]
    pub collection_name: String,
    #[prost(uint64, tag = "4")]
    pub time_stamp: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BoolResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(bool, tag = "2")]
    pub value: bool,
}

/// `DescribeCollection(DescribeCollectionRequest) -> DescribeCollectionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DescribeCollectionRequest {
    #[prost(message, optional, tag = "1")]
    pub base: Option<MsgBase>,
    #[prost(string, tag = "2")]
    pub db_name: String,
    #[prost(string, tag = "3")]
    pub collection_name: String,
    #[prost(int64, tag = "4")]
    pub collection_id: i64,
    #[prost(uint64, tag = "5")]
    pub time_stamp: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DescribeCollectionResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(message, optional, tag = "2")]
    pub schema: Option<CollectionSchema>,
    #[prost(int64, tag = "3")]
    pub collection_id: i64,
    #[prost(string, repeated, tag = "4")]
    pub virtual_channel_names: Vec<String>,
    #[prost(string, repeated, tag = "5")]
    pub physical_channel_names: Vec<String>,
    #[prost(uint64, tag = "6")]
    pub created_timestamp: u64,
    #[prost(uint64, tag = "7")]
    pub created_utc_timestamp: u64,
    #[prost(int32, tag = "8")]
    pub shards_num: i32,
    #[prost(string, repeated, tag = "9")]
    pub aliases: Vec<String>,
    #[prost(message, repeated, tag = "10")]
    pub start_positions: Vec<KeyDataPair>,
    #[prost(enumeration = "ConsistencyLevel", tag = "11")]
    pub consistency_level: i32,
    #[prost(string, tag = "12")]
    pub collection_name: String,
    #[prost(message, repeated, tag = "13")]
    pub properties: Vec<KeyValuePair>,
    #[prost(string, tag = "14")]
    pub db_name: String,
    #[prost(int64, tag = "15")]
    pub num_partitions: i64,
    #[prost(int64, tag = "16")]
    pub db_id: i64,
    #[prost(uint64, tag = "17")]
    pub request_time: u64,
    #[prost(uint64, tag = "18")]
    pub update_timestamp: u64,
    #[prost(string, tag = "19")]
    pub update_timestamp_str: String,
}

/// `CreateCollection(CreateCollectionRequest) -> Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateCollectionRequest {
    #[prost(message, optional, tag = "1")]
    pub base: Option<MsgBase>,
    #[prost(string, tag = "2")]
    pub db_name: String,
    #[prost(string, tag = "3")]
    pub collection_name: String,
    /// An encoded [`CollectionSchema`] (`prost::Message::encode_to_vec`).
    #[prost(bytes = "vec", tag = "4")]
    pub schema: Vec<u8>,
    /// <= 0: the server's default.
    #[prost(int32, tag = "5")]
    pub shards_num: i32,
    #[prost(enumeration = "ConsistencyLevel", tag = "6")]
    pub consistency_level: i32,
    #[prost(message, repeated, tag = "7")]
    pub properties: Vec<KeyValuePair>,
    #[prost(int64, tag = "8")]
    pub num_partitions: i64,
}

/// `CreateIndex(CreateIndexRequest) -> Status`. pymilvus puts
/// `index_type`, `metric_type` and `params` (a JSON object as text, e.g.
/// `{"M": 8, "efConstruction": 64}`) into `extra_params`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CreateIndexRequest {
    #[prost(message, optional, tag = "1")]
    pub base: Option<MsgBase>,
    #[prost(string, tag = "2")]
    pub db_name: String,
    #[prost(string, tag = "3")]
    pub collection_name: String,
    #[prost(string, tag = "4")]
    pub field_name: String,
    #[prost(message, repeated, tag = "5")]
    pub extra_params: Vec<KeyValuePair>,
    #[prost(string, tag = "6")]
    pub index_name: String,
}

/// `DescribeIndex(DescribeIndexRequest) -> DescribeIndexResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DescribeIndexRequest {
    #[prost(message, optional, tag = "1")]
    pub base: Option<MsgBase>,
    #[prost(string, tag = "2")]
    pub db_name: String,
    #[prost(string, tag = "3")]
    pub collection_name: String,
    #[prost(string, tag = "4")]
    pub field_name: String,
    #[prost(string, tag = "5")]
    pub index_name: String,
    #[prost(uint64, tag = "6")]
    pub timestamp: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DescribeIndexResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(message, repeated, tag = "2")]
    pub index_descriptions: Vec<IndexDescription>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct IndexDescription {
    #[prost(string, tag = "1")]
    pub index_name: String,
    #[prost(int64, tag = "2")]
    pub index_id: i64,
    #[prost(message, repeated, tag = "3")]
    pub params: Vec<KeyValuePair>,
    #[prost(string, tag = "4")]
    pub field_name: String,
    #[prost(int64, tag = "5")]
    pub indexed_rows: i64,
    #[prost(int64, tag = "6")]
    pub total_rows: i64,
    #[prost(enumeration = "IndexState", tag = "7")]
    pub state: i32,
    #[prost(string, tag = "8")]
    pub index_state_fail_reason: String,
    #[prost(int64, tag = "9")]
    pub pending_index_rows: i64,
    #[prost(int32, tag = "10")]
    pub min_index_version: i32,
    #[prost(int32, tag = "11")]
    pub max_index_version: i32,
}

/// `LoadCollection(LoadCollectionRequest) -> Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LoadCollectionRequest {
    #[prost(message, optional, tag = "1")]
    pub base: Option<MsgBase>,
    #[prost(string, tag = "2")]
    pub db_name: String,
    #[prost(string, tag = "3")]
    pub collection_name: String,
    /// 0: the server's default (1).
    #[prost(int32, tag = "4")]
    pub replica_number: i32,
    #[prost(string, repeated, tag = "5")]
    pub resource_groups: Vec<String>,
    #[prost(bool, tag = "6")]
    pub refresh: bool,
    #[prost(string, repeated, tag = "7")]
    pub load_fields: Vec<String>,
    #[prost(bool, tag = "8")]
    pub skip_load_dynamic_field: bool,
    #[prost(map = "string, string", tag = "9")]
    pub load_params: HashMap<String, String>,
}

/// `GetLoadState(GetLoadStateRequest) -> GetLoadStateResponse`. Note the
/// unusual numbering: `collection_name` is 2 and `db_name` is 4.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetLoadStateRequest {
    #[prost(message, optional, tag = "1")]
    pub base: Option<MsgBase>,
    #[prost(string, tag = "2")]
    pub collection_name: String,
    #[prost(string, repeated, tag = "3")]
    pub partition_names: Vec<String>,
    #[prost(string, tag = "4")]
    pub db_name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetLoadStateResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(enumeration = "LoadState", tag = "2")]
    pub state: i32,
}

/// `Insert(InsertRequest) -> MutationResult`. Column-wise: one
/// [`FieldData`] per field, each with `num_rows` values; an auto-ID primary
/// key is left out.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InsertRequest {
    #[prost(message, optional, tag = "1")]
    pub base: Option<MsgBase>,
    #[prost(string, tag = "2")]
    pub db_name: String,
    #[prost(string, tag = "3")]
    pub collection_name: String,
    #[prost(string, tag = "4")]
    pub partition_name: String,
    #[prost(message, repeated, tag = "5")]
    pub fields_data: Vec<FieldData>,
    #[prost(uint32, repeated, tag = "6")]
    pub hash_keys: Vec<u32>,
    #[prost(uint32, tag = "7")]
    pub num_rows: u32,
    /// The schema's update timestamp as the client knows it; 0 skips the
    /// server's schema-mismatch check.
    #[prost(uint64, tag = "8")]
    pub schema_timestamp: u64,
}

/// `Delete(DeleteRequest) -> MutationResult`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRequest {
    #[prost(message, optional, tag = "1")]
    pub base: Option<MsgBase>,
    #[prost(string, tag = "2")]
    pub db_name: String,
    #[prost(string, tag = "3")]
    pub collection_name: String,
    #[prost(string, tag = "4")]
    pub partition_name: String,
    #[prost(string, tag = "5")]
    pub expr: String,
    #[prost(uint32, repeated, tag = "6")]
    pub hash_keys: Vec<u32>,
    #[prost(enumeration = "ConsistencyLevel", tag = "7")]
    pub consistency_level: i32,
    #[prost(map = "string, message", tag = "8")]
    pub expr_template_values: HashMap<String, TemplateValue>,
}

/// The response of Insert, Upsert and Delete.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MutationResult {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    /// Proto name `IDs`.
    #[prost(message, optional, tag = "2")]
    pub ids: Option<Ids>,
    #[prost(uint32, repeated, tag = "3")]
    pub succ_index: Vec<u32>,
    #[prost(uint32, repeated, tag = "4")]
    pub err_index: Vec<u32>,
    #[prost(bool, tag = "5")]
    pub acknowledged: bool,
    #[prost(int64, tag = "6")]
    pub insert_cnt: i64,
    #[prost(int64, tag = "7")]
    pub delete_cnt: i64,
    #[prost(int64, tag = "8")]
    pub upsert_cnt: i64,
    #[prost(uint64, tag = "9")]
    pub timestamp: u64,
}

/// `Query(QueryRequest) -> QueryResults`. `query_params` as pymilvus sends
/// them: `limit`, `offset` (decimal strings), `ignore_growing`,
/// `reduce_stop_for_best` ("False"/"True"), `iterator`, ... An output field
/// `count(*)` asks for the number of matching rows.
#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryRequest {
    #[prost(message, optional, tag = "1")]
    pub base: Option<MsgBase>,
    #[prost(string, tag = "2")]
    pub db_name: String,
    #[prost(string, tag = "3")]
    pub collection_name: String,
    #[prost(string, tag = "4")]
    pub expr: String,
    #[prost(string, repeated, tag = "5")]
    pub output_fields: Vec<String>,
    #[prost(string, repeated, tag = "6")]
    pub partition_names: Vec<String>,
    #[prost(uint64, tag = "7")]
    pub travel_timestamp: u64,
    #[prost(uint64, tag = "8")]
    pub guarantee_timestamp: u64,
    #[prost(message, repeated, tag = "9")]
    pub query_params: Vec<KeyValuePair>,
    #[prost(bool, tag = "10")]
    pub not_return_all_meta: bool,
    #[prost(enumeration = "ConsistencyLevel", tag = "11")]
    pub consistency_level: i32,
    /// true: use the collection's consistency level, ignoring
    /// `consistency_level` (pymilvus' default).
    #[prost(bool, tag = "12")]
    pub use_default_consistency: bool,
    #[prost(map = "string, message", tag = "13")]
    pub expr_template_values: HashMap<String, TemplateValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryResults {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(message, repeated, tag = "2")]
    pub fields_data: Vec<FieldData>,
    #[prost(string, tag = "3")]
    pub collection_name: String,
    #[prost(string, repeated, tag = "4")]
    pub output_fields: Vec<String>,
    #[prost(uint64, tag = "5")]
    pub session_ts: u64,
    #[prost(string, tag = "6")]
    pub primary_field_name: String,
}

/// `Search(SearchRequest) -> SearchResults`. `dsl` is the filter expression
/// (with `dsl_type` = BoolExprV1); `search_params` as pymilvus sends them:
/// `topk`, `metric_type`, `anns_field`, `round_decimal`, `ignore_growing`,
/// `offset`, and `params` = a JSON object as text (e.g. `{"ef": 64}`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchRequest {
    #[prost(message, optional, tag = "1")]
    pub base: Option<MsgBase>,
    #[prost(string, tag = "2")]
    pub db_name: String,
    #[prost(string, tag = "3")]
    pub collection_name: String,
    #[prost(string, repeated, tag = "4")]
    pub partition_names: Vec<String>,
    #[prost(string, tag = "5")]
    pub dsl: String,
    #[prost(oneof = "search_request::SearchInput", tags = "6, 22")]
    pub search_input: Option<search_request::SearchInput>,
    #[prost(enumeration = "DslType", tag = "7")]
    pub dsl_type: i32,
    #[prost(string, repeated, tag = "8")]
    pub output_fields: Vec<String>,
    #[prost(message, repeated, tag = "9")]
    pub search_params: Vec<KeyValuePair>,
    #[prost(uint64, tag = "10")]
    pub travel_timestamp: u64,
    #[prost(uint64, tag = "11")]
    pub guarantee_timestamp: u64,
    /// Number of query vectors.
    #[prost(int64, tag = "12")]
    pub nq: i64,
    #[prost(bool, tag = "13")]
    pub not_return_all_meta: bool,
    #[prost(enumeration = "ConsistencyLevel", tag = "14")]
    pub consistency_level: i32,
    #[prost(bool, tag = "15")]
    pub use_default_consistency: bool,
    #[prost(map = "string, message", tag = "18")]
    pub expr_template_values: HashMap<String, TemplateValue>,
}

pub mod search_request {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum SearchInput {
        /// An encoded [`super::PlaceholderGroup`] (plain `bytes
        /// placeholder_group = 6` on servers older than the oneof: same wire).
        #[prost(bytes = "vec", tag = "6")]
        PlaceholderGroup(Vec<u8>),
        /// Search by primary keys (newer servers only).
        #[prost(message, tag = "22")]
        Ids(super::Ids),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SearchResults {
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    #[prost(message, optional, tag = "2")]
    pub results: Option<SearchResultData>,
    #[prost(string, tag = "3")]
    pub collection_name: String,
    #[prost(uint64, tag = "4")]
    pub session_ts: u64,
}

// ───────────────────────────── the caller ─────────────────────────────

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// The gRPC service every method below belongs to.
pub const SERVICE: &str = "milvus.proto.milvus.MilvusService";

/// The Milvus gRPC service over one channel; `authorization` and `dbname`
/// metadata as pymilvus sends them.
#[derive(Clone)]
pub struct Rpc {
    grpc: tonic::client::Grpc<Channel>,
    auth: Option<MetadataValue<Ascii>>,
    db: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl Rpc {
    /// `token` is `"user:password"` or an API key; like pymilvus it is sent
    /// as `authorization: base64(token)` on every call (nothing is sent for
    /// `None` or ""). A non-empty `db_name` is sent as `dbname` metadata on
    /// every call, which is how pymilvus selects the database (request
    /// `db_name` fields, when set, take precedence on the server).
    pub fn new(channel: Channel, token: Option<&str>, db_name: &str) -> Result<Self, String> {
        let auth = match token.filter(|t| !t.is_empty()) {
            Some(t) => Some(
                MetadataValue::try_from(base64_standard(t.as_bytes()))
                    .map_err(|e| format!("authorization metadata: {e}"))?,
            ),
            None => None,
        };
        let db = if db_name.is_empty() {
            None
        } else {
            Some(
                MetadataValue::try_from(db_name)
                    .map_err(|e| format!("invalid database name {db_name:?}: {e}"))?,
            )
        };
        // pymilvus sets unlimited send/receive sizes; tonic's default
        // decoding limit (4 MiB) is too small for large query/search results.
        let grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(Self { grpc, auth, db })
    }

    /// One unary call of `milvus.proto.milvus.MilvusService/{method}`
    /// (`method` as in the proto: "Search", "CreateCollection", ...). A
    /// transport or gRPC-level failure is the `Err`; Milvus-level failures
    /// come back inside the response's `status` (check
    /// [`Status::is_success`]).
    pub async fn call<Req, Resp>(
        &self,
        method: &'static str,
        req: Req,
    ) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + 'static,
        Resp: prost::Message + Default + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("Milvus channel not ready: {e}")))?;
        let path = format!("/{SERVICE}/{method}")
            .try_into()
            .map_err(|e| tonic::Status::internal(format!("bad gRPC method {method:?}: {e}")))?;
        let mut request = tonic::Request::new(req);
        if let Some(auth) = &self.auth {
            request.metadata_mut().insert("authorization", auth.clone());
        }
        if let Some(db) = &self.db {
            request.metadata_mut().insert("dbname", db.clone());
        }
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new(SERVICE, method));
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(request, path, codec)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// Standard base64 with `=` padding (RFC 4648 §4), as Python's
/// `base64.b64encode`.
fn base64_standard(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("root:Milvus", "cm9vdDpNaWx2dXM="),
        ] {
            assert_eq!(base64_standard(input.as_bytes()), want, "{input:?}");
        }
        // Bytes that use '+' and '/'.
        assert_eq!(base64_standard(&[0xfb, 0xff, 0xbf]), "+/+/");
    }

    #[test]
    fn field_data_round_trips() {
        let fd = FieldData {
            r#type: DataType::FloatVector as i32,
            field_name: "vector".into(),
            field: Some(field_data::Field::Vectors(VectorField {
                dim: 2,
                data: Some(vector_field::Data::FloatVector(FloatArray {
                    data: vec![1.0, 2.0, 3.0, 4.0],
                })),
                valid_data: vec![],
            })),
            ..Default::default()
        };
        let bytes = fd.encode_to_vec();
        assert_eq!(FieldData::decode(bytes.as_slice()).unwrap(), fd);
        // type=101 → tag 1 varint 0x65; field_name → tag 2.
        assert_eq!(&bytes[..2], &[0x08, 0x65]);
    }

    #[test]
    fn placeholder_group_is_little_endian_f32() {
        let g = PlaceholderGroup::float_vectors([[1.0f32, -2.0].as_slice()]);
        assert_eq!(g.placeholders[0].tag, "$0");
        assert_eq!(g.placeholders[0].r#type, 101);
        assert_eq!(
            g.placeholders[0].values[0],
            [0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0]
        );
    }
}
