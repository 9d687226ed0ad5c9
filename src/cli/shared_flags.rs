//! Flags shared by the commands that load a model and score a survey (`eval`, `run`, ...).

use std::path::PathBuf;

use anyhow::Result;

use crate::engine::EngineConfig;
use crate::score::fitness::{AnswerMode, CasMetric, Target, Task};
use crate::llama::{Model, ModelParams};
use crate::score::metrics::{Constants, LossKind};
use crate::provision::model_store::{resolve_model, Precision, ResolvedModel};
use crate::data::load;
use crate::prompt::render::{ItemStyle, Layout, SoftPosition, TemplateKind};
use crate::data::survey::SurveyKind;
use crate::data::targets::WvsChoice;

/// What is scored: survey, country, metric.
#[derive(Debug, Clone, clap::Args)]
pub struct TaskArgs {
    /// Country: ISO3 code, English name or alias (see `deopt countries`)
    #[arg(long)]
    pub country: String,
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
    /// Load survey, country and targets.
    pub fn task(&self) -> Result<Task> {
        let survey = load::load_survey(self.survey, self.survey_file.as_deref())?;
        let country = load::resolve_country(&self.country)?;
        let target = match self.survey {
            SurveyKind::Vsm13 => Target::Hofstede {
                row: load::hofstede_target(&country)?,
                constants: self.constants,
                loss: self.loss,
            },
            SurveyKind::Wvs => Target::Wvs {
                reference: load::wvs_target(&country, self.wvs_source)?,
                metric: self.metric,
            },
        };
        Ok(Task { survey, country, target, mode: self.answers })
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
    /// Layers to offload to a GPU (CUDA builds only)
    #[arg(long, default_value_t = 0)]
    pub gpu_layers: i32,
}

impl ModelArgs {
    /// Resolve (fetching the default model if needed) and load the model.
    pub fn load(&self) -> Result<(ResolvedModel, Model)> {
        let resolved = resolve_model(self.model.as_deref(), self.precision)?;
        let model = Model::load(&resolved.path, &ModelParams { n_gpu_layers: self.gpu_layers })?;
        Ok((resolved, model))
    }

    /// Engine settings from these flags.
    pub fn engine_config(&self) -> EngineConfig {
        let mut c = EngineConfig {
            batch: self.batch,
            max_ctx: (self.ctx > 0).then_some(self.ctx),
            ..EngineConfig::default()
        };
        if let Some(t) = self.threads {
            c.threads = t.max(1);
        }
        c
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
