//! `deopt bench engine`: the scoring engine against naive scoring and raw llama.cpp speed.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use super::common::ModelArgs;
use crate::survey::{Survey, SurveyKind};

/// Measure raw prompt processing, naive scoring and the engine on the VSM13 workload.
#[derive(Debug, clap::Args)]
pub struct BenchEngineArgs {
    /// Soft prompts in the workload
    #[arg(long, default_value_t = 16)]
    pub prompts: usize,
    /// Rows per soft prompt
    #[arg(long, default_value_t = 10)]
    pub tokens: usize,
    /// Seed of the random prompts
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the JSON results
    #[arg(long, value_name = "FILE", default_value = "results/bench-engine.json")]
    pub out: PathBuf,
    /// Print the JSON instead of a table
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: BenchEngineArgs) -> Result<()> {
    let (resolved, model) = args.model.load()?;
    let survey = Survey::builtin(SurveyKind::Vsm13)?;
    let config = args.model.engine_config();
    let bar = super::progress::spinner("benchmark", args.json);
    let work =
        crate::bench::Workload { survey: &survey, prompts: args.prompts, rows: args.tokens, seed: args.seed };
    let b = crate::bench::engine_bench(&model, &resolved.display_name, &config, &work, |m| {
        bar.set_message(m.to_string())
    })?;
    bar.finish_and_clear();
    let text = serde_json::to_string_pretty(&b)?;
    crate::fsutil::write_atomic(&args.out, text.as_bytes())?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{text}")?;
        return Ok(());
    }
    writeln!(
        out,
        "model {} ({} threads); workload: {} soft prompts (T={}) x {} VSM13 items",
        b.model, b.threads, b.prompts, b.rows, b.items
    )?;
    writeln!(
        out,
        "raw prompt processing   {:>8} tokens {:>8.2} s  {:>8.1} tokens/s",
        b.raw_tokens, b.raw_seconds, b.raw_tokens_per_s
    )?;
    writeln!(
        out,
        "naive (per pair)        {:>8} tokens {:>8.2} s  {:>8.1} tokens/s",
        b.naive_tokens,
        b.naive_seconds,
        b.naive_tokens as f64 / b.naive_seconds
    )?;
    writeln!(
        out,
        "engine                  {:>8} tokens {:>8.2} s  {:>8.1} logical tokens/s ({} logical, {} decode calls)",
        b.engine_tokens_computed, b.engine_seconds, b.engine_effective_tokens_per_s, b.engine_tokens_logical, b.engine_decode_calls
    )?;
    writeln!(out, "engine effective / raw tokens/s: {:.2}x", b.ratio_effective_over_raw)?;
    writeln!(out, "naive time / engine time:        {:.2}x", b.ratio_naive_over_engine)?;
    writeln!(out, "max |p_naive - p_engine|:        {:.2e}", b.max_prob_diff)?;
    if let Some(m) = b.peak_rss_mib {
        writeln!(out, "peak memory:                     {m:.0} MiB")?;
    }
    writeln!(out, "written to {}", args.out.display())?;
    Ok(())
}
