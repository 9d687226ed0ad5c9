//! The run specification: everything that defines a run, typed and serialisable.
//!
//! It is what config.json stores under `spec` and what a resume reads back, so a run
//! directory alone says how to continue it. Only [`StopSpec`] may change on resume. The
//! defaults here are the command line's defaults (`deopt run --help` shows them).

use std::path::PathBuf;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::data::load;
use crate::data::survey::SurveyKind;
use crate::data::targets::WvsChoice;
use crate::engine::EngineConfig;
use crate::llama::{Model, ModelParams};
use crate::optim::{Config, StopRule, Strategy};
use crate::prompt::init::InitKind;
use crate::prompt::render::{ItemStyle, Layout, SoftPosition, TemplateKind};
use crate::provision::model_store::{resolve_model, Precision, ResolvedModel};
use crate::score::fitness::{AnswerMode, CasMetric, Target, Task};
use crate::score::metrics::{Constants, LossKind};

/// A value of the spec that is out of range: which field, the value, what was expected. The
/// CLI turns the field into its flag (`tokens` -> `--tokens`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} {value}: {expected}")]
pub struct SpecError {
    /// Field name, as the flag without dashes and with `_` (e.g. `time_limit`).
    pub field: &'static str,
    /// The value as given.
    pub value: String,
    /// What was expected.
    pub expected: String,
}

impl SpecError {
    fn new(field: &'static str, value: impl ToString, expected: &str) -> SpecError {
        SpecError { field, value: value.to_string(), expected: expected.to_string() }
    }

    /// The command-line flag of the field.
    pub fn flag(&self) -> String {
        format!("--{}", self.field.replace('_', "-"))
    }
}

/// What is scored: survey, country, metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Country (ISO3 once a run has started; any name `deopt countries` knows before).
    pub country: String,
    /// Survey the model answers.
    pub survey: SurveyKind,
    /// Instrument file instead of the built-in one.
    pub survey_file: Option<PathBuf>,
    /// VSM13 index constants.
    pub constants: Constants,
    /// VSM13 loss.
    pub loss: LossKind,
    /// WVS fitness metric.
    pub metric: CasMetric,
    /// WVS reference data.
    pub wvs_source: WvsChoice,
    /// How distributions become answers.
    pub answers: AnswerMode,
    /// Self-generated data (`deopt selfgen`'s directory): when set, the items are its questions
    /// kept for the country and the fitness is the cross-entropy to their culture-aware answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selfgen: Option<PathBuf>,
}

impl TaskSpec {
    /// The defaults for `country`.
    pub fn new(country: &str) -> TaskSpec {
        TaskSpec {
            country: country.to_string(),
            survey: SurveyKind::Vsm13,
            survey_file: None,
            constants: Constants::default(),
            loss: LossKind::default(),
            metric: CasMetric::default(),
            wvs_source: WvsChoice::default(),
            answers: AnswerMode::default(),
            selfgen: None,
        }
    }

    /// Load survey, country and targets.
    ///
    /// # Errors
    /// A bad survey file, an unknown country, a country without the survey's targets.
    pub fn load(&self) -> Result<Task> {
        let country = load::resolve_country(&self.country)?;
        if let Some(dir) = &self.selfgen {
            let (survey, target) = crate::selfgen::data::load_task(dir, &country)?;
            return Ok(Task { survey, country, target, mode: self.answers });
        }
        let survey = load::load_survey(self.survey, self.survey_file.as_deref())?;
        let target = match self.survey {
            SurveyKind::Vsm13 => Target::Hofstede {
                row: load::hofstede_target(&country)?,
                constants: self.constants,
                loss: self.loss,
            },
            SurveyKind::Wvs => {
                let reference = load::wvs_target(&country, self.wvs_source)?;
                load::check_reference(&survey, &reference)?;
                Target::Wvs { reference, metric: self.metric }
            }
        };
        Ok(Task { survey, country, target, mode: self.answers })
    }
}

/// Which model and how llama.cpp runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// GGUF file; `None`: the default model.
    pub path: Option<PathBuf>,
    /// Weights of the default model.
    pub precision: Precision,
    /// CPU threads (`None`: all cores).
    pub threads: Option<usize>,
    /// Most tokens per decode call.
    pub batch: usize,
    /// Most KV cells (0: the model's training context).
    pub ctx: usize,
    /// Layers offloaded to a GPU.
    pub gpu_layers: i32,
    /// Prompts scored side by side in each decode call (1: the exact per-prompt schedule).
    /// Runs recorded before this setting existed used the exact schedule.
    #[serde(default = "exact_schedule")]
    pub batch_prompts: usize,
}

