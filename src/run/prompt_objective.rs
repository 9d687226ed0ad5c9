//! The adapter between the optimizer and the engine: trial vectors -> soft prompts -> one
//! engine call per batch -> a fitness per prompt. The optimizer sees only a
//! [`BatchObjective`] over `f32` vectors; the engine sees only soft prompts.

use anyhow::Result;

use crate::engine::{Engine, Plan};
use crate::optim::{BatchObjective, RandomSubspace};
use crate::prompt::softprompt::SoftPrompt;
use crate::score::fitness::{Evaluation, Task};

/// Row norms kept within the vocabulary's range by [`PromptObjective::clip_rows`]: the 0.1st
/// and 99.9th percentiles of the scaled embedding rows' L2 norms. Percentiles rather than the
/// extremes because a few unused vocabulary rows are near zero or unusually long, which would
/// make the range meaningless.
pub const NORM_PERCENTILES: (f64, f64) = (0.1, 99.9);

/// Scale every row (of `n_embd` values) whose L2 norm is outside `(lo, hi)` back onto the
/// range, keeping its direction; rows that are exactly zero are left alone. DE's repair and
/// prompt tuning's projection after each step.
pub fn clip_rows(x: &mut [f32], n_embd: usize, (lo, hi): (f32, f32)) {
    for row in x.chunks_mut(n_embd.max(1)) {
        let norm = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt() as f32;
        let target = if norm > hi {
            hi
        } else if norm < lo && norm > 0.0 {
            lo
        } else {
            continue;
        };
        let s = target / norm;
        row.iter_mut().for_each(|v| *v *= s);
    }
}

/// Soft prompts scored on a fixed set of items.
pub struct PromptObjective<'m, 'p> {
    /// The engine (owned, so the run can use it between generations).
    pub engine: Engine<'m>,
    /// The training items' plan.
    pub plan: &'p Plan,
    /// Survey, country, target.
    pub task: &'p Task,
    /// Indices of the training items in the survey.
    pub items: &'p [usize],
    /// Rows per prompt.
    pub rows: usize,
    /// Width of a row.
    pub n_embd: usize,
    /// Row norms are kept in this range.
    pub norm_range: (f32, f32),
    /// Search space mapping, when searching a random subspace.
    pub subspace: Option<RandomSubspace>,
    /// The last batch: each vector (in prompt space) with its evaluation.
    pub last: Vec<(Vec<f32>, Evaluation)>,
}

impl PromptObjective<'_, '_> {
    /// Scale every row whose L2 norm is outside the vocabulary's range back onto it, so trials
    /// stay in the region of input space the model was trained on. The direction of each row
    /// is kept; rows that are exactly zero are left alone.
    pub fn clip_rows(&self, x: &mut [f32]) {
        clip_rows(x, self.n_embd, self.norm_range);
    }

    /// Prompt-space vectors of a batch (mapped and repaired in subspace mode).
    ///
    /// # Errors
    /// A vector of the wrong length for the subspace.
    pub fn to_prompt_space(&self, xs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>> {
        match &self.subspace {
            None => Ok(xs.to_vec()),
            Some(space) => {
                let mut ps = space.map_batch(xs)?;
                ps.iter_mut().for_each(|p| self.clip_rows(p));
                Ok(ps)
            }
        }
    }

    /// The soft prompt of one search vector.
    ///
    /// # Errors
    /// As [`Self::to_prompt_space`].
    pub fn prompt_of(&self, x: &[f32]) -> Result<SoftPrompt> {
        SoftPrompt::new(self.rows, self.n_embd, self.to_prompt_space(&[x.to_vec()])?.remove(0))
    }
}

impl BatchObjective for PromptObjective<'_, '_> {
    fn evaluate(&mut self, xs: &[Vec<f32>]) -> Result<Vec<f64>> {
        let ps = self.to_prompt_space(xs)?;
        let prompts: Vec<SoftPrompt> =
            ps.iter().map(|p| SoftPrompt::new(self.rows, self.n_embd, p.clone())).collect::<Result<_>>()?;
        let refs: Vec<&SoftPrompt> = prompts.iter().collect();
        let scores = self.engine.score(self.plan, &refs)?;
        let evals: Vec<Evaluation> =
            scores.iter().map(|s| self.task.evaluate(self.items, s)).collect::<Result<_>>()?;
        let fitness = evals.iter().map(|e| e.fitness).collect();
        self.last = ps.into_iter().zip(evals).collect();
        Ok(fitness)
    }

    /// In prompt space: [`Self::clip_rows`]. In subspace mode the search vector is z, and the
    /// clipping is applied to the mapped prompt inside `evaluate` instead.
    fn repair(&self, x: &mut [f32]) {
        if self.subspace.is_none() {
            self.clip_rows(x);
        }
    }
}
