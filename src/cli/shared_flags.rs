//! Flags shared by the commands that load a model and score a survey (`eval`, `run`, ...).

use std::path::PathBuf;

use anyhow::{anyhow, Result};

use crate::data::survey::SurveyKind;
use crate::data::targets::WvsChoice;
use crate::engine::EngineConfig;
use crate::llama::Model;
use crate::prompt::render::{ItemStyle, Layout, SoftPosition, TemplateKind};
use crate::provision::model_store::{Precision, ResolvedModel};
use crate::run::slurm::SlurmOptions;
use crate::run::spec::{LayoutSpec, ModelSpec, TaskSpec};
use crate::score::fitness::{AnswerMode, CasMetric, Task};
use crate::score::metrics::{Constants, LossKind};

/// What is scored: survey, country, metric.
#[derive(Debug, Clone, clap::Args)]
pub struct TaskArgs {
    /// Country: ISO3 code, English name or alias (see `deopt countries`); required
    #[arg(long)]
    pub country: Option<String>,
    /// Survey the model answers
    #[arg(long, value_enum, default_value_t = SurveyKind::Vsm13)]
    pub survey: SurveyKind,
    /// Use this instrument file instead of the built-in one (same format, e.g. a translation)
    #[arg(long, value_name = "FILE")]
    pub survey_file: Option<PathBuf>,
    /// VSM13 index constants C: one number for all six, or e.g. PDI=20,IDV=50
    #[arg(long, default_value_t = Constants::default())]
    pub constants: Constants,
    /// VSM13 loss between model and target dimensions
    #[arg(long, value_enum, default_value_t = LossKind::L2)]
    pub loss: LossKind,
    /// WVS: which score is the fitness
    #[arg(long, value_enum, default_value_t = CasMetric::Cas)]
    pub metric: CasMetric,
    /// WVS: which data set gives the country's answers
    #[arg(long, value_enum, default_value_t = WvsChoice::Auto)]
    pub wvs_source: WvsChoice,
    /// How an item's answer distribution becomes an answer
    #[arg(long, value_enum, default_value_t = AnswerMode::Expected)]
    pub answers: AnswerMode,
}

impl TaskArgs {
    /// The task spec of these flags.
    ///
    /// # Errors
    /// No `--country`.
    /// Refuse flags given on the command line (`given`: clap ids) that do nothing for the
    /// chosen survey: the VSM13 index settings on WVS, the WVS metric and source on VSM13.
    ///
    /// # Errors
    /// The first such flag.
    pub fn check_flags_apply(&self, given: &[String]) -> Result<()> {
        let (others, applies) = match self.survey {
            SurveyKind::Vsm13 => (["metric", "wvs_source"], "--survey wvs"),
            SurveyKind::Wvs => (["constants", "loss"], "--survey vsm13"),
        };
        if let Some(id) = others.iter().find(|id| given.iter().any(|g| g == *id)) {
            anyhow::bail!(
                "--{}: has no effect on --survey {}: expected only with {applies}",
                id.replace('_', "-"),
                serde_json::to_value(self.survey)?.as_str().unwrap_or("?")
            );
        }
        Ok(())
    }

    pub fn spec(&self) -> Result<TaskSpec> {
        let country = self.country.as_deref().ok_or_else(|| anyhow!("--country is required"))?;
        Ok(TaskSpec {
            country: country.to_string(),
            survey: self.survey,
            survey_file: self.survey_file.clone(),
            constants: self.constants,
            loss: self.loss,
            metric: self.metric,
            wvs_source: self.wvs_source,
            answers: self.answers,
            selfgen: None,
        })
    }

    /// Load survey, country and targets.
    ///
    /// # Errors
    /// As [`TaskSpec::load`].
    pub fn task(&self) -> Result<Task> {
        self.spec()?.load()
    }
}

/// Which model and how to run it.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// GGUF model file (default: Gemma 3 270M, fetched on first use)
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Weights of the default model: F16 copy (answers independent of batch layout) or the original Q4_K_M
    #[arg(long, value_enum, default_value_t = Precision::F16)]
    pub precision: Precision,
    /// CPU threads (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Most tokens per llama.cpp decode call
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Most tokens of context (KV cells) to allocate; 0 = up to the model's training context
    #[arg(long, default_value_t = 0)]
    pub ctx: usize,
    /// Layers to offload to a GPU: -1 = all (the default in a CUDA build), 0 = none (the only
    /// choice in a CPU build)
    #[arg(long, default_value_t = crate::llama::DEFAULT_GPU_LAYERS, allow_negative_numbers = true)]
    pub gpu_layers: i32,
    /// Prompts scored side by side in each llama.cpp decode call: fewer, fuller calls (for a
    /// GPU; default 8 in a CUDA build, 1 on a CPU), at the price of answers that move slightly
    /// with their company
    #[arg(long, value_name = "N", default_value_t = crate::run::spec::DEFAULT_BATCH_PROMPTS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub batch_prompts: usize,
    /// Score every prompt alone (same as --batch-prompts 1): answers bit-identical in any
    /// company or order
    #[arg(long, conflicts_with = "batch_prompts")]
    pub exact: bool,
}

impl ModelArgs {
    /// The model spec of these flags.
    pub fn spec(&self) -> ModelSpec {
        ModelSpec {
            path: self.model.clone(),
            precision: self.precision,
            threads: self.threads,
            batch: self.batch,
            ctx: self.ctx,
            gpu_layers: self.gpu_layers,
            batch_prompts: if self.exact { 1 } else { self.batch_prompts },
        }
    }

