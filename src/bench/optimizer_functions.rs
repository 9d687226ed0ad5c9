//! The optimizer benchmark: a strategy on a standard test function, repeated over seeds, with
//! the final error `best f - f*`, and the same budget spent by random search as the baseline
//! measured in the same run.
//!
//! The initial population is uniform in the function's usual domain, which is also the box
//! constraint (a mutated coordinate that leaves it is moved half way back to its parent).
//! A run stops before the generation that would exceed the evaluation budget.

use std::time::Instant;

use anyhow::{ensure, Result};
use serde::Serialize;

use crate::optim::testfn::{Function, TestFunction};
use crate::optim::{stats, Bounds, Config, Optimizer, StopRule, Strategy};

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct OptimizerBench {
    /// Test function.
    pub function: Function,
    /// Problem dimension D.
    pub dim: usize,
    /// Evaluation budget per run (the initial population included).
    pub evals: u64,
    /// Strategy.
    pub strategy: Strategy,
    /// Seed of the first run; repeats use seed, seed+1, ...
    pub seed: u64,
    /// Population size (`None`: the strategy's default for D).
    pub pop: Option<usize>,
    /// Mutation factor F (classic strategies).
    pub mutation: f64,
    /// Recombination rate CR (classic strategies).
    pub recombination: f64,
    /// Shift the optimum to a seeded random point and rotate by a seeded random rotation.
    pub shift_rotate: bool,
    /// Number of runs.
    pub repeats: u64,
}

/// One run's result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRun {
    /// Seed of the run.
    pub seed: u64,
    /// Final error `best f - f*`.
    pub error: f64,
    /// Evaluations used.
    pub evaluations: u64,
    /// Generations run.
    pub generations: u64,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
}

/// The result over all repeats.
#[derive(Debug, Clone, Serialize)]
pub struct BenchSummary {
    /// Test function.
    pub function: Function,
    /// Dimension.
    pub dim: usize,
    /// Strategy.
    pub strategy: Strategy,
    /// Population size used.
    pub population: usize,
    /// Shifted and rotated.
    pub shift_rotate: bool,
    /// Budget per run.
    pub budget: u64,
    /// Median final error.
    pub median_error: f64,
    /// Median evaluations.
    pub median_evaluations: f64,
    /// Median generations.
    pub median_generations: f64,
    /// Median wall seconds.
    pub median_wall_seconds: f64,
    /// Every run.
    pub runs: Vec<BenchRun>,
}

impl OptimizerBench {
    /// The population size this benchmark uses.
    pub fn population(&self) -> usize {
        self.pop.unwrap_or_else(|| self.strategy.default_population(self.dim))
    }

    /// The optimizer settings, checked.
    ///
    /// # Errors
    /// One line naming the bad value.
    pub fn config(&self) -> Result<Config> {
        ensure!(self.dim >= 1, "dimension {} must be at least 1", self.dim);
        ensure!(self.repeats >= 1, "repeats {} must be at least 1", self.repeats);
        let pop = self.population();
        ensure!(
            self.evals >= pop as u64,
            "evaluation budget {} is smaller than the population of {pop}",
            self.evals
        );
        let (lo, hi) = self.function.domain();
        let config = Config {
            strategy: self.strategy,
            mutation: self.mutation,
            recombination: self.recombination,
            max_evaluations: Some(self.evals),
            bounds: Some(Bounds::new(lo as f32, hi as f32)),
            ..Config::default()
        };
        config.validate(pop, self.dim)?;
        Ok(config)
    }

    /// Run every repeat; `progress(evaluations done over all repeats, message)` after each
    /// generation, `finished(run)` after each run.
    ///
    /// # Errors
    /// Invalid settings, as [`Self::config`].
    pub fn run(
        &self,
        mut progress: impl FnMut(u64, &str),
        mut finished: impl FnMut(&BenchRun),
    ) -> Result<BenchSummary> {
        let config = self.config()?;
        let pop = self.population();
        let mut runs = Vec::new();
        for (r, seed) in (self.seed..self.seed + self.repeats).enumerate() {
            let mut f = TestFunction::with_transform(
                self.function,
                self.dim,
                self.shift_rotate,
                self.shift_rotate,
                seed,
            );
            let init = f.initial_population(pop, seed.wrapping_add(0x1234_5678));
            let mut opt = Optimizer::new(config.clone(), init, seed)?;
            let mut stop = StopRule::new().max_evaluations(self.evals);
            let started = Instant::now();
            let done = r as u64 * self.evals;
            let outcome = opt.run(&mut f, &mut stop, |rep| {
                progress(done + rep.evaluations, &format!("seed {seed} best {:.3e}", rep.best_so_far))
            })?;
            let run = BenchRun {
                seed,
                error: outcome.last.best_so_far - f.optimal_value(),
                evaluations: outcome.last.evaluations,
                generations: outcome.last.generation,
                wall_seconds: started.elapsed().as_secs_f64(),
            };
            finished(&run);
            runs.push(run);
        }
        let med = |get: fn(&BenchRun) -> f64| {
            stats::median(&runs.iter().map(get).collect::<Vec<_>>()).unwrap_or(f64::NAN)
        };
        Ok(BenchSummary {
            function: self.function,
            dim: self.dim,
            strategy: self.strategy,
            population: pop,
            shift_rotate: self.shift_rotate,
            budget: self.evals,
            median_error: med(|r| r.error),
            median_evaluations: med(|r| r.evaluations as f64),
            median_generations: med(|r| r.generations as f64),
            median_wall_seconds: med(|r| r.wall_seconds),
            runs,
        })
    }
}

impl BenchRun {
    /// One line for the text output.
    pub fn line(&self, b: &OptimizerBench) -> String {
        format!(
            "{} D={} {} seed {}: error {:.6e}, {} evaluations, {} generations, {:.2} s",
            b.function,
            b.dim,
            b.strategy,
            self.seed,
            self.error,
            self.evaluations,
            self.generations,
            self.wall_seconds
        )
    }
}

impl BenchSummary {
    /// The median line for the text output.
    pub fn median_line(&self, first_seed: u64) -> String {
        let n = self.runs.len() as u64;
        format!(
            "{} D={} {}: median over {n} seeds ({first_seed}..={}): error {:.6e}, {} evaluations, {} generations, {:.2} s",
            self.function,
            self.dim,
            self.strategy,
            first_seed + n.saturating_sub(1),
            self.median_error,
            self.median_evaluations,
            self.median_generations,
            self.median_wall_seconds
        )
    }
}

/// The baseline line: `strategy`'s median error against random search's on the same budget,
/// function and seeds (below 1: the strategy finds better points).
pub fn ratio_line(strategy: &BenchSummary, random: &BenchSummary) -> String {
    format!(
        "{} / random search median error: {:.3e} (random {:.3e}, {} {:.3e})",
        strategy.strategy,
        strategy.median_error / random.median_error,
        random.median_error,
        strategy.strategy,
        strategy.median_error
    )
}
