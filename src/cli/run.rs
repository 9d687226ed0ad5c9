//! `deopt run`: flags, the run spec they make, and what is printed. The run itself is
//! [`crate::run::launch`]'s.

use std::path::Path;

use anyhow::{bail, Result};

use super::shared_flags::{LayoutArgs, ModelArgs, SessionArgs, TaskArgs};
use crate::output::run_summary::run_summary;
use crate::prompt::init::InitKind;
use crate::run::directory::{self, RunConfig};
use crate::run::driver::ProgressObserver;
use crate::run::launch;
use crate::run::spec::{DeSpec, MethodSpec, PromptSpec, RunSpec, StopSpec};

/// Flags of `deopt run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub layout: LayoutArgs,

    /// Population size N
    #[arg(long, default_value_t = 32)]
    pub pop: usize,
    /// Stop after this many generations (generation 0 is the initial population)
    #[arg(long, default_value_t = StopSpec::default().gens)]
    pub gens: u64,
    /// Soft prompt rows T (ignored by --init persona, whose rows follow its text)
    #[arg(long, default_value_t = 10)]
    pub tokens: usize,
    /// Search strategy: rand1bin (DE/rand/1/bin, the seed paper's), best1bin, current-to-best1bin,
    /// rand2bin, jade, shade, lshade, random, cmaes (CMA-ES; with --subspace it is BBT)
    #[arg(long, default_value = "rand1bin", value_name = "NAME")]
    pub strategy: String,
    /// Mutation factor F, in (0, 2] (classic strategies; adaptive ones adapt their own)
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    pub mutation: f64,
    /// Recombination rate CR, in [0, 1]
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    pub recombination: f64,
    /// Initial population: random vocabulary embeddings, a persona text naming the culture
    /// plus noise, or Gaussian values matched to the embedding table
    #[arg(long, value_enum, default_value_t = InitKind::Vocab)]
    pub init: InitKind,
    /// Search z in R^K instead: prompt = p0 + A z, p0 the first initial prompt, A a seeded
    /// random matrix scaled to the embedding standard deviation
    #[arg(long, value_name = "K")]
    pub subspace: Option<usize>,
    /// Stop before an evaluation budget would be exceeded
    #[arg(long, value_name = "N")]
    pub max_evals: Option<u64>,
    /// What the fitness scores: the survey's targets, or cross-entropy to the culture-aware
    /// answers of self-generated data (--data)
    #[arg(long, value_enum, default_value_t = RunObjective::Survey)]
    pub objective: RunObjective,
    /// Self-generated data directory (deopt selfgen's output), for --objective selfgen
    #[arg(long, value_name = "DIR")]
    pub data: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub session: SessionArgs,
}

/// The flags that may be given with `--resume` (clap ids): the stop conditions.
const RESUME_FLAGS: [&str; 6] = ["resume", "gens", "max_evals", "target_fitness", "stagnation", "time_limit"];

/// Flags that change what is shown, not the run: allowed with `--resume` too.
const DISPLAY_FLAGS: [&str; 3] = ["no_report", "show_prompt", "verbose"];

