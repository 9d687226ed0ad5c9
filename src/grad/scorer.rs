//! Option probabilities from the differentiable model, for the items of an engine [`Plan`]
//! (the same tokens, chat template and layout the llama.cpp engine scores) and a soft prompt
//! given as a candle tensor, so a loss over them can be differentiated with respect to the
//! prompt. The same rule as the engine turns next-token log-probabilities into option
//! probabilities, so both backends produce the same [`ItemScore`]s.

use std::collections::HashMap;
use std::sync::OnceLock;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, D};

use crate::engine::{Plan, PlannedItem};
use crate::grad::frozen::FrozenLinear;
use crate::grad::model::{GradModel, SeqInputs};
use crate::grad::tree::{TreeSeq, Unit};
use crate::llama::{Model, Token};
use crate::prompt::softprompt::SoftPrompt;
use crate::score::item_score::ItemScore;

/// A chunk of items laid out for the differentiable model, reusable across prompts of the
/// same length.
pub struct Prepared {
    /// The flattened sequence.
    pub tree: TreeSeq,
    inputs: SeqInputs,
    /// Scaled embedding rows of the tokens, zero at soft positions: `[L, n_embd]`.
    token_rows: Tensor,
    /// `[L, T]` one-hot: where each soft row goes (None without a soft prompt).
    soft_place: Option<Tensor>,
    /// Rows of the output matrix for the tokens read at the slots, and each token's column.
    out: FrozenLinear,
    col: HashMap<Token, usize>,
    rows: usize,
}

impl Prepared {
    /// Positions in the flattened sequence.
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

/// The differentiable model plus what it borrows from the engine's model: tokenisation (in
/// the plan) and the token embedding rows.
pub struct GradScorer<'m> {
    /// The frozen model.
    pub model: &'m GradModel,
    llama: &'m Model,
    full: OnceLock<FrozenLinear>,
}

impl<'m> GradScorer<'m> {
    /// Pair the differentiable model with the llama.cpp model of the same file.
    ///
    /// # Errors
    /// Width mismatch (two different files).
    pub fn new(model: &'m GradModel, llama: &'m Model) -> Result<Self> {
        if model.cfg.n_embd != llama.n_embd_inp() {
            bail!(
                "{}: width {} but the engine's model has {}: expected the same file",
                model.path().display(),
                model.cfg.n_embd,
                llama.n_embd_inp()
            );
        }
        Ok(GradScorer { model, llama, full: OnceLock::new() })
    }

    fn output_rows(&self, tokens: &[Token]) -> Result<Tensor> {
        let d = self.model.cfg.n_embd;
        Ok(match self.model.output() {
            Some(w) => {
                let idx: Vec<u32> = tokens.iter().map(|&t| t as u32).collect();
                w.index_select(&Tensor::new(idx.as_slice(), &Device::Cpu)?, 0)?
            }
            // Tied output: the raw (unscaled) token embedding rows.
            None => Tensor::from_vec(
                self.llama.token_embeddings().rows(tokens)?,
                (tokens.len(), d),
                &Device::Cpu,
            )?
            .to_dtype(self.model.dtype())?,
        })
    }

    /// The whole output matrix, read once, for the items that need a full normalisation.
    fn full_output(&self) -> Result<&FrozenLinear> {
        if let Some(f) = self.full.get() {
            return Ok(f);
        }
        let w = match self.model.output() {
            Some(w) => w.clone(),
            None => {
                let v = self.llama.n_vocab();
                let all: Vec<Token> = (0..v as Token).collect();
                self.output_rows(&all)?
            }
        };
        let _ = self.full.set(FrozenLinear::new(w));
        Ok(self.full.get().expect("set above"))
    }

    /// Lay out `items` for a prompt of `rows` soft rows.
    ///
    /// # Errors
    /// Tokens outside the vocabulary; tensor failures.
    pub fn prepare(&self, items: &[&PlannedItem], rows: usize) -> Result<Prepared> {
        let tree = TreeSeq::build(items, rows)?;
        let d = self.model.cfg.n_embd;
        let n = tree.len();
        let dev = Device::Cpu;
        let mut tok = vec![0f32; n * d];
        let mut place = vec![0f32; n * rows];
        let mut cache: HashMap<Token, Vec<f32>> = HashMap::new();
        let emb = self.llama.token_embeddings();
        for (j, u) in tree.units.iter().enumerate() {
            match *u {
                Unit::Tok(t) => {
                    let row = match cache.get(&t) {
                        Some(r) => r,
                        None => cache.entry(t).or_insert(emb.scaled_rows(&[t])?),
                    };
                    tok[j * d..(j + 1) * d].copy_from_slice(row);
                }
                Unit::Soft(r) => place[j * rows + r] = 1.0,
            }
        }
        let select: Vec<usize> = tree.slots.iter().map(|s| s.at).collect();
        let inputs = self.model.seq_inputs(&tree.pos, |w| tree.mask(w), &select)?;
        let mut cols: Vec<Token> = tree.slots.iter().flat_map(|s| s.next.iter().copied()).collect();
        cols.sort_unstable();
        cols.dedup();
        let col = cols.iter().enumerate().map(|(k, &t)| (t, k)).collect();
        Ok(Prepared {
            out: FrozenLinear::new(self.output_rows(&cols)?),
            col,
            token_rows: Tensor::from_vec(tok, (n, d), &dev)?.to_dtype(self.model.dtype())?,
            soft_place: (rows > 0)
                .then(|| Tensor::from_vec(place, (n, rows), &dev)?.to_dtype(self.model.dtype()))
                .transpose()?,
            inputs,
            tree,
            rows,
        })
    }

