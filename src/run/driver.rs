//! The run loop: drives a [`Method`] step by step under a [`StopRule`], and after every step
//! writes the history row, the best prompt when it improved, timing and an atomic
//! checkpoint, tells an [`Observer`], and honours Ctrl-C.
//!
//! The loop knows nothing of DE: a method is anything that can take a step and report the
//! population statistics of a [`GenerationReport`] (a gradient method would report a
//! population of one). The directory format, resume and reports are the same for every
//! method.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{anyhow, Result};

use crate::optim::{GenerationReport, StopReason, StopRule};
use crate::progress::StepLog;
use crate::prompt::softprompt::SoftPrompt;
use crate::run::directory::{self, Checkpoint, HistoryRow, RunConfig};
use crate::score::fitness::Evaluation;

/// A way of improving a soft prompt one step at a time.
pub trait Method {
    /// Whether the starting point has been scored (generation 0).
    fn is_started(&self) -> bool;
    /// Score the starting point.
    ///
    /// # Errors
    /// Engine failures.
    fn init(&mut self) -> Result<GenerationReport>;
    /// One more step.
    ///
    /// # Errors
    /// Engine failures.
    fn step(&mut self) -> Result<GenerationReport>;
    /// The current state as a report without per-step figures (what a resumed run's stop
    /// rule is checked against first).
    fn snapshot(&self) -> GenerationReport;
    /// A prompt scored in the last init or step with exactly this fitness, and its evaluation.
    fn scored(&self, fitness: f64) -> Option<(SoftPrompt, Evaluation)>;
    /// Held-out fitness of the best prompt so far (`None` when nothing is held out).
    ///
    /// # Errors
    /// Engine failures.
    fn holdout_of_best(&mut self) -> Result<Option<f64>>;
    /// Units (tokens and soft rows) the backend has computed so far.
    fn units_computed(&self) -> u64;
    /// The state to checkpoint, exact (a resume from it continues bit for bit).
    ///
    /// # Errors
    /// Serialisation failure.
    fn state(&self) -> Result<serde_json::Value>;
    /// Method-specific files (name, content) rewritten after every step, e.g. tune.csv.
    fn files(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// Told what a run does; what the CLI shows is an observer.
pub trait Observer {
    /// The run starts (`resumed_at`: the generation a resumed run continues after).
    fn started(&mut self, _config: &RunConfig, _resumed_at: Option<u64>) {}
    /// A step finished and was checkpointed; `seconds` it took.
    fn stepped(&mut self, _row: &HistoryRow, _seconds: f64) {}
    /// The loop ended.
    fn ended(&mut self) {}
}

/// An observer that shows nothing.
pub struct Silent;

impl Observer for Silent {}

/// Progress on stderr: a bar on a terminal, else one line per generation (generation, best,
/// median, evaluations, elapsed); also the example prompt with `show_prompt`.
pub struct ProgressObserver {
    /// Printed before each line (e.g. `run 3/8: `).
    pub label: String,
    /// Print the first training item as the model sees it.
    pub show_prompt: bool,
    log: Option<StepLog>,
    gens: u64,
    unit: &'static str,
}

impl ProgressObserver {
    /// Progress towards `gens` generations.
    pub fn new(label: &str, gens: u64, show_prompt: bool) -> Self {
        ProgressObserver { label: label.to_string(), show_prompt, log: None, gens, unit: "gen" }
    }

    /// Name the steps (`gen` by default; `step` for prompt tuning).
    pub fn unit(mut self, unit: &'static str) -> Self {
        self.unit = unit;
        self
    }
}

impl Observer for ProgressObserver {
    fn started(&mut self, config: &RunConfig, resumed_at: Option<u64>) {
        if self.show_prompt {
            eprintln!("{}", config.example_prompt);
        }
        if let (Some(text), None) = (&config.persona_text, resumed_at) {
            eprintln!("note: persona initialisation: the soft prompt's rows follow the text \"{text}\"; the tokens setting is ignored");
        }
        let log = StepLog::new(self.gens, self.unit);
        if let Some(g) = resumed_at {
            let word = if self.unit == "gen" { "generation" } else { self.unit };
            log.println(&format!("{}resuming at {word} {g}", self.label));
        }
        self.log = Some(log);
    }

    fn stepped(&mut self, row: &HistoryRow, seconds: f64) {
        if let Some(log) = &self.log {
            let label = &self.label;
            let unit = self.unit;
            // A tuning step has a population of one: its median is the current prompt's fitness.
            let middle = if unit == "gen" { "median" } else { "current" };
            log.step(
                row.generation,
                &format!("best {:.3} ({:.1} s/{unit})", row.best_so_far, seconds),
                || {
                    format!(
                        "{label}{unit} {}/{}: best {:.4}, {middle} {:.4}, {} evaluations, {:.1} s",
                        row.generation,
                        self.gens,
                        row.best_so_far,
                        row.median,
                        row.evaluations,
                        log.elapsed_s()
                    )
                },
            );
        }
    }

    fn ended(&mut self) {
        if let Some(log) = self.log.take() {
            log.finish();
        }
    }
}

/// Set by Ctrl-C. Process-wide, because a process can install only one handler and a sweep
/// runs many runs in one process: after a Ctrl-C every run stops at its next step end.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Install the Ctrl-C handler once per process: the first Ctrl-C lets the step in progress
/// finish and be checkpointed; a second one exits at once (the last checkpoint stays valid).
fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("deopt: stopped without finishing the generation; the last checkpoint is kept");
                std::process::exit(130);
            }
            eprintln!(
                "deopt: finishing this generation, then writing a checkpoint (Ctrl-C again to stop now)"
            );
        });
    });
}

