//! The engine benchmark: raw prompt-processing speed, and the VSM13 scoring workload computed
//! naively (one sequence per prompt and item, nothing shared), with the engine's exact
//! per-prompt schedule and with its batched schedule (several prompts per decode call), in one
//! run on the current machine, so the ratios compare like with like.

use std::time::Instant;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::data::survey::Survey;
use crate::engine::{Engine, EngineConfig, Plan};
use crate::llama::{Context, ContextParams, EmbdBatch, Model, Token, TokenBatch};
use crate::prompt::init::{self, InitKind};
use crate::prompt::render::Layout;
use crate::prompt::softprompt::SoftPrompt;
use crate::score::item_score::ItemScore;

/// Benchmark figures (written as JSON by `deopt bench engine`).
#[derive(Debug, Clone, Serialize)]
pub struct EngineBench {
    /// Model display name.
    pub model: String,
    /// Threads used.
    pub threads: usize,
    /// Raw prompt processing: tokens in the batch.
    pub raw_tokens: usize,
    /// Raw prompt processing: seconds for one batch.
    pub raw_seconds: f64,
    /// Raw tokens per second.
    pub raw_tokens_per_s: f64,
    /// Soft prompts in the workload.
    pub prompts: usize,
    /// Rows per soft prompt.
    pub rows: usize,
    /// Items in the workload.
    pub items: usize,
    /// Naive: seconds (None when skipped).
    pub naive_seconds: Option<f64>,
    /// Naive: units computed (= logical units).
    pub naive_tokens: u64,
    /// Engine: seconds.
    pub engine_seconds: f64,
    /// Engine: units computed.
    pub engine_tokens_computed: u64,
    /// Engine: logical units (what naive computes).
    pub engine_tokens_logical: u64,
    /// Engine: llama_decode calls.
    pub engine_decode_calls: u64,
    /// Engine logical tokens per second.
    pub engine_effective_tokens_per_s: f64,
    /// Engine effective tokens/s over raw tokens/s.
    pub ratio_effective_over_raw: f64,
    /// Naive time over engine time.
    pub ratio_naive_over_engine: Option<f64>,
    /// Largest difference between naive and engine option probabilities.
    pub max_prob_diff: Option<f64>,
    /// Engine (exact schedule): evaluations (prompt x all items) per second.
    pub exact_evals_per_s: f64,
    /// Batched schedule: prompts per group.
    pub batch_prompts: usize,
    /// Batched schedule: most tokens per wave (a decode call's worth on a GPU, less on a CPU).
    pub batched_wave: usize,
    /// Batched schedule: seconds.
    pub batched_seconds: f64,
    /// Batched schedule: llama_decode calls.
    pub batched_decode_calls: u64,
    /// Batched schedule: evaluations per second.
    pub batched_evals_per_s: f64,
    /// Batched schedule: logical tokens per second.
    pub batched_effective_tokens_per_s: f64,
    /// Exact time over batched time (above 1: batched is faster): the median over the pairs of
    /// runs (an exact run and the batched run next to it).
    pub ratio_exact_over_batched: f64,
    /// Pairs of exact and batched runs, in ABBA order (the times above are medians).
    pub repeats: usize,
    /// Seconds of each exact run, in order.
    pub exact_seconds_runs: Vec<f64>,
    /// Seconds of each batched run, in order (run k next to exact run k).
    pub batched_seconds_runs: Vec<f64>,
    /// Exact over batched time of each pair of runs: the spread of the ratio.
    pub ratio_runs: Vec<f64>,
    /// Largest difference between exact and batched option probabilities (the drift).
    pub batched_max_prob_diff: f64,
    /// Largest difference between exact and batched expected answers (on the 1..5 scale etc.).
    pub batched_max_expected_diff: f64,
    /// Peak resident memory of the process, MiB (VmHWM), if known.
    pub peak_rss_mib: Option<f64>,
}

