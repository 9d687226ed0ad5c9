//! `deopt sweep`: run a (mutation x recombination) grid of `deopt run`s, repeated, and
//! summarise it; `deopt sweep merge` combines shard directories.
//!
//! Each run is an ordinary run directory under `<sweep>/runs/`, so a sweep resumes by
//! skipping finished runs and continuing a checkpointed one with the run's own resume. The
//! layout and the tables are [`crate::run::grid`]'s.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use super::shared_flags::{ModelArgs, SlurmArgs};
use crate::data::survey::SurveyKind;
use crate::optim::Strategy;
use crate::output::report_files;
use crate::run::grid::{self, SweepSettings};
use crate::run::slurm;

/// Flags of `deopt sweep`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub command: Option<SweepCommand>,
    /// Country: ISO3 code, English name or alias (required unless merging)
    #[arg(long)]
    pub country: Option<String>,
    /// Survey the model answers
    #[arg(long, value_enum, default_value_t = SurveyKind::Vsm13)]
    pub survey: SurveyKind,
    /// Mutation factors F of the grid, comma-separated, each in (0, 2]
    #[arg(long, value_name = "LIST", default_value = "0.3,0.5,0.8")]
    pub mutation: String,
    /// Recombination rates CR of the grid, comma-separated, each in [0, 1]
    #[arg(long, value_name = "LIST", default_value = "0.3,0.7,0.9")]
    pub recombination: String,
    /// Population size N of every run
    #[arg(long, default_value_t = 32)]
    pub pop: usize,
    /// Soft prompt rows T of every run
    #[arg(long, default_value_t = 10)]
    pub tokens: usize,
    /// DE strategy of every run (see `deopt run --help`)
    #[arg(long, default_value = "rand1bin", value_name = "NAME")]
    pub strategy: String,
    /// Generations per run
    #[arg(long, default_value_t = 50)]
    pub gens: u64,
    /// Runs per cell, each with its own seed
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Seed of the sweep; each run's seed is derived from it, the cell and the repeat
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Held-out share of the survey in every run (see `deopt run --holdout`)
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub holdout: f64,
    /// Sweep directory [default: results/sweep-<date>-<COUNTRY>-<id>]; an existing sweep
    /// with the same settings is continued
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run only the runs whose index % n == i - 1 (1-based i), e.g. 1/2 and 2/2 on two
    /// machines; `auto` inside a Slurm array job (from SLURM_ARRAY_TASK_ID/COUNT/MIN)
    #[arg(long, value_name = "i/n|auto")]
    pub shard: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub slurm: SlurmArgs,
}

/// Subcommands of `deopt sweep`.
#[derive(Debug, clap::Subcommand)]
pub enum SweepCommand {
    /// Combine shard directories of one sweep into one directory with sweep.csv and summary.csv
    Merge(MergeArgs),
}

/// Flags of `deopt sweep merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Shard directories (from `deopt sweep --shard`)
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,
    /// Merged sweep directory
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Cheap checks, before any run: the sweep's settings and the shard.
fn settings(args: &SweepArgs) -> Result<(SweepSettings, Option<(usize, usize)>)> {
    let country =
        args.country.clone().ok_or_else(|| anyhow!("--country is required (or use `deopt sweep merge`)"))?;
    let mutation = grid::parse_grid("--mutation", &args.mutation, 0.0, true, 2.0)?;
    let recombination = grid::parse_grid("--recombination", &args.recombination, 0.0, false, 1.0)?;
    let strategy: Strategy = args.strategy.parse()?;
    if args.repeats == 0 || args.repeats > 10_000 {
        bail!("--repeats {}: expected 1 to 10000 runs per cell", args.repeats);
    }
    let shard = match args.shard.as_deref() {
        None => None,
        Some("auto") => Some(slurm::shard_from_env().map_err(|e| anyhow!("--{e}"))?),
        Some(text) => Some(grid::parse_shard(text).map_err(|e| anyhow!("--{e}"))?),
    };
    let survey = match args.survey {
        SurveyKind::Vsm13 => "vsm13",
        SurveyKind::Wvs => "wvs",
    };
    let s = SweepSettings {
        country,
        survey: survey.into(),
        pop: args.pop,
        tokens: args.tokens,
        strategy: strategy.name().into(),
        gens: args.gens,
        repeats: args.repeats,
        seed: args.seed,
        holdout: args.holdout,
        mutation,
        recombination,
    };
    Ok((s, shard))
}

