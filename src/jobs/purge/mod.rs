//! Dify's logs: `purge_logs` deletes old runs and messages (exporting them first) and
//! `purge_exports` deletes old exports.

pub mod exports;
mod log_export;
pub mod logs;
