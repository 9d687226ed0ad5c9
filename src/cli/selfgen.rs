//! `deopt selfgen`: CultureSPA-style self-generated questions and culture-aware answers (see
//! [`crate::selfgen`]).

use std::path::PathBuf;

use anyhow::Result;

use super::shared_flags::ModelArgs;
use crate::prompt::render::TemplateKind;
use crate::selfgen::{self, AnswerKind, SelfgenSpec};

/// Generate survey questions with the model, answer them without and with a culture prompt,
/// keep the pairs where the answer shifts.
#[derive(Debug, clap::Args)]
pub struct SelfgenArgs {
    /// Countries to answer for, comma-separated (ISO3 codes or names, see `deopt countries`)
    #[arg(long, value_delimiter = ',', required_unless_present = "resume")]
    pub countries: Vec<String>,
    /// Questions generated per WVS-7 topic (13 topics)
    #[arg(long, default_value_t = 8)]
    pub per_topic: usize,
    /// Questions per topic in each round; later rounds show earlier rounds' questions as
    /// examples (CultureSPA: two of five examples are generated ones)
    #[arg(long, default_value_t = 4)]
    pub per_round: usize,
    /// Seed: fixes the examples shown and the sampling
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sampling temperature (CultureSPA: 0.6)
    #[arg(long, default_value_t = 0.6)]
    pub temperature: f64,
    /// Nucleus sampling mass (CultureSPA: 0.9)
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    /// Most new tokens per question (generation also stops once the JSON object is closed)
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Longest question kept, in characters
    #[arg(long, default_value_t = 300)]
    pub max_chars: usize,
    /// How questions are answered: option probabilities, or generated text parsed as
    /// CultureSPA does
    #[arg(long, value_enum, default_value_t = AnswerKind::Probs)]
    pub answers: AnswerKind,
    /// Keep a pair when the expected answer moves by at least this much (default: when the
    /// most probable answer changes)
    #[arg(long, value_name = "X")]
    pub min_shift: Option<f64>,
    /// Conversation layout: the model's chat template if it has one, or plain text
    #[arg(long, value_enum, default_value_t = TemplateKind::Auto)]
    pub template: TemplateKind,
    /// Output directory (default: results/selfgen-<model>-seed<K>)
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue an interrupted selfgen directory with its own settings
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Replace deopt's files in --out (other files are left alone)
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: SelfgenArgs) -> Result<()> {
    let (spec, dir, resume) = match &args.resume {
        Some(dir) => (selfgen::load_settings(dir)?.spec, dir.clone(), true),
        None => {
            let spec = SelfgenSpec {
                countries: args.countries.iter().map(|c| c.trim().to_string()).collect(),
                per_topic: args.per_topic,
                per_round: args.per_round,
                seed: args.seed,
                temperature: args.temperature,
                top_p: args.top_p,
                max_tokens: args.max_tokens,
                max_chars: args.max_chars,
                answers: args.answers,
                min_shift: args.min_shift,
                template: args.template,
                model: args.model.spec(),
            };
            spec.validate()?;
            // Country names resolve to ISO3 before anything is written.
            let countries = selfgen::resolve_countries(&spec.countries)?;
            let spec = SelfgenSpec { countries: countries.into_iter().map(|c| c.iso3).collect(), ..spec };
            let dir = args.out.clone().unwrap_or_else(|| {
                let stem = spec.model.path.as_ref().and_then(|p| p.file_stem()).map_or_else(
                    || "default".to_string(),
                    |s| s.to_string_lossy().replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"),
                );
                PathBuf::from("results").join(format!("selfgen-{stem}-seed{}", spec.seed))
            });
            selfgen::claim_dir(&dir, args.force)?;
            (spec, dir, false)
        }
    };
    let s = selfgen::run(&spec, &dir, resume)?;
    println!("self-generated data in {}", dir.display());
    println!(
        "{} generated, {} read ({} strict JSON), {} accepted",
        s.generated, s.parsed, s.parsed_json, s.accepted
    );
    let rejected: Vec<String> = s.rejected.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("rejected: {}", if rejected.is_empty() { "none".to_string() } else { rejected.join(", ") });
    for (c, x) in &s.countries {
        println!("{c}: {} of {} kept ({:.1}%)", x.kept, x.answered, 100.0 * x.share);
    }
    println!("report: {}", dir.join(selfgen::REPORT).display());
    Ok(())
}