    /// Resolve (fetching the default model if needed) and load the model.
    ///
    /// # Errors
    /// As [`ModelSpec::load`].
    pub fn load(&self) -> Result<(ResolvedModel, Model)> {
        self.spec().load()
    }

    /// Engine settings from these flags.
    pub fn engine_config(&self) -> EngineConfig {
        self.spec().engine_config()
    }
}

/// Where the soft prompt goes and how items are worded.
#[derive(Debug, Clone, clap::Args)]
pub struct LayoutArgs {
    /// Conversation layout: the model's chat template if it has one, or plain text
    #[arg(long, value_enum, default_value_t = TemplateKind::Auto)]
    pub template: TemplateKind,
    /// Where the soft prompt goes (the seed paper: before the instruction and the item)
    #[arg(long, value_enum, default_value_t = SoftPosition::Start)]
    pub soft_position: SoftPosition,
    /// How items are worded (compact shares more computation; culturespa is CultureSPA's wording)
    #[arg(long, value_enum, default_value_t = ItemStyle::Compact)]
    pub item_style: ItemStyle,
    /// Print the rendered layout of the first item
    #[arg(long)]
    pub show_prompt: bool,
}

impl LayoutArgs {
    /// The layout spec of these flags.
    pub fn spec(&self) -> LayoutSpec {
        LayoutSpec { template: self.template, soft_position: self.soft_position, item_style: self.item_style }
    }

    /// The layout for a soft prompt (no system message).
    pub fn layout(&self) -> Layout {
        self.spec().layout()
    }
}

/// Handing the work to Slurm as a job array (`deopt sweep --slurm`).
#[derive(Debug, Clone, clap::Args)]
pub struct SlurmArgs {
    /// Write DIR/slurm/ with an sbatch job array (one task per shard) and a merge job that
    /// depends on it, instead of running here
    #[arg(long)]
    pub slurm: bool,
    /// With --slurm: submit both jobs with sbatch and print their ids
    #[arg(long, requires = "slurm")]
    pub submit: bool,
    /// Array tasks (shards) [default: one per run]
    #[arg(long, value_name = "N", requires = "slurm")]
    pub slurm_tasks: Option<usize>,
    /// sbatch --partition
    #[arg(long, value_name = "NAME", requires = "slurm")]
    pub slurm_partition: Option<String>,
    /// sbatch --time of each task, e.g. 04:00:00
    #[arg(long, value_name = "TIME", requires = "slurm")]
    pub slurm_time: Option<String>,
    /// sbatch --cpus-per-task; also each task's llama.cpp threads
    #[arg(long, value_name = "N", requires = "slurm")]
    pub slurm_cpus: Option<usize>,
    /// sbatch --mem, e.g. 8G
    #[arg(long, value_name = "SIZE", requires = "slurm")]
    pub slurm_mem: Option<String>,
    /// sbatch --gpus, e.g. 1 or h100:1
    #[arg(long, value_name = "GPUS", requires = "slurm")]
    pub slurm_gpus: Option<String>,
    /// At most K array tasks at once (--array=1-N%K)
    #[arg(long, value_name = "K", requires = "slurm")]
    pub slurm_array_limit: Option<usize>,
    /// More sbatch options as they are, e.g. "--account=abc --qos=short"
    #[arg(long, value_name = "OPTIONS", requires = "slurm", allow_hyphen_values = true)]
    pub slurm_extra: Option<String>,
}

impl SlurmArgs {
    /// The job options of these flags.
    pub fn options(&self) -> SlurmOptions {
        SlurmOptions {
            partition: self.slurm_partition.clone(),
            time: self.slurm_time.clone(),
            cpus: self.slurm_cpus,
            mem: self.slurm_mem.clone(),
            gpus: self.slurm_gpus.clone(),
            array_limit: self.slurm_array_limit,
            extra: self.slurm_extra.iter().flat_map(|e| e.split_whitespace().map(String::from)).collect(),
        }
    }
}

/// Flags every run command shares (`deopt run`, `deopt tune`): the held-out split, the seed,
/// the run directory, resuming, the common stop conditions and the report.
#[derive(Debug, Clone, clap::Args)]
// No argument group: its id would count as a flag given on the command line, which a resume
// refuses.
#[group(skip)]
pub struct SessionArgs {
    /// Share of the survey kept out of the fitness, in [0, 1); its loss for the best prompt is
    /// reported every step. VSM13 holds out whole dimensions (all items of round(FRACTION x 6)
    /// dimensions, at least 1, at most 5); WVS holds out items
    #[arg(long, default_value_t = 0.0, value_name = "FRACTION", allow_negative_numbers = true)]
    pub holdout: f64,
    /// Seed of every random draw of the run
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run directory [default: results/<date>-<ISO3>-<survey>-<id>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in DIR from its directory alone; only stop conditions may be given
    /// with it
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Stop once the best fitness is at or below X
    #[arg(long, value_name = "X", allow_negative_numbers = true)]
    pub target_fitness: Option<f64>,
    /// Stop after K steps (generations) without improvement of the best fitness
    #[arg(long, value_name = "K")]
    pub stagnation: Option<u64>,
    /// Stop after this many seconds of this session (the step in progress finishes)
    #[arg(long, value_name = "SECONDS")]
    pub time_limit: Option<f64>,
    /// Start the run in --out even if that directory holds another run or other files (deopt's
    /// run files there are replaced; other files are left alone)
    #[arg(long, conflicts_with = "resume")]
    pub force: bool,
    /// Do not write report.md and charts at the end (`deopt report DIR` writes them later)
    #[arg(long)]
    pub no_report: bool,
}