fn exact_schedule() -> usize {
    1
}

/// Prompts per decode group unless `--batch-prompts` or `--exact` says otherwise: 8 in a CUDA
/// build (fuller calls keep the GPU busy); 1, the exact schedule, on a CPU, where batching
/// measured no faster (README, "Exact and batched scoring").
pub const DEFAULT_BATCH_PROMPTS: usize = if cfg!(feature = "cuda") { 8 } else { 1 };

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            path: None,
            precision: Precision::F16,
            threads: None,
            batch: 512,
            ctx: 0,
            gpu_layers: crate::llama::DEFAULT_GPU_LAYERS,
            batch_prompts: DEFAULT_BATCH_PROMPTS,
        }
    }
}

impl ModelSpec {
    /// Resolve (fetching the default model if needed) and load the model.
    ///
    /// # Errors
    /// A missing or unreadable model file, a failed fetch.
    pub fn load(&self) -> Result<(ResolvedModel, Model)> {
        let resolved = self.resolve()?;
        let model = self.load_resolved(&resolved)?;
        Ok((resolved, model))
    }

    /// Resolve the model file (fetching the default model if needed) without loading it.
    ///
    /// # Errors
    /// A missing model file, a failed fetch.
    pub fn resolve(&self) -> Result<ResolvedModel> {
        Ok(resolve_model(self.path.as_deref(), self.precision)?)
    }

    /// Load a resolved model.
    ///
    /// # Errors
    /// An unreadable or unsupported model file.
    pub fn load_resolved(&self, resolved: &ResolvedModel) -> Result<Model> {
        Ok(Model::load(&resolved.path, &ModelParams { n_gpu_layers: self.gpu_layers })?)
    }

    /// Size checks that need only the model file's metadata (its context length and width),
    /// done before the model loads: a soft prompt must fit in the context, and a population
    /// of `pop` prompts of `rows` rows must fit in memory.
    ///
    /// # Errors
    /// The first size that cannot work, as a [`SpecError`] naming its setting.
    pub fn check_sizes(
        &self,
        resolved: &ResolvedModel,
        rows: Option<usize>,
        pop: usize,
        subspace: Option<usize>,
    ) -> Result<()> {
        let gguf = crate::llama::GgufFile::open(&resolved.path)?;
        let arch = gguf.architecture().unwrap_or_default();
        let num = |key: &str| gguf.meta_str(&format!("{arch}.{key}")).and_then(|v| v.parse::<usize>().ok());
        let (Some(n_ctx), Some(n_embd)) = (num("context_length"), num("embedding_length")) else {
            return Ok(()); // the loader reports a model without these
        };
        let limit = if self.ctx > 0 { self.ctx.min(n_ctx) } else { n_ctx };
        let Some(rows) = rows else { return Ok(()) };
        if rows >= limit {
            return Err(SpecError::new(
                "tokens",
                rows,
                &format!("expected fewer than {limit}, the context the model allows (tokens of the item come after the prompt)"),
            )
            .into());
        }
        if let Some(k) = subspace.filter(|&k| k > rows * n_embd) {
            return Err(SpecError::new(
                "subspace",
                k,
                &format!(
                    "expected at most {}, the prompt's own dimension ({rows} x {n_embd})",
                    rows * n_embd
                ),
            )
            .into());
        }
        // The optimizer holds the population, its trials and an archive: about three copies.
        const MAX_BYTES: u128 = 2 << 30;
        let bytes = pop as u128 * rows as u128 * n_embd as u128 * 4;
        if bytes > MAX_BYTES {
            return Err(SpecError::new(
                "pop",
                pop,
                &format!(
                    "expected at most {} prompts of {rows} x {n_embd} values (the population must fit in 2 GiB)",
                    MAX_BYTES / (rows as u128 * n_embd as u128 * 4).max(1)
                ),
            )
            .into());
        }
        Ok(())
    }

