pub mod datagen;
pub mod fixture;
mod run;

pub use run::{DemoArgs, run};
