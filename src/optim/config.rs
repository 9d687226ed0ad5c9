//! Optimizer settings: which strategy, its parameters, and their validation.
//!
//! Settings are checked once, in [`Config::validate`] (called by
//! [`Optimizer::new`](super::Optimizer::new)), and each problem is one [`ConfigError`]
//! whose message names the bad value.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::exact;

/// How trial vectors are made.
///
/// The first four are classic DE with fixed `F` ([`Config::mutation`]) and `CR`
/// ([`Config::recombination`]), binomial crossover and one-to-one selection in which the
/// trial replaces its parent when it is at least as good (`f(u) <= f(x)`):
///
/// * `rand1bin`: `v = x_r1 + F (x_r2 - x_r3)` (the seed paper's Algorithm 1).
/// * `best1bin`: `v = x_best + F (x_r1 - x_r2)`.
/// * `current-to-best1bin`: `v = x_i + F (x_best - x_i) + F (x_r1 - x_r2)`.
/// * `rand2bin`: `v = x_r1 + F (x_r2 - x_r3) + F (x_r4 - x_r5)`.
///
/// The adaptive ones use current-to-pbest/1 (`v = x_i + F_i (x_pbest - x_i) + F_i (x_r1 - x~_r2)`,
/// `x~_r2` drawn from population plus archive) with per-individual `F_i` (Cauchy, scale 0.1,
/// regenerated while `<= 0`, truncated to 1) and `CR_i` (normal, sd 0.1, clipped to [0, 1]);
/// they ignore [`Config::mutation`] and [`Config::recombination`]:
///
/// * `jade`: Zhang & Sanderson 2009. `mu_F`, `mu_CR` start at 0.5 and move towards the
///   Lehmer mean of successful `F` and the arithmetic mean of successful `CR` at rate `c`;
///   `x_pbest` is one of the best `max(1, round(p N))`. As in the paper the trial must be
///   strictly better to replace its parent.
/// * `shade`: Tanabe & Fukunaga 2013. `F_i`, `CR_i` are centred on a random slot of the
///   success-history memories (size `H`, all 0.5 at start); after each generation with a
///   success one slot (round robin) gets the weighted Lehmer mean of successful `F` and the
///   weighted arithmetic mean of successful `CR`, weights proportional to `|f(u) - f(x)|`.
///   Each individual draws its own `p_i` uniformly in `[2/N, 0.2]`. Archive size `N`.
/// * `lshade`: Tanabe & Fukunaga 2014. SHADE plus linear population size reduction from
///   `N_init` to [`Config::min_population`] over [`Config::max_evaluations`] (worst
///   individuals removed), weighted Lehmer mean for `CR` too, and the terminal value: a
///   memory slot whose successes all had `CR = 0` becomes terminal and then gives `CR_i = 0`
///   for good. Paper defaults `H = 6`, `p = 0.11`, archive `2.6 N`.
///
/// In the SHADE family a trial replaces its parent when `f(u) <= f(x)`; only strict
/// improvements count as successes (archive and memories).
///
/// * `random`: baseline. Each generation samples `N` vectors from the per-coordinate Gaussian
///   fitted to the initial population (mean and sample sd of each coordinate); the population
///   is the best `N` vectors seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Strategy {
    /// DE/rand/1/bin.
    #[default]
    #[serde(rename = "rand1bin")]
    Rand1Bin,
    /// DE/best/1/bin.
    #[serde(rename = "best1bin")]
    Best1Bin,
    /// DE/current-to-best/1/bin.
    #[serde(rename = "current-to-best1bin")]
    CurrentToBest1Bin,
    /// DE/rand/2/bin.
    #[serde(rename = "rand2bin")]
    Rand2Bin,
    /// JADE.
    #[serde(rename = "jade")]
    Jade,
    /// SHADE.
    #[serde(rename = "shade")]
    Shade,
    /// L-SHADE.
    #[serde(rename = "lshade")]
    Lshade,
    /// Random search around the initial population.
    #[serde(rename = "random")]
    Random,
    /// CMA-ES (separable above 500 dimensions); with `--subspace k` it is black-box tuning.
    #[serde(rename = "cmaes")]
    Cmaes,
}

