//! `deopt compare`: every alignment method on the same model, countries, seeds and budget,
//! each result scored on the fitness survey, its held-out part and the other survey.
//!
//! ```text
//! <compare dir>/
//!   compare.json   format tag and the settings (a resume and a merge check them)
//!   runs/<method>-<ISO3>-s<k>/   an ordinary run directory (search and tuning methods), or
//!                  just row.json (text baselines, random-soft); row.json is written last,
//!                  once the prompt is scored: a directory with it is done and is skipped
//!   compare.csv    one row per finished (method, country, seed)
//!   table.md       the seed paper's Table 1(b) per metric, with p-values and findings
//!   *.png, *.svg   charts
//! ```
//!
//! Each (country, seed) has one run seed shared by all methods, so every method sees the same
//! held-out split and the search and tuning methods start from the same initial prompts.
//! Budgets are item forward passes (one prompt's forward pass over one item): a DE
//! evaluation costs its training items, an Adam step costs its forward-pass equivalents
//! (a backward pass counts as two forward passes) times its items.

pub mod table;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::survey::SurveyKind;
use crate::engine::{Engine, Plan};
use crate::llama::Model;
use crate::optim::Strategy;
use crate::prompt::baseline::{text_layout, Baseline};
use crate::prompt::init::{self, InitKind};
use crate::prompt::render::Layout;
use crate::prompt::softprompt::SoftPrompt;
use crate::run::directory::{self, Checkpoint};
use crate::run::driver::ProgressObserver;
use crate::run::grid;
use crate::run::holdout::split_items;
use crate::run::launch;
use crate::run::seeds::splitmix64;
use crate::run::spec::{
    DeSpec, LayoutSpec, MethodSpec, ModelSpec, RunSpec, TaskSpec, TuneObjective, TuneSpec,
};
use crate::score::item_score::ItemScore;

/// Settings file of a compare directory.
pub const COMPARE_JSON: &str = "compare.json";
/// One row per finished job.
pub const COMPARE_CSV: &str = "compare.csv";
/// The tables.
pub const TABLE_MD: &str = "table.md";
/// In a job's directory: its scores (written last).
pub const ROW_JSON: &str = "row.json";
/// Folder of the job directories.
pub const RUNS: &str = "runs";
/// Format tag of compare.json.
pub const FORMAT: &str = "deopt-compare-1";

/// A way to align the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    /// No prompt.
    None,
    /// CultureSPA's culture prompt P1.
    P1,
    /// P1 with similar and dissimilar cultures.
    P2,
    /// Self-alignment examples.
    P3,
    /// A random soft prompt drawn like the initial population.
    RandomSoft,
    /// Random search around the initial population.
    RandomSearch,
    /// DE/rand/1/bin, the seed paper's DE.
    De,
    /// SHADE.
    Shade,
    /// Black-box tuning: CMA-ES in a random subspace.
    Bbt,
    /// Adam on the fitness.
    TuneFitness,
    /// Adam on the synthetic survey (the seed paper's gradient baseline).
    TuneSynthetic,
    /// Adam on self-generated data.
    SelfgenTune,
    /// DE on self-generated data.
    SelfgenDe,
}

impl Method {
    /// Every method, in table order.
    pub const ALL: [Method; 13] = [
        Method::None,
        Method::P1,
        Method::P2,
        Method::P3,
        Method::RandomSoft,
        Method::RandomSearch,
        Method::De,
        Method::Shade,
        Method::Bbt,
        Method::TuneFitness,
        Method::TuneSynthetic,
        Method::SelfgenTune,
        Method::SelfgenDe,
    ];

