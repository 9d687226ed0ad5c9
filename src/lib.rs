//! deopt: align a frozen LLM to a national culture by evolving soft prompts.
//!
//! Data flows one way through these modules, each a folder named for its stage:
//!
//! ```text
//! data (surveys, countries, targets, answer files)
//!   -> prompt (rendering, soft prompts, initial prompts, text baselines)
//!   -> engine (batched option scoring and generation with llama.cpp)
//!   -> score (VSM13 indices, CAS, fitness)
//!   -> optim (DE and its variants over plain f32 vectors)
//!   -> run (run spec, loop, directory, checkpoints, sweeps)
//!   -> output (reports, prompt export)
//! ```
//!
//! `llama` is the only module with unsafe code (the FFI to llama.cpp); `provision` finds and
//! fetches model files; `bench` holds the benchmarks that `deopt bench` and `cargo bench` share;
//! `cli` parses flags and prints.

#![deny(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod compare;
pub mod data;
pub mod engine;
pub mod fsutil;
pub mod grad;
#[allow(unsafe_code)]
pub mod llama;
pub mod optim;
pub mod output;
pub mod progress;
pub mod prompt;
pub mod provision;
pub mod run;
pub mod score;
pub mod selfgen;
