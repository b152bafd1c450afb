//! The job framework: one trait every job kind implements, the registry of kinds, and the
//! errors a job can end with. One file per kind.

pub mod backup;
mod context;
pub mod contract;
pub mod failure;
pub mod fanout;
pub mod orphans;
pub mod progress;
pub mod purge;
pub mod restore;
pub mod storage_migrate;
pub mod storage_param;
pub mod vacuum;
pub mod vector_migrate;

pub use context::{CtxParts, JobCtx};
pub use progress::Progress;

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::PgPool;

use crate::config::Settings;

/// How a job attempt ended, other than with a result.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("cancelled")]
    Cancelled,
    #[error("interrupted by shutdown")]
    Interrupted,
    #[error("lease lost")]
    LeaseLost,
    #[error("{message}")]
    Failed {
        code: &'static str,
        message: String,
        /// What was done before the failure, kept as the job's result.
        result: Option<Value>,
    },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

impl JobError {
    pub fn failed(code: &'static str, message: impl Into<String>) -> Self {
        JobError::Failed {
            code,
            message: message.into(),
            result: None,
        }
    }
}

/// A request's params were wrong, or its kind unknown: a 4xx naming the field.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("unknown job kind {0:?}")]
    UnknownKind(String),
    #[error("{field}: {message}")]
    Invalid {
        field: String,
        message: String,
        unknown_field: bool,
    },
    /// Dify's schema is not the shape the job relies on.
    #[error(transparent)]
    Shape(#[from] crate::dify::shape::Mismatch),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl From<crate::dify::shape::ShapeError> for SpecError {
    fn from(e: crate::dify::shape::ShapeError) -> Self {
        match e {
            crate::dify::shape::ShapeError::Mismatch(m) => SpecError::Shape(m),
            crate::dify::shape::ShapeError::Db(e) => SpecError::Db(e),
        }
    }
}

/// Code of a job failed (or a request refused) because Dify's schema is not the expected shape.
pub const SCHEMA_UNSUPPORTED: &str = "dify_schema_unsupported";

impl From<crate::dify::shape::ShapeError> for JobError {
    fn from(e: crate::dify::shape::ShapeError) -> Self {
        match e {
            crate::dify::shape::ShapeError::Mismatch(m) => {
                JobError::failed(SCHEMA_UNSUPPORTED, m.to_string())
            }
            crate::dify::shape::ShapeError::Db(e) => JobError::Db(e),
        }
    }
}

impl SpecError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            message: message.into(),
            unknown_field: false,
        }
    }
}

/// One kind of maintenance job.
pub trait JobKind {
    const KIND: &'static str;
    type Params: Serialize + DeserializeOwned + Send + 'static;
    /// The shape of a dry run's result, as the OpenAPI document publishes it (`contract`).
    type Plan: utoipa::ToSchema;
    /// The shape of the result.
    type Outcome: utoipa::ToSchema;
    /// The shape of `progress.detail` (`contract::NoDetail` for none).
    type Detail: utoipa::ToSchema;
    /// The phases `progress.phase` goes through.
    const PHASES: &'static [contract::Phase];

    /// Jobs with the same key never run at once (enforced by a unique index).
    fn resource_key(params: &Self::Params) -> Option<String>;

    /// Checks that need the database (e.g. that named tables exist), before anything is queued.
    fn validate(
        params: &Self::Params,
        pool: &PgPool,
        settings: &Settings,
    ) -> impl Future<Output = Result<(), SpecError>> + Send;

    /// After `validate`: fills in what the database decides rather than the request (a
    /// confirming orphan run applies its plan's `min_age_hours`), so the stored params, and
    /// the job view, show the values the job applies.
    fn settle(
        _params: &mut Self::Params,
        _pool: &PgPool,
    ) -> impl Future<Output = Result<(), SpecError>> + Send {
        async { Ok(()) }
    }

    /// A dry run: reports what `run` would do and touches nothing.
    fn plan(
        params: Self::Params,
        ctx: &mut JobCtx,
    ) -> impl Future<Output = Result<Value, JobError>> + Send;

    /// The work, in batches that commit their checkpoint with them.
    fn run(
        params: Self::Params,
        ctx: &mut JobCtx,
    ) -> impl Future<Output = Result<Value, JobError>> + Send;
}

/// Parses params as JSON into the kind's typed params, naming the offending field on error.
pub fn parse_params<T: DeserializeOwned>(params: Value) -> Result<T, SpecError> {
    serde_path_to_error::deserialize::<_, T>(params).map_err(|e| {
        let path = e.path().to_string();
        let located = crate::fieldpath::locate(Some("params"), &path, &e.into_inner().to_string());
        SpecError::Invalid {
            field: located.field,
            message: located.message,
            unknown_field: located.unknown,
        }
    })
}

