//! Runs: the typed run specification ([`spec`]), starting and resuming from a spec or a run
//! directory alone ([`launch`]), the loop that drives a method with a stop rule and an
//! observer ([`driver`]), DE as such a method ([`de_method`]) over soft prompts scored by the
//! engine ([`prompt_objective`]), the held-out split ([`holdout`]), derived seeds
//! ([`seeds`]), the run directory with its history and checkpoints ([`directory`]), and
//! sweeps over settings ([`grid`]), also as Slurm job arrays ([`slurm`]).

pub mod de_method;
pub mod directory;
pub mod driver;
pub mod grid;
pub mod holdout;
pub mod launch;
pub mod prompt_objective;
pub mod seeds;
pub mod slurm;
pub mod spec;
pub mod transfer;
pub mod tune_method;