    /// Option probabilities of every item of the chunk (`[n_options]` each, in option order)
    /// and the label mass (when the full normalisation was computed), with `soft`
    /// (`[T, n_embd]`, a `Var` to differentiate) in the prompt's place.
    ///
    /// # Errors
    /// A soft prompt of the wrong size; tensor failures.
    pub fn option_probs(&self, p: &Prepared, soft: Option<&Tensor>) -> Result<Vec<(Tensor, Option<Tensor>)>> {
        let x = match (&p.soft_place, soft) {
            (Some(place), Some(s)) => {
                if s.dims() != [p.rows, self.model.cfg.n_embd] {
                    bail!(
                        "soft prompt of shape {:?}: expected [{}, {}]",
                        s.dims(),
                        p.rows,
                        self.model.cfg.n_embd
                    );
                }
                (&p.token_rows + place.matmul(s)?)?
            }
            (None, None) => p.token_rows.clone(),
            (Some(_), None) => {
                bail!("the chunk was laid out for {} soft rows but no prompt was given", p.rows)
            }
            (None, Some(_)) => bail!("the chunk was laid out without a soft prompt but one was given"),
        };
        let h = self.model.forward(&x, &p.inputs)?; // [slots, d]
        let z = p.out.forward(&h)?; // [slots, cols]
        let full = p.tree.needs_full_norm();
        let lp = if full {
            let all = self.full_output()?.forward(&h)?;
            let max = all.max_keepdim(D::Minus1)?.detach();
            let lse = (all.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?.log()? + &max)?;
            Some(z.broadcast_sub(&lse)?)
        } else {
            None
        };
        let mut out = Vec::with_capacity(p.tree.labels.len());
        for (i, labels) in p.tree.labels.iter().enumerate() {
            let slot_of: HashMap<&[Token], usize> = p
                .tree
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.item == i)
                .map(|(k, s)| (s.prefix.as_slice(), k))
                .collect();
            let Some(lp) = &lp else {
                // One token per label, none extending another: a softmax over the label logits.
                let s = slot_of[&[][..]];
                let idx: Vec<u32> = labels.iter().map(|l| p.col[&l[0]] as u32).collect();
                let logits = z.get(s)?.index_select(&Tensor::new(idx.as_slice(), &Device::Cpu)?, 0)?;
                let e = logits.broadcast_sub(&logits.max_keepdim(0)?.detach())?.exp()?;
                out.push((e.broadcast_div(&e.sum_keepdim(0)?)?, None));
                continue;
            };
            let mut raw = Vec::with_capacity(labels.len());
            for l in labels {
                let mut acc: Option<Tensor> = None;
                for j in 0..l.len() {
                    let v = lp.get(slot_of[&l[..j]])?.get(p.col[&l[j]])?;
                    acc = Some(match acc {
                        None => v,
                        Some(a) => (a + v)?,
                    });
                }
                let mut pr = acc.expect("labels are non-empty").exp()?;
                if let Some(&s) = slot_of.get(&l[..]) {
                    let mut cont: Option<Tensor> = None;
                    for t in &p.tree.slots[s].next {
                        let v = lp.get(s)?.get(p.col[t])?.exp()?;
                        cont = Some(match cont {
                            None => v,
                            Some(c) => (c + v)?,
                        });
                    }
                    if let Some(c) = cont {
                        pr = (pr * (1.0 - c)?.relu()?)?;
                    }
                }
                raw.push(pr);
            }
            let raw = Tensor::stack(&raw, 0)?;
            let mass = raw.sum_keepdim(0)?;
            out.push((raw.broadcast_div(&mass)?, Some(mass)));
        }
        Ok(out)
    }

    /// Scores of one prompt on a plan, in chunks of `chunk` items (no gradients).
    ///
    /// # Errors
    /// As [`Self::prepare`] and [`Self::option_probs`].
    pub fn score(&self, plan: &Plan, prompt: &SoftPrompt, chunk: usize) -> Result<Vec<ItemScore>> {
        let soft = (prompt.rows() > 0)
            .then(|| {
                Tensor::from_slice(prompt.data(), (prompt.rows(), prompt.n_embd()), &Device::Cpu)?
                    .to_dtype(self.model.dtype())
            })
            .transpose()?;
        let mut scores = Vec::with_capacity(plan.items.len());
        for part in plan.items.chunks(chunk.max(1)) {
            let refs: Vec<&PlannedItem> = part.iter().collect();
            let p = self.prepare(&refs, prompt.rows())?;
            for (probs, mass) in self.option_probs(&p, soft.as_ref())? {
                let probs: Vec<f64> = probs.to_dtype(DType::F64)?.to_vec1::<f64>()?;
                let label_mass = match mass {
                    Some(m) => m.to_dtype(DType::F64)?.to_vec1::<f64>()?[0],
                    None => f64::NAN,
                };
                scores.push(ItemScore { probs, label_mass });
            }
        }
        Ok(scores)
    }
}
