//! Test support: databases on the test Postgres, in-process daemons with an API client,
//! daemons run as real processes (for signals), and real storage servers (S3, Azure, GCS).

pub mod contract;
pub mod daemon;
pub mod dify_vectors;
pub mod embeddings_server;
pub mod fault_proxy;
pub mod files;
pub mod pg;
pub mod pg_cluster;
pub mod process;
pub mod servers;
pub mod stores;
pub mod vector_servers;
