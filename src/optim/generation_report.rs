//! What a generation reports: fitness statistics, adapted parameters, diversity.

use serde::{Deserialize, Serialize};

use super::stats;

/// Mean and population standard deviation of a per-individual parameter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    /// Mean.
    pub mean: f64,
    /// Standard deviation (divisor `n`).
    pub sd: f64,
}

impl MeanSd {
    /// Mean and sd of `xs`; `None` when empty.
    pub fn of(xs: &[f64]) -> Option<MeanSd> {
        Some(MeanSd { mean: stats::mean(xs)?, sd: stats::sd(xs, stats::Spread::Population)? })
    }
}

/// Summary of the population after one generation (or after `init`, generation 0).
///
/// Fitness statistics are over the population after selection, which always holds the
/// best vector seen so far, so `best_fitness == best_so_far`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationReport {
    /// 0 after `init`, then 1, 2, ...
    pub generation: u64,
    /// Objective evaluations so far, including the initial population.
    pub evaluations: u64,
    /// Vectors evaluated in this generation (the population size it started with).
    pub trials: usize,
    /// Best fitness in the population.
    pub best_fitness: f64,
    /// Median fitness (mean of the middle two for an even size).
    pub median_fitness: f64,
    /// Worst fitness.
    pub worst_fitness: f64,
    /// Best fitness seen in the run.
    pub best_so_far: f64,
    /// Mean and sd of the `F` used for this generation's trials (the fixed value and 0 for
    /// the classic strategies); `None` after `init` and for random search.
    pub f: Option<MeanSd>,
    /// Same for `CR`.
    pub cr: Option<MeanSd>,
    /// Population diversity: mean Euclidean distance of the individuals to their centroid.
    pub diversity: f64,
    /// Trials strictly better than their parent (random search: samples that entered the
    /// population).
    pub successes: usize,
    /// Trials that replaced their parent (includes ties where the strategy lets ties win).
    pub replacements: usize,
    /// Population size after this generation, i.e. the number of trials in the next one.
    pub population_size: usize,
    /// Vectors in the external archive.
    pub archive_size: usize,
}