    /// Name on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Method::None => "none",
            Method::P1 => "p1",
            Method::P2 => "p2",
            Method::P3 => "p3",
            Method::RandomSoft => "random-soft",
            Method::RandomSearch => "random-search",
            Method::De => "de",
            Method::Shade => "shade",
            Method::Bbt => "bbt",
            Method::TuneFitness => "tune-fitness",
            Method::TuneSynthetic => "tune-synthetic",
            Method::SelfgenTune => "selfgen-tune",
            Method::SelfgenDe => "selfgen-de",
        }
    }

    /// A text prompt (no soft rows, nothing trained).
    pub fn is_text(self) -> bool {
        matches!(self, Method::None | Method::P1 | Method::P2 | Method::P3)
    }

    /// Trained on `deopt selfgen` data.
    pub fn needs_data(self) -> bool {
        matches!(self, Method::SelfgenTune | Method::SelfgenDe)
    }

    /// A run directory of its own (search and tuning methods).
    pub fn is_run(self) -> bool {
        !self.is_text() && self != Method::RandomSoft
    }

    fn baseline(self) -> Option<Baseline> {
        match self {
            Method::None => Some(Baseline::None),
            Method::P1 => Some(Baseline::P1),
            Method::P2 => Some(Baseline::P2),
            Method::P3 => Some(Baseline::P3),
            _ => None,
        }
    }

    fn strategy(self) -> Option<Strategy> {
        match self {
            Method::RandomSearch => Some(Strategy::Random),
            Method::De | Method::SelfgenDe => Some(Strategy::Rand1Bin),
            Method::Shade => Some(Strategy::Shade),
            Method::Bbt => Some(Strategy::Cmaes),
            _ => None,
        }
    }

    fn objective(self) -> Option<TuneObjective> {
        match self {
            Method::TuneFitness => Some(TuneObjective::Fitness),
            Method::TuneSynthetic => Some(TuneObjective::Synthetic),
            Method::SelfgenTune => Some(TuneObjective::Selfgen),
            _ => None,
        }
    }

    /// Forward-pass equivalents of one step, per item (the tune method's own count).
    fn step_cost(self) -> u64 {
        match self.objective() {
            Some(TuneObjective::Fitness) => 4,
            Some(_) => 3,
            None => 1,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Method> {
        Method::ALL.into_iter().find(|m| m.name() == s.trim().to_lowercase()).ok_or_else(|| {
            anyhow!("unknown method '{s}': expected one of {}", Method::ALL.map(Method::name).join(", "))
        })
    }
}

impl Serialize for Method {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Parse a comma-separated method list.
///
/// # Errors
/// An empty list, an unknown or repeated method.
pub fn parse_methods(text: &str) -> Result<Vec<Method>> {
    let mut out: Vec<Method> = Vec::new();
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            bail!("--methods '{text}': an empty name; expected a comma-separated list");
        }
        let m: Method = part.parse().map_err(|e| anyhow!("--methods: {e}"))?;
        if out.contains(&m) {
            bail!("--methods '{text}': {m} is given twice");
        }
        out.push(m);
    }
    Ok(out)
}

/// What defines a comparison; a resume and a merge must agree on all of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareSettings {
    /// Countries, ISO3.
    pub countries: Vec<String>,
    /// Methods, in table order.
    pub methods: Vec<Method>,
    /// Seeds per (method, country).
    pub seeds: usize,
    /// Seed of the comparison; job seeds derive from it.
    pub seed: u64,
    /// The fitness survey.
    pub survey: SurveyKind,
    /// Item forward passes per job.
    pub budget: u64,
    /// Population of the search methods.
    pub pop: usize,
    /// Soft prompt rows.
    pub tokens: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// BBT's subspace dimension.
    pub subspace: usize,
    /// Held-out share of the fitness survey.
    pub holdout: f64,
    /// `deopt selfgen` directory for the selfgen methods.
    pub data: Option<PathBuf>,
    /// Model and engine.
    pub model: ModelSpec,
}

impl CompareSettings {
    /// Name of the fitness survey.
    pub fn survey_name(&self) -> &'static str {
        match self.survey {
            SurveyKind::Vsm13 => "vsm13",
            SurveyKind::Wvs => "wvs",
        }
    }
}

