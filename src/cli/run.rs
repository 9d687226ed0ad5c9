//! `deopt run`: evolve a soft prompt for a country with differential evolution.
//!
//! One generation scores every trial prompt with a single [`Engine::score`] call (the
//! [`LlmObjective`] adapter), turns each prompt's answers into a fitness with
//! [`Task::evaluate`], and lets the optimizer select. After every generation the run directory
//! (see [`crate::run::directory`]) gets a history row, the best prompt when it improved, and an atomic
//! checkpoint, so Ctrl-C or a crash loses at most one generation and `--resume` continues
//! bit for bit.
//!
//! Determinism: one `--seed` fixes the initial population, the held-out split, the subspace
//! and the optimizer. The engine's answers do not depend on which prompts share a call, and a
//! resumed run replays the engine calls that precede a generation (baseline, one training and
//! one held-out call), so even the "tokens computed" column of history.csv is identical.
//! Wall-clock figures go to timing.csv.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::{json, Value};

use super::shared_flags::{LayoutArgs, ModelArgs, TaskArgs};
use crate::data::dimension::Dimension;
use crate::engine::{Engine, Plan};
use crate::score::fitness::{Evaluation, Target, Task};
use crate::prompt::init::{self, InitKind};
use crate::optim::{BatchObjective, Config, GenerationReport, Optimizer, RandomSubspace, Strategy};
use crate::prompt::render::Layout;
use crate::run::directory::{self, Checkpoint, HistoryRow};
use crate::prompt::softprompt::SoftPrompt;
use crate::data::survey::SurveyKind;

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
    #[arg(long, default_value_t = 200)]
    pub gens: u64,
    /// Soft prompt rows T (ignored by --init persona, whose rows follow its text)
    #[arg(long, default_value_t = 10)]
    pub tokens: usize,
    /// DE strategy: rand1bin (DE/rand/1/bin, the seed paper's), best1bin, current-to-best1bin,
    /// rand2bin, jade, shade, lshade, random
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
    /// Share of the survey kept out of the fitness, in [0, 1); its loss for the best prompt is
    /// reported every generation. VSM13 holds out whole dimensions (all items of
    /// round(FRACTION x 6) dimensions, at least 1, at most 5); WVS holds out items
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION", allow_negative_numbers = true)]
    pub holdout: f64,
    /// Seed of every random draw of the run
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run directory [default: results/<date>-<ISO3>-<survey>-<id>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in DIR; give the same settings (stop conditions may change)
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Stop before an evaluation budget would be exceeded
    #[arg(long, value_name = "N")]
    pub max_evals: Option<u64>,
    /// Stop once the best fitness is at or below X
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub target_fitness: Option<f64>,
    /// Stop after K generations without improvement of the best fitness
    #[arg(long, value_name = "K")]
    pub stagnation: Option<u64>,
    /// Stop after this many seconds of this session (the generation in progress finishes)
    #[arg(long, value_name = "SECONDS")]
    pub time_limit: Option<f64>,
}

/// Row norms kept within the vocabulary's range by [`LlmObjective::repair`]: the 0.1st and
/// 99.9th percentiles of the scaled embedding rows' L2 norms. Percentiles rather than the
/// extremes because a few unused vocabulary rows are near zero or unusually long, which
/// would make the range meaningless.
const NORM_PERCENTILES: (f64, f64) = (0.1, 99.9);

/// The objective: trial vectors -> soft prompts -> one engine call -> fitness per prompt.
pub struct LlmObjective<'m, 'p> {
    /// The engine (owned, so the run can use it between generations).
    pub engine: Engine<'m>,
    plan: &'p Plan,
    task: &'p Task,
    items: &'p [usize],
    rows: usize,
    n_embd: usize,
    norm_range: (f32, f32),
    subspace: Option<RandomSubspace>,
    /// The last batch: each vector (in prompt space) with its evaluation.
    pub last: Vec<(Vec<f32>, Evaluation)>,
}

