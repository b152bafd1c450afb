//! A storage backend named in a job's params (`{"type": ..}`), or the one Dify's env names:
//! parsed with the field named on error, checked, and opened.

use opendal::Operator;
use serde_json::Value;

use super::SpecError;
use crate::config::Settings;
use crate::storage::{self, Resilience, StorageConfig};

/// The config at `params.<field>`, or else the storage `STORAGE_TYPE` names.
pub fn resolve(
    value: Option<&Value>,
    field: &str,
    settings: &Settings,
) -> Result<StorageConfig, SpecError> {
    match value {
        Some(v) => parse(v, field),
        None => StorageConfig::from_env(&settings.storage).map_err(|e| {
            SpecError::invalid(
                format!("params.{field}"),
                format!(
                    "not given, and Dify's storage is not usable: {e} (STORAGE_TYPE={}); set that \
                     in Dify's env, or name the {field} here",
                    settings.storage.kind
                ),
            )
        }),
    }
}

pub fn parse(value: &Value, field: &str) -> Result<StorageConfig, SpecError> {
    StorageConfig::from_value(value.clone()).map_err(|e| SpecError::Invalid {
        field: format!("params.{field}.{}", e.field),
        message: e.message,
        unknown_field: e.unknown,
    })
}

/// A local root must exist: OpenDAL would create it, and an empty new directory would look
/// like storage with nothing in it.
pub fn check_exists(config: &StorageConfig, field: &str, given: bool) -> Result<(), SpecError> {
    if let Some(root) = config.local_root()
        && !std::path::Path::new(root).is_dir()
    {
        let field = if given {
            format!("params.{field}.root")
        } else {
            format!("params.{field}")
        };
        return Err(SpecError::invalid(
            field,
            format!(
                "{} is not a directory (Dify's OPENDAL_FS_ROOT / STORAGE_LOCAL_PATH)",
                storage::config::absolute(root)
            ),
        ));
    }
    Ok(())
}

pub fn open(config: &StorageConfig, field: &str) -> Result<Operator, SpecError> {
    storage::operator(config, Resilience::default())
        .map_err(|e| SpecError::invalid(format!("params.{field}.{}", e.field), e.message))
}

/// Objects in flight at once, for the jobs that copy storage objects.
pub fn check_concurrency(n: u32) -> Result<(), SpecError> {
    if (1..=64).contains(&n) {
        Ok(())
    } else {
        Err(SpecError::invalid(
            "params.concurrency",
            "must be between 1 and 64",
        ))
    }
}

/// For a job that already passed validation: a config error now is a failure, not a 400.
pub fn invalid(e: SpecError) -> super::JobError {
    super::JobError::failed("invalid_params", e.to_string())
}