impl Strategy {
    /// Every strategy, in the order they are listed to users.
    pub const ALL: [Strategy; 9] = [
        Strategy::Rand1Bin,
        Strategy::Best1Bin,
        Strategy::CurrentToBest1Bin,
        Strategy::Rand2Bin,
        Strategy::Jade,
        Strategy::Shade,
        Strategy::Lshade,
        Strategy::Random,
        Strategy::Cmaes,
    ];

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Rand1Bin => "rand1bin",
            Strategy::Best1Bin => "best1bin",
            Strategy::CurrentToBest1Bin => "current-to-best1bin",
            Strategy::Rand2Bin => "rand2bin",
            Strategy::Jade => "jade",
            Strategy::Shade => "shade",
            Strategy::Lshade => "lshade",
            Strategy::Random => "random",
            Strategy::Cmaes => "cmaes",
        }
    }

    /// Smallest population the strategy can work with: the parent plus the distinct
    /// individuals its mutation draws (4 for the adaptive ones, L-SHADE's `N_min`).
    pub fn min_population(self) -> usize {
        match self {
            Strategy::Rand1Bin => 4,
            Strategy::Best1Bin | Strategy::CurrentToBest1Bin => 3,
            Strategy::Rand2Bin => 6,
            Strategy::Jade | Strategy::Shade | Strategy::Lshade => 4,
            Strategy::Random => 2,
            Strategy::Cmaes => 4,
        }
    }

    /// JADE, SHADE or L-SHADE: parameters are adapted and trials use current-to-pbest/1.
    pub fn is_adaptive(self) -> bool {
        matches!(self, Strategy::Jade | Strategy::Shade | Strategy::Lshade)
    }

    /// A reasonable population size for a problem of dimension `dim`: L-SHADE's `18 D`
    /// (clamped to 4..=540, the paper's value at D = 30), CMA-ES's `4 + floor(3 ln D)`, 100
    /// otherwise.
    pub fn default_population(self, dim: usize) -> usize {
        match self {
            Strategy::Lshade => (18 * dim).clamp(4, 540),
            Strategy::Cmaes => 4 + (3.0 * (dim.max(1) as f64).ln()) as usize,
            _ => 100,
        }
    }

    fn names() -> String {
        Strategy::ALL.map(Strategy::name).join(", ")
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = ConfigError;

    /// Case-insensitive; `-`, `_`, `/` and a leading `de` are ignored, so `DE/rand/1/bin`,
    /// `L-SHADE` and `current_to_best1bin` are accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = |t: &str| -> String {
            let t: String = t
                .chars()
                .filter(|c| !matches!(c, '-' | '_' | '/' | ' '))
                .flat_map(char::to_lowercase)
                .collect();
            match t.strip_prefix("de") {
                Some(rest) if !rest.is_empty() => rest.to_string(),
                _ => t,
            }
        };
        let wanted = norm(s);
        Strategy::ALL
            .into_iter()
            .find(|st| norm(st.name()) == wanted)
            .ok_or_else(|| ConfigError::UnknownStrategy(s.to_string()))
    }
}

/// Box constraint applied to every coordinate of every trial.
///
/// A mutated coordinate that leaves `[lower, upper]` is set half way between the bound and
/// the parent's coordinate (the rule of JADE and SHADE), then clamped in case the parent
/// itself was outside. Random-search samples are clamped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bounds {
    /// Lowest allowed value.
    #[serde(with = "exact::scalar")]
    pub lower: f32,
    /// Highest allowed value.
    #[serde(with = "exact::scalar")]
    pub upper: f32,
}

impl Bounds {
    /// `[lower, upper]`; checked by [`Config::validate`].
    pub fn new(lower: f32, upper: f32) -> Self {
        Bounds { lower, upper }
    }
}

