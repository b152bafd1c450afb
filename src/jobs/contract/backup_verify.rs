//! `backup_verify`: a set read back against its manifest, and optionally restored into a
//! scratch database.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::restore::Rows;
use super::{NoDetail, Phase, phase};
use crate::backup::repo::DifyInfo;
use crate::jobs::backup::verify::SetCheck;

pub type BackupVerifyDetail = NoDetail;

pub const PHASES: &[Phase] = &[phase(
    "verify",
    "files",
    "every file and object of the set read back and hashed",
)];

/// A dry run of `backup_verify`: what it would read.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupVerifyPlan {
    /// The repository, described without its secrets.
    pub source: String,
    pub set: String,
    pub files: u64,
    pub objects: Option<u64>,
    pub bytes: u64,
    pub restore_test: bool,
}

/// The result of `backup_verify`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupVerifyResult {
    pub source: String,
    pub set: String,
    pub dify: DifyInfo,
    pub verify: SetCheck,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_test: Option<RestoreTest>,
}

/// The set's database restored into a scratch database (dropped after), its rows counted.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreTest {
    pub matches: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scratch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tables: Option<BTreeMap<String, Rows>>,
    /// Why nothing was restored (the set has no database part).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