impl LlmObjective<'_, '_> {
    /// Scale every row whose L2 norm is outside the vocabulary's range back onto it, so trials
    /// stay in the region of input space the model was trained on. The direction of each row
    /// is kept; rows that are exactly zero are left alone.
    fn clip_rows(&self, x: &mut [f32]) {
        let (lo, hi) = self.norm_range;
        for row in x.chunks_mut(self.n_embd.max(1)) {
            let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt() as f32;
            let target = if norm > hi {
                hi
            } else if norm < lo && norm > 0.0 {
                lo
            } else {
                continue;
            };
            let s = target / norm;
            row.iter_mut().for_each(|v| *v *= s);
        }
    }

    /// Prompt-space vectors of a batch (mapped and repaired in subspace mode).
    fn to_prompt_space(&self, xs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        match &self.subspace {
            None => Ok(xs.to_vec()),
            Some(space) => {
                let mut ps = space.map_batch(xs)?;
                ps.iter_mut().for_each(|p| self.clip_rows(p));
                Ok(ps)
            }
        }
    }
}

impl BatchObjective for LlmObjective<'_, '_> {
    fn evaluate(&mut self, xs: &[Vec<f32>]) -> Result<Vec<f64>> {
        let ps = self.to_prompt_space(xs)?;
        let prompts: Vec<SoftPrompt> =
            ps.iter().map(|p| SoftPrompt::new(self.rows, self.n_embd, p.clone())).collect::<Result<_>>()?;
        let refs: Vec<&SoftPrompt> = prompts.iter().collect();
        let scores = self.engine.score(self.plan, &refs)?;
        let evals: Vec<Evaluation> =
            scores.iter().map(|s| self.task.evaluate(self.items, s)).collect::<Result<_>>()?;
        let fitness = evals.iter().map(|e| e.fitness).collect();
        self.last = ps.into_iter().zip(evals).collect();
        Ok(fitness)
    }

    /// In prompt space: [`Self::clip_rows`]. In subspace mode the search vector is z, and the
    /// clipping is applied to the mapped prompt inside `evaluate` instead.
    fn repair(&self, x: &mut [f32]) {
        if self.subspace.is_none() {
            self.clip_rows(x);
        }
    }
}

