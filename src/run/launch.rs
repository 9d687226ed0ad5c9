//! Starting and resuming runs: from a [`RunSpec`] (a new run) or from a run directory alone
//! (a resume), build the engine, the baselines, the initial population and the method, then
//! hand them to [`driver::drive`].
//!
//! Determinism: the spec's seed fixes the initial population, the held-out split, the
//! subspace and the optimizer. The engine's answers do not depend on which prompts share a
//! call, and a resumed run replays the engine calls that precede a generation (baseline, one
//! training and one held-out call), so even the "tokens" column of history.csv is identical.
//! Wall-clock figures go to timing.csv.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::engine::{Engine, Plan};
use crate::optim::{Optimizer, RandomSubspace, StopReason};
use crate::prompt::init::{self, InitKind};
use crate::prompt::render::Layout;
use crate::prompt::softprompt::SoftPrompt;
use crate::run::de_method::DeMethod;
use crate::run::directory::{self, Checkpoint, ModelRecord, RunConfig};
use crate::run::driver::{self, LoopFiles, Method, Observer};
use crate::run::holdout::split_items;
use crate::run::prompt_objective::{PromptObjective, NORM_PERCENTILES};
use crate::run::seeds::{sub_seed, Purpose};
use crate::run::spec::{MethodSpec, RunSpec, StopSpec, TuneObjective};
use crate::run::tune_method::{TuneMethod, TuneState};
use crate::score::fitness::{Evaluation, Task};

/// How a run session ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run directory.
    pub dir: PathBuf,
    /// The stop condition that ended the run; `None`: interrupted (Ctrl-C).
    pub stop: Option<StopReason>,
    /// config.json as written.
    pub config: RunConfig,
    /// The checkpoint as written (history, best generation, elapsed time).
    pub checkpoint: Checkpoint,
    /// Survey, country, target.
    pub task: Task,
    /// Fitness without a soft prompt on the training items.
    pub baseline: Evaluation,
    /// Fitness without a soft prompt on the held-out items.
    pub baseline_holdout: Option<Evaluation>,
}

impl RunOutcome {
    /// A stop condition ended the run (it was not interrupted).
    pub fn finished(&self) -> bool {
        self.stop.is_some()
    }
}

/// Start a new run of `spec` in `out` (default: `results/<date>-<ISO3>-<survey>-<id>`). `out`
/// must be new, empty, or hold this same spec's config.json without a checkpoint (a run
/// killed before its first); with `force`, deopt's own run files in it are replaced and
/// anything else is left alone.
///
/// # Errors
/// Invalid settings (before any model is loaded), a directory that holds a run or files
/// deopt did not write for this run (without `force`), model or engine failures.
pub fn start(
    spec: RunSpec,
    out: Option<&Path>,
    force: bool,
    observer: &mut dyn Observer,
) -> Result<RunOutcome> {
    execute(spec, Session::New(out.map(Path::to_path_buf), force), observer)
}

/// The files a run writes into its directory (reports aside).
const RUN_FILES: [&str; 6] = [
    directory::CONFIG,
    directory::CHECKPOINT,
    directory::PREV_CHECKPOINT,
    directory::HISTORY,
    directory::TIMING,
    directory::BEST_PROMPT,
];

/// Whether a new run of `spec` may use `dir` (see [`start`]); with `force`, clears deopt's
/// run files from it.
fn claim_new_dir(dir: &Path, spec: &RunSpec, force: bool) -> Result<()> {
    let shown = dir.display();
    if !dir.exists() {
        return Ok(());
    }
    if !dir.is_dir() {
        bail!("--out {shown}: a file: expected a directory for the run");
    }
    if force {
        for f in RUN_FILES {
            let p = dir.join(f);
            if p.exists() {
                std::fs::remove_file(&p)
                    .with_context(|| format!("{}: cannot remove (--force)", p.display()))?;
            }
        }
        return Ok(());
    }
    if directory::is_run(dir) {
        bail!("--out {shown}: already holds a run: expected a new directory (resume it with --resume, or replace it with --force)");
    }
    let entries = std::fs::read_dir(dir).with_context(|| format!("--out {shown}: cannot list"))?;
    for e in entries {
        let name = e?.file_name().to_string_lossy().into_owned();
        let ours = RUN_FILES.contains(&name.as_str()) || (name.starts_with('.') && name.contains(".tmp-"));
        if !ours {
            bail!(
                "--out {shown}: holds {}, which deopt did not write: expected a new or empty directory (or --force)",
                crate::data::input_error::clip(&name)
            );
        }
    }
    if dir.join(directory::CONFIG).is_file() {
        let other = RunConfig::load(dir)?;
        if directory::spec_digest(&other.spec) != directory::spec_digest(spec) {
            bail!(
                "--out {shown}: holds the config.json of another run ({} {} seed {}): expected a new directory (or --force)",
                other.spec.task.country,
                other.spec.survey_name(),
                other.spec.seed
            );
        }
    }
    Ok(())
}

