//! Sampling many continuations at once: one KV sequence per request, one token of each per
//! `llama_decode` call, and the token prefix the requests share decoded once and copied.
//!
//! Each request has its own seeded RNG, so its text depends on its seed and prompt, not on
//! which other requests share its batch (up to llama.cpp's batch-dependent rounding, which
//! the engine's module docs describe). Sampling is temperature + nucleus (top-p), exact: the
//! nucleus is found among the tokens above a probability threshold that is lowered until
//! they hold the nucleus, so the whole vocabulary is sorted only when it must be.

use anyhow::{bail, Context as _, Result};
use rand::{Rng as _, SeedableRng as _};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::argmax;
use super::generation::Stop;
use crate::llama::{Context, ContextParams, Model, Pos, SeqId, Token, TokenBatch};

/// Special-token texts that end a turn in common chat templates.
const END_PIECES: &[&str] =
    &["<end_of_turn>", "<eos>", "<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "</s>"];

/// How to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleConfig {
    /// Most new tokens per request.
    pub max_tokens: usize,
    /// Temperature; 0 = greedy.
    pub temperature: f64,
    /// Nucleus mass in (0, 1]; 1 = the whole distribution.
    pub top_p: f64,
    /// CPU threads.
    pub threads: usize,
    /// Most requests decoded side by side (each holds a KV sequence).
    pub parallel: usize,
}

/// One continuation to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The prompt's tokens (with BOS where the model wants one).
    pub tokens: Vec<Token>,
    /// Seed of this request's sampler.
    pub seed: u64,
}

/// A sampled continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// The text (without an end token).
    pub text: String,
    /// Tokens sampled.
    pub n_tokens: usize,
    /// Why it ended ([`Stop::BlankLine`] here means the caller's stop rule fired).
    pub stop: Stop,
}

/// Work done, for progress and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SampleStats {
    /// Prompt tokens decoded (the shared prefix counted once per group).
    pub prompt_tokens: u64,
    /// Prompt tokens the requests hold in all (what decoding each alone would cost).
    pub prompt_tokens_logical: u64,
    /// Tokens sampled.
    pub sampled: u64,
    /// `llama_decode` calls.
    pub decode_calls: u64,
}

/// Sample a continuation for every request. `stop` sees the text so far and ends a request
/// when it returns true (e.g. once a JSON object is closed). `progress` gets the number of
/// finished requests.
///
/// # Errors
/// A bad temperature or top-p, an empty request, a context too small, decode failures.
pub fn sample_many(
    model: &Model,
    requests: &[Request],
    cfg: &SampleConfig,
    stop: &dyn Fn(&str) -> bool,
    progress: &mut dyn FnMut(usize),
) -> Result<(Vec<Sampled>, SampleStats)> {
    if !(cfg.temperature >= 0.0 && cfg.temperature.is_finite()) {
        bail!("temperature {}: expected a finite number >= 0", cfg.temperature);
    }
    if !(cfg.top_p > 0.0 && cfg.top_p <= 1.0) {
        bail!("top-p {}: expected a number in (0, 1]", cfg.top_p);
    }
    if requests.iter().any(|r| r.tokens.is_empty()) {
        bail!("a sampling request has an empty prompt");
    }
    let mut out = Vec::with_capacity(requests.len());
    let mut stats = SampleStats::default();
    let group = cfg.parallel.clamp(1, 255);
    for chunk in requests.chunks(group) {
        out.extend(sample_group(model, chunk, cfg, stop, &mut stats)?);
        progress(out.len());
    }
    Ok((out, stats))
}

/// Length of the longest token prefix all requests share, leaving each at least one token.
fn shared_prefix(requests: &[Request]) -> usize {
    let first = &requests[0].tokens;
    let mut n = requests.iter().map(|r| r.tokens.len() - 1).min().unwrap_or(0);
    for r in &requests[1..] {
        n = n.min(first.iter().zip(&r.tokens).take_while(|(a, b)| a == b).count());
    }
    n
}

struct Live {
    seq: SeqId,
    pos: Pos,
    rng: Xoshiro256PlusPlus,
    bytes: Vec<u8>,
    n: usize,
    next: Option<Token>,
    done: Option<Stop>,
}