/// A seed for one purpose, derived from the run seed (splitmix64 of seed and purpose).
fn sub_seed(seed: u64, purpose: u64) -> u64 {
    let mut z = seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Cheap checks of the flags, before any model is loaded.
fn validate(args: &RunArgs) -> Result<(Strategy, Config)> {
    let strategy: Strategy = args.strategy.parse()?;
    let mut config =
        Config { mutation: args.mutation, recombination: args.recombination, ..Config::new(strategy) };
    if strategy == Strategy::Lshade {
        config.max_evaluations = Some(args.max_evals.unwrap_or(args.pop as u64 * (args.gens + 1)));
    }
    config.validate(args.pop, args.subspace.unwrap_or(1).max(1))?;
    if !(0.0..1.0).contains(&args.holdout) {
        bail!("--holdout {}: expected a fraction in [0, 1)", args.holdout);
    }
    if args.task.answers == crate::score::fitness::AnswerMode::Generate {
        bail!("--answers generate: optimisation scores answer distributions; use expected or argmax (generate is for deopt eval)");
    }
    if args.tokens == 0 && args.init.uses_rows() {
        bail!("--tokens 0: a soft prompt needs at least one row");
    }
    if args.subspace == Some(0) {
        bail!("--subspace 0: the subspace needs at least one dimension");
    }
    if let Some(t) = args.time_limit {
        if !(t.is_finite() && t > 0.0) {
            bail!("--time-limit {t}: expected a positive number of seconds");
        }
    }
    if let Some(x) = args.target_fitness {
        if x.is_nan() {
            bail!("--target-fitness NaN: expected a number");
        }
    }
    Ok((strategy, config))
}

/// Settings that define a run; a resume must give the same ones.
fn settings(args: &RunArgs, strategy: Strategy, iso3: &str) -> Value {
    let t = &args.task;
    json!({
        "country": iso3,
        "survey": t.survey,
        "survey_file": t.survey_file.as_ref().map(|p| p.display().to_string()),
        "constants": t.constants.to_string(),
        "loss": t.loss,
        "metric": t.metric,
        "wvs_source": format!("{:?}", t.wvs_source),
        "answers": t.answers,
        "precision": args.model.precision,
        "template": args.layout.template,
        "soft_position": args.layout.soft_position,
        "item_style": args.layout.item_style,
        "pop": args.pop,
        "tokens": args.tokens,
        "strategy": strategy.name(),
        "mutation": args.mutation,
        "recombination": args.recombination,
        "init": args.init,
        "subspace": args.subspace,
        "holdout": args.holdout,
        "seed": args.seed,
    })
}

/// Training and held-out item indices (see `--holdout`).
fn split_items(task: &Task, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let n = task.survey.items.len();
    if fraction <= 0.0 || n < 2 {
        return ((0..n).collect(), Vec::new());
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(sub_seed(seed, 2));
    match task.target {
        Target::Hofstede { .. } => {
            let mut dims: Vec<Dimension> = Dimension::ALL
                .into_iter()
                .filter(|d| task.survey.items.iter().any(|it| it.term.is_some_and(|(x, _)| x == *d)))
                .collect();
            dims.shuffle(&mut rng);
            let k = ((fraction * dims.len() as f64).round() as usize)
                .clamp(1, dims.len().saturating_sub(1).max(1));
            let held = &dims[..k];
            (0..n).partition(|&i| !task.survey.items[i].term.is_some_and(|(d, _)| held.contains(&d)))
        }
        Target::Wvs { .. } => {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.shuffle(&mut rng);
            let k = ((fraction * n as f64).round() as usize).clamp(1, n - 1);
            let mut held = idx[..k].to_vec();
            held.sort_unstable();
            ((0..n).filter(|i| !held.contains(i)).collect(), held)
        }
    }
}

/// Scores of the best individual kept in the history (dimensions or CAS).
fn detail(e: &Evaluation) -> (Vec<Option<f64>>, Option<f64>) {
    (e.dimensions.map(|d| d.to_vec()).unwrap_or_default(), e.cas.as_ref().map(|c| c.cas))
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.2}"))
}

/// Run `deopt run`, then write the run's report (see `deopt report`) if it finished.
///
/// # Errors
/// As [`run_to`]; a failed report is only a warning.
pub fn run(args: RunArgs) -> Result<()> {
    let model = args.model.clone();
    let outcome = run_to(args)?;
    if outcome.finished {
        match super::report::report_run(&outcome.dir, &model) {
            Ok(report) => eprintln!("report: {}", report.display()),
            Err(e) => eprintln!("deopt: warning: no report written: {e:#}"),
        }
    }
    Ok(())
}

/// Set by Ctrl-C. Process-wide, because a process can install only one handler and a sweep
/// runs many runs in one process: after a Ctrl-C every run stops at its next generation end.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Install the Ctrl-C handler once per process: the first Ctrl-C lets the generation in
/// progress finish and be checkpointed; a second one exits at once (the last checkpoint stays
/// valid).
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

/// Where a run went and whether it finished (a stop condition held) or was interrupted.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run directory.
    pub dir: PathBuf,
    /// A stop condition ended the run (false: Ctrl-C).
    pub finished: bool,
}