/// Continue the run in `dir` from its directory alone; `stop` replaces its stop conditions
/// (e.g. more generations), and is recorded in config.json for later resumes.
///
/// # Errors
/// `dir` is not a run, its files are inconsistent, the model file changed; model or engine
/// failures.
pub fn resume(dir: &Path, stop: Option<StopSpec>, observer: &mut dyn Observer) -> Result<RunOutcome> {
    if !directory::is_run(dir) {
        bail!("{}", directory::not_a_run(dir));
    }
    let mut config = RunConfig::load_checked(dir)?;
    let loaded = Checkpoint::load_latest(dir)?;
    let ckpt = loaded.checkpoint;
    let source =
        dir.join(if loaded.fallback.is_some() { directory::PREV_CHECKPOINT } else { directory::CHECKPOINT });
    ckpt.validate(&config, &source)?;
    ckpt.check_history_file(dir)?;
    check_state(&config, &ckpt, &source, &dir.join(directory::CONFIG))?;
    if let Some(why) = &loaded.fallback {
        eprintln!("deopt: warning: {why}");
    }
    if let Some(s) = stop {
        s.validate()?;
        if s != config.spec.stop {
            config.spec.stop = s;
            config.save(dir)?;
        }
    }
    let spec = config.spec.clone();
    execute(spec, Session::Resume(dir.to_path_buf(), Box::new(config), ckpt), observer)
}

enum Session {
    New(Option<PathBuf>, bool),
    Resume(PathBuf, Box<RunConfig>, Checkpoint),
}