/// Everything that defines a run except the initial population and the seed.
///
/// Strategy-dependent defaults are `None` and resolved by the optimizer; the accessors
/// ([`Config::pbest_rate_for`] etc.) give the values in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Trial-generation scheme.
    pub strategy: Strategy,
    /// Mutation factor `F` (the seed paper's `r_m`) for the classic strategies; in (0, 2].
    #[serde(with = "exact::scalar")]
    pub mutation: f64,
    /// Recombination (crossover) rate `CR` (the seed paper's `r_c`); in [0, 1].
    #[serde(with = "exact::scalar")]
    pub recombination: f64,
    /// Evaluation budget. Required by L-SHADE, whose population shrinks over it; the other
    /// strategies ignore it (stopping is the caller's job, see [`StopRule`](super::StopRule)).
    pub max_evaluations: Option<u64>,
    /// Optional box constraint.
    pub bounds: Option<Bounds>,
    /// JADE's `p` (default 0.05) or L-SHADE's `p` (default 0.11): `x_pbest` is drawn from
    /// the best `round(p N)` individuals. SHADE draws `p_i` in `[2/N, 0.2]` and ignores it.
    #[serde(with = "exact::option")]
    pub pbest_rate: Option<f64>,
    /// JADE's adaptation rate `c` for `mu_F` and `mu_CR`; in (0, 1].
    #[serde(with = "exact::scalar")]
    pub adaptation_rate: f64,
    /// Whether JADE keeps its external archive (SHADE and L-SHADE always do).
    pub archive: bool,
    /// Archive capacity as a multiple of the current population size: default 1.0 for
    /// JADE and SHADE, 2.6 for L-SHADE.
    #[serde(with = "exact::option")]
    pub archive_rate: Option<f64>,
    /// Success-history memory size `H`: default `N_init` for SHADE, 6 for L-SHADE.
    pub memory_size: Option<usize>,
    /// L-SHADE's final population size `N_min`.
    pub min_population: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            strategy: Strategy::Rand1Bin,
            mutation: 0.5,
            recombination: 0.9,
            max_evaluations: None,
            bounds: None,
            pbest_rate: None,
            adaptation_rate: 0.1,
            archive: true,
            archive_rate: None,
            memory_size: None,
            min_population: 4,
        }
    }
}