macro_rules! job_kinds {
    ($($variant:ident = $name:literal => $ty:ty, $params:ty;)+) => {
        /// A job as requested: its kind and that kind's typed params (for the OpenAPI document).
        #[derive(serde::Serialize, utoipa::ToSchema)]
        #[serde(tag = "kind", content = "params", rename_all = "snake_case")]
        pub enum JobRequest {
            $($variant($params),)+
        }

        /// The kind names as the OpenAPI document spells them (`rename_all` of `JobRequest`).
        #[cfg(test)]
        pub(crate) const REQUEST_NAMES: &[&str] = &[$($name),+];

        /// A job request whose params parsed into the typed params of its kind.
        #[derive(Debug)]
        pub enum JobSpec {
            $($variant(<$ty as JobKind>::Params),)+
        }

        /// Every kind this daemon runs, by name.
        pub const KINDS: &[&str] = &[$(<$ty as JobKind>::KIND),+];

        /// What every kind publishes of its output, for the OpenAPI document.
        pub fn contracts() -> Vec<contract::Contract> {
            vec![$(contract::Contract::of::<$ty>()),+]
        }

        impl JobSpec {
            pub fn parse(kind: &str, params: Value) -> Result<Self, SpecError> {
                $(if kind == <$ty as JobKind>::KIND {
                    return parse_params(params).map(JobSpec::$variant);
                })+
                Err(SpecError::UnknownKind(kind.to_string()))
            }

            pub fn kind(&self) -> &'static str {
                match self { $(JobSpec::$variant(_) => <$ty as JobKind>::KIND,)+ }
            }

            pub fn resource_key(&self) -> Option<String> {
                match self { $(JobSpec::$variant(p) => <$ty as JobKind>::resource_key(p),)+ }
            }

            /// Checks the request, then settles the params the job will apply.
            pub async fn validate(&mut self, pool: &PgPool, settings: &Settings) -> Result<(), SpecError> {
                match self {
                    $(JobSpec::$variant(p) => {
                        <$ty as JobKind>::validate(p, pool, settings).await?;
                        <$ty as JobKind>::settle(p, pool).await
                    })+
                }
            }

            /// The params with every default filled in, as stored and compared for idempotency.
            pub fn params_json(&self) -> Value {
                match self {
                    $(JobSpec::$variant(p) => serde_json::to_value(p).unwrap_or(Value::Null),)+
                }
            }

            pub async fn execute(self, ctx: &mut JobCtx) -> Result<Value, JobError> {
                match self {
                    $(JobSpec::$variant(p) => if ctx.dry_run {
                        <$ty as JobKind>::plan(p, ctx).await
                    } else {
                        <$ty as JobKind>::run(p, ctx).await
                    },)+
                }
            }
        }
    };
}

job_kinds! {
    Vacuum = "vacuum" => vacuum::Vacuum, vacuum::VacuumParams;
    StorageMigrate = "storage_migrate" => storage_migrate::StorageMigrate, storage_migrate::StorageMigrateParams;
    PurgeLogs = "purge_logs" => purge::logs::PurgeLogs, purge::logs::PurgeLogsParams;
    PurgeExports = "purge_exports" => purge::exports::PurgeExports, purge::exports::PurgeExportsParams;
    OrphanFiles = "orphan_files" => orphans::files::OrphanFiles, orphans::files::OrphanFilesParams;
    OrphanRecords = "orphan_records" => orphans::records::OrphanRecords, orphans::records::OrphanRecordsParams;
    VectorMigrate = "vector_migrate" => vector_migrate::VectorMigrate, vector_migrate::VectorMigrateParams;
    VectorRollback = "vector_rollback" => vector_migrate::rollback::VectorRollback, vector_migrate::rollback::VectorRollbackParams;
    Backup = "backup" => backup::Backup, backup::BackupParams;
    BackupVerify = "backup_verify" => backup::verify::BackupVerify, backup::verify::BackupVerifyParams;
    Restore = "restore" => restore::Restore, restore::RestoreParams;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_kind_names_are_the_real_ones() {
        assert_eq!(REQUEST_NAMES, KINDS);
        let doc = serde_json::to_value(crate::api::openapi()).expect("openapi serialises");
        let variants = doc["components"]["schemas"]["JobRequest"]["oneOf"]
            .as_array()
            .expect("JobRequest is a oneOf");
        let names: Vec<&str> = variants
            .iter()
            .filter_map(|v| v["properties"]["kind"]["enum"][0].as_str())
            .collect();
        assert_eq!(names, KINDS);
    }

    #[test]
    fn names_the_bad_field() {
        let err = JobSpec::parse("vacuum", serde_json::json!({"mode": "fast"})).unwrap_err();
        assert!(
            matches!(err, SpecError::Invalid { ref field, .. } if field == "params.mode"),
            "{err:?}"
        );
        let err = JobSpec::parse("vacuum", serde_json::json!({"tabels": []})).unwrap_err();
        assert!(
            matches!(err, SpecError::Invalid { ref field, unknown_field: true, .. } if field == "params.tabels"),
            "{err:?}"
        );
        let err = JobSpec::parse("vacuum", serde_json::json!({"tables": ["a", 3]})).unwrap_err();
        assert!(
            matches!(err, SpecError::Invalid { ref field, .. } if field == "params.tables[1]"),
            "{err:?}"
        );
    }
}
