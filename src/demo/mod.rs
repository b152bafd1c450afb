mod database;
pub mod datagen;
pub mod fixture;
mod run;
mod storage;
mod vectors;

pub use database::MARK as DATABASE_MARK;
pub use run::{DemoArgs, run};
