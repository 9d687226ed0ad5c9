//! Prompt tuning as a [`Method`]: a step is one Adam step on the soft prompt, with the
//! gradient from the candle backend, and the prompt scored by the llama.cpp engine (the
//! official fitness, on the same scale as DE's) every `eval_every` steps.
//!
//! The fitness objective needs every training item (a VSM13 index needs all its items), so a
//! step is two passes over the items in chunks: a forward pass for the option probabilities,
//! from which the fitness and its gradient with respect to them follow (plain data,
//! [`crate::score::gradient`]), then per chunk a forward and backward pass of those
//! gradients times the probabilities. The cross-entropy objectives are sums over items, so a
//! step is one forward and backward pass per chunk of a minibatch.

use std::collections::HashMap;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::engine::{Engine, Plan, PlannedItem};
use crate::grad::scorer::{GradScorer, Prepared};
use crate::optim::adam::Adam;
use crate::optim::GenerationReport;
use crate::prompt::softprompt::SoftPrompt;
use crate::run::driver::Method;
use crate::run::spec::{TuneObjective, TuneSpec};
use crate::score::fitness::{Evaluation, Task};
use crate::score::gradient::{cross_entropy, fitness_gradient, ScoreGradient};
use crate::score::item_score::ItemScore;

/// One step's figures, kept in the checkpoint and written to tune.csv.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneRow {
    /// Step (0: the starting prompt).
    pub step: u64,
    /// The objective at the start of the step, as the candle backend computes it.
    pub objective: Option<f64>,
    /// The fitness of the step's items at its start, as the candle backend computes it (the
    /// fitness objective only: the others do not score every item).
    pub backend_fitness: Option<f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: Option<f64>,
    /// The engine's fitness of the prompt after the step, when scored.
    pub fitness: Option<f64>,
    /// Forward-pass equivalents so far, in whole training surveys (a backward pass counts as
    /// two forward passes).
    pub work: f64,
}

/// What a tuning checkpoint holds: everything a resume needs to continue bit for bit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuneState {
    /// The optimizer (its `x` is the current prompt).
    pub adam: Adam,
    /// Minibatch draws.
    pub rng: Xoshiro256PlusPlus,
    /// Steps taken.
    pub step: u64,
    /// Best official fitness so far and its prompt.
    pub best: f64,
    /// The best prompt's values.
    pub best_x: Vec<f32>,
    /// The latest official fitness.
    pub current: f64,
    /// Per-step figures.
    pub log: Vec<TuneRow>,
}

/// The tuner: the backend for gradients, the engine for the official fitness.
pub struct TuneMethod<'m, 'p> {
    /// Gradient backend.
    pub scorer: GradScorer<'m>,
    /// The llama.cpp engine.
    pub engine: Engine<'m>,
    /// Training items as the engine plans them (the backend lays out the same tokens).
    pub plan: &'p Plan,
    /// Survey, country, target.
    pub task: &'p Task,
    /// Survey indices of the training items.
    pub items: &'p [usize],
    /// Held-out plan and items.
    pub held: Option<(&'p Plan, &'p [usize])>,
    /// Cross-entropy targets per training item (synthetic and selfgen objectives).
    pub targets: Option<Vec<Vec<f64>>>,
    /// Settings.
    pub spec: TuneSpec,
    /// Rows of the prompt.
    pub rows: usize,
    /// Row width.
    pub n_embd: usize,
    /// Row norms are kept in this range after each step (as DE's repair does).
    pub norm_range: (f32, f32),
    /// The state.
    pub state: TuneState,
    /// Whether the starting prompt has been scored.
    pub started: bool,
    prepared: HashMap<Vec<usize>, Prepared>,
    last: Option<(Vec<f32>, Evaluation)>,
    units: u64,
}

