//! Open-ended generation with a soft prompt, in the same place as during fitness scoring.
//!
//! The conversation is laid out as in [`crate::prompt::render`]: the soft prompt opens the user message
//! and the user's question takes the place of a survey item; with the chat template the
//! assistant turn follows, with the plain layout the answer cue `Answer: ` does. The text before
//! the soft prompt is decoded as tokens; the soft rows and the text after them go in as
//! embedding rows (tokens as their scaled embedding rows, which reproduce the token path), as
//! the engine does. Then tokens are sampled one at a time: greedy at temperature 0, otherwise
//! from the softmax at that temperature with a seeded xoshiro RNG. Generation stops at an
//! end-of-sequence or end-of-turn token, at a blank line (`"\n\n"`), or after `max_tokens`.

use anyhow::{bail, Result};
use rand::{Rng as _, SeedableRng as _};

use super::argmax;
use crate::llama::{Context, ContextParams, EmbdBatch, Model, Pos, Token, TokenBatch};
use crate::prompt::render::{self, TemplateKind, SOFT_MARKER};
use crate::prompt::softprompt::SoftPrompt;

/// Special-token texts that end a turn in common chat templates.
const END_PIECES: &[&str] =
    &["<end_of_turn>", "<eos>", "<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "</s>"];

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    /// Most new tokens.
    pub max_tokens: usize,
    /// Sampling temperature; 0 = greedy.
    pub temperature: f64,
    /// RNG seed (used when `temperature > 0`).
    pub seed: u64,
    /// Chat template or plain layout.
    pub template: TemplateKind,
    /// CPU threads.
    pub threads: usize,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            max_tokens: 64,
            temperature: 0.0,
            seed: 0,
            template: TemplateKind::Auto,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// An end-of-sequence or end-of-turn token.
    Eos,
    /// A blank line.
    BlankLine,
    /// `max_tokens` reached.
    MaxTokens,
}

/// A generated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The answer text (without the stop token or blank line), trimmed.
    pub text: String,
    /// The sampled tokens, including any that the blank-line cut removed from `text`.
    pub tokens: Vec<Token>,
    /// Why it ended.
    pub stop: Stop,
    /// The rendered prompt with `[SOFT PROMPT: T rows]` where the rows go.
    pub rendered: String,
}

/// Text before and after the soft prompt for `question`.
///
/// # Errors
/// `--template chat` on a model without a chat template; template failures.
pub fn render(
    model: &Model,
    question: &str,
    with_soft: bool,
    template: TemplateKind,
) -> Result<(String, String)> {
    let chat = render::use_chat(model, template)?;
    let user = if with_soft { format!("{SOFT_MARKER}{question}") } else { question.to_string() };
    let text = render::conversation(model, chat, None, &user)?;
    Ok(render::split_at_marker(&text))
}