impl EngineBench {
    /// The figures as a text table with the ratios (what `deopt bench engine` and `cargo bench`
    /// print).
    pub fn table(&self) -> String {
        let b = self;
        let mut s = format!(
            "model {} ({} threads); workload: {} soft prompts (T={}) x {} VSM13 items\n",
            b.model, b.threads, b.prompts, b.rows, b.items
        );
        s += &format!(
            "raw prompt processing   {:>8} tokens {:>8.2} s  {:>8.1} tokens/s\n",
            b.raw_tokens, b.raw_seconds, b.raw_tokens_per_s
        );
        if let Some(ns) = b.naive_seconds {
            s += &format!(
                "naive (per pair)        {:>8} tokens {:>8.2} s  {:>8.1} tokens/s\n",
                b.naive_tokens,
                ns,
                b.naive_tokens as f64 / ns
            );
        }
        s += &format!(
            "engine, exact           {:>8} tokens {:>8.2} s  {:>8.1} logical tokens/s ({} logical, {} decode calls)\n",
            b.engine_tokens_computed,
            b.engine_seconds,
            b.engine_effective_tokens_per_s,
            b.engine_tokens_logical,
            b.engine_decode_calls
        );
        s += &format!(
            "engine, batched ({:>3} prompts, waves of {} tokens) {:>8.2} s  {:>8.1} logical tokens/s ({} decode calls)\n",
            b.batch_prompts, b.batched_wave, b.batched_seconds, b.batched_effective_tokens_per_s, b.batched_decode_calls
        );
        s += &format!("engine effective / raw tokens/s: {:.2}x\n", b.ratio_effective_over_raw);
        if let (Some(r), Some(d)) = (b.ratio_naive_over_engine, b.max_prob_diff) {
            s += &format!("naive time / engine time:        {r:.2}x\n");
            s += &format!("max |p_naive - p_engine|:        {d:.2e}\n");
        }
        s += &format!(
            "evaluations/s: exact {:.3}, batched {:.3}; exact time / batched time (median pair): {:.2}x\n",
            b.exact_evals_per_s, b.batched_evals_per_s, b.ratio_exact_over_batched
        );
        if b.repeats > 1 {
            let lo = b.ratio_runs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = b.ratio_runs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            s += &format!(
                "{} pairs of runs (ABBA), medians; exact time / batched time per pair: {lo:.2}x to {hi:.2}x\n",
                b.repeats
            );
        }
        s += &format!(
            "batched drift: max |p_exact - p_batched| {:.2e}, max |E_exact - E_batched| {:.2e}\n",
            b.batched_max_prob_diff, b.batched_max_expected_diff
        );
        if let Some(m) = b.peak_rss_mib {
            s += &format!("peak memory:                     {m:.0} MiB\n");
        }
        s
    }
}

/// The benchmark workload.
#[derive(Debug, Clone)]
pub struct Workload<'a> {
    /// Survey whose items are scored.
    pub survey: &'a Survey,
    /// Number of random soft prompts.
    pub prompts: usize,
    /// Rows per prompt.
    pub rows: usize,
    /// Seed of the prompts.
    pub seed: u64,
    /// Prompts per decode group in the batched schedule.
    pub batch_prompts: usize,
    /// Whether to run the naive baseline (slow on large models).
    pub naive: bool,
    /// Exact and batched runs alternate this many times; the medians are reported (a single
    /// run of either varies by several percent on a shared machine).
    pub repeats: usize,
}

