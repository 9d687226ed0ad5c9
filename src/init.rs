//! Initial soft prompts: how the optimizer's first population and the `random-soft` baseline
//! are drawn.

use anyhow::{bail, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::llama::Model;
use crate::softprompt::SoftPrompt;

/// How to draw an initial soft prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitKind {
    /// Rows are token embeddings of random vocabulary entries, scaled into the input space.
    #[default]
    Vocab,
}

/// Draw one prompt of `rows` rows.
///
/// # Errors
/// If the model's embeddings cannot be read.
pub fn draw(model: &Model, kind: InitKind, rows: usize, rng: &mut impl Rng) -> Result<SoftPrompt> {
    match kind {
        InitKind::Vocab => {
            let n_vocab = model.n_vocab();
            if n_vocab < 2 {
                bail!("the model's vocabulary is empty");
            }
            // Skip the first few ids, which are control tokens in most vocabularies.
            let lo = 4.min(n_vocab as i32 - 1);
            let toks: Vec<i32> = (0..rows).map(|_| rng.gen_range(lo..n_vocab as i32)).collect();
            let data = model.token_embeddings().scaled_rows(&toks)?;
            SoftPrompt::new(rows, model.n_embd_inp(), data)
        }
    }
}
