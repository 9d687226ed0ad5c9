//! Black-box minimisation of `f32` vectors by differential evolution; knows nothing of LLMs.
//!
//! The pieces follow argmin's split of concerns:
//!
//! * [`BatchObjective`]: what is minimised. One `evaluate` call scores a whole generation,
//!   so an LLM objective can batch every soft prompt of that generation.
//! * [`Config`] and [`Strategy`]: the solver's settings (DE/rand/1/bin of the seed paper and
//!   its classic variants, JADE, SHADE, L-SHADE, a random-search baseline), validated into
//!   one-line [`ConfigError`]s; CMA-ES (separable in high dimension) as a strategy beside them.
//! * [`Optimizer`]: the solver plus its whole state (population, fitness, archive, adapted
//!   parameters, RNG, counters, best so far). `init` scores the initial population, `step`
//!   runs one generation and returns a [`GenerationReport`]. It is `Serialize +
//!   Deserialize` with exact floats, so a checkpoint resumes bit for bit.
//! * [`StopRule`]: stop conditions checked by the caller against reports;
//!   [`Optimizer::run`] is the small loop that ties them together with an observer callback.
//! * [`RandomSubspace`]: search `z` in `R^k` while the objective sees `x = p0 + A z`.
//! * [`testfn`], [`population`], [`stats`]: test functions, seeded initial populations, and
//!   the median and Mann-Whitney U test used to compare strategies over seeds.
//!
//! One `u64` seed fixes a run: every random draw comes from a `Xoshiro256PlusPlus` in the
//! state, and arithmetic is sequential per value (parallelism only over independent
//! values), so the same seed gives the same sequence of reports on any thread count.

pub mod adam;
mod adapt;
mod cmaes;
mod config;
mod exact;
mod generation_report;
mod objective;
mod optimizer;
pub mod population;
pub mod stats;
mod stop;
mod subspace;
pub mod testfn;

pub use config::{Bounds, Config, ConfigError, Strategy};
pub use generation_report::{GenerationReport, MeanSd};
pub use objective::{BatchObjective, Counting, FnObjective};
pub use optimizer::{MinimizeOutcome, Optimizer, Parameters, StepError};
pub use stop::{StopReason, StopRule};
pub use subspace::{RandomSubspace, SubspaceError, SubspaceObjective, DEFAULT_CACHE_LIMIT};