fn execute(mut spec: RunSpec, session: Session, observer: &mut dyn Observer) -> Result<RunOutcome> {
    let config = spec.validate()?;
    let resolved = spec.model.resolve()?;
    // Data from another model is refused before its contents are read: that is the first
    // thing wrong with it, whatever else is.
    if let Some(data) = &spec.task.selfgen {
        let sha = crate::selfgen::data::model_sha256(data)?;
        if sha != resolved.sha256 {
            bail!(
                "--data {}: generated by model sha256 {} but this run's model {} has sha256 {}: self-generated data belongs to the model that wrote it",
                data.display(),
                sha,
                resolved.path.display(),
                resolved.sha256
            );
        }
    }
    let task = spec.task.load()?;
    spec.task.country = task.country.iso3.clone();
    if let Session::New(Some(d), force) = &session {
        claim_new_dir(d, &spec, *force)?;
    }
    let rows = spec.prompt.init.uses_rows().then_some(spec.prompt.tokens);
    let (pop, subspace) = spec.de().map_or((1, None), |de| (de.pop, de.subspace));
    spec.model.check_sizes(&resolved, rows, pop, subspace)?;
    // The gradient backend first: an architecture it lacks is refused before llama.cpp loads.
    let grad_model = match spec.tune() {
        Some(_) => Some(crate::grad::model::GradModel::load(&resolved.path)?),
        None => None,
    };
    let model = spec.model.load_resolved(&resolved)?;
    if let Session::Resume(dir, cfg, _) = &session {
        if cfg.model.sha256 != resolved.sha256 {
            bail!(
                "{}: the run used model sha256 {} but {} has sha256 {}",
                dir.display(),
                cfg.model.sha256,
                resolved.path.display(),
                resolved.sha256
            );
        }
    }
    let n_embd = model.n_embd_inp();

    // Items, plans, engine.
    let (train, held) = split_items(&task, spec.holdout, spec.seed);
    let layout = spec.layout.layout();
    let items_of = |idx: &[usize]| idx.iter().map(|&i| &task.survey.items[i]).collect::<Vec<_>>();
    let train_plan = Plan::new(&model, &items_of(&train), &layout)?;
    let held_plan = if held.is_empty() { None } else { Some(Plan::new(&model, &items_of(&held), &layout)?) };
    let bare = Layout { with_soft: false, ..layout.clone() };
    let bare_train = Plan::new(&model, &items_of(&train), &bare)?;
    let mut engine = Engine::new(&model, spec.model.engine_config())?;

    // Baseline: no soft prompt (also run on resume, so the engine's calls replay exactly).
    let empty = SoftPrompt::empty(n_embd);
    let base_scores = engine.score(&bare_train, &[&empty])?;
    let baseline = task.evaluate(&train, &base_scores[0])?;
    let baseline_holdout = if held.is_empty() {
        None
    } else {
        let bare_held = Plan::new(&model, &items_of(&held), &bare)?;
        let s = engine.score(&bare_held, &[&empty])?;
        Some(task.evaluate(&held, &s[0])?)
    };

    // Initial prompts, from the seed (tuning starts from the first of DE's population).
    let mut init_rng = Xoshiro256PlusPlus::seed_from_u64(sub_seed(spec.seed, Purpose::InitialPrompts));
    let prompts: Vec<SoftPrompt> = (0..pop)
        .map(|_| {
            init::draw_kind(&model, spec.prompt.init, spec.prompt.tokens, Some(&task.country), &mut init_rng)
        })
        .collect::<Result<_>>()?;
    let rows = prompts[0].rows();
    let stats = model.token_embeddings().stats(None)?;
    let norm_range = (stats.norm_percentile(NORM_PERCENTILES.0), stats.norm_percentile(NORM_PERCENTILES.1));
    let held_ref = held_plan.as_ref().map(|p| (p, held.as_slice()));
    let mut method = match (&spec.method, &config, &grad_model) {
        (MethodSpec::De(de), Some(config), _) => {
            let subspace = match de.subspace {
                None => None,
                Some(k) => Some(RandomSubspace::new(
                    prompts[0].data().to_vec(),
                    k,
                    stats.std as f32,
                    sub_seed(spec.seed, Purpose::Subspace),
                )?),
            };
            let obj = PromptObjective {
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
            let mut initial: Vec<Vec<f32>> = match &obj.subspace {
                Some(space) => {
                    space.initial_population(de.pop, 1.0, sub_seed(spec.seed, Purpose::SubspaceInit))
                }
                None => prompts
                    .iter()
                    .map(|p| {
                        let mut x = p.data().to_vec();
                        obj.clip_rows(&mut x);
                        x
                    })
                    .collect(),
            };
            let opt =
                Optimizer::new(config.clone(), initial.clone(), sub_seed(spec.seed, Purpose::Optimizer))?;
            AnyMethod::De(DeMethod { opt, obj, held: held_ref }, initial.swap_remove(0))
        }
        (MethodSpec::Tune(t), None, Some(gm)) => {
            let scorer = crate::grad::scorer::GradScorer::new(gm, &model)?;
            let targets = match t.objective {
                TuneObjective::Fitness => None,
                TuneObjective::Synthetic => Some(crate::score::gradient::synthetic_targets(&task, &train)?),
                TuneObjective::Selfgen => Some(crate::score::gradient::synthetic_targets(&task, &train)?),
            };
            AnyMethod::Tune(TuneMethod::new(
                scorer,
                engine,
                &train_plan,
                &task,
                &train,
                held_ref,
                targets,
                t.clone(),
                rows,
                norm_range,
                prompts[0].data().to_vec(),
                Xoshiro256PlusPlus::seed_from_u64(sub_seed(spec.seed, Purpose::Optimizer)),
            ))
        }
        _ => bail!("internal error: method settings and backend do not match"),
    };

    let (dir, run_config, mut ckpt, resumed_at) = match session {
        Session::Resume(dir, cfg, ckpt) => {
            let source = dir.join(directory::CHECKPOINT).display().to_string();
            let at = match &mut method {
                AnyMethod::De(m, first) => {
                    m.restore(&ckpt.optimizer, first, &source)?;
                    m.opt.generation()
                }
                AnyMethod::Tune(m) => {
                    m.restore(&ckpt.optimizer, &source)?;
                    m.state.step
                }
            };
            directory::trim_timing(&dir, at)?;
            (dir, *cfg, ckpt, Some(at))
        }
        Session::New(out, _) => {
            let dir = match out {
                Some(d) => d,
                None => directory::default_dir(
                    Path::new("results"),
                    &directory::today_utc(),
                    &task.country.iso3,
                    spec.survey_name(),
                    &directory::short_id(&serde_json::to_value(&spec)?),
                ),
            };
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: cannot create directory", dir.display()))?;
            let cfg = RunConfig {
                format: directory::CONFIG_FORMAT.into(),
                deopt_version: env!("CARGO_PKG_VERSION").into(),
                created: directory::today_utc(),
                spec: spec.clone(),
                model: ModelRecord {
                    path: resolved.path.display().to_string(),
                    sha256: resolved.sha256.clone(),
                    name: resolved.display_name.clone(),
                    n_embd,
                },
                rows,
                persona_text: (spec.prompt.init == InitKind::Persona)
                    .then(|| init::persona_text(&task.country)),
                optimizer: config,
                layout: layout.clone(),
                example_prompt: train_plan.example.clone(),
                train_items: train.iter().map(|&i| task.survey.items[i].id.clone()).collect(),
                holdout_items: held.iter().map(|&i| task.survey.items[i].id.clone()).collect(),
                repair_norm_range: [norm_range.0, norm_range.1],
                embedding_std: stats.std,
                baseline_loss: baseline.fitness,
                baseline_holdout_loss: baseline_holdout.as_ref().map(|e| e.fitness),
            };
            cfg.save(&dir)?;
            let ckpt = Checkpoint {
                format: directory::CHECKPOINT_FORMAT.into(),
                spec_sha256: directory::spec_digest(&spec),
                optimizer: serde_json::Value::Null,
                history: Vec::new(),
                last_improvement: 0,
                best_generation: 0,
                elapsed_s: 0.0,
            };
            (dir, cfg, ckpt, None)
        }
    };

    observer.started(&run_config, resumed_at);
    let files = LoopFiles {
        dir: &dir,
        dimensions: run_config.has_dimensions(),
        prompt_meta: HashMap::from([
            ("model_sha256".to_string(), resolved.sha256.clone()),
            ("country".into(), task.country.iso3.clone()),
            ("survey".into(), spec.survey_name().into()),
            ("seed".into(), spec.seed.to_string()),
            ("layout".into(), serde_json::to_string(&layout).unwrap_or_default()),
        ]),
    };
    let m: &mut dyn Method = match &mut method {
        AnyMethod::De(m, _) => m,
        AnyMethod::Tune(m) => m,
    };
    let stop = driver::drive(m, &mut ckpt, &files, spec.stop.rule(), observer)?;
    drop(method);
    // Trained on self-generated data: how the prompt does on the real surveys it never saw.
    if spec.task.selfgen.is_some() && stop.is_some() {
        eprintln!("deopt: scoring the best prompt on the real surveys (VSM13, WVS-7)");
        let (best, _) = crate::output::prompt_export::load_any(&dir.join(directory::BEST_PROMPT))?;
        let t = crate::run::transfer::score(&model, &spec.model, &task.country.iso3, &layout, &best)?;
        crate::fsutil::write_atomic(
            &dir.join(crate::run::transfer::TRANSFER),
            &serde_json::to_vec_pretty(&t)?,
        )?;
    }
    Ok(RunOutcome { dir, stop, config: run_config, checkpoint: ckpt, task, baseline, baseline_holdout })
}

/// The method of a run (DE with its first initial vector, which a resume needs).
#[allow(clippy::large_enum_variant)] // one per run: its size does not matter
enum AnyMethod<'m, 'p> {
    De(DeMethod<'m, 'p>, Vec<f32>),
    Tune(TuneMethod<'m, 'p>),
}

/// The checkpoint's optimizer must be the run's own (the settings, size and dimension its
/// spec gives) and agree with the history (generation, evaluations, best so far), with
/// finite state. Checked before any model is loaded.
fn check_state(config: &RunConfig, ckpt: &Checkpoint, source: &Path, config_path: &Path) -> Result<()> {
    let source = source.display();
    let settings = config.spec.validate()?;
    let Some(settings) = settings else {
        return check_tune_state(config, ckpt, &source.to_string());
    };
    if let Some((key, got, want)) = first_difference(&config.optimizer, &Some(settings.clone())) {
        bail!("{}: optimizer.{key}: {got}: expected {want}, as the run's spec gives", config_path.display());
    }
    let opt = Optimizer::from_checkpoint(&serde_json::to_vec(&ckpt.optimizer)?)
        .with_context(|| format!("{source}: optimizer"))?;
    let last = ckpt.history.last().context("checked: history is not empty")?;
    let field = |name: &str, got: String, want: String| -> Result<()> {
        bail!("{source}: optimizer {name}: {got}: expected {want}")
    };
    if let Some((key, got, want)) = first_difference(opt.config(), &settings) {
        return field(&format!("config.{key}"), got, format!("{want}, the run's setting"));
    }
    let de = config.spec.de().context("checked: a DE run")?;
    let dim = de.subspace.unwrap_or(config.rows * config.model.n_embd);
    if opt.dim() != dim {
        return field("dim", opt.dim().to_string(), format!("{dim} (the run's prompt size)"));
    }
    if opt.population_size() > de.pop || !opt.is_initialized() {
        return field(
            "population",
            opt.population_size().to_string(),
            format!("an initialised population of at most {}", de.pop),
        );
    }
    if opt.generation() != last.generation {
        return field(
            "generation",
            opt.generation().to_string(),
            format!("{}, the last history row's", last.generation),
        );
    }
    if opt.evaluations() != last.evaluations {
        return field(
            "evaluations",
            opt.evaluations().to_string(),
            format!("{}, the last history row's", last.evaluations),
        );
    }
    let best = opt.best().1;
    if best.to_bits() != last.best_so_far.to_bits() {
        return field(
            "best_fitness",
            best.to_string(),
            format!("{}, the last history row's best_so_far", last.best_so_far),
        );
    }
    let finite = opt.population().iter().chain(opt.archive()).all(|x| x.iter().all(|v| v.is_finite()))
        && opt.best().0.iter().all(|v| v.is_finite())
        && opt.fitness().iter().all(|f| f.is_finite());
    if !finite {
        return field("population", "non-finite values".into(), "finite vectors and fitness values".into());
    }
    if opt.fitness().iter().any(|f| *f < best) {
        return field("fitness", "a value below best_fitness".into(), format!("all at least {best}"));
    }
    Ok(())
}

/// A tuning checkpoint agrees with the run: its prompt size, finite values, and the history's
/// step and best fitness.
fn check_tune_state(config: &RunConfig, ckpt: &Checkpoint, source: &str) -> Result<()> {
    let s: TuneState = serde_json::from_value(ckpt.optimizer.clone())
        .map_err(|e| anyhow::anyhow!("{source}: optimizer: not a prompt-tuning state: {e}"))?;
    let last = ckpt.history.last().context("checked: history is not empty")?;
    let dim = config.rows * config.model.n_embd;
    if s.adam.x.len() != dim || s.best_x.len() != dim || !s.adam.is_consistent() {
        bail!("{source}: optimizer: a prompt of {} values: expected {dim} finite values (the run's prompt size)", s.adam.x.len());
    }
    if s.step != last.generation {
        bail!("{source}: optimizer step: {}: expected {}, the last history row's", s.step, last.generation);
    }
    if s.best.to_bits() != last.best_so_far.to_bits() {
        bail!(
            "{source}: optimizer best_fitness: {}: expected {}, the last history row's best_so_far",
            s.best,
            last.best_so_far
        );
    }
    Ok(())
}

/// The first setting in which `got` differs from `want`: (name, got, want), as JSON.
fn first_difference<T: serde::Serialize>(got: &T, want: &T) -> Option<(String, String, String)> {
    let (g, w) = (serde_json::to_value(got).ok()?, serde_json::to_value(want).ok()?);
    match (g.as_object(), w.as_object()) {
        (Some(go), Some(wo)) => wo.iter().find_map(|(k, wv)| {
            let gv = go.get(k).unwrap_or(&serde_json::Value::Null);
            (gv != wv).then(|| (k.clone(), gv.to_string(), wv.to_string()))
        }),
        _ => (g != w).then(|| ("value".into(), g.to_string(), w.to_string())),
    }
}
