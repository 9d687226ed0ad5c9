//! `deopt report`: report.md and charts (PNG and SVG) for a run or a sweep directory.
//!
//! For a run, the model answers the whole survey twice, without a soft prompt and with the
//! run's best prompt, under the run's recorded settings (survey, country, loss, layout,
//! precision); that gives the per-item answer shift and the baseline dimensions, which the
//! run directory does not record. A sweep report needs no model.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use clap::Parser as _;
use serde_json::Value;

use super::shared_flags::{LayoutArgs, ModelArgs, TaskArgs};
use crate::engine::{Engine, Plan};
use crate::score::fitness::Target;
use crate::provision::model_store::Precision;
use crate::prompt::render::Layout;
use crate::output::report_files::{self, EngineView};
use crate::run::directory;
use crate::prompt::softprompt::SoftPrompt;

/// Flags of `deopt report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Run directory (from `deopt run`) or sweep directory (from `deopt sweep`)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Do not load the model: no per-item answers and no baseline dimensions in a run report
    #[arg(long)]
    pub no_model: bool,
    /// Model flags; the precision is taken from the run's config.json
    #[command(flatten)]
    pub model: ModelArgs,
}

/// The task and layout flags a run recorded, parsed back by clap so defaults and names match.
#[derive(Debug, clap::Parser)]
struct Recorded {
    #[command(flatten)]
    task: TaskArgs,
    #[command(flatten)]
    layout: LayoutArgs,
    #[arg(long, value_enum)]
    precision: Precision,
}

fn recorded(dir: &Path, settings: &Value) -> Result<Recorded> {
    let mut argv = vec!["deopt".to_string()];
    let flags = [
        ("--country", "country"),
        ("--survey", "survey"),
        ("--survey-file", "survey_file"),
        ("--constants", "constants"),
        ("--loss", "loss"),
        ("--metric", "metric"),
        ("--wvs-source", "wvs_source"),
        ("--answers", "answers"),
        ("--template", "template"),
        ("--soft-position", "soft_position"),
        ("--item-style", "item_style"),
        ("--precision", "precision"),
    ];
    for (flag, key) in flags {
        if let Some(v) = settings.get(key).and_then(Value::as_str) {
            argv.push(flag.into());
            // wvs_source is recorded in its Debug form ("Auto"); the flag value is lowercase.
            argv.push(if key == "wvs_source" { v.to_lowercase() } else { v.to_string() });
        }
    }
    Recorded::try_parse_from(&argv).map_err(|e| {
        anyhow!(
            "{}: cannot read back the run's settings ({})",
            dir.join(directory::CONFIG).display(),
            e.to_string().lines().next().unwrap_or("").trim_start_matches("error: ")
        )
    })
}

/// Score the whole survey without a soft prompt and with the run's best prompt.
///
/// # Errors
/// Settings that cannot be read back, a missing best prompt, model or engine failures.
pub fn engine_view(dir: &Path, model_args: &ModelArgs) -> Result<EngineView> {
    let cfg = report_files::read_config(dir)?;
    let rec = recorded(dir, &cfg["settings"])?;
    let task = rec.task.task()?;
    let layout = rec.layout.layout();
    let mut margs = model_args.clone();
    margs.precision = rec.precision;
    let (resolved, model) = margs.load()?;
    let sha = cfg.pointer("/model/sha256").and_then(Value::as_str).unwrap_or("");
    if sha != resolved.sha256 {
        eprintln!(
            "deopt: warning: the run used model sha256 {sha}, the report uses {} ({})",
            resolved.sha256,
            resolved.path.display()
        );
    }
    let n_embd = model.n_embd_inp();
    let path = dir.join(directory::BEST_PROMPT);
    let (best, _) = SoftPrompt::load(&path)?;
    best.check_width(n_embd, &path.display().to_string())?;
    let items: Vec<_> = task.survey.items.iter().collect();
    let plan = Plan::new(&model, &items, &layout)?;
    let bare = Plan::new(&model, &items, &Layout { with_soft: false, ..layout.clone() })?;
    let mut engine = Engine::new(&model, margs.engine_config())?;
    let empty = SoftPrompt::empty(n_embd);
    let base_scores = engine.score(&bare, &[&empty])?.remove(0);
    let best_scores = engine.score(&plan, &[&best])?.remove(0);
    let idx: Vec<usize> = (0..items.len()).collect();
    let base = task.evaluate(&idx, &base_scores)?;
    let opt = task.evaluate(&idx, &best_scores)?;
    let target_dims = match &task.target {
        Target::Hofstede { row, .. } => Some(crate::data::load::target_vector(row)),
        Target::Wvs { .. } => None,
    };
    Ok(EngineView {
        items: items.iter().map(|i| i.id.clone()).collect(),
        baseline: base.answers,
        optimised: opt.answers,
        baseline_dims: base.dimensions,
        optimised_dims: opt.dimensions,
        target_dims,
        fitness: (base.fitness, opt.fitness),
    })
}

/// Write a run's report with the model's answers; returns the path of report.md.
///
/// # Errors
/// As [`engine_view`] and [`report_files::write_run_report`].
pub fn report_run(dir: &Path, model_args: &ModelArgs) -> Result<PathBuf> {
    let view = engine_view(dir, model_args)?;
    report_files::write_run_report(dir, Some(&view))?;
    Ok(dir.join(report_files::REPORT))
}

/// Run `deopt report`.
///
/// # Errors
/// `DIR` is neither a run nor a sweep, or writing the report fails.
pub fn run(args: ReportArgs) -> Result<()> {
    let dir = &args.dir;
    let files = if report_files::is_sweep(dir) {
        report_files::write_sweep_report(dir)?
    } else if directory::is_run(dir) {
        let view = if args.no_model { None } else { Some(engine_view(dir, &args.model)?) };
        report_files::write_run_report(dir, view.as_ref())?
    } else {
        bail!("{}: neither a deopt run nor a sweep directory", dir.display());
    };
    println!("{}", dir.join(report_files::REPORT).display());
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}