/// Run the benchmark.
///
/// # Errors
/// Model or decode failures.
pub fn engine_bench(
    model: &Model,
    model_name: &str,
    config: &EngineConfig,
    work: &Workload<'_>,
    mut progress: impl FnMut(&str),
) -> Result<EngineBench> {
    let (survey, prompts, rows, seed) = (work.survey, work.prompts, work.rows, work.seed);
    anyhow::ensure!(prompts >= 1, "--prompts 0: expected at least 1 prompt");
    anyhow::ensure!(work.repeats >= 1, "--repeat 0: expected at least 1");
    anyhow::ensure!(
        (1..=256).contains(&work.batch_prompts),
        "--batch-prompts {}: expected 1 to 256",
        work.batch_prompts
    );
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let soft: Vec<SoftPrompt> =
        (0..prompts).map(|_| init::draw(model, InitKind::Vocab, rows, &mut rng)).collect::<Result<_>>()?;
    let items: Vec<_> = survey.items.iter().collect();
    let plan = Plan::new(model, &items, &Layout::default())?;

    // Raw prompt processing: one batch of 512 random tokens, after a warm-up batch.
    progress("raw prompt processing (512-token batch)");
    let raw_tokens = 512usize;
    let params = ContextParams {
        n_ctx: 2048,
        n_batch: 512,
        n_ubatch: 512,
        n_seq_max: 1,
        n_threads: config.threads as i32,
        n_threads_batch: config.threads as i32,
        kv_unified: false,
        flash_attn: None,
    };
    let mut ctx = Context::new(model, &params)?;
    let mut batch = TokenBatch::new(raw_tokens, 1)?;
    let toks: Vec<Token> = (0..raw_tokens).map(|_| rng.gen_range(4..model.n_vocab() as i32)).collect();
    batch.push_seq(&toks, 0, &[0], true)?;
    ctx.decode_tokens(&batch)?;
    ctx.clear();
    let t = Instant::now();
    ctx.decode_tokens(&batch)?;
    let raw_seconds = t.elapsed().as_secs_f64();
    let raw_tps = raw_tokens as f64 / raw_seconds;

    // Naive: every (prompt, item) decoded from scratch in one sequence.
    progress("naive scoring (every prompt x item from scratch)");
    let t = Instant::now();
    let mut naive_tokens = 0u64;
    let mut naive_scores: Vec<Vec<Vec<f64>>> = Vec::new();
    let naive_soft = if work.naive { &soft[..] } else { &soft[..0] };
    let mut tb = TokenBatch::new(2048, 1)?;
    let mut eb = EmbdBatch::new(rows.max(1), model.n_embd_inp(), 1)?;
    for p in naive_soft {
        let mut per_item = Vec::new();
        for it in &plan.items {
            ctx.clear();
            tb.clear();
            tb.push_seq(&it.before, 0, &[0], false)?;
            ctx.decode_tokens(&tb)?;
            let mut pos = it.before.len() as i32;
            if rows > 0 {
                eb.clear();
                for r in 0..rows {
                    eb.push(p.row(r), pos + r as i32, &[0], false)?;
                }
                ctx.decode_embd(&eb)?;
                pos += rows as i32;
            }
            tb.clear();
            let last = tb.push_seq(&it.after, pos, &[0], true)?.expect("cue tokens");
            ctx.decode_tokens(&tb)?;
            naive_tokens += (it.before.len() + rows + it.after.len()) as u64;
            let logits = ctx.logits(last)?;
            // Single-token labels (VSM13): normalise the label tokens' probabilities.
            let l: Vec<f64> = it.labels.iter().map(|l| f64::from(logits[l[0] as usize])).collect();
            let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = l.iter().map(|v| (v - m).exp()).collect();
            let s: f64 = e.iter().sum();
            per_item.push(e.iter().map(|v| v / s).collect());
        }
        naive_scores.push(per_item);
    }
    let naive_seconds = t.elapsed().as_secs_f64();
    drop(ctx);

    // Exact and batched alternate, each on a fresh engine, so slow phases of a shared machine
    // hit both; the answers of every repeat are the same (checked), the times are medians.
    let refs: Vec<&SoftPrompt> = soft.iter().collect();
    let mut runs: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut results: [Option<(Vec<Vec<ItemScore>>, crate::engine::EngineStats)>; 2] = [None, None];
    for r in 0..work.repeats {
        // ABBA order: a machine that slows down (or speeds up) during the run favours neither.
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let group = if k == 0 { 1 } else { work.batch_prompts };
            let what = if k == 0 { "exact schedule" } else { "batched schedule" };
            progress(&format!("engine scoring, {what} (run {} of {})", r + 1, work.repeats));
            let mut engine = Engine::new(model, EngineConfig { prompt_group: group, ..config.clone() })?;
            let t = Instant::now();
            let sc: Vec<Vec<ItemScore>> = engine.score(&plan, &refs)?;
            runs[k].push(t.elapsed().as_secs_f64());
            match &results[k] {
                Some((first, _)) => anyhow::ensure!(
                    *first == sc,
                    "the {what} gave different answers on run {} than on run 1",
                    r + 1
                ),
                None => results[k] = Some((sc, engine.stats())),
            }
        }
    }
    let [Some((scores, st)), Some((bscores, bst))] = results else { unreachable!("at least one run") };
    // Every list holds `repeats` >= 1 values, so each median exists.
    let median = |v: &[f64]| crate::optim::stats::median(v).unwrap_or(f64::NAN);
    let engine_seconds = median(&runs[0]);
    let batched_seconds = median(&runs[1]);
    let ratio_runs: Vec<f64> = runs[0].iter().zip(&runs[1]).map(|(e, b)| e / b).collect();
    let mut max_diff: f64 = 0.0;
    for (a, b) in scores.iter().zip(&naive_scores) {
        for (x, y) in a.iter().zip(b) {
            for (p, q) in x.probs.iter().zip(y) {
                max_diff = max_diff.max((p - q).abs());
            }
        }
    }
    let eff = st.logical as f64 / engine_seconds;

    let (mut drift_p, mut drift_e) = (0f64, 0f64);
    for (a, b) in scores.iter().zip(&bscores) {
        for (x, y) in a.iter().zip(b) {
            for (p, q) in x.probs.iter().zip(&y.probs) {
                drift_p = drift_p.max((p - q).abs());
            }
            let e = |s: &ItemScore| s.probs.iter().enumerate().map(|(k, p)| k as f64 * p).sum::<f64>();
            drift_e = drift_e.max((e(x) - e(y)).abs());
        }
    }
    Ok(EngineBench {
        model: model_name.to_string(),
        threads: config.threads,
        raw_tokens,
        raw_seconds,
        raw_tokens_per_s: raw_tps,
        prompts,
        rows,
        items: plan.items.len(),
        naive_seconds: work.naive.then_some(naive_seconds),
        naive_tokens,
        engine_seconds,
        engine_tokens_computed: st.computed,
        engine_tokens_logical: st.logical,
        engine_decode_calls: st.decode_calls,
        engine_effective_tokens_per_s: eff,
        ratio_effective_over_raw: eff / raw_tps,
        ratio_naive_over_engine: work.naive.then_some(naive_seconds / engine_seconds),
        max_prob_diff: work.naive.then_some(max_diff),
        exact_evals_per_s: prompts as f64 / engine_seconds,
        batch_prompts: work.batch_prompts,
        batched_wave: config.wave_units(),
        batched_seconds,
        batched_decode_calls: bst.decode_calls,
        batched_evals_per_s: prompts as f64 / batched_seconds,
        batched_effective_tokens_per_s: bst.logical as f64 / batched_seconds,
        ratio_exact_over_batched: median(&ratio_runs),
        repeats: work.repeats,
        ratio_runs,
        exact_seconds_runs: runs[0].clone(),
        batched_seconds_runs: runs[1].clone(),
        batched_max_prob_diff: drift_p,
        batched_max_expected_diff: drift_e,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// Peak resident set size of this process in MiB (Linux), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
