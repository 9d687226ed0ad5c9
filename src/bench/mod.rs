//! Benchmarks shared by `deopt bench` and `cargo bench`: each measures its baseline in the same
//! run and reports ratios against it.

pub mod engine_throughput;
pub mod optimizer_functions;
pub mod tune_step;