impl RunArgs {
    /// The stop conditions of these flags.
    pub fn stop(&self) -> StopSpec {
        StopSpec {
            gens: self.gens,
            max_evals: self.max_evals,
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
        let selfgen = match (self.objective, &self.data) {
            (RunObjective::Selfgen, Some(d)) => Some(d.clone()),
            (RunObjective::Selfgen, None) => {
                anyhow::bail!("--objective selfgen: needs --data DIR, the output of deopt selfgen")
            }
            (RunObjective::Survey, Some(d)) => {
                anyhow::bail!("--data {}: expected only with --objective selfgen", d.display())
            }
            (RunObjective::Survey, None) => None,
        };
        let mut task = self.task.spec()?;
        task.selfgen = selfgen;
        Ok(RunSpec {
            method: MethodSpec::De(DeSpec {
                strategy: self.strategy.parse()?,
                pop: self.pop,
                mutation: self.mutation,
                recombination: self.recombination,
                subspace: self.subspace,
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

/// What `deopt run` optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RunObjective {
    /// The survey's fitness (VSM13 loss, WVS CAS).
    Survey,
    /// Cross-entropy to self-generated culture-aware answers (`deopt selfgen`).
    Selfgen,
}

/// `--flag` of a clap id.
pub fn flag(id: &str) -> String {
    format!("--{}", id.replace('_', "-"))
}

/// Turn a library [`crate::run::spec::SpecError`] into the flag's wording.
pub fn with_flags(e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<crate::run::spec::SpecError>() {
        Some(se) => anyhow::anyhow!("{} {}: {}", se.flag(), se.value, se.expected),
        None => e,
    }
}

/// Run `deopt run`, then write the run's report (see `deopt report`) if it finished.
/// `given` are the clap ids of the flags given on the command line.
///
/// # Errors
/// Bad flags, a resume directory that is not a run or given other settings, model or engine
/// failures; a failed report is only a warning.
pub fn run(args: RunArgs, given: &[String]) -> Result<()> {
    let outcome = match &args.session.resume {
        Some(dir) => {
            let stop = resume_stop(&args, dir, given)?;
            let mut obs = ProgressObserver::new("", stop.gens, args.layout.show_prompt);
            launch::resume(dir, Some(stop), &mut obs).map_err(with_flags)?
        }
        None => {
            args.task.check_flags_apply(given)?;
            let spec = args.spec()?;
            spec.validate().map_err(with_flags)?;
            let mut obs = ProgressObserver::new("", spec.stop.gens, args.layout.show_prompt);
            launch::start(spec, args.session.out.as_deref(), args.session.force, &mut obs)
                .map_err(with_flags)?
        }
    };
    finish(&outcome, args.session.no_report, "generation", "run");
    Ok(())
}

/// After a run session: how to continue an interrupted one, the summary on stdout, and the
/// report of a finished one (`unit`: generation or step; `command`: run or tune).
pub(crate) fn finish(outcome: &launch::RunOutcome, no_report: bool, unit: &str, command: &str) {
    if !outcome.finished() {
        let last = outcome.checkpoint.history.last().map_or(0, |r| r.generation);
        eprintln!(
            "interrupted after {unit} {last}; checkpoint written. Continue with: deopt {command} --resume {}",
            outcome.dir.display()
        );
    }
    print!("{}", run_summary(outcome));
    if outcome.finished() && !no_report {
        match super::report::report_run(&outcome.dir, None) {
            Ok(report) => eprintln!("report: {}", report.display()),
            Err(e) => eprintln!("deopt: warning: no report written: {e:#}"),
        }
    }
}

/// The stop conditions of a resume: the run's own, with those given on the command line
/// replacing them. Any other flag is refused, naming it and the run's setting.
fn resume_stop(args: &RunArgs, dir: &Path, given: &[String]) -> Result<StopSpec> {
    let mut stop = recorded_stop(dir, given, &RESUME_FLAGS)?;
    let is = |id: &str| given.iter().any(|g| g == id);
    if is("gens") {
        stop.gens = args.gens;
    }
    if is("max_evals") {
        stop.max_evals = args.max_evals;
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

/// A resume's recorded stop conditions, after refusing any given flag (clap ids) that is
/// neither in `resume_flags` (`resume` first, then the stop conditions) nor a display flag.
pub(crate) fn recorded_stop(dir: &Path, given: &[String], resume_flags: &[&str]) -> Result<StopSpec> {
    let allowed = |id: &str| resume_flags.contains(&id) || DISPLAY_FLAGS.contains(&id);
    if let Some(id) = given.iter().find(|id| !allowed(id)) {
        let recorded = if directory::is_run(dir) {
            RunConfig::load(dir)
                .ok()
                .and_then(|c| c.setting(if id == "model" { "path" } else { id }))
                .map(|v| format!(" (the run has {v})"))
        } else {
            None
        };
        bail!(
            "{}: a resumed run keeps the settings in {}{}; only stop conditions may be given with --resume: {}",
            flag(id),
            dir.join(directory::CONFIG).display(),
            recorded.unwrap_or_default(),
            resume_flags[1..].iter().map(|f| flag(f)).collect::<Vec<_>>().join(", ")
        );
    }
    if !directory::is_run(dir) {
        bail!("--resume {}", directory::not_a_run(dir));
    }
    Ok(RunConfig::load(dir)?.spec.stop)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: RunArgs,
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let w = Wrapper::try_parse_from(["deopt", "--country", "SAU"]).unwrap();
        assert_eq!(w.args.spec().unwrap(), RunSpec::new("SAU"));
    }
}