fn sample_group(
    model: &Model,
    requests: &[Request],
    cfg: &SampleConfig,
    stop: &dyn Fn(&str) -> bool,
    stats: &mut SampleStats,
) -> Result<Vec<Sampled>> {
    let n_prefix = shared_prefix(requests);
    let tails: usize = requests.iter().map(|r| r.tokens.len() - n_prefix).sum();
    let limit = model.n_ctx_train();
    let longest = requests.iter().map(|r| r.tokens.len()).max().unwrap_or(0) + cfg.max_tokens + 1;
    if longest > limit {
        bail!(
            "a prompt plus --max-tokens needs {longest} tokens of context; the model was trained on {limit}"
        );
    }
    const BATCH: usize = 512;
    let threads = cfg.threads.max(1) as i32;
    // One KV stream per sequence (not a unified buffer): a token attends to its own
    // sequence's cells only, instead of masking every other sequence's, and its result does
    // not depend on its company. The prefix is copied into each stream once.
    let per_seq = longest.div_ceil(256) * 256;
    let n_seq = requests.len() + 1;
    let params = ContextParams {
        n_ctx: (per_seq * n_seq) as u32,
        n_batch: BATCH as u32,
        n_ubatch: BATCH as u32,
        n_seq_max: n_seq as u32,
        n_threads: threads,
        n_threads_batch: threads,
        kv_unified: false,
        flash_attn: None,
    };
    let mut ctx = Context::new(model, &params).context("creating the llama.cpp context for sampling")?;
    let mut batch = TokenBatch::new(BATCH, 1)?;
    // The shared prefix, once, in sequence 0.
    let prefix = &requests[0].tokens[..n_prefix];
    for (k, chunk) in prefix.chunks(BATCH).enumerate() {
        batch.clear();
        batch.push_seq(chunk, (k * BATCH) as Pos, &[0], false)?;
        ctx.decode_tokens(&batch)?;
        stats.decode_calls += 1;
    }
    stats.prompt_tokens += n_prefix as u64 + tails as u64;
    stats.prompt_tokens_logical += requests.iter().map(|r| r.tokens.len() as u64).sum::<u64>();

    let mut live: Vec<Live> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| Live {
            seq: (i + 1) as SeqId,
            pos: n_prefix as Pos,
            rng: Xoshiro256PlusPlus::seed_from_u64(r.seed),
            bytes: Vec::new(),
            n: 0,
            next: None,
            done: None,
        })
        .collect();
    for l in &live {
        if n_prefix > 0 {
            ctx.seq_cp(0, l.seq, -1, -1)?;
        }
    }
    // The tails, packed into full batches; a request's first token is sampled right after the
    // call that holds its last prompt token.
    let mut units: Vec<(usize, Token, bool)> = Vec::with_capacity(tails);
    for (i, r) in requests.iter().enumerate() {
        let tail = &r.tokens[n_prefix..];
        for (j, &t) in tail.iter().enumerate() {
            units.push((i, t, j + 1 == tail.len()));
        }
    }
    for chunk in units.chunks(BATCH) {
        batch.clear();
        let mut outs = Vec::new();
        for &(i, t, last) in chunk {
            let l = &mut live[i];
            let idx = batch.push(t, l.pos, &[l.seq], last)?;
            l.pos += 1;
            if last {
                outs.push((i, idx));
            }
        }
        ctx.decode_tokens(&batch)?;
        stats.decode_calls += 1;
        for (i, idx) in outs {
            let l = &mut live[i];
            l.next = Some(pick(ctx.logits(idx)?, cfg, &mut l.rng));
        }
    }
    ctx.seq_rm(0, -1, -1)?;

    let eos = model.eos();
    loop {
        batch.clear();
        let mut outs = Vec::new();
        for (i, l) in live.iter_mut().enumerate() {
            if l.done.is_some() {
                continue;
            }
            let t = l.next.take().expect("a sampled token");
            if Some(t) == eos || END_PIECES.contains(&model.token_to_piece(t, true)?.as_str()) {
                l.done = Some(Stop::Eos);
                ctx.seq_rm(l.seq, -1, -1)?;
                continue;
            }
            l.bytes.extend(model.token_to_bytes(t, false)?);
            l.n += 1;
            stats.sampled += 1;
            if stop(&String::from_utf8_lossy(&l.bytes)) {
                l.done = Some(Stop::BlankLine);
            } else if l.n >= cfg.max_tokens {
                l.done = Some(Stop::MaxTokens);
            }
            if l.done.is_some() {
                ctx.seq_rm(l.seq, -1, -1)?;
                continue;
            }
            outs.push((i, batch.push(t, l.pos, &[l.seq], true)?));
            l.pos += 1;
        }
        if outs.is_empty() {
            break;
        }
        ctx.decode_tokens(&batch)?;
        stats.decode_calls += 1;
        for (i, idx) in outs {
            let l = &mut live[i];
            l.next = Some(pick(ctx.logits(idx)?, cfg, &mut l.rng));
        }
    }
    Ok(live
        .into_iter()
        .map(|l| Sampled {
            text: String::from_utf8_lossy(&l.bytes).into_owned(),
            n_tokens: l.n,
            stop: l.done.unwrap_or(Stop::MaxTokens),
        })
        .collect())
}

