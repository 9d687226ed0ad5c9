//! Runs: the typed run specification, the loop that drives a method with stop rules and an
//! observer, the run directory with its history and checkpoints, and sweeps over settings.

pub mod directory;
pub mod grid;
