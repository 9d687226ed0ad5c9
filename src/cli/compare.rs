//! `deopt compare`: every method on the same model, countries, seeds and budget, in one table;
//! `deopt compare merge` combines shard directories. The work is [`crate::compare`]'s.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use super::shared_flags::ModelArgs;
use crate::compare::{self, CompareSettings, Method};
use crate::data::survey::SurveyKind;
use crate::run::grid;

/// Settings of a preset; flags given on the command line override them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// About half an hour on 2 cores: SAU and USA, 2 seeds, 512 item passes per run, population 8.
    Quick,
    /// The full study: SAU, USA, CHN, IND, 3 seeds, the main job's budget (6,432 evaluations of
    /// 16 training items), population 32.
    Full,
}

/// Flags of `deopt compare`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CompareArgs {
    #[command(subcommand)]
    pub command: Option<CompareCommand>,
    /// Preset of the settings below (flags given override it)
    #[arg(long, value_enum, default_value_t = Preset::Quick)]
    pub preset: Preset,
    /// Countries, comma-separated (ISO3 codes or names) [quick: SAU,USA; full: SAU,USA,CHN,IND]
    #[arg(long)]
    pub countries: Option<String>,
    /// Methods, comma-separated: none, p1, p2, p3, random-soft, random-search, de, shade, bbt,
    /// tune-fitness, tune-synthetic, selfgen-tune, selfgen-de [all; the selfgen ones only
    /// with --data]
    #[arg(long)]
    pub methods: Option<String>,
    /// Seeds per (method, country) [quick: 2; full: 3]
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Item forward passes per run (one prompt's pass over one item) [quick: 512; full: 102912]
    #[arg(long)]
    pub budget: Option<u64>,
    /// Population of the search methods [quick: 8; full: 32]
    #[arg(long)]
    pub pop: Option<usize>,
    /// Soft prompt rows T
    #[arg(long, default_value_t = 10)]
    pub tokens: usize,
    /// Adam's learning rate (tune methods)
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// BBT's random subspace dimension (CMA-ES over z, prompt = p0 + A z)
    #[arg(long, default_value_t = 100)]
    pub subspace: usize,
    /// Held-out share of the fitness survey (VSM13: whole dimensions)
    #[arg(long, default_value_t = 0.25, value_name = "FRACTION")]
    pub holdout: f64,
    /// The fitness survey (the other one is the transfer test)
    #[arg(long, value_enum, default_value_t = SurveyKind::Vsm13)]
    pub survey: SurveyKind,
    /// `deopt selfgen` directory (needed by selfgen-tune and selfgen-de)
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Seed of the comparison; each (country, seed) run seed is derived from it
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Compare directory [default: results/compare-<date>-<id>]; an existing one with the same
    /// settings is continued, finished jobs skipped
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run only the jobs whose index % n == i - 1 (1-based i); merge with `deopt compare merge`
    #[arg(long, value_name = "i/n")]
    pub shard: Option<String>,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Subcommands of `deopt compare`.
#[derive(Debug, clap::Subcommand)]
pub enum CompareCommand {
    /// Combine shard directories of one comparison into one with compare.csv and table.md
    Merge(MergeArgs),
}

/// Flags of `deopt compare merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Shard directories (from `deopt compare --shard`)
    #[arg(value_name = "DIR", required = true)]
    pub dirs: Vec<PathBuf>,
    /// Merged directory
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

fn settings(a: &CompareArgs) -> Result<CompareSettings> {
    let quick = a.preset == Preset::Quick;
    let countries =
        a.countries.clone().unwrap_or_else(|| (if quick { "SAU,USA" } else { "SAU,USA,CHN,IND" }).into());
    let methods = match &a.methods {
        Some(m) => compare::parse_methods(m)?,
        None => Method::ALL.into_iter().filter(|m| a.data.is_some() || !m.needs_data()).collect(),
    };
    let mut model = a.model.spec();
    if let Some(p) = &model.path {
        model.path = Some(std::path::absolute(p).unwrap_or_else(|_| p.clone()));
    }
    let s = CompareSettings {
        countries: countries.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect(),
        methods,
        seeds: a.seeds.unwrap_or(if quick { 2 } else { 3 }),
        seed: a.seed,
        survey: a.survey,
        budget: a.budget.unwrap_or(if quick { 512 } else { 16 * 6432 }),
        pop: a.pop.unwrap_or(if quick { 8 } else { 32 }),
        tokens: a.tokens,
        lr: a.lr,
        subspace: a.subspace,
        holdout: a.holdout,
        data: a.data.as_ref().map(|d| std::path::absolute(d).unwrap_or_else(|_| d.clone())),
        model,
    };
    compare::validate(s)
}

/// Run `deopt compare` (or `deopt compare merge`).
///
/// # Errors
/// Bad flags (before any work), a directory with another comparison, a failed job.
pub fn run(args: CompareArgs) -> Result<()> {
    if let Some(CompareCommand::Merge(m)) = &args.command {
        let (s, rows, files) = compare::merge(&m.dirs, &m.out)?;
        return finish(&m.out, &s, rows.len(), &files);
    }
    let shard = match args.shard.as_deref() {
        None => None,
        Some(t) => Some(grid::parse_shard(t).map_err(|e| anyhow!("--{e}"))?),
    };
    let s = settings(&args)?;
    compare::check_data_model(&s)?;
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            let id = crate::run::directory::short_id(&serde_json::to_value(&s)?);
            Path::new("results").join(format!("compare-{}-{id}", crate::run::directory::today_utc()))
        }
    };
    compare::init_dir(&dir, &s)?;
    let planned = compare::plan(&s).len();
    let mine = shard.map_or(planned, |(i, n)| (0..planned).filter(|k| k % n == i - 1).count());
    eprintln!(
        "compare {}: {} methods x {} countries x {} seeds = {planned} jobs{}, {} item passes each",
        dir.display(),
        s.methods.len(),
        s.countries.len(),
        s.seeds,
        shard.map(|(i, n)| format!(" ({mine} in shard {i}/{n})")).unwrap_or_default(),
        s.budget
    );
    let progress = compare::run_jobs(&dir, &s, shard, |l| eprintln!("{l}"))?;
    let (rows, files) = compare::write_outputs(&dir, &s)?;
    if progress.interrupted {
        anyhow::bail!("compare interrupted; continue it by running the same command again");
    }
    finish(&dir, &s, rows.len(), &files)
}

fn finish(dir: &Path, s: &CompareSettings, done: usize, files: &[PathBuf]) -> Result<()> {
    println!("compare {}: {done} of {} jobs finished", dir.display(), compare::plan(s).len());
    let md = std::fs::read_to_string(dir.join(compare::TABLE_MD)).unwrap_or_default();
    if let Some(f) = md.find("## Findings") {
        println!(
            "{}",
            md[f..]
                .lines()
                .take_while(|l| !l.starts_with("Charts:"))
                .collect::<Vec<_>>()
                .join("\n")
                .trim_end()
        );
    }
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}
