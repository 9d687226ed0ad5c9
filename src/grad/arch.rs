//! The hyperparameters of a GGUF's architecture that the differentiable forward pass needs,
//! read from the file's metadata with candle's GGUF reader.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use candle_core::quantized::gguf_file::Value;

/// Architectures the gradient path implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Gemma 3: q/k norms, pre- and post-norms around attention and MLP, GeLU, NeoX RoPE, every
    /// sixth layer global and the others sliding-window.
    Gemma3,
    /// Llama (also SmolLM2, Mistral-style GGUFs): SwiGLU MLP, interleaved RoPE.
    Llama,
}

/// Architectures `deopt tune` accepts, for error messages.
pub const SUPPORTED: &str = "gemma3, llama";

/// Shapes and constants of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchConfig {
    /// Which forward pass.
    pub arch: Arch,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Layers.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads.
    pub n_head_kv: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// RoPE base of global layers.
    pub rope_base: f64,
    /// RoPE base of sliding-window layers (Gemma 3: 10,000, not stored in the GGUF).
    pub rope_base_swa: f64,
    /// Position scale of global layers (1 / linear scaling factor).
    pub rope_scale: f64,
    /// Sliding window of local layers (None: every layer is global).
    pub sliding_window: Option<usize>,
    /// Training context.
    pub n_ctx: usize,
}

impl ArchConfig {
    /// Read from GGUF metadata; `source` names the file in errors.
    ///
    /// # Errors
    /// An architecture the gradient path does not implement, or missing keys.
    pub fn from_metadata(meta: &HashMap<String, Value>, source: &str) -> Result<ArchConfig> {
        let name = meta
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .ok_or_else(|| anyhow!("{source}: no general.architecture in the GGUF metadata"))?
            .clone();
        let arch = match name.as_str() {
            "gemma3" => Arch::Gemma3,
            "llama" => Arch::Llama,
            other => bail!(
                "{source}: architecture '{other}' is not supported by the gradient path (deopt tune): expected one of {SUPPORTED}"
            ),
        };
        let get = |key: &str| meta.get(&format!("{name}.{key}"));
        let uint = |key: &str| -> Result<usize> {
            let v = get(key).ok_or_else(|| anyhow!("{source}: no {name}.{key} in the GGUF metadata"))?;
            Ok(v.to_u32().map(|x| x as usize).or_else(|_| v.to_u64().map(|x| x as usize))?)
        };
        let float = |key: &str| get(key).and_then(|v| v.to_f32().ok()).map(f64::from);
        let n_embd = uint("embedding_length")?;
        let n_head = uint("attention.head_count")?;
        let n_head_kv = uint("attention.head_count_kv").unwrap_or(n_head);
        let head_dim = uint("attention.key_length").unwrap_or(n_embd / n_head.max(1));
        let rope_scale = match get("rope.scaling.type").and_then(|v| v.to_string().ok()).map(String::as_str) {
            None | Some("none") => 1.0,
            Some("linear") => 1.0 / float("rope.scaling.factor").unwrap_or(1.0),
            Some(other) => bail!("{source}: RoPE scaling '{other}' is not supported by the gradient path: expected none or linear"),
        };
        let (sliding_window, rope_base_swa) = match arch {
            Arch::Gemma3 => (Some(uint("attention.sliding_window")?), 10_000.0),
            Arch::Llama => (None, 0.0),
        };
        Ok(ArchConfig {
            arch,
            n_embd,
            n_layer: uint("block_count")?,
            n_head,
            n_head_kv,
            head_dim,
            eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
            rope_base: float("rope.freq_base").unwrap_or(10_000.0),
            rope_base_swa,
            rope_scale,
            sliding_window,
            n_ctx: uint("context_length")?,
        })
    }

    /// Whether layer `il` attends within the sliding window (llama.cpp's Gemma 3 pattern: every
    /// sixth layer is global).
    pub fn is_swa(&self, il: usize) -> bool {
        self.sliding_window.is_some() && il % 6 < 5
    }
}
