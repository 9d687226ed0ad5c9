//! Initial soft prompts: how the optimizer's first population and the `random-soft` baseline
//! are drawn.
//!
//! Every kind draws from the caller's RNG only, so one run seed fixes the whole population.
//! All rows live in the scaled input space (see [`crate::prompt::softprompt`]).

use anyhow::{bail, Result};
use rand::Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::data::country::Country;
use crate::llama::Model;
use crate::prompt::softprompt::SoftPrompt;

/// How to draw an initial soft prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitKind {
    /// Rows are token embeddings of random vocabulary entries, scaled into the input space.
    #[default]
    Vocab,
    /// Rows are the scaled embeddings of a short text naming the culture, plus Gaussian noise;
    /// the number of rows is the text's token count.
    Persona,
    /// Independent Gaussian values with the mean and standard deviation of the scaled
    /// embedding table.
    Normal,
}

impl InitKind {
    /// Whether the number of rows is set by the caller (`false` for `persona`, whose rows
    /// follow its text).
    pub fn uses_rows(self) -> bool {
        !matches!(self, InitKind::Persona)
    }
}

/// Relative size of the noise added to persona rows: its standard deviation is this share of
/// the embedding table's value standard deviation, so individuals differ while staying close
/// to the text.
pub const PERSONA_NOISE: f64 = 0.1;

/// The text whose embeddings seed a `persona` prompt.
pub fn persona_text(country: &Country) -> String {
    format!(
        "You are a person from {} with {} cultural background.",
        display_name(country),
        country.with_article()
    )
}

/// "Saudi Arabia", "the United States": names that read better with an article get one.
fn display_name(country: &Country) -> String {
    let n = &country.name;
    let plural_or_union = ["United", "Republic", "Netherlands", "Philippines", "Kingdom", "Emirates"];
    if plural_or_union.iter().any(|w| n.contains(w)) && !n.starts_with("the ") {
        format!("the {n}")
    } else {
        n.clone()
    }
}

/// Tokens of the persona text (no BOS), for `persona` prompts.
///
/// # Errors
/// If tokenization fails or gives no tokens.
pub fn persona_tokens(model: &Model, country: &Country) -> Result<Vec<i32>> {
    let toks = model.tokenize(&persona_text(country), false, false)?;
    if toks.is_empty() {
        bail!("the persona text tokenized to nothing");
    }
    Ok(toks)
}

/// Draw one prompt of `rows` rows (vocab and normal) or of the persona text's length.
///
/// `country` is needed for `persona` only.
///
/// # Errors
/// If the model's embeddings cannot be read, `rows` is 0 for vocab/normal, or `persona` is
/// asked for without a country.
pub fn draw_kind(
    model: &Model,
    kind: InitKind,
    rows: usize,
    country: Option<&Country>,
    rng: &mut impl Rng,
) -> Result<SoftPrompt> {
    if kind.uses_rows() && rows == 0 {
        bail!("a {} soft prompt needs at least one row (0 rows asked for)", kind_name(kind));
    }
    let n_embd = model.n_embd_inp();
    match kind {
        InitKind::Vocab => draw(model, kind, rows, rng),
        InitKind::Normal => {
            let st = model.token_embeddings().stats(Some(16_384))?;
            let dist = Normal::new(st.mean, st.std.max(f64::MIN_POSITIVE))?;
            let data = (0..rows * n_embd).map(|_| dist.sample(rng) as f32).collect();
            SoftPrompt::new(rows, n_embd, data)
        }
        InitKind::Persona => {
            let Some(country) = country else { bail!("a persona soft prompt needs a country") };
            let toks = persona_tokens(model, country)?;
            let st = model.token_embeddings().stats(Some(16_384))?;
            let noise = Normal::new(0.0, (PERSONA_NOISE * st.std).max(f64::MIN_POSITIVE))?;
            let mut data = model.token_embeddings().scaled_rows(&toks)?;
            for v in &mut data {
                *v += noise.sample(rng) as f32;
            }
            SoftPrompt::new(toks.len(), n_embd, data)
        }
    }
}

fn kind_name(kind: InitKind) -> &'static str {
    match kind {
        InitKind::Vocab => "vocab",
        InitKind::Persona => "persona",
        InitKind::Normal => "normal",
    }
}

/// Draw one prompt of `rows` rows.
///
/// # Errors
/// If the model's embeddings cannot be read, or `kind` is `persona` (use [`draw_kind`]).
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
        InitKind::Normal => draw_kind(model, kind, rows, None, rng),
        InitKind::Persona => bail!("a persona soft prompt needs a country"),
    }
}