impl<'m, 'p> TuneMethod<'m, 'p> {
    /// A tuner at its starting prompt `x0`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        scorer: GradScorer<'m>,
        engine: Engine<'m>,
        plan: &'p Plan,
        task: &'p Task,
        items: &'p [usize],
        held: Option<(&'p Plan, &'p [usize])>,
        targets: Option<Vec<Vec<f64>>>,
        spec: TuneSpec,
        rows: usize,
        norm_range: (f32, f32),
        x0: Vec<f32>,
        rng: Xoshiro256PlusPlus,
    ) -> Self {
        let n_embd = scorer.model.cfg.n_embd;
        let state = TuneState {
            adam: Adam::new(spec.adam, x0.clone()),
            rng,
            step: 0,
            best: f64::INFINITY,
            best_x: x0,
            current: f64::NAN,
            log: Vec::new(),
        };
        TuneMethod {
            scorer,
            engine,
            plan,
            task,
            items,
            held,
            targets,
            spec,
            rows,
            n_embd,
            norm_range,
            state,
            started: false,
            prepared: HashMap::new(),
            last: None,
            units: 0,
        }
    }

    /// Continue from a checkpoint's state, replaying the engine calls an uninterrupted run has
    /// made by then (so the engine's tokens counter agrees).
    ///
    /// # Errors
    /// A state that is not a tuning checkpoint or does not fit the run.
    pub fn restore(&mut self, state: &serde_json::Value, source: &str) -> Result<()> {
        let s: TuneState = serde_json::from_value(state.clone())
            .map_err(|e| anyhow::anyhow!("{source}: not a prompt-tuning checkpoint: {e}"))?;
        if s.adam.x.len() != self.rows * self.n_embd || !s.adam.is_consistent() {
            bail!(
                "{source}: prompt-tuning state of {} values: expected {} finite values",
                s.adam.x.len(),
                self.rows * self.n_embd
            );
        }
        self.state = s;
        self.started = true;
        let p = self.prompt(&self.state.adam.x.clone())?;
        self.engine.score(self.plan, &[&p])?;
        if let Some((plan, _)) = self.held {
            self.engine.score(plan, &[&p])?;
        }
        Ok(())
    }

    fn prompt(&self, x: &[f32]) -> Result<SoftPrompt> {
        SoftPrompt::new(self.rows, self.n_embd, x.to_vec())
    }

    /// Scale rows whose norm is outside the vocabulary's range back onto it.
    fn clip_rows(&self, x: &mut [f32]) {
        crate::run::prompt_objective::clip_rows(x, self.n_embd, self.norm_range);
    }

    fn prepare(&mut self, chunk: &[usize]) -> Result<()> {
        if !self.prepared.contains_key(chunk) {
            if self.prepared.len() > 32 {
                self.prepared.clear();
            }
            let items: Vec<&PlannedItem> = chunk.iter().map(|&k| &self.plan.items[k]).collect();
            let p = self.scorer.prepare(&items, self.rows)?;
            self.prepared.insert(chunk.to_vec(), p);
        }
        Ok(())
    }

    fn soft(&self, x: &[f32]) -> Result<Tensor> {
        Ok(Tensor::from_slice(x, (self.rows, self.n_embd), &Device::Cpu)?
            .to_dtype(self.scorer.model.dtype())?)
    }

    /// Option probabilities of training-plan positions `chunk` (no gradient).
    fn scores_of(&mut self, chunk: &[usize], x: &[f32]) -> Result<Vec<ItemScore>> {
        let soft = self.soft(x)?;
        self.prepare(chunk)?;
        let p = &self.prepared[chunk];
        let len = p.len() as u64;
        let out = self.scorer.option_probs(p, Some(&soft))?;
        self.units += len;
        out.into_iter()
            .map(|(t, _)| {
                Ok(ItemScore { probs: t.to_dtype(DType::F64)?.to_vec1::<f64>()?, label_mass: f64::NAN })
            })
            .collect()
    }

    /// Forward and backward pass of `sum_k g[k] . p[k]` over the items of `chunk`; adds the
    /// gradient to `acc`. `g` given as a function of the chunk's probabilities (computed from
    /// them when `None` was passed before the pass).
    fn backward_chunk(
        &mut self,
        chunk: &[usize],
        x: &[f32],
        weights: impl FnOnce(&[ItemScore]) -> Result<Vec<Vec<f64>>>,
        acc: &mut [f32],
    ) -> Result<()> {
        let var = Var::from_tensor(&self.soft(x)?)?;
        self.prepare(chunk)?;
        let p = &self.prepared[chunk];
        let len = p.len() as u64;
        let probs = self.scorer.option_probs(p, Some(var.as_tensor()))?;
        self.units += len;
        let scores: Vec<ItemScore> = probs
            .iter()
            .map(|(t, _)| {
                Ok(ItemScore { probs: t.to_dtype(DType::F64)?.to_vec1::<f64>()?, label_mass: f64::NAN })
            })
            .collect::<Result<_>>()?;
        let g = weights(&scores)?;
        let mut total: Option<Tensor> = None;
        for ((t, _), w) in probs.iter().zip(&g) {
            let w = Tensor::new(w.as_slice(), &Device::Cpu)?.to_dtype(t.dtype())?;
            let term = (t * w)?.sum_all()?;
            total = Some(match total {
                None => term,
                Some(a) => (a + term)?,
            });
        }
        let Some(total) = total else { return Ok(()) };
        let grads = total.backward()?;
        let Some(gx) = grads.get(var.as_tensor()) else {
            bail!("internal error: no gradient reached the soft prompt");
        };
        let gx: Vec<f32> = gx.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        acc.iter_mut().zip(gx).for_each(|(a, g)| *a += g);
        Ok(())
    }

    /// The objective and its gradient at `x`, and the backend's fitness (fitness objective).
    fn gradient(&mut self, x: &[f32]) -> Result<(f64, Option<f64>, Vec<f32>, f64)> {
        let n = self.items.len();
        let chunk = self.spec.chunk.max(1);
        let mut grad = vec![0f32; x.len()];
        match self.spec.objective {
            TuneObjective::Fitness => {
                let all: Vec<usize> = (0..n).collect();
                let mut scores = Vec::with_capacity(n);
                for c in all.chunks(chunk) {
                    scores.extend(self.scores_of(c, x)?);
                }
                let (_, ScoreGradient { value, grad: g }) = fitness_gradient(self.task, self.items, &scores)?;
                for (ci, c) in all.chunks(chunk).enumerate() {
                    let w = g[ci * chunk..ci * chunk + c.len()].to_vec();
                    self.backward_chunk(c, x, |_| Ok(w), &mut grad)?;
                }
                // One forward pass, then forward and backward (counted as three).
                Ok((value, Some(value), grad, 4.0))
            }
            TuneObjective::Synthetic | TuneObjective::Selfgen => {
                let mut order: Vec<usize> = (0..n).collect();
                let batch = self.spec.batch_items.unwrap_or(n).min(n);
                if batch < n {
                    order.shuffle(&mut self.state.rng);
                    order.truncate(batch);
                    order.sort_unstable();
                }
                let targets =
                    self.targets.clone().ok_or_else(|| anyhow::anyhow!("internal error: no targets"))?;
                let mut value = 0.0;
                for c in order.chunks(chunk) {
                    let t: Vec<&[f64]> = c.iter().map(|&k| targets[k].as_slice()).collect();
                    let share = c.len() as f64 / batch as f64;
                    let mut v = 0.0;
                    self.backward_chunk(
                        c,
                        x,
                        |s| {
                            let ce = cross_entropy(&t, s);
                            v = ce.value * share;
                            Ok(ce
                                .grad
                                .into_iter()
                                .map(|r| r.into_iter().map(|g| g * share).collect())
                                .collect())
                        },
                        &mut grad,
                    )?;
                    value += v;
                }
                Ok((value, None, grad, 3.0 * batch as f64 / n as f64))
            }
        }
    }

    /// Score `x` with the engine; remember it for [`Method::scored`].
    fn official(&mut self, x: &[f32]) -> Result<f64> {
        let p = self.prompt(x)?;
        let s = self.engine.score(self.plan, &[&p])?;
        let e = self.task.evaluate(self.items, &s[0])?;
        let f = e.fitness;
        self.last = Some((x.to_vec(), e));
        Ok(f)
    }

    fn report(&self, scored: bool) -> GenerationReport {
        let s = &self.state;
        let work = s.log.last().map_or(0.0, |r| r.work);
        GenerationReport {
            generation: s.step,
            evaluations: work.ceil() as u64,
            trials: 1,
            best_fitness: s.current,
            median_fitness: s.current,
            worst_fitness: s.current,
            best_so_far: s.best,
            f: None,
            cr: None,
            diversity: 0.0,
            successes: usize::from(scored && s.best == s.current && s.step > 0),
            replacements: 0,
            population_size: 1,
            archive_size: 0,
        }
    }
}