/// One (method, country, seed) of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Position in the plan (what `--shard` splits).
    pub index: usize,
    /// Method.
    pub method: Method,
    /// Country, ISO3.
    pub country: String,
    /// Seed number, from 0.
    pub seed_index: usize,
    /// The run seed (shared by all methods of this country and seed number).
    pub seed: u64,
}

impl Job {
    /// Directory name under `runs/`.
    pub fn name(&self) -> String {
        format!("{}-{}-s{}", self.method, self.country, self.seed_index)
    }
}

/// Every job, in order: country, seed, method.
pub fn plan(s: &CompareSettings) -> Vec<Job> {
    let mut out = Vec::new();
    for (ci, c) in s.countries.iter().enumerate() {
        for k in 0..s.seeds {
            let seed = splitmix64(s.seed ^ splitmix64(((ci as u64) << 32) | k as u64)) >> 1;
            for &m in &s.methods {
                out.push(Job { index: out.len(), method: m, country: c.clone(), seed_index: k, seed });
            }
        }
    }
    out
}

/// Check everything that can be checked without a model, before any work: methods that need
/// data have it, every country has the fitness survey's targets (and the data's answers), the
/// budget affords a step of every method. Returns the settings with countries as ISO3.
///
/// # Errors
/// The first problem, in one line.
pub fn validate(mut s: CompareSettings) -> Result<CompareSettings> {
    if s.countries.is_empty() {
        bail!("--countries: expected at least one country");
    }
    if s.methods.is_empty() {
        bail!("--methods: expected at least one method");
    }
    if s.seeds == 0 || s.seeds > 1000 {
        bail!("--seeds {}: expected 1 to 1000", s.seeds);
    }
    if !(0.0..1.0).contains(&s.holdout) {
        bail!("--holdout {}: expected a share in [0, 1)", s.holdout);
    }
    if !(s.lr.is_finite() && s.lr > 0.0) {
        bail!("--lr {}: expected a positive learning rate", s.lr);
    }
    if s.subspace == 0 {
        bail!("--subspace 0: expected at least one dimension");
    }
    let needs = s.methods.iter().filter(|m| m.needs_data()).map(|m| m.name()).collect::<Vec<_>>();
    match (&s.data, needs.is_empty()) {
        (None, false) => bail!(
            "--methods {}: needs --data DIR, the output of `deopt selfgen` for these countries",
            needs.join(",")
        ),
        (Some(d), true) => bail!("--data {}: no method uses it (selfgen-tune, selfgen-de do)", d.display()),
        _ => {}
    }
    let mut iso = Vec::new();
    for c in &s.countries {
        let spec = TaskSpec { survey: s.survey, ..TaskSpec::new(c) };
        let task = spec.load().map_err(|e| anyhow!("--countries {c}: {e:#}"))?;
        if iso.contains(&task.country.iso3) {
            bail!("--countries: {} is given twice", task.country.iso3);
        }
        let (train, _) = split_items(&task, s.holdout, 0);
        for m in s.methods.iter().filter(|m| m.is_run() && !m.needs_data()) {
            budget_steps(&s, *m, train.len())
                .map_err(|e| anyhow!("--budget {}: {e} ({m}, {c})", s.budget))?;
        }
        if let Some(d) = &s.data {
            let (survey, _) = crate::selfgen::data::load_task(d, &task.country)?;
            for m in s.methods.iter().filter(|m| m.needs_data()) {
                budget_steps(&s, *m, survey.items.len())
                    .map_err(|e| anyhow!("--budget {}: {e} ({m}, {c})", s.budget))?;
            }
        }
        iso.push(task.country.iso3);
    }
    s.countries = iso;
    Ok(s)
}

/// Resolve the model (fetching the default one on first use) and check that the selfgen
/// data, if any, was made by it.
///
/// # Errors
/// Model resolution, or data from another model.
pub fn check_data_model(s: &CompareSettings) -> Result<crate::provision::model_store::ResolvedModel> {
    let resolved = s.model.resolve()?;
    if let Some(d) = &s.data {
        let sha = crate::selfgen::data::model_sha256(d)?;
        if sha != resolved.sha256 {
            bail!(
                "--data {}: made by another model (sha256 {}), not {}: expected data from the model being compared",
                d.display(),
                &sha[..12.min(sha.len())],
                resolved.display_name
            );
        }
    }
    Ok(resolved)
}

