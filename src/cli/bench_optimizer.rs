//! `deopt bench optimizer`: run an optimizer on a standard test function and print the error.
//!
//! The test functions and the optimizer live in `crate::optim`; this file only parses flags,
//! loops over seeds, times runs and prints one line (or one JSON object).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::optim::testfn::{Function, TestFunction};
use crate::optim::{stats, Bounds, Config, Optimizer, StopRule, Strategy};

/// Run an optimizer on a test function and report the final error `best f - f*`.
///
/// The initial population is uniform in the function's usual domain, which is also the box
/// constraint (a mutated coordinate that leaves it is moved half way back to its parent).
/// The run stops before the generation that would exceed the evaluation budget.
#[derive(Debug, Args)]
pub struct BenchOptimizerArgs {
    /// Test function: sphere, rosenbrock, rastrigin, ackley or ellipsoid.
    #[arg(long, default_value_t = Function::Sphere)]
    pub function: Function,

    /// Problem dimension D.
    #[arg(long, default_value_t = 30)]
    pub dim: usize,

    /// Evaluation budget per run (the initial population included).
    #[arg(long, default_value_t = 100_000)]
    pub evals: u64,

    /// Strategy: rand1bin, best1bin, current-to-best1bin, rand2bin, jade, shade, lshade, random.
    #[arg(long, default_value_t = Strategy::Rand1Bin)]
    pub strategy: Strategy,

    /// Seed of the first run; repeats use seed, seed+1, ...
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Population size [default: 100; lshade: 18 D, at most 540].
    #[arg(long)]
    pub pop: Option<usize>,

    /// Mutation factor F (classic strategies; the adaptive ones adapt their own).
    #[arg(long, default_value_t = 0.5)]
    pub mutation: f64,

    /// Recombination rate CR (classic strategies).
    #[arg(long, default_value_t = 0.9)]
    pub recombination: f64,

    /// Shift the optimum to a seeded random point and rotate by a seeded random rotation.
    #[arg(long)]
    pub shift_rotate: bool,

    /// Number of runs (seeds seed..seed+repeats-1); the median error is reported.
    #[arg(long, default_value_t = 1)]
    pub repeats: u64,

    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One run's result.
#[derive(Debug, Clone, Serialize)]
struct RunResult {
    seed: u64,
    error: f64,
    evaluations: u64,
    generations: u64,
    wall_seconds: f64,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Summary {
    function: Function,
    dim: usize,
    strategy: Strategy,
    population: usize,
    shift_rotate: bool,
    budget: u64,
    median_error: f64,
    median_evaluations: f64,
    median_generations: f64,
    median_wall_seconds: f64,
    runs: Vec<RunResult>,
}

/// Shows a progress bar on stderr once a run has taken a few seconds.
struct Progress {
    bar: ProgressBar,
    enabled: bool,
    shown: bool,
    started: Instant,
}

impl Progress {
    fn new(total: u64, enabled: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden());
        if let Ok(style) =
            ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} evaluations {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar, enabled, shown: false, started: Instant::now() }
    }

    fn set(&mut self, pos: u64, msg: impl FnOnce() -> String) {
        if self.enabled && !self.shown && self.started.elapsed() > Duration::from_secs(2) {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown = true;
        }
        if self.shown {
            self.bar.set_position(pos);
            self.bar.set_message(msg());
        }
    }

    fn finish(&self) {
        if self.shown {
            self.bar.finish_and_clear();
        }
    }
}