/// Generate an answer to `question` with `prompt` (zero rows = no soft prompt).
///
/// # Errors
/// Width mismatch, tokenization, context or decode failures.
pub fn generate(
    model: &Model,
    prompt: &SoftPrompt,
    question: &str,
    cfg: &GenerateConfig,
) -> Result<Generation> {
    let with_soft = prompt.rows() > 0;
    if with_soft && prompt.n_embd() != model.n_embd_inp() {
        bail!(
            "soft prompt rows are {} wide but the model's embeddings are {} wide (the prompt was made for another model)",
            prompt.n_embd(),
            model.n_embd_inp()
        );
    }
    if !(cfg.temperature >= 0.0 && cfg.temperature.is_finite()) {
        bail!("temperature {}: expected a finite number >= 0", cfg.temperature);
    }
    let (a, b) = render(model, question, with_soft, cfg.template)?;
    let rendered = format!(
        "{a}{}{b}",
        if with_soft { format!("[SOFT PROMPT: {} rows]", prompt.rows()) } else { String::new() }
    );
    let mut before = model.tokenize(&a, false, true)?;
    if model.add_bos() {
        if let Some(bos) = model.bos() {
            if before.first() != Some(&bos) {
                before.insert(0, bos);
            }
        }
    }
    let after = if b.is_empty() { Vec::new() } else { model.tokenize(&b, false, true)? };
    let n_prefix = before.len() + prompt.rows() + after.len();
    let n_ctx = (n_prefix + cfg.max_tokens + 1) as u32;
    if n_ctx as usize > model.n_ctx_train() {
        bail!(
            "prompt plus max_tokens need {n_ctx} tokens of context; the model was trained on {}",
            model.n_ctx_train()
        );
    }
    let threads = cfg.threads.max(1) as i32;
    let params = ContextParams {
        n_ctx,
        n_batch: 512,
        n_ubatch: 512,
        n_seq_max: 1,
        n_threads: threads,
        n_threads_batch: threads,
        ..ContextParams::default()
    };
    let mut ctx = Context::new(model, &params)?;
    let n_batch = ctx.n_batch() as usize;

    // Prefix: tokens before the soft prompt, then soft rows and the rest as embedding rows.
    let mut pos: Pos = 0;
    let mut last_index = 0;
    let mut tail: Vec<Token> = Vec::new();
    let tokens_first: &[Token] = if with_soft {
        &before
    } else {
        tail.extend_from_slice(&before);
        tail.extend_from_slice(&after);
        &tail
    };
    let total_tok = tokens_first.len();
    let mut tb = TokenBatch::new(n_batch, 1)?;
    for (k, chunk) in tokens_first.chunks(n_batch).enumerate() {
        tb.clear();
        let is_last = !with_soft && (k + 1) * n_batch >= total_tok;
        let idx = tb.push_seq(chunk, pos, &[0], is_last)?;
        ctx.decode_tokens(&tb)?;
        pos += chunk.len() as Pos;
        if let Some(i) = idx {
            last_index = i;
        }
    }
    if with_soft {
        let w = model.n_embd_inp();
        let mut rows = prompt.data().to_vec();
        rows.extend(model.token_embeddings().scaled_rows(&after)?);
        let n_rows = rows.len() / w;
        let mut eb = EmbdBatch::new(n_batch, w, 1)?;
        for (k, chunk) in rows.chunks(n_batch * w).enumerate() {
            eb.clear();
            let is_last = (k + 1) * n_batch >= n_rows;
            let idx = eb.push_seq(chunk, pos, &[0], is_last)?;
            ctx.decode_embd(&eb)?;
            pos += (chunk.len() / w) as Pos;
            if let Some(i) = idx {
                last_index = i;
            }
        }
    }

    let eos = model.eos();
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
    let mut tokens = Vec::new();
    let mut bytes: Vec<u8> = Vec::new();
    let mut stop = Stop::MaxTokens;
    while tokens.len() < cfg.max_tokens {
        let logits = ctx.logits(last_index)?;
        let t =
            if cfg.temperature == 0.0 { argmax(logits) } else { sample(logits, cfg.temperature, &mut rng) };
        if Some(t) == eos || END_PIECES.contains(&model.token_to_piece(t, true)?.as_str()) {
            stop = Stop::Eos;
            break;
        }
        tokens.push(t);
        bytes.extend(model.token_to_bytes(t, false)?);
        if String::from_utf8_lossy(&bytes).trim_start().contains("\n\n") {
            stop = Stop::BlankLine;
            break;
        }
        if tokens.len() == cfg.max_tokens {
            break;
        }
        tb.clear();
        last_index = tb.push(t, pos, &[0], true)?;
        ctx.decode_tokens(&tb)?;
        pos += 1;
    }
    let full = String::from_utf8_lossy(&bytes).into_owned();
    let lead = full.len() - full.trim_start().len();
    let body = &full[lead..];
    let text = body.split("\n\n").next().unwrap_or("").trim().to_string();
    Ok(Generation { text, tokens, stop, rendered })
}

/// Draw from softmax(logits / temperature).
fn sample(logits: &[f32], temperature: f64, rng: &mut rand_xoshiro::Xoshiro256PlusPlus) -> Token {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let weights: Vec<f64> = logits.iter().map(|&v| ((v as f64 - max) / temperature).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        u -= w;
        if u <= 0.0 {
            return i as Token;
        }
    }
    argmax(logits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_and_sampling() {
        let l = [0.0f32, 3.0, 1.0, 3.0];
        assert_eq!(argmax(&l), 1);
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7);
        // A very low temperature behaves like argmax; a peaked distribution always wins.
        let peaked = [0.0f32, 100.0, 0.0];
        for _ in 0..20 {
            assert_eq!(sample(&peaked, 1.0, &mut rng), 1);
        }
        let flat = [0.0f32; 4];
        let draws: Vec<Token> = (0..200).map(|_| sample(&flat, 1.0, &mut rng)).collect();
        assert!((0..4).all(|k| draws.contains(&k)));
    }
}