/// The next token: greedy at temperature 0, else temperature + top-p.
fn pick(logits: &[f32], cfg: &SampleConfig, rng: &mut Xoshiro256PlusPlus) -> Token {
    if cfg.temperature == 0.0 {
        argmax(logits)
    } else {
        sample_top_p(logits, cfg.temperature, cfg.top_p, rng)
    }
}

/// Draw from the smallest set of most probable tokens whose mass reaches `top_p` (of
/// softmax(logits / temperature)), renormalised.
pub fn sample_top_p(logits: &[f32], temperature: f64, top_p: f64, rng: &mut Xoshiro256PlusPlus) -> Token {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let w: Vec<f64> = logits.iter().map(|&v| ((v as f64 - max) / temperature).exp()).collect();
    let total: f64 = w.iter().sum();
    let goal = top_p * total;
    // Candidates above a threshold (relative to the top weight 1.0); lower it until they hold
    // the nucleus. Since the nucleus is the most probable tokens, it lies inside them then.
    let mut threshold = 1e-4;
    let mut cand: Vec<(usize, f64)>;
    loop {
        cand = w.iter().copied().enumerate().filter(|&(_, x)| x >= threshold).collect();
        let mass: f64 = cand.iter().map(|c| c.1).sum();
        if mass >= goal || threshold == 0.0 {
            break;
        }
        threshold = if threshold < 1e-30 { 0.0 } else { threshold * 1e-4 };
    }
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut acc = 0.0;
    let mut keep = cand.len();
    for (k, c) in cand.iter().enumerate() {
        acc += c.1;
        if acc >= goal {
            keep = k + 1;
            break;
        }
    }
    let nucleus = &cand[..keep];
    let mass: f64 = nucleus.iter().map(|c| c.1).sum();
    let mut u = rng.gen::<f64>() * mass;
    for c in nucleus {
        u -= c.1;
        if u <= 0.0 {
            return c.0 as Token;
        }
    }
    nucleus[0].0 as Token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nucleus_keeps_the_most_probable_tokens() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        // Probabilities about 0.5, 0.3, 0.2 (+ tiny): top-p 0.6 keeps only the first two.
        let l = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln(), -40.0];
        let draws: Vec<Token> = (0..400).map(|_| sample_top_p(&l, 1.0, 0.6, &mut rng)).collect();
        assert!(draws.iter().all(|&t| t == 0 || t == 1));
        let ones = draws.iter().filter(|&&t| t == 1).count() as f64 / 400.0;
        assert!((ones - 0.375).abs() < 0.08, "{ones}");
        // top-p 1 reaches the third token; a tiny top-p is greedy.
        let all: Vec<Token> = (0..400).map(|_| sample_top_p(&l, 1.0, 1.0, &mut rng)).collect();
        assert!(all.contains(&2));
        assert!((0..50).all(|_| sample_top_p(&l, 1.0, 1e-9, &mut rng) == 0));
        // A flat distribution over a large vocabulary needs the threshold lowered: all tokens
        // stay reachable.
        let flat = vec![0.0f32; 1000];
        let d: std::collections::BTreeSet<Token> =
            (0..3000).map(|_| sample_top_p(&flat, 1.0, 0.9, &mut rng)).collect();
        assert!(d.len() > 800, "{}", d.len());
    }

    #[test]
    fn shared_prefix_leaves_a_token() {
        let r = |t: &[Token]| Request { tokens: t.to_vec(), seed: 0 };
        assert_eq!(shared_prefix(&[r(&[1, 2, 3]), r(&[1, 2, 4])]), 2);
        assert_eq!(shared_prefix(&[r(&[1, 2, 3]), r(&[1, 2, 3])]), 2);
        assert_eq!(shared_prefix(&[r(&[1, 2, 3])]), 2);
        assert_eq!(shared_prefix(&[r(&[5, 2]), r(&[1, 2])]), 0);
    }
}
