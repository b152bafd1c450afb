//! Upkeep: maintenance jobs for a self-hosted Dify, queued in Postgres, run by tokio workers,
//! observable over REST and resumable after a crash.

pub mod api;
pub mod backup;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod db;
pub mod demo;
pub mod dify;
pub mod failpoint;
pub mod fieldpath;
pub mod jobs;
pub mod logging;
pub mod metrics;
mod nodelay;
pub mod queue;
pub mod schedules;
pub mod secrets;
pub mod storage;
pub mod vector;
pub mod worker;