/// Steps (DE generations after the initial population, or Adam steps) that `budget` item
/// passes buy for `method` on `items` training items.
fn budget_steps(s: &CompareSettings, method: Method, items: usize) -> Result<u64> {
    let per_eval = items.max(1) as u64;
    if method.objective().is_some() {
        let steps = s.budget / (per_eval * method.step_cost());
        if steps == 0 {
            bail!("buys no Adam step ({} item passes per step)", per_eval * method.step_cost());
        }
        return Ok(steps);
    }
    let evals = s.budget / per_eval;
    let pop = s.pop as u64;
    if evals < 2 * pop {
        bail!(
            "buys {evals} evaluations: expected at least two populations of {pop} ({} item passes)",
            2 * pop * per_eval
        );
    }
    Ok(evals / pop - 1)
}

/// The run spec of a search or tuning job.
///
/// # Errors
/// A country or data directory that cannot be loaded.
pub fn job_spec(s: &CompareSettings, job: &Job) -> Result<RunSpec> {
    let mut spec = RunSpec::new(&job.country);
    spec.task.survey = s.survey;
    spec.model = s.model.clone();
    spec.prompt.tokens = s.tokens;
    spec.seed = job.seed;
    spec.holdout = if job.method.needs_data() { 0.0 } else { s.holdout };
    if job.method.needs_data() {
        spec.task.selfgen = s.data.clone();
    }
    let task = spec.task.load()?;
    let (train, _) = split_items(&task, spec.holdout, spec.seed);
    let steps = budget_steps(s, job.method, train.len())?;
    spec.stop.gens = steps;
    if let Some(strategy) = job.method.strategy() {
        spec.method = MethodSpec::De(DeSpec {
            strategy,
            pop: s.pop,
            subspace: (job.method == Method::Bbt).then_some(s.subspace),
            ..DeSpec::default()
        });
    } else if let Some(objective) = job.method.objective() {
        let mut t = TuneSpec { objective, ..TuneSpec::default() };
        t.adam.lr = s.lr;
        if objective == TuneObjective::Selfgen {
            t.data = s.data.clone();
        }
        spec.method = MethodSpec::Tune(t);
    } else {
        bail!("internal error: {} has no run", job.method);
    }
    Ok(spec)
}

/// The scores of one job's prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Method.
    pub method: Method,
    /// Country, ISO3.
    pub country: String,
    /// Seed number.
    pub seed_index: usize,
    /// Run seed.
    pub seed: u64,
    /// Item forward passes allowed.
    pub budget: u64,
    /// Item forward passes used (0 for text prompts).
    pub used: u64,
    /// Wall-clock seconds of the job (the run over all its sessions, plus scoring).
    pub wall_s: f64,
    /// Fitness on the fitness survey's training items (lower is better).
    pub train: f64,
    /// Fitness on its held-out items.
    pub heldout: Option<f64>,
    /// VSM13 loss over all items (lower is better); None without Hofstede targets.
    pub vsm13: Option<f64>,
    /// WVS-7 CAS over all items (higher is better); None without WVS data.
    pub wvs: Option<f64>,
    /// VSM13 dimensions PDI..IVR of the prompt.
    pub dims: Vec<Option<f64>>,
    /// Convergence: (item passes, best fitness on the training items) per step of the run.
    #[serde(default)]
    pub curve: Vec<(u64, f64)>,
}

