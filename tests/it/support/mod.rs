//! Test support: databases on the test Postgres, in-process daemons with an API client, and
//! daemons run as real processes (for signals).

pub mod daemon;
pub mod pg;
pub mod process;
