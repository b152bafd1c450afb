//! Upkeep's integration tests: one binary, a real Postgres, a fresh database per test.

mod support;

mod access_paths;
mod api_errors;
mod auth;
mod backup;
mod cli;
mod console;
mod demo;
mod dify_shape;
mod events;
mod fan_out;
mod faults;
mod fixture_conformance;
mod jobs_api;
mod milvus_store;
mod openapi;
mod orphan_files;
mod orphan_records;
mod purge_exports;
mod purge_logs;
mod queue;
mod release_matrix;
mod schedules;
mod secrets;
mod shutdown;
mod storage_migrate;
mod test_servers;
mod vacuum;
mod vector_matrix;
mod vector_migrate;
mod vector_stores;