/// Run `deopt sweep` (or `deopt sweep merge`).
///
/// # Errors
/// Bad flags, a directory with another sweep, a failed run; an interrupted run stops the
/// sweep with an error that says how to continue.
pub fn run(args: SweepArgs) -> Result<()> {
    if let Some(SweepCommand::Merge(m)) = args.command {
        return merge(&m);
    }
    let (s, shard) = settings(&args)?;
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            let id = crate::run::directory::short_id(&serde_json::to_value(&s)?);
            Path::new("results").join(format!(
                "sweep-{}-{}-{id}",
                crate::run::directory::today_utc(),
                s.country.to_uppercase()
            ))
        }
    };
    if args.slurm.slurm {
        return submit(&args, &s, &dir);
    }
    grid::init_dir(&dir, &s)?;
    let all = grid::plan(&s).len();
    let mine = shard.map_or(all, |(i, n)| (0..all).filter(|k| k % n == i - 1).count());
    eprintln!(
        "sweep {}: {mine} runs{}",
        dir.display(),
        shard.map(|(i, n)| format!(" (shard {i}/{n} of {all})")).unwrap_or_default()
    );
    if !grid::run_points(&dir, &s, shard, &args.model.spec(), |line| eprintln!("{line}"))? {
        bail!("sweep interrupted; continue it by running the same command again");
    }
    let (results, cells) = grid::write_tables(&dir, &s)?;
    finish(&dir, results.len(), all, &cells)
}

/// `--slurm`: fetch the model once (shared cache, locked), write the jobs, submit them.
fn submit(args: &SweepArgs, s: &SweepSettings, dir: &Path) -> Result<()> {
    if args.shard.is_some() {
        bail!("--shard: --slurm makes the shards itself (one per array task)");
    }
    if args.slurm.submit && !slurm::sbatch_on_path() {
        bail!("--submit: sbatch is not on PATH (submit from a Slurm login node, or drop --submit and submit the scripts there)");
    }
    args.slurm.options().validate()?;
    let runs = grid::plan(s).len();
    let tasks = args.slurm.slurm_tasks.unwrap_or(runs);
    if tasks == 0 || tasks > runs {
        bail!("--slurm-tasks {tasks}: expected 1 to {runs} (the sweep's runs)");
    }
    let mut model = args.model.spec();
    if let Some(c) = args.slurm.slurm_cpus {
        model.threads = Some(c);
    }
    let resolved = crate::provision::model_store::resolve_model(model.path.as_deref(), model.precision)?;
    eprintln!("model ready for the array: {}", resolved.path.display());
    grid::init_dir(dir, s)?;
    let exe = std::env::current_exe()?;
    let jobs = slurm::write_jobs(dir, tasks, &exe, &grid::sweep_argv(s, &model), &args.slurm.options())?;
    println!("{}", jobs.array_script.display());
    println!("{}", jobs.merge_script.display());
    if args.slurm.submit {
        let (array, merge) = slurm::submit(&jobs)?;
        println!(
            "submitted array job {array} ({tasks} tasks) and merge job {merge} (after the array succeeds)"
        );
    } else {
        println!(
            "submit with: a=$(sbatch --parsable {}) && sbatch --dependency=afterok:$a {}",
            jobs.array_script.display(),
            jobs.merge_script.display()
        );
    }
    Ok(())
}

fn merge(m: &MergeArgs) -> Result<()> {
    let (s, results, cells) = grid::merge(&m.dirs, &m.out)?;
    finish(&m.out, results.len(), grid::plan(&s).len(), &cells)
}

/// Report and a short summary on stdout.
fn finish(dir: &Path, done: usize, planned: usize, cells: &[grid::CellSummary]) -> Result<()> {
    if let Err(e) = report_files::write_sweep_report(dir) {
        eprintln!("deopt: warning: no report written: {e:#}");
    }
    println!("sweep {}: {done} of {planned} runs finished", dir.display());
    if let Some(b) = cells.iter().find(|c| c.best_cell) {
        println!(
            "best cell (lowest median final loss): F={} CR={}, median {:.4} over {} runs",
            b.mutation,
            b.recombination,
            crate::optim::stats::median(&b.losses).unwrap_or(f64::NAN),
            b.losses.len()
        );
    }
    for f in [grid::SWEEP_CSV, grid::SUMMARY_CSV, report_files::REPORT] {
        println!("{}", dir.join(f).display());
    }
    Ok(())
}
