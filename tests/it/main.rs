//! deopt's integration tests, one binary: the library and the `deopt` binary against the
//! real default model (Gemma 3 270M, fetched on first use). Shared helpers are in
//! [`common`].

mod common;

mod bad_input;
mod compare;
mod engine;
mod eval;
mod export;
mod fuzz;
mod generate;
mod grad;
mod llama;
mod model;
mod optim;
mod report;
mod run;
mod score;
mod selfgen;
mod sweep;
mod tune;