/// Run `deopt run` without writing a report (what `deopt sweep` calls for each run).
///
/// # Errors
/// Bad flags, a resume directory that is not a compatible run, model or engine failures.
pub fn run_to(args: RunArgs) -> Result<RunOutcome> {
    let (strategy, config) = validate(&args)?;
    let task = args.task.task()?;
    let settings = settings(&args, strategy, &task.country.iso3);

    // Resume: the directory must be a run with the same settings.
    let resumed: Option<(PathBuf, Value, Checkpoint)> = match &args.resume {
        None => None,
        Some(dir) => {
            if !directory::is_run(dir) {
                bail!(
                    "--resume {}: not a deopt run directory (no {} and {})",
                    dir.display(),
                    directory::CONFIG,
                    directory::CHECKPOINT
                );
            }
            let path = dir.join(directory::CONFIG);
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
            let cfg: Value = serde_json::from_str(&text)
                .map_err(|e| anyhow!("{}: not a deopt run config ({e})", path.display()))?;
            let old = cfg
                .get("settings")
                .and_then(Value::as_object)
                .ok_or_else(|| anyhow!("{}: not a deopt run config (no settings)", path.display()))?;
            for (key, now) in settings.as_object().expect("settings is an object") {
                let before = old.get(key).unwrap_or(&Value::Null);
                if before != now {
                    bail!(
                        "--resume {}: setting '{key}' is {before} in the run but {now} now (only stop conditions may change)",
                        dir.display()
                    );
                }
            }
            let ckpt = Checkpoint::load(dir)?;
            Some((dir.clone(), cfg, ckpt))
        }
    };

    let (resolved, model) = args.model.load()?;
    if let Some((dir, cfg, _)) = &resumed {
        let sha = cfg.pointer("/model/sha256").and_then(Value::as_str).unwrap_or("");
        if sha != resolved.sha256 {
            bail!(
                "--resume {}: the run used model sha256 {sha} but {} has sha256 {}",
                dir.display(),
                resolved.path.display(),
                resolved.sha256
            );
        }
    }
    let n_embd = model.n_embd_inp();

    // Items, plans, engine.
    let (train, held) = split_items(&task, args.holdout, args.seed);
    let layout = args.layout.layout();
    let items_of = |idx: &[usize]| idx.iter().map(|&i| &task.survey.items[i]).collect::<Vec<_>>();
    let train_plan = Plan::new(&model, &items_of(&train), &layout)?;
    let held_plan = if held.is_empty() { None } else { Some(Plan::new(&model, &items_of(&held), &layout)?) };
    let bare = Layout { with_soft: false, ..layout.clone() };
    let bare_train = Plan::new(&model, &items_of(&train), &bare)?;
    if args.layout.show_prompt {
        eprintln!("{}", train_plan.example);
    }
    let mut engine = Engine::new(&model, args.model.engine_config())?;

    // Baseline: no soft prompt (also run on resume, so the engine's calls replay exactly).
    let empty = SoftPrompt::empty(n_embd);
    let base_scores = engine.score(&bare_train, &[&empty])?;
    let baseline = task.evaluate(&train, &base_scores[0])?;
    let baseline_held = match &held {
        h if h.is_empty() => None,
        h => {
            let bare_held = Plan::new(&model, &items_of(h), &bare)?;
            let s = engine.score(&bare_held, &[&empty])?;
            Some(task.evaluate(h, &s[0])?)
        }
    };

    // Initial population, from the seed.
    let mut init_rng = Xoshiro256PlusPlus::seed_from_u64(sub_seed(args.seed, 1));
    if args.init == InitKind::Persona && resumed.is_none() {
        eprintln!(
            "note: --init persona: the soft prompt's rows follow the text \"{}\"; --tokens is ignored",
            init::persona_text(&task.country)
        );
    }
    let prompts: Vec<SoftPrompt> = (0..args.pop)
        .map(|_| init::draw_kind(&model, args.init, args.tokens, Some(&task.country), &mut init_rng))
        .collect::<Result<_>>()?;
    let rows = prompts[0].rows();
    let stats = model.token_embeddings().stats(None)?;
    let norm_range = (stats.norm_percentile(NORM_PERCENTILES.0), stats.norm_percentile(NORM_PERCENTILES.1));
    let subspace = match args.subspace {
        None => None,
        Some(k) => Some(RandomSubspace::new(
            prompts[0].data().to_vec(),
            k,
            stats.std as f32,
            sub_seed(args.seed, 3),
        )?),
    };
    let mut obj = LlmObjective {
        engine,
        plan: &train_plan,
        task: &task,
        items: &train,
        rows,
        n_embd,
        norm_range,
        subspace,
        last: Vec::new(),
    };
    let initial: Vec<Vec<f32>> = match &obj.subspace {
        Some(space) => space.initial_population(args.pop, 1.0, sub_seed(args.seed, 4)),
        None => prompts
            .iter()
            .map(|p| {
                let mut x = p.data().to_vec();
                obj.clip_rows(&mut x);
                x
            })
            .collect(),
    };

    // Run directory.
    let vsm = task.survey.scores_dimensions() && matches!(task.target, Target::Hofstede { .. });
    let survey_name = match args.task.survey {
        SurveyKind::Vsm13 => "vsm13",
        SurveyKind::Wvs => "wvs",
    };
    let (dir, mut opt, mut ckpt) = match resumed {
        Some((dir, _, ckpt)) => {
            let bytes = serde_json::to_vec(&ckpt.optimizer)?;
            let opt = Optimizer::from_checkpoint(&bytes)
                .with_context(|| format!("{}", dir.join(directory::CHECKPOINT).display()))?;
            // Replay the engine calls of one generation so its state (the decoded shared
            // prefix, the context size) is what an uninterrupted run has at this point.
            let first = SoftPrompt::new(rows, n_embd, obj.to_prompt_space(&initial[..1])?.remove(0))?;
            obj.engine.score(&train_plan, &[&first])?;
            if let Some(hp) = &held_plan {
                obj.engine.score(hp, &[&first])?;
            }
            eprintln!("resuming {} at generation {}", dir.display(), opt.generation());
            (dir, opt, ckpt)
        }
        None => {
            let dir = match &args.out {
                Some(d) => {
                    // A directory killed before its first checkpoint holds no run yet and is
                    // started afresh.
                    if directory::is_run(d) {
                        bail!("--out {}: already holds a run (continue it with --resume)", d.display());
                    }
                    d.clone()
                }
                None => directory::default_dir(
                    Path::new("results"),
                    &directory::today_utc(),
                    &task.country.iso3,
                    survey_name,
                    &directory::short_id(&settings),
                ),
            };
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: cannot create directory", dir.display()))?;
            let config_json = json!({
                "format": "deopt-run-1",
                "deopt_version": env!("CARGO_PKG_VERSION"),
                "created": directory::today_utc(),
                "settings": settings,
                "stop": {
                    "gens": args.gens, "max_evals": args.max_evals, "target_fitness": args.target_fitness,
                    "stagnation": args.stagnation, "time_limit": args.time_limit,
                },
                "engine": { "threads": args.model.threads, "batch": args.model.batch, "gpu_layers": args.model.gpu_layers },
                "model": {
                    "path": resolved.path.display().to_string(), "sha256": resolved.sha256,
                    "name": resolved.display_name, "n_embd": n_embd,
                },
                "rows": rows,
                "persona_text": (args.init == InitKind::Persona).then(|| init::persona_text(&task.country)),
                "optimizer": config,
                "layout": layout,
                "example_prompt": train_plan.example,
                "train_items": train.iter().map(|&i| task.survey.items[i].id.clone()).collect::<Vec<_>>(),
                "holdout_items": held.iter().map(|&i| task.survey.items[i].id.clone()).collect::<Vec<_>>(),
                "repair_norm_range": [norm_range.0, norm_range.1],
                "embedding_std": stats.std,
                "baseline_loss": baseline.fitness,
                "baseline_holdout_loss": baseline_held.as_ref().map(|e| e.fitness),
            });
            crate::fsutil::write_atomic(
                &dir.join(directory::CONFIG),
                &serde_json::to_vec_pretty(&config_json)?,
            )?;
            let opt = Optimizer::new(config, initial.clone(), sub_seed(args.seed, 5))?;
            let ckpt = Checkpoint {
                format: directory::CHECKPOINT_FORMAT.into(),
                optimizer: Value::Null,
                history: Vec::new(),
                last_improvement: 0,
                best_generation: 0,
                elapsed_s: 0.0,
            };
            (dir, opt, ckpt)
        }
    };

    install_ctrlc();

    let bar = ProgressBar::with_draw_target(Some(args.gens), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("gen {pos}/{len} {wide_bar} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(opt.generation());

    let started = Instant::now();
    let meta_base = |fitness: f64, generation: u64| -> HashMap<String, String> {
        HashMap::from([
            ("model_sha256".to_string(), resolved.sha256.clone()),
            ("country".into(), task.country.iso3.clone()),
            ("survey".into(), survey_name.into()),
            ("fitness".into(), fitness.to_string()),
            ("generation".into(), generation.to_string()),
            ("seed".into(), args.seed.to_string()),
            ("layout".into(), serde_json::to_string(&layout).unwrap_or_default()),
        ])
    };

    let mut stop_reason: Option<String> = None;
    loop {
        let t0 = Instant::now();
        let before = obj.engine.stats().computed;
        let report: GenerationReport = if opt.is_initialized() {
            // Stop conditions, checked on the last row before starting a generation.
            let last = ckpt.history.last().expect("history after init");
            if let Some(r) = check_stop(&args, &ckpt, last, opt.population_size(), started) {
                stop_reason = Some(r);
                break;
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                break;
            }
            opt.step(&mut obj)?
        } else {
            opt.init(&mut obj)?
        };
        let improved = ckpt.history.last().is_none_or(|r| report.best_so_far < r.best_so_far);
        let (mut dims, mut cas) =
            ckpt.history.last().map(|r| (r.dimensions.clone(), r.cas)).unwrap_or_default();
        if improved {
            let (x, e) = obj
                .last
                .iter()
                .find(|(_, e)| e.fitness.to_bits() == report.best_so_far.to_bits())
                .ok_or_else(|| {
                anyhow!("internal error: the new best individual is not in the last batch")
            })?;
            (dims, cas) = detail(e);
            ckpt.last_improvement = report.generation;
            ckpt.best_generation = report.generation;
            let p = SoftPrompt::new(rows, n_embd, x.clone())?;
            p.save(&dir.join(directory::BEST_PROMPT), &meta_base(report.best_so_far, report.generation))?;
        }
        let holdout = match &held_plan {
            None => None,
            Some(hp) => {
                let (best, _) = opt.best();
                let p = SoftPrompt::new(rows, n_embd, obj.to_prompt_space(&[best.to_vec()])?.remove(0))?;
                let s = obj.engine.score(hp, &[&p])?;
                Some(task.evaluate(&held, &s[0])?.fitness)
            }
        };
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
            tokens: obj.engine.stats().computed - before,
        };
        ckpt.history.push(row);
        let secs = t0.elapsed().as_secs_f64();
        ckpt.elapsed_s += secs;
        ckpt.optimizer = serde_json::from_slice(&opt.to_checkpoint()?)?;
        crate::fsutil::write_atomic(
            &dir.join(directory::HISTORY),
            directory::history_csv(&ckpt.history, vsm).as_bytes(),
        )?;
        ckpt.save(&dir)?;
        append_timing(&dir, report.generation, report.trials, secs)?;
        bar.set_position(report.generation);
        bar.set_message(format!(
            "best {:.3} ({:.2} evals/s)",
            report.best_so_far,
            report.trials as f64 / secs.max(1e-9)
        ));
    }
    bar.finish_and_clear();

    let last = ckpt.history.last().expect("at least generation 0");
    if stop_reason.is_none() {
        eprintln!(
            "interrupted after generation {}; checkpoint written. Continue with: {}",
            last.generation,
            resume_command(&dir)
        );
    }
    summary(&task, &baseline, baseline_held.as_ref(), &ckpt, vsm, &dir, stop_reason.as_deref())?;
    Ok(RunOutcome { dir, finished: stop_reason.is_some() })
}

/// This process's command line with `--out`/`--resume` replaced by `--resume DIR`.
fn resume_command(dir: &Path) -> String {
    let mut parts = vec!["deopt".to_string()];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--out" || a == "--resume" {
            args.next();
        } else if !(a.starts_with("--out=") || a.starts_with("--resume=")) {
            parts.push(a);
        }
    }
    parts.push("--resume".into());
    parts.push(dir.display().to_string());
    parts.join(" ")
}