/// Whether Ctrl-C was pressed in this process.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// What the loop writes besides the method's own state.
pub struct LoopFiles<'a> {
    /// The run directory.
    pub dir: &'a Path,
    /// history.csv has dimension columns.
    pub dimensions: bool,
    /// Metadata stored with every best prompt (fitness and generation are added).
    pub prompt_meta: HashMap<String, String>,
}

/// Drive `method` until `stop` fires (`Some(reason)`) or Ctrl-C (`None`), continuing the
/// history in `ckpt`.
///
/// # Errors
/// Method, engine or I/O failures; the last checkpoint stays valid.
pub fn drive(
    method: &mut dyn Method,
    ckpt: &mut Checkpoint,
    files: &LoopFiles<'_>,
    mut stop: StopRule,
    observer: &mut dyn Observer,
) -> Result<Option<StopReason>> {
    install_ctrlc();
    if let Some(last) = ckpt.history.last() {
        stop.continue_from(last.best_so_far, ckpt.last_improvement);
    }
    let mut reason = None;
    loop {
        let t0 = Instant::now();
        let before = method.units_computed();
        let report = if method.is_started() {
            // Stop conditions, checked on the last report before starting a step.
            let last = if ckpt.history.is_empty() { None } else { Some(method.snapshot()) };
            if let Some(r) = last.as_ref().and_then(|l| stop.check(&with_history(l, ckpt))) {
                reason = Some(r);
                break;
            }
            if interrupted() {
                break;
            }
            method.step()?
        } else {
            method.init()?
        };
        record(method, ckpt, files, &report, before, t0.elapsed().as_secs_f64(), observer)?;
    }
    observer.ended();
    Ok(reason)
}

/// The method's snapshot with the figures the stop rule reads taken from the last history
/// row (the snapshot of a resumed optimizer has the same; this keeps the rule independent of
/// what a method's snapshot fills in).
fn with_history(snapshot: &GenerationReport, ckpt: &Checkpoint) -> GenerationReport {
    let mut r = snapshot.clone();
    if let Some(last) = ckpt.history.last() {
        r.generation = last.generation;
        r.evaluations = last.evaluations;
        r.best_so_far = last.best_so_far;
    }
    r
}

/// After a step: best prompt, history row, checkpoint, timing, observer.
fn record(
    method: &mut dyn Method,
    ckpt: &mut Checkpoint,
    files: &LoopFiles<'_>,
    report: &GenerationReport,
    units_before: u64,
    step_seconds: f64,
    observer: &mut dyn Observer,
) -> Result<()> {
    let t0 = Instant::now();
    let improved = ckpt.history.last().is_none_or(|r| report.best_so_far < r.best_so_far);
    let (mut dims, mut cas) = ckpt.history.last().map(|r| (r.dimensions.clone(), r.cas)).unwrap_or_default();
    if improved {
        let (prompt, e) = method
            .scored(report.best_so_far)
            .ok_or_else(|| anyhow!("internal error: the new best prompt is not among those just scored"))?;
        dims = e.dimensions.map(|d| d.to_vec()).unwrap_or_default();
        cas = e.cas.as_ref().map(|c| c.cas);
        ckpt.last_improvement = report.generation;
        ckpt.best_generation = report.generation;
        let mut meta = files.prompt_meta.clone();
        meta.insert("fitness".into(), report.best_so_far.to_string());
        meta.insert("generation".into(), report.generation.to_string());
        prompt.save(&files.dir.join(directory::BEST_PROMPT), &meta)?;
    }
    let holdout = method.holdout_of_best()?;
    let row = HistoryRow {
        generation: report.generation,
        evaluations: report.evaluations,
        best: report.best_fitness,
        median: report.median_fitness,
        worst: report.worst_fitness,
        best_so_far: report.best_so_far,
        dimensions: dims,
        cas,
        holdout,
        f: report.f.map(|m| (m.mean, m.sd)),
        cr: report.cr.map(|m| (m.mean, m.sd)),
        diversity: report.diversity,
        successes: report.successes,
        tokens: method.units_computed() - units_before,
    };
    ckpt.history.push(row);
    let secs = step_seconds + t0.elapsed().as_secs_f64();
    ckpt.elapsed_s += secs;
    ckpt.optimizer = method.state()?;
    // Checkpoint first: history.csv is then never ahead of the latest checkpoint.
    ckpt.save(files.dir)?;
    crate::fsutil::write_atomic(
        &files.dir.join(directory::HISTORY),
        directory::history_csv(&ckpt.history, files.dimensions).as_bytes(),
    )?;
    for (name, text) in method.files() {
        crate::fsutil::write_atomic(&files.dir.join(name), text.as_bytes())?;
    }
    directory::append_timing(files.dir, report.generation, report.trials, secs)?;
    observer.stepped(ckpt.history.last().expect("just pushed"), secs);
    Ok(())
}
