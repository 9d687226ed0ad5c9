//! Differential evolution as a [`Method`]: a step is one generation, all of whose trial
//! prompts are scored in one engine call.

use anyhow::{Context as _, Result};

use crate::engine::Plan;
use crate::optim::{GenerationReport, Optimizer};
use crate::prompt::softprompt::SoftPrompt;
use crate::run::driver::Method;
use crate::run::prompt_objective::PromptObjective;
use crate::score::fitness::Evaluation;

/// The optimizer and its objective, plus the held-out items.
pub struct DeMethod<'m, 'p> {
    /// The optimizer state.
    pub opt: Optimizer,
    /// Scores trial vectors on the training items.
    pub obj: PromptObjective<'m, 'p>,
    /// Plan and item indices of the held-out items, if any.
    pub held: Option<(&'p Plan, &'p [usize])>,
}

impl DeMethod<'_, '_> {
    /// Restore the optimizer from a checkpoint's state, and replay the engine calls an
    /// uninterrupted run has made at this point (one training and one held-out call), so the
    /// engine's state (the decoded shared prefix, the context size) and with it the "tokens"
    /// column of history.csv are identical.
    ///
    /// # Errors
    /// A state that is not an optimizer checkpoint; engine failures.
    pub fn restore(&mut self, state: &serde_json::Value, first: &[f32], source: &str) -> Result<()> {
        let bytes = serde_json::to_vec(state)?;
        self.opt = Optimizer::from_checkpoint(&bytes).with_context(|| source.to_string())?;
        let p = self.obj.prompt_of(first)?;
        // A generation's call scores groups of up to `prompt_group` prompts; one such group
        // sizes the context as the uninterrupted run's calls did.
        let group = self.obj.engine.prompt_group().min(self.opt.population_size()).max(1);
        self.obj.engine.score(self.obj.plan, &vec![&p; group])?;
        if let Some((plan, _)) = self.held {
            self.obj.engine.score(plan, &[&p])?;
        }
        Ok(())
    }
}

impl Method for DeMethod<'_, '_> {
    fn is_started(&self) -> bool {
        self.opt.is_initialized()
    }

    fn init(&mut self) -> Result<GenerationReport> {
        self.opt.init(&mut self.obj)
    }

    fn step(&mut self) -> Result<GenerationReport> {
        self.opt.step(&mut self.obj)
    }

    fn snapshot(&self) -> GenerationReport {
        self.opt.snapshot()
    }

    fn scored(&self, fitness: f64) -> Option<(SoftPrompt, Evaluation)> {
        let (x, e) = self.obj.last.iter().find(|(_, e)| e.fitness.to_bits() == fitness.to_bits())?;
        Some((SoftPrompt::new(self.obj.rows, self.obj.n_embd, x.clone()).ok()?, e.clone()))
    }

    fn holdout_of_best(&mut self) -> Result<Option<f64>> {
        let Some((plan, items)) = self.held else { return Ok(None) };
        let (best, _) = self.opt.best();
        let p = self.obj.prompt_of(best)?;
        let s = self.obj.engine.score(plan, &[&p])?;
        Ok(Some(self.obj.task.evaluate(items, &s[0])?.fitness))
    }

    fn units_computed(&self) -> u64 {
        self.obj.engine.stats().computed
    }

    fn state(&self) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.opt.to_checkpoint()?)?)
    }
}