impl Method for TuneMethod<'_, '_> {
    fn is_started(&self) -> bool {
        self.started
    }

    fn init(&mut self) -> Result<GenerationReport> {
        let mut x = self.state.adam.x.clone();
        self.clip_rows(&mut x);
        self.state.adam.x = x.clone();
        let f = self.official(&x)?;
        self.state.current = f;
        self.state.best = f;
        self.state.best_x = x;
        self.state.log.push(TuneRow {
            step: 0,
            objective: None,
            backend_fitness: None,
            grad_norm: None,
            fitness: Some(f),
            work: 0.0,
        });
        self.started = true;
        Ok(self.report(true))
    }

    fn step(&mut self) -> Result<GenerationReport> {
        let x = self.state.adam.x.clone();
        let (objective, backend_fitness, grad, work) = self.gradient(&x)?;
        let norm = self.state.adam.step(&grad)?;
        let mut x = std::mem::take(&mut self.state.adam.x);
        self.clip_rows(&mut x);
        self.state.adam.x = x.clone();
        self.state.step += 1;
        let scored = self.state.step.is_multiple_of(self.spec.eval_every);
        let fitness = if scored {
            let f = self.official(&x)?;
            self.state.current = f;
            if f < self.state.best {
                self.state.best = f;
                self.state.best_x = x;
            }
            Some(f)
        } else {
            None
        };
        let prev = self.state.log.last().map_or(0.0, |r| r.work);
        self.state.log.push(TuneRow {
            step: self.state.step,
            objective: Some(objective),
            backend_fitness,
            grad_norm: Some(norm),
            fitness,
            work: prev + work,
        });
        Ok(self.report(scored))
    }

