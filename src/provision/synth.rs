//! Synthetic models (`deopt model synth`): the architecture of a real model of some size, its
//! tokenizer taken from another GGUF, and seeded random weights, so that throughput at that
//! size can be measured anywhere without fetching gigabytes. The answers of such a model mean
//! nothing.

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::llama::{
    tokenizer_size, write_synthetic, MetaValue, SynthReport, SynthSpec, SynthTensor, WeightType,
};

/// A model size to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// Gemma 3 270M (the default model): 18 layers, width 640, vocabulary 262,144.
    #[value(name = "gemma3-270m")]
    Gemma3_270m,
    /// Llama 3.2 1B: 16 layers, width 2048, 32/8 heads, vocabulary 128,256, tied output.
    #[value(name = "llama-1b")]
    Llama1b,
    /// Llama 3 8B: 32 layers, width 4096, 32/8 heads, FFN 14,336, vocabulary 128,256.
    #[value(name = "llama-8b")]
    Llama8b,
}

/// Storage of the weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SynthType {
    /// 4-bit blocks (ggml Q4_0), as quantized models are usually run.
    #[value(name = "q4_0")]
    Q4_0,
    /// Half precision.
    #[value(name = "f16")]
    F16,
}

struct Dims {
    arch: &'static str,
    name: &'static str,
    n_embd: i64,
    n_layer: usize,
    n_head: i64,
    n_head_kv: i64,
    head_dim: i64,
    n_ff: i64,
    vocab: usize,
    ctx: u32,
    rope_base: f32,
    tied: bool,
}

impl Shape {
    fn dims(self) -> Dims {
        match self {
            Shape::Gemma3_270m => Dims {
                arch: "gemma3",
                name: "gemma3-270m",
                n_embd: 640,
                n_layer: 18,
                n_head: 4,
                n_head_kv: 1,
                head_dim: 256,
                n_ff: 2048,
                vocab: 262_144,
                ctx: 32_768,
                rope_base: 1_000_000.0,
                tied: true,
            },
            Shape::Llama1b => Dims {
                arch: "llama",
                name: "llama-1b",
                n_embd: 2048,
                n_layer: 16,
                n_head: 32,
                n_head_kv: 8,
                head_dim: 64,
                n_ff: 8192,
                vocab: 128_256,
                ctx: 8192,
                rope_base: 500_000.0,
                tied: true,
            },
            Shape::Llama8b => Dims {
                arch: "llama",
                name: "llama-8b",
                n_embd: 4096,
                n_layer: 32,
                n_head: 32,
                n_head_kv: 8,
                head_dim: 128,
                n_ff: 14_336,
                vocab: 128_256,
                ctx: 8192,
                rope_base: 500_000.0,
                tied: false,
            },
        }
    }

    /// The shape's name as `--shape` spells it.
    pub fn name(self) -> &'static str {
        self.dims().name
    }

    /// The shape's vocabulary size.
    pub fn vocab(self) -> usize {
        self.dims().vocab
    }
}

