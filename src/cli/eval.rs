//! `deopt eval`: how the model answers a survey with a soft prompt or a baseline.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use rand::SeedableRng;
use serde_json::json;

use super::shared_flags::{LayoutArgs, ModelArgs, TaskArgs};
use crate::data::dimension::Dimension;
use crate::engine::{Engine, Plan};
use crate::prompt::baseline::{self, Baseline};
use crate::prompt::init::{self, InitKind};
use crate::prompt::softprompt::SoftPrompt;
use crate::score::fitness::{AnswerMode, Evaluation, Target};

/// Score the model's survey answers with a soft prompt file or a baseline.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub task: TaskArgs,
    /// Soft prompt: safetensors from `deopt run`, or any `deopt export` output (PEFT directory, .npy)
    #[arg(long, value_name = "FILE", conflicts_with = "baseline")]
    pub prompt: Option<PathBuf>,
    /// Baseline instead of a prompt file (default: none)
    #[arg(long, value_enum)]
    pub baseline: Option<Baseline>,
    /// Rows of the random soft prompt (--baseline random-soft)
    #[arg(long, default_value_t = 10)]
    pub tokens: usize,
    /// Seed of the random soft prompt (--baseline random-soft)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Most tokens generated per item with --answers generate
    #[arg(long, default_value_t = 16)]
    pub max_tokens: usize,
    /// Also print every item's answer distribution
    #[arg(long)]
    pub per_item: bool,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub layout: LayoutArgs,
}

/// Refuse flags given on the command line that would do nothing in this mode.
fn check_flags_apply(args: &EvalArgs, given: &[String]) -> Result<()> {
    args.task.check_flags_apply(given)?;
    if args.max_tokens == 0 {
        bail!("--max-tokens 0: expected at least one token");
    }
    let random_soft = args.prompt.is_none() && args.baseline == Some(Baseline::RandomSoft);
    for (id, applies, when) in [
        ("tokens", random_soft, "--baseline random-soft"),
        ("seed", random_soft, "--baseline random-soft"),
        ("max_tokens", args.task.answers == AnswerMode::Generate, "--answers generate"),
    ] {
        if !applies && given.iter().any(|g| g == id) {
            bail!("{}: has no effect here: expected only with {when}", super::run::flag(id));
        }
    }
    if random_soft && args.tokens == 0 {
        bail!("--tokens 0: expected at least one row for a random soft prompt");
    }
    Ok(())
}

