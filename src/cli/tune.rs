//! `deopt tune`: prompt tuning with Adam on the same soft prompts, model, surveys and scorer
//! as `deopt run`. Flags, the run spec they make, and what is printed; the run itself is
//! [`crate::run::launch`]'s, as for DE.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::run::{flag, with_flags};
use super::shared_flags::{LayoutArgs, ModelArgs, TaskArgs};
use crate::optim::adam::AdamConfig;
use crate::output::run_summary::run_summary;
use crate::prompt::init::InitKind;
use crate::run::directory::{self, RunConfig};
use crate::run::driver::ProgressObserver;
use crate::run::launch;
use crate::run::spec::{MethodSpec, PromptSpec, RunSpec, StopSpec, TuneObjective, TuneSpec};

/// Flags of `deopt tune`.
#[derive(Debug, Clone, clap::Args)]
pub struct TuneArgs {
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub layout: LayoutArgs,

    /// What to minimise: the fitness DE minimises (differentiated through expected answers),
    /// cross-entropy to a synthetic survey reproducing the country's targets, or to
    /// self-generated data
    #[arg(long, value_enum, default_value_t = TuneObjective::Fitness)]
    pub objective: TuneObjective,
    /// Self-generated data directory (deopt selfgen's output), for --objective selfgen
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Adam steps (step 0 scores the starting prompt)
    #[arg(long, default_value_t = 50)]
    pub steps: u64,
    /// Adam's learning rate
    #[arg(long, default_value_t = AdamConfig::default().lr)]
    pub lr: f64,
    /// Largest global gradient norm (larger gradients are scaled down to it)
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Soft prompt rows T (ignored by --init persona, whose rows follow its text)
    #[arg(long, default_value_t = 10)]
    pub tokens: usize,
    /// Starting prompt: the first of the prompts `deopt run` would draw with the same seed
    #[arg(long, value_enum, default_value_t = InitKind::Vocab)]
    pub init: InitKind,
    /// Items per step for the cross-entropy objectives (default: all training items); the
    /// fitness objective always uses every training item
    #[arg(long, value_name = "N")]
    pub batch_items: Option<usize>,
    /// Items per forward pass: bounds memory, not the result
    #[arg(long, default_value_t = TuneSpec::default().chunk, value_name = "N")]
    pub chunk: usize,
    /// Score the prompt with the llama.cpp engine (the official fitness, as DE's) every K steps
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub eval_every: u64,
    /// Share of the survey kept out of training, in [0, 1), as in `deopt run`
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION")]
    pub holdout: f64,
    /// Seed of every random draw of the run
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run directory [default: results/<date>-<ISO3>-<survey>-<id>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in DIR from its directory alone; only stop conditions (--steps,
    /// --target-fitness, --stagnation, --time-limit) may be given with it
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Stop once the best fitness is at or below X
    #[arg(long, value_name = "X")]
    pub target_fitness: Option<f64>,
    /// Stop after K steps without improvement of the best fitness
    #[arg(long, value_name = "K")]
    pub stagnation: Option<u64>,
    /// Stop after this many seconds of this session (the step in progress finishes)
    #[arg(long, value_name = "SECONDS")]
    pub time_limit: Option<f64>,
    /// Start the run in --out even if that directory holds another run or other files
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Do not write report.md and charts at the end
    #[arg(long)]
    pub no_report: bool,
}

const RESUME_FLAGS: [&str; 5] = ["resume", "steps", "target_fitness", "stagnation", "time_limit"];
const DISPLAY_FLAGS: [&str; 3] = ["no_report", "show_prompt", "verbose"];

impl TuneArgs {
    fn stop(&self) -> StopSpec {
        StopSpec {
            gens: self.steps,
            max_evals: None,
            target_fitness: self.target_fitness,
            stagnation: self.stagnation,
            time_limit: self.time_limit,
        }
    }

    /// The run spec of these flags.
    ///
    /// # Errors
    /// No `--country`.
    pub fn spec(&self) -> Result<RunSpec> {
        Ok(RunSpec {
            method: MethodSpec::Tune(TuneSpec {
                objective: self.objective,
                data: self.data.clone(),
                adam: AdamConfig { lr: self.lr, clip: Some(self.clip), ..AdamConfig::default() },
                batch_items: self.batch_items,
                chunk: self.chunk,
                eval_every: self.eval_every,
            }),
            task: self.task.spec()?,
            model: self.model.spec(),
            layout: self.layout.spec(),
            prompt: PromptSpec { tokens: self.tokens, init: self.init },
            holdout: self.holdout,
            seed: self.seed,
            stop: self.stop(),
        })
    }
}

/// Run `deopt tune`, then write the run's report if it finished.
///
/// # Errors
/// Bad flags; model, backend or engine failures.
pub fn run(args: TuneArgs, given: &[String]) -> Result<()> {
    let outcome = match &args.resume {
        Some(dir) => {
            let stop = resume_stop(&args, dir, given)?;
            let mut obs = ProgressObserver::new("", stop.gens, args.layout.show_prompt).unit("step");
            launch::resume(dir, Some(stop), &mut obs).map_err(with_flags)?
        }
        None => {
            args.task.check_flags_apply(given)?;
            let spec = args.spec()?;
            spec.validate().map_err(with_flags)?;
            let mut obs = ProgressObserver::new("", spec.stop.gens, args.layout.show_prompt).unit("step");
            launch::start(spec, args.out.as_deref(), args.force, &mut obs).map_err(with_flags)?
        }
    };
    if !outcome.finished() {
        let last = outcome.checkpoint.history.last().map_or(0, |r| r.generation);
        eprintln!(
            "interrupted after step {last}; checkpoint written. Continue with: deopt tune --resume {}",
            outcome.dir.display()
        );
    }
    print!("{}", run_summary(&outcome));
    if outcome.finished() && !args.no_report {
        match super::report::report_run(&outcome.dir, None) {
            Ok(report) => eprintln!("report: {}", report.display()),
            Err(e) => eprintln!("deopt: warning: no report written: {e:#}"),
        }
    }
    Ok(())
}

fn resume_stop(args: &TuneArgs, dir: &Path, given: &[String]) -> Result<StopSpec> {
    let allowed = |id: &str| RESUME_FLAGS.contains(&id) || DISPLAY_FLAGS.contains(&id);
    if let Some(id) = given.iter().find(|id| !allowed(id)) {
        bail!(
            "{}: a resumed run keeps the settings in {}; only stop conditions may be given with --resume: {}",
            flag(id),
            dir.join(directory::CONFIG).display(),
            RESUME_FLAGS[1..].iter().map(|f| flag(f)).collect::<Vec<_>>().join(", ")
        );
    }
    if !directory::is_run(dir) {
        bail!("--resume {}", directory::not_a_run(dir));
    }
    let mut stop = RunConfig::load(dir)?.spec.stop;
    let is = |id: &str| given.iter().any(|g| g == id);
    if is("steps") {
        stop.gens = args.steps;
    }
    if is("target_fitness") {
        stop.target_fitness = args.target_fitness;
    }
    if is("stagnation") {
        stop.stagnation = args.stagnation;
    }
    if is("time_limit") {
        stop.time_limit = args.time_limit;
    }
    Ok(stop)
}
