//! Safe interface over llama.cpp's C API (through `llama-cpp-sys-2`).
//!
//! This module owns every `unsafe` block of deopt. Each C handle has exactly one owning Rust
//! type (a `NonNull` plus a `Drop` that calls the matching free):
//!
//! | C handle                         | owner            | thread rules          |
//! |----------------------------------|------------------|-----------------------|
//! | `llama_model`                    | [`Model`]        | `Send + Sync`         |
//! | `llama_context`                  | [`Context`]      | `Send`, not `Sync`    |
//! | `llama_batch` (tokens)           | [`TokenBatch`]   | `Send`                |
//! | `llama_batch` (embeddings)       | [`EmbdBatch`]    | `Send`                |
//! | `gguf_context` + `ggml_context`  | [`GgufFile`]     | `Send + Sync`         |
//!
//! A [`Context`] borrows its [`Model`], so the model outlives every context built on it.
//!
//! Soft prompts enter the model as rows of an [`EmbdBatch`]. llama.cpp does not scale rows fed
//! as embeddings, while some architectures (Gemma) scale token embeddings by `sqrt(n_embd)` on
//! the token path; [`Model::embedding_scale`] and [`TokenEmbeddings::scaled_rows`] give rows in
//! the space the first layer actually sees.
//!
//! The backend is initialised once per process, on first use (see [`init_backend`]).
//! llama.cpp's log output is dropped below error level unless `DEOPT_LLAMA_LOG=1` is set or
//! [`set_log_verbose`] is called.

mod backend;
mod batch;
mod context;
mod error;
mod gguf;
mod model;
mod synth;

pub use backend::{gpu_offload_available, init_backend, last_error, set_log_verbose};
pub use batch::{EmbdBatch, TokenBatch};
pub use context::{Context, ContextParams};
pub use error::{DecodeError, LlamaError};
pub use gguf::{dequantize_to_f16, DequantizeReport, GgufFile, TensorInfo};
pub use model::{format_chat, EmbeddingStats, Model, ModelParams, TokenEmbeddings};
pub use synth::{
    tokenizer_size, write_synthetic, MetaValue, SynthReport, SynthSpec, SynthTensor, WeightType,
};

/// Layers offloaded to a GPU unless a flag says otherwise: all of them in a CUDA build, none
/// in a CPU build (where llama.cpp ignores the setting anyway).
pub const DEFAULT_GPU_LAYERS: i32 = if cfg!(feature = "cuda") { -1 } else { 0 };

/// A token id of the model's vocabulary.
pub type Token = i32;
/// A position within a sequence (0-based).
pub type Pos = i32;
/// A sequence id, in `0..n_seq_max` of the context.
pub type SeqId = i32;
