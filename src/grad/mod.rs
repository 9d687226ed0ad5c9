//! The gradient path's backend: a differentiable forward pass of the same GGUF in pure Rust
//! (candle, CPU), with the soft prompt as the only thing that gets a gradient.
//!
//! - [`arch`]: which architectures, and their hyperparameters from the GGUF metadata;
//! - [`frozen`]: projections that pass gradients to their input only;
//! - [`norm`]: RMSNorm with its gradient written out (memory);
//! - [`model`]: Gemma 3 and Llama blocks over embedding rows with any attention mask;
//! - [`tree`]: a plan's items as one tree-masked sequence (each distinct prefix once);
//! - [`scorer`]: option probabilities by the engine's rule, as tensors to differentiate or as
//!   the engine's [`crate::score::item_score::ItemScore`]s.

pub mod arch;
pub mod frozen;
pub mod model;
pub mod norm;
pub mod scorer;
pub mod tree;
