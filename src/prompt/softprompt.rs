//! Soft prompts: T x n_embd matrices of input embeddings, and their file format.
//!
//! A prompt file is safetensors with one f32 tensor `prompt` of shape [T, n_embd] and JSON-ish
//! string metadata (model hash, n_embd, country, survey, fitness, ...). The rows live in the
//! space the model's first layer sees: for Gemma that is the token embeddings already
//! multiplied by sqrt(n_embd).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use safetensors::tensor::{Dtype, TensorView};

/// A soft prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct SoftPrompt {
    rows: usize,
    n_embd: usize,
    data: Vec<f32>,
}

impl SoftPrompt {
    /// A prompt from row-major data.
    ///
    /// # Errors
    /// If `data.len() != rows * n_embd` or a value is not finite.
    pub fn new(rows: usize, n_embd: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != rows * n_embd {
            bail!("soft prompt data has {} values, expected {rows} x {n_embd}", data.len());
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            bail!("soft prompt value {i} is not finite");
        }
        Ok(SoftPrompt { rows, n_embd, data })
    }

    /// The empty prompt (T = 0).
    pub fn empty(n_embd: usize) -> Self {
        SoftPrompt { rows: 0, n_embd, data: Vec::new() }
    }

    /// Number of rows T.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row width.
    pub fn n_embd(&self) -> usize {
        self.n_embd
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.n_embd..(r + 1) * self.n_embd]
    }

    /// All values, row-major.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// Save as safetensors (tensor `prompt`), atomically (temp file + rename).
    pub fn save(&self, path: &Path, metadata: &HashMap<String, String>) -> Result<()> {
        let bytes: Vec<u8> = self.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view = TensorView::new(Dtype::F32, vec![self.rows, self.n_embd], &bytes)
            .map_err(|e| anyhow!("building tensor: {e:?}"))?;
        let mut meta = metadata.clone();
        meta.insert("format".into(), "deopt-softprompt".into());
        meta.insert("rows".into(), self.rows.to_string());
        meta.insert("n_embd".into(), self.n_embd.to_string());
        let out = safetensors::serialize([("prompt", view)], &Some(meta))
            .map_err(|e| anyhow!("serialising {}: {e:?}", path.display()))?;
        crate::fsutil::write_atomic(path, &out)
    }

    /// Load a safetensors prompt file; returns the prompt and its metadata.
    ///
    /// # Errors
    /// Unreadable file, not safetensors, no `prompt` tensor, wrong dtype or rank.
    pub fn load(path: &Path) -> Result<(SoftPrompt, HashMap<String, String>)> {
        SoftPrompt::load_tensor(path, &["prompt"])
    }

    /// Load the first of `names` found in a safetensors file (e.g. `prompt`, or PEFT's
    /// `prompt_embeddings`): a 2-D F32 tensor [T, n_embd]. Returns it with the file's metadata.
    ///
    /// # Errors
    /// Unreadable file, not safetensors, none of the names, wrong dtype or rank.
    pub fn load_tensor(path: &Path, names: &[&str]) -> Result<(SoftPrompt, HashMap<String, String>)> {
        let shown = path.display();
        let bytes = std::fs::read(path).with_context(|| format!("{shown}: cannot read prompt file"))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| anyhow!("{shown}: not a safetensors file ({})", safetensors_reason(&e)))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow!("{shown}: not a safetensors file ({})", safetensors_reason(&e)))?;
        let Some((name, t)) = names.iter().find_map(|n| st.tensor(n).ok().map(|t| (*n, t))) else {
            let wanted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
            bail!(
                "{shown}: no tensor named {} (found: {})",
                wanted.join(" or "),
                st.names().into_iter().cloned().collect::<Vec<_>>().join(", ")
            );
        };
        if t.dtype() != Dtype::F32 {
            bail!("{shown}: tensor '{name}' dtype {:?}: expected F32", t.dtype());
        }
        let shape = t.shape();
        if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
            bail!(
                "{shown}: tensor '{name}' shape {shape:?}: expected [T, n_embd] with T and n_embd at least 1"
            );
        }
        let data: Vec<f32> =
            t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let p = SoftPrompt::new(shape[0], shape[1], data).with_context(|| format!("{shown}"))?;
        // deopt's own metadata must describe the tensor it sits beside.
        for (key, want) in [("rows", shape[0]), ("n_embd", shape[1])] {
            if let Some(v) = meta.get(key).filter(|v| v.parse::<usize>().ok() != Some(want)) {
                bail!(
                    "{shown}: metadata {key} '{}': expected {want}, as tensor '{name}' has",
                    crate::data::input_error::clip(v)
                );
            }
        }
        Ok((p, meta))
    }

    /// Check the width against a model's.
    pub fn check_width(&self, n_embd: usize, source: &str) -> Result<()> {
        if self.n_embd != n_embd {
            bail!(
                "{source}: prompt rows are {} wide but the model's embeddings are {n_embd} wide \
                 (the prompt was made for another model)",
                self.n_embd
            );
        }
        Ok(())
    }
}

/// A safetensors error in words (the crate's own Display prints its variant names).
fn safetensors_reason(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall | E::InvalidHeaderLength => "shorter than its header says".into(),
        E::HeaderTooLarge => "header larger than 100 MB".into(),
        E::InvalidHeader | E::InvalidHeaderStart | E::InvalidHeaderDeserialization => {
            "header is not the expected JSON".into()
        }
        E::JsonError(j) => format!("header is not the expected JSON: {j}"),
        E::MetadataIncompleteBuffer => "tensor data does not fill the file".into(),
        E::ValidationOverflow | E::TensorInvalidInfo | E::InvalidTensorView(..) => {
            "a tensor's shape, type and offsets do not fit together".into()
        }
        E::InvalidOffset(t) => format!("tensor '{}' has invalid offsets", crate::data::input_error::clip(t)),
        E::TensorNotFound(t) => format!("no tensor '{}'", crate::data::input_error::clip(t)),
        E::IoError(io) => io.to_string(),
    }
}