/// The first stop condition that holds after `last`, as a message.
fn check_stop(
    args: &RunArgs,
    ckpt: &Checkpoint,
    last: &HistoryRow,
    pop: usize,
    started: Instant,
) -> Option<String> {
    if let Some(x) = args.target_fitness {
        if last.best_so_far <= x {
            return Some(format!("target fitness {x} reached"));
        }
    }
    if last.generation >= args.gens {
        return Some(format!("{} generations done", args.gens));
    }
    if let Some(max) = args.max_evals {
        if last.evaluations + pop as u64 > max {
            return Some(format!("evaluation budget {max} reached"));
        }
    }
    if let Some(k) = args.stagnation {
        if last.generation.saturating_sub(ckpt.last_improvement) >= k {
            return Some(format!("no improvement for {k} generations"));
        }
    }
    if let Some(t) = args.time_limit {
        if started.elapsed() >= Duration::from_secs_f64(t) {
            return Some(format!("time limit of {t} s reached"));
        }
    }
    None
}

fn append_timing(dir: &Path, generation: u64, trials: usize, secs: f64) -> Result<()> {
    let path = dir.join(directory::TIMING);
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    if new {
        writeln!(f, "generation,trials,seconds,evaluations_per_s")?;
    }
    writeln!(f, "{generation},{trials},{secs:.3},{:.3}", trials as f64 / secs.max(1e-9))?;
    Ok(())
}

