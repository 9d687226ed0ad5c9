//! `deopt tune`: prompt tuning with Adam on the same soft prompts, model, surveys and scorer
//! as `deopt run`. Flags, the run spec they make, and what is printed; the run itself is
//! [`crate::run::launch`]'s, as for DE.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::run::with_flags;
use super::shared_flags::{LayoutArgs, ModelArgs, SessionArgs, TaskArgs};
use crate::optim::adam::AdamConfig;
use crate::prompt::init::InitKind;
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
    #[command(flatten)]
    pub session: SessionArgs,
}

const RESUME_FLAGS: [&str; 5] = ["resume", "steps", "target_fitness", "stagnation", "time_limit"];

impl TuneArgs {
    fn stop(&self) -> StopSpec {
        StopSpec {
            gens: self.steps,
            max_evals: None,
            target_fitness: self.session.target_fitness,
            stagnation: self.session.stagnation,
            time_limit: self.session.time_limit,
        }
    }

    /// The run spec of these flags.
    ///
    /// # Errors
    /// No `--country`.
    pub fn spec(&self) -> Result<RunSpec> {
        let mut task = self.task.spec()?;
        task.selfgen = self.data.clone();
        Ok(RunSpec {
            method: MethodSpec::Tune(TuneSpec {
                objective: self.objective,
                data: self.data.clone(),
                adam: AdamConfig { lr: self.lr, clip: Some(self.clip), ..AdamConfig::default() },
                batch_items: self.batch_items,
                chunk: self.chunk,
                eval_every: self.eval_every,
            }),
            task,
            model: self.model.spec(),
            layout: self.layout.spec(),
            prompt: PromptSpec { tokens: self.tokens, init: self.init },
            holdout: self.session.holdout,
            seed: self.session.seed,
            stop: self.stop(),
        })
    }
}

/// Run `deopt tune`, then write the run's report if it finished.
///
/// # Errors
/// Bad flags; model, backend or engine failures.
pub fn run(args: TuneArgs, given: &[String]) -> Result<()> {
    let outcome = match &args.session.resume {
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
            launch::start(spec, args.session.out.as_deref(), args.session.force, &mut obs)
                .map_err(with_flags)?
        }
    };
    super::run::finish(&outcome, args.session.no_report, "step", "tune");
    Ok(())
}

fn resume_stop(args: &TuneArgs, dir: &Path, given: &[String]) -> Result<StopSpec> {
    let mut stop = super::run::recorded_stop(dir, given, &RESUME_FLAGS)?;
    let is = |id: &str| given.iter().any(|g| g == id);
    if is("steps") {
        stop.gens = args.steps;
    }
    if is("target_fitness") {
        stop.target_fitness = args.session.target_fitness;
    }
    if is("stagnation") {
        stop.stagnation = args.session.stagnation;
    }
    if is("time_limit") {
        stop.time_limit = args.session.time_limit;
    }
    Ok(stop)
}