    /// Engine settings.
    pub fn engine_config(&self) -> EngineConfig {
        let mut c = EngineConfig {
            batch: self.batch,
            max_ctx: (self.ctx > 0).then_some(self.ctx),
            prompt_group: self.batch_prompts,
            // A GPU wants whole decode calls; a CPU keeps up with exact only in narrow waves
            // (also a CUDA build that finds no GPU: it runs on the CPU).
            wave: (self.gpu_layers == 0 || !crate::llama::gpu_offload_available())
                .then_some(crate::engine::CPU_WAVE),
            ..EngineConfig::default()
        };
        if let Some(t) = self.threads {
            c.threads = t.max(1);
        }
        c
    }
}

/// Where the soft prompt goes and how items are worded.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutSpec {
    /// Chat template or plain text.
    pub template: TemplateKind,
    /// Position of the soft prompt.
    pub soft_position: SoftPosition,
    /// Item wording.
    pub item_style: ItemStyle,
}

impl LayoutSpec {
    /// The layout for a soft prompt (no system message).
    pub fn layout(&self) -> Layout {
        Layout {
            template: self.template,
            soft_position: self.soft_position,
            with_soft: true,
            style: self.item_style,
            system: None,
            examples: None,
        }
    }
}

/// The soft prompt being optimised.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    /// Rows T (`init = persona` takes its rows from the text instead).
    pub tokens: usize,
    /// How the initial prompts are drawn.
    pub init: InitKind,
}

impl Default for PromptSpec {
    fn default() -> Self {
        PromptSpec { tokens: 10, init: InitKind::Vocab }
    }
}

/// Differential evolution (or its adaptive variants, or random search) over soft prompts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeSpec {
    /// Strategy.
    pub strategy: Strategy,
    /// Population size.
    pub pop: usize,
    /// Mutation factor F.
    pub mutation: f64,
    /// Recombination rate CR.
    pub recombination: f64,
    /// Search a random subspace of this dimension (black-box tuning) instead of prompt space.
    pub subspace: Option<usize>,
}

impl Default for DeSpec {
    fn default() -> Self {
        DeSpec { strategy: Strategy::Rand1Bin, pop: 32, mutation: 0.5, recombination: 0.9, subspace: None }
    }
}

/// What prompt tuning minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TuneObjective {
    /// The fitness DE minimises, differentiated end to end (expected answers).
    #[default]
    Fitness,
    /// Cross-entropy to a synthetic survey: per-item answer distributions that reproduce the
    /// country's Hofstede scores (VSM13), or the country's answer distributions (WVS).
    Synthetic,
    /// Cross-entropy to self-generated culture-aware answers (`deopt selfgen`).
    Selfgen,
}

impl std::fmt::Display for TuneObjective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TuneObjective::Fitness => "fitness",
            TuneObjective::Synthetic => "synthetic",
            TuneObjective::Selfgen => "selfgen",
        })
    }
}

/// Prompt tuning: Adam on the soft prompt, gradients from the candle backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneSpec {
    /// What is minimised.
    pub objective: TuneObjective,
    /// Self-generated data (objective selfgen).
    pub data: Option<PathBuf>,
    /// Adam's settings.
    pub adam: crate::optim::adam::AdamConfig,
    /// Items per step for the cross-entropy objectives (None: all training items). The
    /// fitness objective always uses every training item: its indices need them all.
    pub batch_items: Option<usize>,
    /// Items per forward pass (bounds memory).
    pub chunk: usize,
    /// Score the prompt with the llama.cpp engine (the official fitness) every this many steps.
    pub eval_every: u64,
}

impl Default for TuneSpec {
    fn default() -> Self {
        TuneSpec {
            objective: TuneObjective::Fitness,
            data: None,
            adam: crate::optim::adam::AdamConfig::default(),
            batch_items: None,
            // Peak memory of `deopt bench tune` on the default model, 24 items, T = 10: 1.8 GB
            // with chunks of 4, 2.4 GB with 8 (a step about 20% faster than with 4).
            chunk: 8,
            eval_every: 1,
        }
    }
}

/// The method that improves the prompt. A step of a method is one history row (a DE
/// generation, an Adam step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum MethodSpec {
    /// Differential evolution.
    De(DeSpec),
    /// Prompt tuning with gradients.
    Tune(TuneSpec),
}

/// When to stop; the only part of a spec that may change on resume.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopSpec {
    /// Stop after this many steps (generation 0 is the initial population).
    pub gens: u64,
    /// Stop before an evaluation budget would be exceeded.
    pub max_evals: Option<u64>,
    /// Stop once the best fitness is at or below this.
    pub target_fitness: Option<f64>,
    /// Stop after this many steps without improvement.
    pub stagnation: Option<u64>,
    /// Stop after this many seconds of one session.
    pub time_limit: Option<f64>,
}