/// Run `deopt eval`; `given` are the clap ids of the flags on the command line.
///
/// # Errors
/// Bad flags or files (before the model loads), model or engine failures.
pub fn run(args: EvalArgs, given: &[String]) -> Result<()> {
    check_flags_apply(&args, given)?;
    let task = args.task.task()?;
    // A prompt file is read and checked before the model loads.
    let file_prompt = match &args.prompt {
        Some(path) => Some(crate::output::prompt_export::load_any(path)?.0),
        None => None,
    };
    let (resolved, model) = args.model.load()?;
    let n_embd = model.n_embd_inp();
    let base = args.layout.layout();
    let baseline = if args.prompt.is_some() { None } else { Some(args.baseline.unwrap_or(Baseline::None)) };
    let (layout, prompt, what) = match (&args.prompt, baseline) {
        (Some(path), _) => {
            let p = file_prompt.expect("read above");
            p.check_width(n_embd, &path.display().to_string())?;
            (base, p, format!("soft prompt {} ({} rows)", path.display(), 0))
        }
        (None, Some(Baseline::RandomSoft)) => {
            if args.tokens >= model.n_ctx_train() {
                bail!(
                    "--tokens {}: expected fewer than {}, the model's context",
                    args.tokens,
                    model.n_ctx_train()
                );
            }
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(args.seed);
            let p = init::draw(&model, InitKind::Vocab, args.tokens, &mut rng)?;
            (base, p, format!("baseline random-soft ({} rows, seed {})", args.tokens, args.seed))
        }
        (None, Some(b)) => {
            let l = baseline::text_layout(b, &base, &task, args.task.survey)?;
            (
                l,
                SoftPrompt::empty(n_embd),
                format!("baseline {}", serde_json::to_value(b)?.as_str().unwrap_or("?")),
            )
        }
        (None, None) => unreachable!("a baseline defaults to none"),
    };
    let what = what.replace("(0 rows)", &format!("({} rows)", prompt.rows()));
    let items: Vec<_> = task.survey.items.iter().collect();
    let plan = Plan::new(&model, &items, &layout)?;
    if args.layout.show_prompt {
        eprintln!(
            "--- rendered layout of item {} ---\n{}\n---",
            items[0].id,
            plan.example.replace("T rows", &format!("{} rows", prompt.rows()))
        );
    }
    let mut engine = Engine::new(&model, args.model.engine_config())?;
    let bar = crate::progress::spinner(&format!("scoring {} items", items.len()), args.json);
    let scores = engine.score(&plan, &[&prompt])?.remove(0);
    let idx: Vec<usize> = (0..items.len()).collect();
    let mut texts = None;
    let ev = if args.task.answers == AnswerMode::Generate {
        bar.set_message(format!("generating answers to {} items", items.len()));
        let t = engine.generate(&plan, &prompt, args.max_tokens)?;
        let ev = task.evaluate_texts(&idx, &t)?;
        texts = Some(t);
        ev
    } else {
        task.evaluate(&idx, &scores)?
    };
    bar.finish_and_clear();

    let mut out = std::io::stdout().lock();
    let per_item: Vec<_> = items
        .iter()
        .zip(&scores)
        .zip(&ev.answers)
        .enumerate()
        .map(|(k, ((it, s), a))| {
            let mut o = json!({"item": it.id, "probs": s.probs, "label_mass": s.label_mass, "answer": a});
            if let Some(t) = &texts {
                o["generated"] = json!(t[k]);
            }
            o
        })
        .collect();
    if args.json {
        let mut obj = json!({
            "country": task.country.iso3,
            "survey": task.survey.name,
            "evaluated": what,
            "model": resolved.display_name,
            "model_sha256": resolved.sha256,
            "answer_mode": args.task.answers,
            "fitness": ev.fitness,
        });
        add_target_json(&mut obj, &task.target, &ev);
        if args.per_item {
            obj["items"] = json!(per_item);
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&obj)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{} on {} for {} ({}), model {}",
        what, task.survey.name, task.country.iso3, task.country.name, resolved.display_name
    )?;
    match (&task.target, &ev.dimensions, &ev.loss) {
        (Target::Hofstede { row, constants, loss }, Some(dims), Some(l)) => {
            writeln!(out, "index constants C: {constants}")?;
            writeln!(out, "{:<5} {:>8} {:>8} {:>8}", "dim", "model", "target", "error")?;
            let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
            for d in Dimension::ALL {
                let (m, t) = (dims[d.index()], row.values()[d.index()]);
                writeln!(
                    out,
                    "{:<5} {:>8} {:>8} {:>8}",
                    d.code(),
                    f(m),
                    f(t),
                    f(m.zip(t).map(|(m, t)| m - t))
                )?;
            }
            let used: Vec<&str> = l.used.iter().map(|d| d.code()).collect();
            writeln!(out, "loss ({loss} over {}): {:.4}", used.join(" "), l.loss)?;
            for s in &l.skipped {
                writeln!(out, "skipped {}: {}", s.dimension, s.reason)?;
            }
        }
        _ => {
            if let Some(r) = &ev.cas {
                writeln!(out, "CAS {:.2}  per-question {:.2}  distribution {:.2}  expected-answer {:.2}  ({} items scored, {} without reference)",
                    r.cas, r.cas_per_question, r.distribution_score, r.expected_answer_score, r.scored, r.no_reference)?;
            }
        }
    }
    if args.per_item {
        for (k, ((it, s), a)) in items.iter().zip(&scores).zip(&ev.answers).enumerate() {
            let probs: Vec<String> = s.probs.iter().map(|p| format!("{p:.3}")).collect();
            let gen = texts.as_ref().map_or(String::new(), |t| format!("  generated {:?}", t[k]));
            writeln!(
                out,
                "item {:<5} answer {:>5.2}  p = [{}]  label mass {:.3}{gen}",
                it.id,
                a,
                probs.join(" "),
                s.label_mass
            )?;
        }
    }
    Ok(())
}

fn add_target_json(obj: &mut serde_json::Value, target: &Target, ev: &Evaluation) {
    match (target, &ev.dimensions, &ev.loss) {
        (Target::Hofstede { row, constants, loss }, Some(dims), Some(l)) => {
            obj["constants"] = json!(Dimension::ALL
                .iter()
                .map(|d| (d.code().to_string(), json!(constants.0[d.index()])))
                .collect::<serde_json::Map<_, _>>());
            obj["loss_kind"] = json!(loss);
            obj["loss"] = json!(l.loss);
            obj["dimensions"] = json!(Dimension::ALL
                .iter()
                .map(|d| json!({"dimension": d.code(), "model": dims[d.index()], "target": row.values()[d.index()]}))
                .collect::<Vec<_>>());
            obj["skipped"] = json!(l
                .skipped
                .iter()
                .map(|s| json!({"dimension": s.dimension.code(), "reason": s.reason}))
                .collect::<Vec<_>>());
        }
        _ => {
            if let Some(r) = &ev.cas {
                obj["cas"] = json!(r);
            }
        }
    }
}
