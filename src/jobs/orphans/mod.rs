//! Orphans: `orphan_records` (upload and tool file rows no one references) and `orphan_files`
//! (stored objects no row references), each planned in a dry run and deleted on confirm.

pub mod files;
mod plan;
pub mod records;
mod refs;