impl Default for StopSpec {
    fn default() -> Self {
        StopSpec { gens: 200, max_evals: None, target_fitness: None, stagnation: None, time_limit: None }
    }
}

impl StopSpec {
    /// Check the values.
    ///
    /// # Errors
    /// A [`SpecError`] naming the field.
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(t) = self.time_limit {
            if !(t.is_finite() && t > 0.0) {
                return Err(SpecError::new("time_limit", t, "expected a positive number of seconds"));
            }
        }
        if let Some(x) = self.target_fitness {
            if x.is_nan() {
                return Err(SpecError::new("target_fitness", x, "expected a number"));
            }
        }
        if self.max_evals == Some(0) {
            return Err(SpecError::new("max_evals", 0, "expected a budget of at least one evaluation"));
        }
        Ok(())
    }

    /// The stop rule; its wall clock starts now.
    pub fn rule(&self) -> StopRule {
        let mut r = StopRule::new().max_generations(self.gens);
        r.max_evaluations = self.max_evals;
        r.target_fitness = self.target_fitness;
        r.stagnation_generations = self.stagnation;
        r.wall_clock = self.time_limit.map(std::time::Duration::from_secs_f64);
        r
    }
}

/// Everything that defines a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// The method and its settings.
    pub method: MethodSpec,
    /// Survey, country, metric.
    pub task: TaskSpec,
    /// Model and engine.
    pub model: ModelSpec,
    /// Prompt layout.
    pub layout: LayoutSpec,
    /// The soft prompt.
    pub prompt: PromptSpec,
    /// Share of the survey kept out of the fitness, in [0, 1).
    pub holdout: f64,
    /// Seed of every random draw.
    pub seed: u64,
    /// Stop conditions.
    pub stop: StopSpec,
}

impl RunSpec {
    /// A DE run for `country` with every other setting at its default.
    pub fn new(country: &str) -> RunSpec {
        RunSpec {
            method: MethodSpec::De(DeSpec::default()),
            task: TaskSpec::new(country),
            model: ModelSpec::default(),
            layout: LayoutSpec::default(),
            prompt: PromptSpec::default(),
            holdout: 0.0,
            seed: 0,
            stop: StopSpec::default(),
        }
    }

    /// The DE settings (None for prompt tuning).
    pub fn de(&self) -> Option<&DeSpec> {
        match &self.method {
            MethodSpec::De(d) => Some(d),
            MethodSpec::Tune(_) => None,
        }
    }

    /// The tuning settings (None for DE).
    pub fn tune(&self) -> Option<&TuneSpec> {
        match &self.method {
            MethodSpec::Tune(t) => Some(t),
            MethodSpec::De(_) => None,
        }
    }