/// Runs the benchmark and prints the result.
///
/// # Errors
/// Invalid settings (one line naming the value) or a failed write to stdout.
pub fn run(args: BenchOptimizerArgs) -> Result<()> {
    anyhow::ensure!(args.dim >= 1, "dimension {} must be at least 1", args.dim);
    anyhow::ensure!(args.repeats >= 1, "repeats {} must be at least 1", args.repeats);
    let pop = args.pop.unwrap_or_else(|| args.strategy.default_population(args.dim));
    anyhow::ensure!(
        args.evals >= pop as u64,
        "evaluation budget {} is smaller than the population of {pop}",
        args.evals
    );
    let (lo, hi) = args.function.domain();
    let config = Config {
        strategy: args.strategy,
        mutation: args.mutation,
        recombination: args.recombination,
        max_evaluations: Some(args.evals),
        bounds: Some(Bounds::new(lo as f32, hi as f32)),
        ..Config::default()
    };
    // Check the settings once, before any work (and before a progress bar appears).
    config.validate(pop, args.dim)?;

    let mut progress =
        Progress::new(args.evals * args.repeats, !args.json && std::io::stderr().is_terminal());
    let mut runs = Vec::new();
    for (r, seed) in (args.seed..args.seed + args.repeats).enumerate() {
        let mut f =
            TestFunction::with_transform(args.function, args.dim, args.shift_rotate, args.shift_rotate, seed);
        let init = f.initial_population(pop, seed.wrapping_add(0x1234_5678));
        let mut opt = Optimizer::new(config.clone(), init, seed)?;
        let mut stop = StopRule::new().max_evaluations(args.evals);
        let started = Instant::now();
        let done = r as u64 * args.evals;
        let outcome = opt.run(&mut f, &mut stop, |rep| {
            progress.set(done + rep.evaluations, || format!("seed {seed} best {:.3e}", rep.best_so_far))
        })?;
        let result = RunResult {
            seed,
            error: outcome.last.best_so_far - f.optimal_value(),
            evaluations: outcome.last.evaluations,
            generations: outcome.last.generation,
            wall_seconds: started.elapsed().as_secs_f64(),
        };
        if !args.json {
            progress.bar.suspend(|| {
                println!(
                    "{} D={} {} seed {}: error {:.6e}, {} evaluations, {} generations, {:.2} s",
                    args.function,
                    args.dim,
                    args.strategy,
                    seed,
                    result.error,
                    result.evaluations,
                    result.generations,
                    result.wall_seconds
                )
            });
        }
        runs.push(result);
    }
    progress.finish();

    let med = |get: fn(&RunResult) -> f64| {
        stats::median(&runs.iter().map(get).collect::<Vec<_>>()).unwrap_or(f64::NAN)
    };
    let summary = Summary {
        function: args.function,
        dim: args.dim,
        strategy: args.strategy,
        population: pop,
        shift_rotate: args.shift_rotate,
        budget: args.evals,
        median_error: med(|r| r.error),
        median_evaluations: med(|r| r.evaluations as f64),
        median_generations: med(|r| r.generations as f64),
        median_wall_seconds: med(|r| r.wall_seconds),
        runs,
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else if args.repeats > 1 {
        println!(
            "median over {} seeds ({}..={}): error {:.6e}, {} evaluations, {} generations, {:.2} s",
            args.repeats,
            args.seed,
            args.seed + args.repeats - 1,
            summary.median_error,
            summary.median_evaluations,
            summary.median_generations,
            summary.median_wall_seconds
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: BenchOptimizerArgs,
    }

    #[test]
    fn flags_parse_with_defaults() {
        let w = Wrapper::try_parse_from(["x"]).unwrap();
        assert_eq!(w.args.function, Function::Sphere);
        assert_eq!(w.args.strategy, Strategy::Rand1Bin);
        assert_eq!(w.args.dim, 30);
        let w = Wrapper::try_parse_from([
            "x",
            "--function",
            "rastrigin",
            "--strategy",
            "lshade",
            "--pop",
            "50",
            "--shift-rotate",
        ])
        .unwrap();
        assert_eq!(w.args.function, Function::Rastrigin);
        assert_eq!(w.args.strategy, Strategy::Lshade);
        assert_eq!(w.args.pop, Some(50));
        assert!(w.args.shift_rotate);
        let err = Wrapper::try_parse_from(["x", "--strategy", "nope"]).unwrap_err().to_string();
        assert!(err.contains("expected one of: rand1bin"), "{err}");
    }

    #[test]
    fn small_run_succeeds_and_bad_settings_fail() {
        let args = Wrapper::try_parse_from(["x", "--dim", "5", "--evals", "2000", "--pop", "20", "--json"])
            .unwrap()
            .args;
        run(args).unwrap();
        let args = Wrapper::try_parse_from(["x", "--mutation", "3", "--json"]).unwrap().args;
        assert_eq!(run(args).unwrap_err().to_string(), "mutation factor F = 3 is outside (0, 2]");
    }
}