impl Config {
    /// Default settings for `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        Config { strategy, ..Config::default() }
    }

    /// `p` in force (JADE and L-SHADE; SHADE draws its own per individual).
    pub fn pbest_rate_for(&self) -> f64 {
        self.pbest_rate.unwrap_or(match self.strategy {
            Strategy::Lshade => 0.11,
            _ => 0.05,
        })
    }

    /// Whether this run keeps an external archive.
    pub fn uses_archive(&self) -> bool {
        match self.strategy {
            Strategy::Jade => self.archive,
            Strategy::Shade | Strategy::Lshade => true,
            _ => false,
        }
    }

    /// Archive capacity multiple in force.
    pub fn archive_rate_for(&self) -> f64 {
        self.archive_rate.unwrap_or(match self.strategy {
            Strategy::Lshade => 2.6,
            _ => 1.0,
        })
    }

    /// Memory size `H` in force for an initial population of `n_init`.
    pub fn memory_size_for(&self, n_init: usize) -> usize {
        self.memory_size.unwrap_or(match self.strategy {
            Strategy::Lshade => 6,
            _ => n_init,
        })
    }

    /// Check the settings against a population of `population` vectors of dimension `dim`.
    ///
    /// # Errors
    /// The first problem found, as a [`ConfigError`] naming the bad value.
    pub fn validate(&self, population: usize, dim: usize) -> Result<(), ConfigError> {
        let strategy = self.strategy;
        let needed = strategy.min_population();
        if population < needed {
            return Err(ConfigError::PopulationTooSmall { strategy, needed, got: population });
        }
        if dim == 0 {
            return Err(ConfigError::ZeroDimension);
        }
        if !(self.mutation > 0.0 && self.mutation <= 2.0) {
            return Err(ConfigError::Mutation(self.mutation));
        }
        if !(0.0..=1.0).contains(&self.recombination) {
            return Err(ConfigError::Recombination(self.recombination));
        }
        if let Some(b) = self.bounds {
            if !(b.lower.is_finite() && b.upper.is_finite() && b.lower < b.upper) {
                return Err(ConfigError::Bounds { lower: b.lower, upper: b.upper });
            }
        }
        if let Some(p) = self.pbest_rate {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ConfigError::Parameter { name: "pbest rate p", value: p, range: "(0, 1]" });
            }
        }
        if !(self.adaptation_rate > 0.0 && self.adaptation_rate <= 1.0) {
            return Err(ConfigError::Parameter {
                name: "adaptation rate c",
                value: self.adaptation_rate,
                range: "(0, 1]",
            });
        }
        if let Some(a) = self.archive_rate {
            if !(a.is_finite() && a >= 0.0) {
                return Err(ConfigError::Parameter { name: "archive rate", value: a, range: "[0, inf)" });
            }
        }
        if self.memory_size == Some(0) {
            return Err(ConfigError::Parameter { name: "memory size H", value: 0.0, range: "1 or more" });
        }
        if strategy == Strategy::Lshade {
            if self.min_population < needed {
                return Err(ConfigError::Parameter {
                    name: "minimum population",
                    value: self.min_population as f64,
                    range: "4 or more",
                });
            }
            if population < self.min_population {
                return Err(ConfigError::PopulationTooSmall {
                    strategy,
                    needed: self.min_population,
                    got: population,
                });
            }
            match self.max_evaluations {
                None => return Err(ConfigError::MissingMaxEvaluations),
                Some(max) if max < population as u64 => {
                    return Err(ConfigError::BudgetTooSmall { max, population })
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// A setting, initial population or checkpoint that cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The strategy name is not one of [`Strategy::ALL`].
    #[error("unknown strategy '{0}' (expected one of: {names})", names = Strategy::names())]
    UnknownStrategy(String),
    /// Fewer individuals than the strategy draws.
    #[error("population of {got} is too small for {strategy} (needs at least {needed})")]
    PopulationTooSmall {
        /// The strategy.
        strategy: Strategy,
        /// Its minimum.
        needed: usize,
        /// The population given.
        got: usize,
    },
    /// `F` outside (0, 2].
    #[error("mutation factor F = {0} is outside (0, 2]")]
    Mutation(f64),
    /// `CR` outside [0, 1].
    #[error("recombination rate CR = {0} is outside [0, 1]")]
    Recombination(f64),
    /// Another numeric setting out of range.
    #[error("{name} = {value} is outside {range}")]
    Parameter {
        /// Which setting.
        name: &'static str,
        /// Its value.
        value: f64,
        /// The allowed range.
        range: &'static str,
    },
    /// Empty or non-finite bounds.
    #[error("bounds [{lower}, {upper}] are empty or not finite")]
    Bounds {
        /// Lower bound given.
        lower: f32,
        /// Upper bound given.
        upper: f32,
    },
    /// L-SHADE without a budget.
    #[error("lshade needs a maximum number of evaluations (its population shrinks over that budget)")]
    MissingMaxEvaluations,
    /// L-SHADE budget smaller than the initial population.
    #[error("maximum evaluations {max} is less than the initial population of {population}")]
    BudgetTooSmall {
        /// Budget given.
        max: u64,
        /// Initial population size.
        population: usize,
    },
    /// Vectors of length 0.
    #[error("vectors have dimension 0")]
    ZeroDimension,
    /// Initial population with vectors of different lengths.
    #[error("individual {index} has dimension {got}, expected {expected}")]
    RaggedPopulation {
        /// Which individual.
        index: usize,
        /// Dimension of individual 0.
        expected: usize,
        /// Its dimension.
        got: usize,
    },
    /// Initial population with NaN or infinity.
    #[error("individual {index} has a non-finite value {value} at coordinate {coordinate}")]
    NonFinite {
        /// Which individual.
        index: usize,
        /// Which coordinate.
        coordinate: usize,
        /// The value.
        value: f32,
    },
    /// A deserialised optimizer whose parts do not fit together.
    #[error("inconsistent optimizer checkpoint: {0}")]
    Checkpoint(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>().unwrap(), s);
            assert_eq!(s.to_string(), s.name());
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
        }
        assert_eq!("DE/rand/1/bin".parse::<Strategy>().unwrap(), Strategy::Rand1Bin);
        assert_eq!("L-SHADE".parse::<Strategy>().unwrap(), Strategy::Lshade);
        assert_eq!("current_to_best1bin".parse::<Strategy>().unwrap(), Strategy::CurrentToBest1Bin);
    }

    #[test]
    fn unknown_strategy_lists_valid_names() {
        let err = "rand3bin".parse::<Strategy>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown strategy 'rand3bin' (expected one of: rand1bin, best1bin, \
             current-to-best1bin, rand2bin, jade, shade, lshade, random, cmaes)"
        );
    }

    #[test]
    fn validation_messages_name_the_value() {
        let c = Config::new(Strategy::Rand2Bin);
        assert_eq!(
            c.validate(5, 3).unwrap_err().to_string(),
            "population of 5 is too small for rand2bin (needs at least 6)"
        );
        let c = Config { mutation: 2.5, ..Config::default() };
        assert_eq!(c.validate(10, 3).unwrap_err().to_string(), "mutation factor F = 2.5 is outside (0, 2]");
        let c = Config { recombination: -0.1, ..Config::default() };
        assert_eq!(
            c.validate(10, 3).unwrap_err().to_string(),
            "recombination rate CR = -0.1 is outside [0, 1]"
        );
        let c = Config::new(Strategy::Lshade);
        assert_eq!(c.validate(10, 3).unwrap_err(), ConfigError::MissingMaxEvaluations);
    }
}