    /// Cheap checks of every value, before any model is loaded; returns the DE optimizer's
    /// settings (None for prompt tuning).
    ///
    /// # Errors
    /// A [`SpecError`] naming the field, or the optimizer's own one-line error.
    pub fn validate(&self) -> Result<Option<Config>> {
        let config = match &self.method {
            MethodSpec::De(de) => {
                let mut config = Config {
                    mutation: de.mutation,
                    recombination: de.recombination,
                    ..Config::new(de.strategy)
                };
                if de.strategy == Strategy::Lshade {
                    config.max_evaluations =
                        Some(self.stop.max_evals.unwrap_or(de.pop as u64 * (self.stop.gens + 1)));
                }
                config.validate(de.pop, de.subspace.unwrap_or(1).max(1))?;
                if de.subspace == Some(0) {
                    return Err(
                        SpecError::new("subspace", 0, "the subspace needs at least one dimension").into()
                    );
                }
                Some(config)
            }
            MethodSpec::Tune(t) => {
                t.adam.validate().map_err(|e| SpecError::new(e.field, e.value, e.expected))?;
                if self.stop.gens == 0 {
                    return Err(SpecError::new("steps", 0, "expected at least one Adam step").into());
                }
                if t.chunk == 0 {
                    return Err(
                        SpecError::new("chunk", 0, "expected at least one item per forward pass").into()
                    );
                }
                if t.batch_items == Some(0) {
                    return Err(
                        SpecError::new("batch_items", 0, "expected at least one item per step").into()
                    );
                }
                if t.eval_every == 0 {
                    return Err(
                        SpecError::new("eval_every", 0, "expected a number of steps of at least 1").into()
                    );
                }
                if (t.objective == TuneObjective::Selfgen) != self.task.selfgen.is_some() {
                    return Err(SpecError::new(
                        "data",
                        self.task
                            .selfgen
                            .as_ref()
                            .or(t.data.as_ref())
                            .map_or("(none)".into(), |d| d.display().to_string()),
                        "expected --data DIR exactly with --objective selfgen",
                    )
                    .into());
                }
                if t.objective == TuneObjective::Selfgen && t.data.is_none() {
                    return Err(SpecError::new(
                        "objective",
                        "selfgen",
                        "needs --data DIR, the output of deopt selfgen",
                    )
                    .into());
                }
                if self.task.answers != AnswerMode::Expected {
                    return Err(SpecError::new(
                        "answers",
                        format!("{:?}", self.task.answers).to_lowercase(),
                        "prompt tuning differentiates expected answers; argmax and generated answers have no gradient",
                    )
                    .into());
                }
                None
            }
        };
        if !(0.0..1.0).contains(&self.holdout) {
            return Err(SpecError::new("holdout", self.holdout, "expected a fraction in [0, 1)").into());
        }
        if self.task.answers == AnswerMode::Generate {
            return Err(SpecError::new(
                "answers",
                "generate",
                "optimisation scores answer distributions; use expected or argmax (generate is for deopt eval)",
            )
            .into());
        }
        if self.prompt.tokens == 0 && self.prompt.init.uses_rows() {
            return Err(SpecError::new("tokens", 0, "a soft prompt needs at least one row").into());
        }
        if self.model.threads == Some(0) {
            return Err(SpecError::new("threads", 0, "expected at least one thread").into());
        }
        let c = &self.task.constants.0;
        if let Some(v) = c.iter().find(|v| !(v.is_finite() && v.abs() <= crate::score::metrics::MAX_CONSTANT))
        {
            return Err(SpecError::new(
                "constants",
                v,
                &format!("expected numbers within +-{}", crate::score::metrics::MAX_CONSTANT),
            )
            .into());
        }
        self.stop.validate()?;
        Ok(config)
    }

    /// The survey's short name (`vsm13`, `wvs`).
    pub fn survey_name(&self) -> &'static str {
        if self.task.selfgen.is_some() {
            return "selfgen";
        }
        match self.task.survey {
            SurveyKind::Vsm13 => "vsm13",
            SurveyKind::Wvs => "wvs",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips_through_json_and_rejects_unknown_fields() {
        let mut s = RunSpec::new("SAU");
        s.stop.max_evals = Some(100);
        s.task.wvs_source = WvsChoice::Culturespa;
        let text = serde_json::to_string(&s).unwrap();
        assert!(text.contains("\"kind\":\"de\""), "{text}");
        assert!(text.contains("\"wvs_source\":\"culturespa\""), "{text}");
        let back: RunSpec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        let bad = text.replace("\"holdout\"", "\"hold_out\"");
        assert!(serde_json::from_str::<RunSpec>(&bad).is_err());
    }

    #[test]
    fn validation_names_the_field() {
        let mut s = RunSpec::new("SAU");
        s.holdout = 1.0;
        let e = s.validate().unwrap_err();
        let se = e.downcast_ref::<SpecError>().unwrap();
        assert_eq!(se.flag(), "--holdout");
        assert_eq!(e.to_string(), "holdout 1: expected a fraction in [0, 1)");
        let mut s = RunSpec::new("SAU");
        s.stop.time_limit = Some(-1.0);
        assert_eq!(s.validate().unwrap_err().downcast_ref::<SpecError>().unwrap().flag(), "--time-limit");
        assert!(RunSpec::new("SAU").validate().is_ok());
    }

    /// Without a GPU device (every CPU build; a CUDA build on a machine without one), groups
    /// run in CPU waves even when layers are asked onto a GPU.
    #[test]
    fn waves_follow_the_device_llama_cpp_finds() {
        let mut m = ModelSpec { gpu_layers: 0, ..ModelSpec::default() };
        assert_eq!(m.engine_config().wave, Some(crate::engine::CPU_WAVE));
        m.gpu_layers = -1;
        let gpu = crate::llama::gpu_offload_available();
        assert!(cfg!(feature = "cuda") || !gpu, "a CPU build found a GPU device");
        assert_eq!(m.engine_config().wave, (!gpu).then_some(crate::engine::CPU_WAVE));
    }
}