fn summary(
    task: &Task,
    baseline: &Evaluation,
    baseline_held: Option<&Evaluation>,
    ckpt: &Checkpoint,
    vsm: bool,
    dir: &Path,
    reason: Option<&str>,
) -> Result<()> {
    let last = ckpt.history.last().expect("history");
    let first = ckpt.history.first().expect("history");
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} for {} ({}): {} generations, {} evaluations{}",
        task.survey.name,
        task.country.iso3,
        task.country.name,
        last.generation,
        last.evaluations,
        reason.map(|r| format!(", stopped: {r}")).unwrap_or_default()
    )?;
    writeln!(out, "  baseline (no soft prompt) fitness: {:.4}", baseline.fitness)?;
    writeln!(out, "  initial population best fitness:   {:.4} (median {:.4})", first.best, first.median)?;
    writeln!(
        out,
        "  best fitness:                      {:.4} (generation {})",
        last.best_so_far, ckpt.best_generation
    )?;
    if let Some(h) = last.holdout {
        writeln!(
            out,
            "  held-out loss: best prompt {h:.4}, no soft prompt {}",
            baseline_held.map_or_else(|| "-".into(), |e| format!("{:.4}", e.fitness))
        )?;
    }
    if vsm {
        if let Target::Hofstede { row, .. } = &task.target {
            let target = crate::data::load::target_vector(row);
            let base = baseline.dimensions.unwrap_or([None; 6]);
            writeln!(out, "  dimension   target  best   no-prompt")?;
            for d in Dimension::ALL {
                let i = d.index();
                writeln!(
                    out,
                    "  {:<9} {:>7} {:>7} {:>7}",
                    d.code(),
                    fmt_opt(target[i]),
                    fmt_opt(last.dimensions.get(i).copied().flatten()),
                    fmt_opt(base[i])
                )?;
            }
        }
    } else if let Some(c) = last.cas {
        writeln!(
            out,
            "  CAS: best {c:.4}, no soft prompt {}",
            baseline.cas.as_ref().map_or_else(|| "-".into(), |r| format!("{:.4}", r.cas))
        )?;
    }
    writeln!(
        out,
        "  files: {}/{{{}, {}, {}, {}, {}}}",
        dir.display(),
        directory::CONFIG,
        directory::HISTORY,
        directory::TIMING,
        directory::BEST_PROMPT,
        directory::CHECKPOINT
    )?;
    Ok(())
}
