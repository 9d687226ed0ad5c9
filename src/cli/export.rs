//! `deopt export`: a run's best soft prompt as deopt safetensors, a PEFT adapter or .npy.

use std::path::PathBuf;

use anyhow::Result;

use crate::llama::{Model, ModelParams};
use crate::output::prompt_export::{self, Format, ModelInfo};

/// Export a run's best soft prompt for other tools.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Run directory from `deopt run` (holds config.json and best_prompt.safetensors)
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// Output format
    #[arg(long, value_enum)]
    pub format: Format,
    /// Output directory (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace files of the same names in --out
    #[arg(long)]
    pub force: bool,
}

/// Model facts for the PEFT config, read from the run's GGUF when it is still there.
fn model_info(config: &serde_json::Value) -> ModelInfo {
    let Some(path) = prompt_export::run_model_path(config).filter(|p| p.is_file()) else {
        return ModelInfo {
            name: config.pointer("/model/name").and_then(|v| v.as_str()).map(String::from),
            ..ModelInfo::default()
        };
    };
    match Model::load(&path, &ModelParams { n_gpu_layers: 0 }) {
        Ok(m) => {
            let key = format!("{}.attention.head_count", m.architecture());
            ModelInfo {
                name: m.meta_str("general.name").or_else(|| m.meta_str("general.basename")),
                n_layer: Some(m.n_layer()),
                n_head: m.meta_str(&key).and_then(|v| v.parse().ok()),
            }
        }
        Err(_) => ModelInfo::default(),
    }
}

pub fn run(args: ExportArgs) -> Result<()> {
    let run = prompt_export::read_run(&args.run_dir)?;
    prompt_export::refuse_existing(args.format, &args.out, args.force)?;
    let info = if args.format == Format::Peft { model_info(&run.config) } else { ModelInfo::default() };
    let info = ModelInfo {
        name: info
            .name
            .or_else(|| run.config.pointer("/model/name").and_then(|v| v.as_str()).map(String::from)),
        ..info
    };
    let files = prompt_export::export(&run, args.format, &args.out, &info, args.force)?;
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}
