//! deopt: align a frozen LLM to a national culture by evolving soft prompts.
//!
//! Data flows one way through these modules:
//! survey items + country targets -> prompt rendering -> engine (batched option scoring)
//! -> answers -> metrics -> fitness -> optimizer -> run directory -> export / report.

pub mod answers;
pub mod baseline;
pub mod bench;
pub mod cli;
pub mod country;
pub mod data;
pub mod dimension;
pub mod engine;
pub mod error;
pub mod export;
pub mod fitness;
pub mod fsutil;
pub mod generate;
pub mod init;
pub mod llama;
pub mod metrics;
pub mod model;
pub mod objective;
pub mod optim;
pub mod paths;
pub mod render;
pub mod report;
pub mod rundir;
pub mod softprompt;
pub mod survey;
pub mod sweep;
pub mod targets;
