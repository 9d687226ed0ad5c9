//! `deopt bench engine` and `deopt bench optimizer`: flags and printing; the measurements are
//! [`crate::bench`]'s, shared with `cargo bench`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use super::shared_flags::ModelArgs;
use crate::bench::engine_throughput::{engine_bench, Workload};
use crate::bench::optimizer_functions::{ratio_line, OptimizerBench};
use crate::data::survey::{Survey, SurveyKind};
use crate::optim::testfn::Function;
use crate::optim::Strategy;

/// Measure raw prompt processing, naive scoring and the engine on the VSM13 workload, with the
/// exact schedule and the batched one (--batch-prompts, 8 unless given).
#[derive(Debug, clap::Args)]
pub struct BenchEngineArgs {
    /// Soft prompts in the workload
    #[arg(long, default_value_t = 16)]
    pub prompts: usize,
    /// Rows per soft prompt
    #[arg(long, default_value_t = 10)]
    pub tokens: usize,
    /// Seed of the random prompts
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip the naive baseline (every prompt x item from scratch; slow on large models)
    #[arg(long)]
    pub no_naive: bool,
    /// Exact and batched runs alternate this many times and their median times are compared
    /// (one run of either varies by several percent on a shared machine)
    #[arg(long = "repeat", default_value_t = 3, value_name = "N")]
    pub repeats: usize,
    /// Where to write the JSON results
    #[arg(long, value_name = "FILE", default_value = "results/bench-engine.json")]
    pub out: PathBuf,
    /// Print the JSON instead of a table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Run `deopt bench engine`.
///
/// # Errors
/// Model or engine failures, or an unwritable `--out`.
pub fn engine(args: BenchEngineArgs) -> Result<()> {
    let (resolved, model) = args.model.load()?;
    let survey = Survey::builtin(SurveyKind::Vsm13)?;
    let config = args.model.engine_config();
    let bar = crate::progress::spinner("benchmark", args.json);
    let work = Workload {
        survey: &survey,
        prompts: args.prompts,
        rows: args.tokens,
        seed: args.seed,
        // Both schedules are always measured: the batched side takes --batch-prompts, or 8
        // where that is 1 (the CPU build's default).
        batch_prompts: if args.model.batch_prompts > 1 { args.model.batch_prompts } else { 8 },
        naive: !args.no_naive,
        repeats: args.repeats,
    };
    let b = engine_bench(&model, &resolved.display_name, &config, &work, |m| bar.set_message(m.to_string()))?;
    bar.finish_and_clear();
    emit(&args.out, args.json, &b, &b.table())
}

/// Time one prompt-tuning step (candle forward and backward on the VSM13 items) next to the
/// engine's forward-only scoring of one prompt, in the same run.
#[derive(Debug, clap::Args)]
pub struct BenchTuneArgs {
    /// Rows per soft prompt
    #[arg(long, default_value_t = 10)]
    pub tokens: usize,
    /// Items per forward pass
    #[arg(long, default_value_t = crate::run::spec::TuneSpec::default().chunk)]
    pub chunk: usize,
    /// Repetitions (medians are reported)
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Where to write the JSON results
    #[arg(long, value_name = "FILE", default_value = "results/bench-tune.json")]
    pub out: PathBuf,
    /// Print the JSON instead of a table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Run `deopt bench tune`.
///
/// # Errors
/// Model, backend or engine failures, or an unwritable `--out`.
pub fn tune(args: BenchTuneArgs) -> Result<()> {
    let resolved = args.model.spec().resolve()?;
    let grad = crate::grad::model::GradModel::load(&resolved.path)?;
    let model = args.model.spec().load_resolved(&resolved)?;
    let survey = Survey::builtin(SurveyKind::Vsm13)?;
    let bar = crate::progress::spinner("benchmark", args.json);
    let b = crate::bench::tune_step::tune_bench(
        &model,
        &grad,
        &resolved.display_name,
        &survey,
        args.tokens,
        args.chunk,
        args.repeats,
        &args.model.engine_config(),
    )?;
    bar.finish_and_clear();
    emit(&args.out, args.json, &b, &b.table())
}

/// Write a benchmark's JSON to `out`, then print it (`json`) or its table.
fn emit(out: &std::path::Path, json: bool, value: &impl serde::Serialize, table: &str) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    crate::fsutil::write_atomic(out, text.as_bytes())?;
    let mut stdout = std::io::stdout().lock();
    if json {
        writeln!(stdout, "{text}")?;
    } else {
        write!(stdout, "{table}")?;
        writeln!(stdout, "written to {}", out.display())?;
    }
    Ok(())
}

/// Run an optimizer on a test function and report the final error `best f - f*`.
///
/// The initial population is uniform in the function's usual domain, which is also the box
/// constraint. The run stops before the generation that would exceed the evaluation budget.
#[derive(Debug, clap::Args)]
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
    /// Strategy: rand1bin, best1bin, current-to-best1bin, rand2bin, jade, shade, lshade, random, cmaes.
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
    /// Also run random search on the same budget and seeds and print the ratio of median errors.
    #[arg(long)]
    pub baseline: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Run `deopt bench optimizer`.
///
/// # Errors
/// Invalid settings (one line naming the value) or a failed write to stdout.
pub fn optimizer(args: BenchOptimizerArgs) -> Result<()> {
    let bench = OptimizerBench {
        function: args.function,
        dim: args.dim,
        evals: args.evals,
        strategy: args.strategy,
        seed: args.seed,
        pop: args.pop,
        mutation: args.mutation,
        recombination: args.recombination,
        shift_rotate: args.shift_rotate,
        repeats: args.repeats,
    };
    // Check the settings once, before any work (and before a progress bar appears).
    bench.config()?;
    let total = args.evals * args.repeats;
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        crate::progress::bar(total, "{elapsed_precise} [{bar:40}] {pos}/{len} evaluations {msg}")
    };
    let summary = bench.run(
        |pos, msg| {
            bar.set_position(pos);
            bar.set_message(msg.to_string());
        },
        |run| {
            if !args.json {
                bar.suspend(|| println!("{}", run.line(&bench)));
            }
        },
    )?;
    bar.finish_and_clear();
    let random = if args.baseline {
        let rb = OptimizerBench { strategy: Strategy::Random, ..bench.clone() };
        Some(rb.run(|_, _| {}, |_| {})?)
    } else {
        None
    };
    if args.json {
        println!("{}", serde_json::json!({ "strategy": summary, "random_search": random }));
        return Ok(());
    }
    if args.repeats > 1 {
        println!("{}", summary.median_line(args.seed));
    }
    if let Some(r) = &random {
        println!("{}", ratio_line(&summary, r));
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
        let args = Wrapper::try_parse_from([
            "x",
            "--dim",
            "5",
            "--evals",
            "2000",
            "--pop",
            "20",
            "--json",
            "--baseline",
        ])
        .unwrap()
        .args;
        optimizer(args).unwrap();
        let args = Wrapper::try_parse_from(["x", "--mutation", "3", "--json"]).unwrap().args;
        assert_eq!(optimizer(args).unwrap_err().to_string(), "mutation factor F = 3 is outside (0, 2]");
    }
}
