//! `deopt generate`: open-ended answers with a soft prompt (and, with `--compare`, without).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use super::shared_flags::ModelArgs;
use crate::engine::generation::{generate, GenerateConfig, Generation};
use crate::prompt::render::TemplateKind;
use crate::prompt::softprompt::SoftPrompt;

/// Generate an answer with a soft prompt in the position it was evolved in.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The question or instruction
    #[arg(value_name = "QUESTION")]
    pub question: String,
    /// Soft prompt: deopt safetensors, PEFT adapter directory or .npy (see `deopt export`)
    #[arg(long, value_name = "FILE")]
    pub prompt: PathBuf,
    /// Country the prompt was evolved for (checked against the prompt's metadata)
    #[arg(long)]
    pub country: Option<String>,
    /// Most new tokens
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy)
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Seed of the sampler (with --temperature > 0)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also print the answer without the soft prompt
    #[arg(long)]
    pub compare: bool,
    /// Conversation layout: the model's chat template if it has one, or plain text
    #[arg(long, value_enum, default_value_t = TemplateKind::Auto)]
    pub template: TemplateKind,
    /// Print the rendered prompt
    #[arg(long)]
    pub show_prompt: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: GenerateArgs) -> Result<()> {
    if args.max_tokens == 0 {
        anyhow::bail!("--max-tokens 0: expected at least one token");
    }
    let (prompt, meta) = crate::output::prompt_export::load_any(&args.prompt)?;
    let shown = args.prompt.display().to_string();
    if let Some(c) = &args.country {
        let country = crate::data::load::resolve_country(c)?;
        if let Some(m) = meta.get("country").filter(|m| **m != country.iso3) {
            eprintln!("deopt: note: {shown} was evolved for {m}, not {}", country.iso3);
        }
    }
    let (resolved, model) = args.model.load()?;
    prompt.check_width(model.n_embd_inp(), &shown)?;
    let mut cfg = GenerateConfig {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        seed: args.seed,
        template: args.template,
        ..GenerateConfig::default()
    };
    if let Some(t) = args.model.threads {
        cfg.threads = t.max(1);
    }
    let with = generate(&model, &prompt, &args.question, &cfg)?;
    if args.show_prompt {
        eprintln!("--- rendered prompt ---\n{}\n---", with.rendered);
    }
    let mut out = std::io::stdout().lock();
    if !args.compare {
        writeln!(out, "{}", with.text)?;
        return Ok(());
    }
    let without = generate(&model, &SoftPrompt::empty(model.n_embd_inp()), &args.question, &cfg)?;
    let show = |g: &Generation| if g.text.is_empty() { "(empty)".to_string() } else { g.text.clone() };
    writeln!(out, "model: {}  question: {}", resolved.display_name, args.question)?;
    writeln!(out, "=== baseline (no soft prompt) ===\n{}", show(&without))?;
    writeln!(out, "=== with soft prompt {} ({} rows) ===\n{}", shown, prompt.rows(), show(&with))?;
    Ok(())
}