/// The metadata and tensor table of a shape with a vocabulary of `vocab` tokens.
pub fn spec(shape: Shape, ty: SynthType, vocab: usize, seed: u64) -> SynthSpec {
    let d = shape.dims();
    let a = d.arch;
    let mut meta = vec![
        ("general.architecture".to_string(), MetaValue::Str(a.into())),
        (
            "general.name".to_string(),
            MetaValue::Str(format!("deopt synthetic {} (random weights, seed {seed})", d.name)),
        ),
        (format!("{a}.context_length"), MetaValue::U32(d.ctx)),
        (format!("{a}.embedding_length"), MetaValue::U32(d.n_embd as u32)),
        (format!("{a}.block_count"), MetaValue::U32(d.n_layer as u32)),
        (format!("{a}.feed_forward_length"), MetaValue::U32(d.n_ff as u32)),
        (format!("{a}.attention.head_count"), MetaValue::U32(d.n_head as u32)),
        (format!("{a}.attention.head_count_kv"), MetaValue::U32(d.n_head_kv as u32)),
        (format!("{a}.attention.key_length"), MetaValue::U32(d.head_dim as u32)),
        (format!("{a}.attention.value_length"), MetaValue::U32(d.head_dim as u32)),
        (
            format!("{a}.attention.layer_norm_rms_epsilon"),
            MetaValue::F32(if a == "gemma3" { 1e-6 } else { 1e-5 }),
        ),
        (format!("{a}.rope.freq_base"), MetaValue::F32(d.rope_base)),
        ("general.file_type".to_string(), MetaValue::U32(weight_type(ty).file_type())),
        ("general.quantization_version".to_string(), MetaValue::U32(2)),
    ];
    if a == "gemma3" {
        meta.push((format!("{a}.attention.sliding_window"), MetaValue::U32(512)));
    } else {
        meta.push((format!("{a}.rope.dimension_count"), MetaValue::U32(d.head_dim as u32)));
        meta.push((format!("{a}.vocab_size"), MetaValue::U32(vocab as u32)));
    }
    let (e, q, kv, ff) = (d.n_embd, d.n_head * d.head_dim, d.n_head_kv * d.head_dim, d.n_ff);
    let w = |name: String, ne: &[i64]| SynthTensor { name, ne: ne.to_vec(), norm: false };
    let n = |name: String, len: i64| SynthTensor { name, ne: vec![len], norm: true };
    let mut tensors =
        vec![w("token_embd.weight".into(), &[e, vocab as i64]), n("output_norm.weight".into(), e)];
    if !d.tied {
        tensors.push(w("output.weight".into(), &[e, vocab as i64]));
    }
    for l in 0..d.n_layer {
        let b = |s: &str| format!("blk.{l}.{s}.weight");
        tensors.extend([
            n(b("attn_norm"), e),
            w(b("attn_q"), &[e, q]),
            w(b("attn_k"), &[e, kv]),
            w(b("attn_v"), &[e, kv]),
            w(b("attn_output"), &[q, e]),
            n(b("ffn_norm"), e),
            w(b("ffn_gate"), &[e, ff]),
            w(b("ffn_up"), &[e, ff]),
            w(b("ffn_down"), &[ff, e]),
        ]);
        if a == "gemma3" {
            tensors.extend([
                n(b("attn_q_norm"), d.head_dim),
                n(b("attn_k_norm"), d.head_dim),
                n(b("post_attention_norm"), e),
                n(b("post_ffw_norm"), e),
            ]);
        }
    }
    SynthSpec { meta, tensors, weight_type: weight_type(ty), vocab, std: 0.02, seed }
}

fn weight_type(ty: SynthType) -> WeightType {
    match ty {
        SynthType::Q4_0 => WeightType::Q4_0,
        SynthType::F16 => WeightType::F16,
    }
}

/// Parameters of a spec (matrix and norm entries).
pub fn parameters(spec: &SynthSpec) -> u64 {
    spec.tensors.iter().map(|t| t.ne.iter().product::<i64>() as u64).sum()
}

/// Write a synthetic model of `shape` with the tokenizer of `tokenizer` to `out`. The
/// vocabulary is the shape's, or the tokenizer's where that is larger (said in `note`).
///
/// # Errors
/// A tokenizer source that is not a GGUF with a tokenizer; write failures.
pub fn synthesise(
    shape: Shape,
    ty: SynthType,
    tokenizer: &Path,
    seed: u64,
    out: &Path,
) -> Result<(SynthSpec, SynthReport)> {
    let n = tokenizer_size(tokenizer).with_context(|| format!("--tokenizer {}", tokenizer.display()))?;
    anyhow::ensure!(
        n > 0,
        "--tokenizer {}: has no tokenizer.ggml.tokens; expected a model GGUF (or one written by `deopt model tokenizer`)",
        tokenizer.display()
    );
    let spec = spec(shape, ty, n.max(shape.vocab()), seed);
    let report = write_synthetic(&spec, tokenizer, out)?;
    Ok((spec, report))
}

/// Write a GGUF holding only `from`'s tokenizer (its `tokenizer.*` keys, no tensors): a few
/// megabytes that [`synthesise`] accepts as `--tokenizer`, small enough to carry where the
/// model itself cannot go.
///
/// # Errors
/// As [`synthesise`].
pub fn tokenizer_only(from: &Path, out: &Path) -> Result<SynthReport> {
    let n = tokenizer_size(from).with_context(|| format!("--from {}", from.display()))?;
    anyhow::ensure!(n > 0, "--from {}: has no tokenizer.ggml.tokens; expected a model GGUF", from.display());
    let spec = SynthSpec {
        meta: Vec::new(),
        tensors: Vec::new(),
        weight_type: WeightType::F16,
        vocab: n,
        std: 0.0,
        seed: 0,
    };
    Ok(write_synthetic(&spec, from, out)?)
}