/// Read compare.json.
///
/// # Errors
/// Not a compare directory.
pub fn read_settings(dir: &Path) -> Result<CompareSettings> {
    let path = dir.join(COMPARE_JSON);
    let text = std::fs::read_to_string(&path)
        .map_err(|_| anyhow!("{}: not a compare directory (no {COMPARE_JSON})", dir.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("{}: not JSON ({e})", path.display()))?;
    if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        bail!("{}: expected format {FORMAT}", path.display());
    }
    serde_json::from_value(v["settings"].clone()).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Create `dir` for `s`, or check that it holds the same comparison.
///
/// # Errors
/// A directory with another comparison, or I/O failure.
pub fn init_dir(dir: &Path, s: &CompareSettings) -> Result<()> {
    if dir.join(COMPARE_JSON).is_file() {
        let old = read_settings(dir)?;
        if &old != s {
            bail!(
                "--out {}: holds a comparison with other settings: expected a new directory or the same flags",
                dir.display()
            );
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir.join(RUNS)).with_context(|| format!("{}: cannot create", dir.display()))?;
    let v = serde_json::json!({ "format": FORMAT, "settings": s });
    crate::fsutil::write_atomic(&dir.join(COMPARE_JSON), serde_json::to_string_pretty(&v)?.as_bytes())
}

/// Scores prompts on the surveys; text-baseline item scores are computed once per session.
struct Scorer<'m> {
    model: &'m Model,
    engine: Engine<'m>,
    base: Layout,
    cache: BTreeMap<(Method, String, &'static str, Vec<usize>), Vec<ItemScore>>,
}

impl<'m> Scorer<'m> {
    /// Score `prompt` (or the text baseline of `method`) for `job`.
    fn score(&mut self, s: &CompareSettings, job: &Job, prompt: Option<&SoftPrompt>) -> Result<Row> {
        let empty = SoftPrompt::empty(self.model.n_embd_inp());
        let mut row = Row {
            method: job.method,
            country: job.country.clone(),
            seed_index: job.seed_index,
            seed: job.seed,
            budget: s.budget,
            used: 0,
            wall_s: 0.0,
            train: f64::NAN,
            heldout: None,
            vsm13: None,
            wvs: None,
            dims: vec![None; 6],
            curve: Vec::new(),
        };
        let other = match s.survey {
            SurveyKind::Vsm13 => SurveyKind::Wvs,
            SurveyKind::Wvs => SurveyKind::Vsm13,
        };
        for kind in [s.survey, other] {
            let spec = TaskSpec { survey: kind, ..TaskSpec::new(&job.country) };
            let task = match spec.load() {
                Ok(t) => t,
                // The other survey may lack the country; the fitness survey was checked.
                Err(_) if kind == other => continue,
                Err(e) => return Err(e),
            };
            let n = task.survey.items.len();
            let name = if kind == SurveyKind::Vsm13 { "vsm13" } else { "wvs" };
            // The fitness survey's training and held-out items are scored as separate plans,
            // as the runs score them: the training figure is then exactly the run's own.
            let (train, held) = if kind == s.survey {
                split_items(&task, s.holdout, job.seed)
            } else {
                ((0..n).collect(), Vec::new())
            };
            let mut slots: Vec<Option<ItemScore>> = vec![None; n];
            for (is_train, group) in [(true, &train), (false, &held)].into_iter().filter(|g| !g.1.is_empty())
            {
                let items: Vec<_> = group.iter().map(|&i| &task.survey.items[i]).collect();
                let key = (job.method, job.country.clone(), name, group.clone());
                let scores = match (job.method.baseline(), self.cache.get(&key)) {
                    (Some(_), Some(c)) => c.clone(),
                    (Some(b), None) => {
                        let layout = text_layout(b, &self.base, &task, kind)?;
                        let plan = Plan::new(self.model, &items, &layout)?;
                        let sc = self.engine.score(&plan, &[&empty])?.remove(0);
                        self.cache.insert(key, sc.clone());
                        sc
                    }
                    (None, _) => {
                        let p = prompt
                            .ok_or_else(|| anyhow!("internal error: {} without a prompt", job.method))?;
                        let plan = Plan::new(self.model, &items, &self.base)?;
                        self.engine.score(&plan, &[p])?.remove(0)
                    }
                };
                if kind == s.survey {
                    let ev = task.evaluate(group, &scores)?;
                    if is_train {
                        row.train = ev.fitness;
                    } else {
                        row.heldout = Some(ev.fitness);
                    }
                }
                for (&i, sc) in group.iter().zip(scores) {
                    slots[i] = Some(sc);
                }
            }
            let scores: Vec<ItemScore> = slots.into_iter().map(|s| s.expect("every item scored")).collect();
            let all: Vec<usize> = (0..n).collect();
            let ev = task.evaluate(&all, &scores)?;
            match kind {
                SurveyKind::Vsm13 => {
                    row.vsm13 = Some(ev.fitness);
                    if let Some(d) = ev.dimensions {
                        row.dims = d.to_vec();
                    }
                }
                SurveyKind::Wvs => row.wvs = ev.cas.as_ref().map(|c| c.cas),
            }
        }
        Ok(row)
    }
}

/// What a call of [`run_jobs`] did.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Jobs finished by this call.
    pub done: usize,
    /// Jobs found finished and skipped.
    pub skipped: usize,
    /// A run was interrupted (Ctrl-C).
    pub interrupted: bool,
}

/// Run this shard's jobs (all with `shard` None) in `dir`: finished jobs are skipped, a
/// checkpointed run resumed, the rest started. `note` gets one line per job.
///
/// # Errors
/// A job that fails, named.
pub fn run_jobs(
    dir: &Path,
    s: &CompareSettings,
    shard: Option<(usize, usize)>,
    mut note: impl FnMut(&str),
) -> Result<Progress> {
    if let Some(sh) = shard {
        grid::claim_shard(dir, sh)?;
    }
    let mine: Vec<Job> =
        plan(s).into_iter().filter(|j| shard.is_none_or(|(i, n)| j.index % n == i - 1)).collect();
    let mut progress = Progress::default();
    let todo: Vec<&Job> =
        mine.iter().filter(|j| !dir.join(RUNS).join(j.name()).join(ROW_JSON).is_file()).collect();
    progress.skipped = mine.len() - todo.len();
    if progress.skipped > 0 {
        note(&format!("compare: {} of {} jobs finished already, skipped", progress.skipped, mine.len()));
    }
    if todo.is_empty() {
        return Ok(progress);
    }
    let resolved = check_data_model(s)?;
    let model = s.model.load_resolved(&resolved)?;
    let base = LayoutSpec::default().layout();
    let mut scorer = Scorer {
        model: &model,
        engine: Engine::new(&model, s.model.engine_config())?,
        base,
        cache: BTreeMap::new(),
    };
    for (k, job) in todo.iter().enumerate() {
        let rd = dir.join(RUNS).join(job.name());
        let t0 = Instant::now();
        let label = format!("compare {}/{} {}: ", k + 1, todo.len(), job.name());
        note(&format!("{label}{}", if directory::is_run(&rd) { "resuming" } else { "starting" }));
        std::fs::create_dir_all(&rd).with_context(|| format!("{}: cannot create", rd.display()))?;
        let (mut row, run_s) = if job.method.is_run() {
            let spec = job_spec(s, job)?;
            let gens = spec.stop.gens;
            let unit = if job.method.objective().is_some() { "step" } else { "gen" };
            let mut obs = ProgressObserver::new(&label, gens, false).unit(unit);
            let outcome = match grid::run_state(&rd, gens) {
                grid::RunState::Missing => launch::start(spec, Some(&rd), false, &mut obs),
                _ => launch::resume(&rd, None, &mut obs),
            }
            .map_err(|e| anyhow!("{}: {e:#}", rd.display()))?;
            if !outcome.finished() {
                progress.interrupted = true;
                return Ok(progress);
            }
            let (prompt, _) = crate::output::prompt_export::load_any(&rd.join(directory::BEST_PROMPT))?;
            let mut row = scorer.score(s, job, Some(&prompt))?;
            let ckpt = Checkpoint::load(&rd)?;
            let (train, _) = split_items(&outcome.task, outcome.config.spec.holdout, job.seed);
            let per = train.len() as u64;
            row.curve = ckpt.history.iter().map(|h| (h.evaluations * per, h.best_so_far)).collect();
            row.used = ckpt.history.last().map_or(0, |h| h.evaluations * per);
            (row, ckpt.elapsed_s)
        } else if job.method == Method::RandomSoft {
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(job.seed);
            let p = init::draw(&model, InitKind::Vocab, s.tokens, &mut rng)?;
            let mut row = scorer.score(s, job, Some(&p))?;
            let task = TaskSpec { survey: s.survey, ..TaskSpec::new(&job.country) }.load()?;
            row.used = split_items(&task, s.holdout, job.seed).0.len() as u64;
            (row, 0.0)
        } else {
            (scorer.score(s, job, None)?, 0.0)
        };
        row.wall_s = run_s + t0.elapsed().as_secs_f64();
        crate::fsutil::write_atomic(&rd.join(ROW_JSON), serde_json::to_string(&row)?.as_bytes())?;
        progress.done += 1;
        note(&format!(
            "{label}done in {:.0} s: train {:.4}{}{}",
            t0.elapsed().as_secs_f64(),
            row.train,
            row.vsm13.map(|v| format!(", VSM13 loss {v:.2}")).unwrap_or_default(),
            row.wvs.map(|v| format!(", WVS CAS {v:.2}")).unwrap_or_default()
        ));
    }
    Ok(progress)
}

/// The finished rows of the comparison in `dir`, in plan order.
///
/// # Errors
/// A row.json that cannot be read.
pub fn collect(dir: &Path, s: &CompareSettings) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for job in plan(s) {
        let p = dir.join(RUNS).join(job.name()).join(ROW_JSON);
        if !p.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
        out.push(serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", p.display()))?);
    }
    Ok(out)
}

/// Write compare.csv, table.md and the charts from the finished rows.
///
/// # Errors
/// I/O or drawing failure.
pub fn write_outputs(dir: &Path, s: &CompareSettings) -> Result<(Vec<Row>, Vec<PathBuf>)> {
    let rows = collect(dir, s)?;
    let mut files = vec![dir.join(COMPARE_CSV), dir.join(TABLE_MD)];
    crate::fsutil::write_atomic(&dir.join(COMPARE_CSV), table::compare_csv(&rows).as_bytes())?;
    let md = table::table_md(s, &rows, plan(s).len());
    crate::fsutil::write_atomic(&dir.join(TABLE_MD), md.as_bytes())?;
    match table::charts(dir, s, &rows) {
        Ok(c) => files.extend(c),
        Err(e) => eprintln!("deopt: warning: compare charts not drawn: {e:#}"),
    }
    Ok((rows, files))
}

/// Merge shard directories of one comparison into `out`.
///
/// # Errors
/// Directories of different comparisons, or I/O failure.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<(CompareSettings, Vec<Row>, Vec<PathBuf>)> {
    let first = dirs.first().ok_or_else(|| anyhow!("compare merge: give at least one compare directory"))?;
    let s = read_settings(first)?;
    for d in &dirs[1..] {
        if read_settings(d)? != s {
            bail!("{}: a comparison with other settings than {}", d.display(), first.display());
        }
    }
    init_dir(out, &s)?;
    for d in dirs {
        if d.canonicalize().ok() == out.canonicalize().ok() {
            continue;
        }
        for job in plan(&s) {
            let (src, dst) = (d.join(RUNS).join(job.name()), out.join(RUNS).join(job.name()));
            if src.join(ROW_JSON).is_file() && !dst.join(ROW_JSON).is_file() {
                // row.json last: a copy cut short is not a finished job.
                grid::copy_files_last(&src, &dst, ROW_JSON)?;
            }
        }
    }
    let (rows, files) = write_outputs(out, &s)?;
    Ok((s, rows, files))
}
