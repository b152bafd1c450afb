//! `vacuum`: sizes and dead rows per table, then what each table's VACUUM gave back.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Phase, phase};
use crate::jobs::vacuum::{TableOutcome, VacuumMode};

pub const PHASES: &[Phase] = &[
    phase(
        "vacuum {table}",
        "tables",
        "vacuuming one table (`public.<table>`)",
    ),
    phase("finished", "tables", "every table tried"),
];

/// A dry run of `vacuum`: the tables it would vacuum, as the statistics see them now.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VacuumPlan {
    pub mode: VacuumMode,
    pub tables: Vec<VacuumTableNow>,
    pub total_bytes: i64,
    pub dead_tuples: i64,
    /// `exact`, or `estimated` (from the catalogue) when a table was locked and could not be
    /// measured.
    pub sizes: String,
    /// For `full`: the free disk the largest table's rewrite needs at its peak.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_peak_free_space_bytes: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VacuumTableNow {
    pub table: String,
    pub total_bytes: i64,
    pub table_bytes: i64,
    pub index_bytes: i64,
    pub live_tuples: i64,
    pub dead_tuples: i64,
    /// Dead tuples over all tuples, to three decimals.
    pub dead_ratio: f64,
    pub last_vacuum: Option<DateTime<Utc>>,
    pub last_autovacuum: Option<DateTime<Utc>>,
}

/// The result of `vacuum`: every table tried, and those not reached yet (a cancelled job's
/// result names them).
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VacuumResult {
    pub mode: VacuumMode,
    pub tables: Vec<TableOutcome>,
    pub vacuumed: u64,
    pub failed: u64,
    pub not_reached: Vec<String>,
    pub size_before_bytes: i64,
    pub size_after_bytes: i64,
    pub reclaimed_bytes: i64,
}

/// What Postgres reports of the VACUUM running now (`pg_stat_progress_vacuum`, `_cluster` for
/// `full`, `_analyze`), when it reports anything.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VacuumDetail {
    /// `vacuum`, `cluster` or `analyze`: the view it came from.
    pub view: String,
    /// Postgres' own phase name, e.g. `scanning heap`.
    pub phase: String,
    pub blocks_total: i64,
    pub blocks_scanned: i64,
}
