//! What the backup, verify and restore jobs share: the repository's layout and manifest, the
//! PostgreSQL client tools, and the portable file vectors are kept in.

pub mod pg;
pub mod repo;
pub mod sets;
pub mod vector_file;