    fn snapshot(&self) -> GenerationReport {
        self.report(false)
    }

    fn scored(&self, fitness: f64) -> Option<(SoftPrompt, Evaluation)> {
        let (x, e) = self.last.as_ref()?;
        (e.fitness.to_bits() == fitness.to_bits()).then(|| Some((self.prompt(x).ok()?, e.clone())))?
    }

    fn holdout_of_best(&mut self) -> Result<Option<f64>> {
        let Some((plan, items)) = self.held else { return Ok(None) };
        let p = self.prompt(&self.state.best_x.clone())?;
        let s = self.engine.score(plan, &[&p])?;
        Ok(Some(self.task.evaluate(items, &s[0])?.fitness))
    }

    fn units_computed(&self) -> u64 {
        self.engine.stats().computed + self.units
    }

    fn state(&self) -> Result<serde_json::Value> {
        Ok(serde_json::to_value(&self.state)?)
    }

    fn files(&self) -> Vec<(&'static str, String)> {
        let cell = |v: Option<f64>| crate::run::directory::csv_cell(v);
        let mut s = String::from("step,objective,backend_fitness,grad_norm,fitness,work\n");
        for r in &self.state.log {
            s.push_str(&format!(
                "{},{},{},{},{},{}\n",
                r.step,
                cell(r.objective),
                cell(r.backend_fitness),
                cell(r.grad_norm),
                cell(r.fitness),
                r.work
            ));
        }
        vec![(TUNE_CSV, s)]
    }
}

/// Per-step figures of a tuning run.
pub const TUNE_CSV: &str = "tune.csv";
