//! The prompt-tuning benchmark: one Adam step's forward and backward passes on the VSM13
//! items with the candle backend, next to the llama.cpp engine's forward-only scoring of one
//! prompt on the same items, measured in the same run.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use serde::Serialize;

use crate::data::survey::Survey;
use crate::engine::{Engine, EngineConfig, Plan, PlannedItem};
use crate::grad::model::GradModel;
use crate::grad::scorer::GradScorer;
use crate::llama::Model;
use crate::prompt::init::{self, InitKind};
use crate::prompt::render::Layout;

/// Figures of `deopt bench tune` (also written as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct TuneBench {
    /// Model display name.
    pub model: String,
    /// Items.
    pub items: usize,
    /// Soft rows.
    pub rows: usize,
    /// Items per forward pass.
    pub chunk: usize,
    /// Positions the backend computes per pass over all items (shared prefixes once per chunk).
    pub positions: usize,
    /// Repetitions (medians are reported).
    pub repeats: usize,
    /// Engine: seconds to score one prompt on all items (forward only).
    pub engine_seconds: f64,
    /// Backend: seconds of a forward pass over all items.
    pub forward_seconds: f64,
    /// Backend: seconds of a forward and backward pass over all items.
    pub forward_backward_seconds: f64,
    /// Backend: one fitness-objective Adam step (a forward pass, then forward and backward).
    pub step_seconds: f64,
    /// Positions per second, forward and backward.
    pub forward_backward_positions_per_s: f64,
    /// Backward over forward time (what a backward pass costs in forward passes, plus one).
    pub ratio_forward_backward_over_forward: f64,
    /// A step's time over the engine's scoring of one prompt.
    pub ratio_step_over_engine: f64,
    /// Peak resident memory of the process (MB), as the kernel reports it (VmHWM).
    pub peak_rss_mb: Option<f64>,
    /// Bytes of f32 weights the backend holds (MB).
    pub backend_weights_mb: f64,
}

impl TuneBench {
    /// A table with the ratios.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{} items x {} soft rows on {} ({} positions per pass, chunks of {}), median of {}\n",
            self.items, self.rows, self.model, self.positions, self.chunk, self.repeats
        );
        s += &format!("  engine, score one prompt (forward)      {:>8.2} s   1.00x\n", self.engine_seconds);
        s += &format!(
            "  candle forward                          {:>8.2} s   {:.2}x\n",
            self.forward_seconds,
            self.forward_seconds / self.engine_seconds
        );
        s += &format!(
            "  candle forward + backward               {:>8.2} s   {:.2}x  ({:.0} positions/s)\n",
            self.forward_backward_seconds,
            self.forward_backward_seconds / self.engine_seconds,
            self.forward_backward_positions_per_s
        );
        s += &format!(
            "  one Adam step (fitness objective)       {:>8.2} s   {:.2}x\n",
            self.step_seconds, self.ratio_step_over_engine
        );
        s += &format!(
            "  forward+backward / forward: {:.2}; backend weights {:.0} MB; peak RSS {}\n",
            self.ratio_forward_backward_over_forward,
            self.backend_weights_mb,
            self.peak_rss_mb.map_or_else(|| "-".into(), |m| format!("{m:.0} MB"))
        );
        s
    }
}

/// Peak resident set size of this process in MB (Linux), if known.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Measure; `grad` must be loaded from the same file as `model`.
///
/// # Errors
/// Model, backend or engine failures.
#[allow(clippy::too_many_arguments)]
pub fn tune_bench(
    model: &Model,
    grad: &GradModel,
    name: &str,
    survey: &Survey,
    rows: usize,
    chunk: usize,
    repeats: usize,
    config: &EngineConfig,
) -> Result<TuneBench> {
    let items: Vec<_> = survey.items.iter().collect();
    let plan = Plan::new(model, &items, &Layout::default())?;
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(0);
    let prompt = init::draw(model, InitKind::Vocab, rows, &mut rng)?;
    let mut engine = Engine::new(model, config.clone())?;
    let scorer = GradScorer::new(grad, model)?;
    let chunks: Vec<Vec<&PlannedItem>> =
        plan.items.chunks(chunk.max(1)).map(|c| c.iter().collect()).collect();
    let prepared: Vec<_> = chunks.iter().map(|c| scorer.prepare(c, rows)).collect::<Result<_>>()?;
    let positions = prepared.iter().map(|p| p.len()).sum();
    let x = Tensor::from_slice(prompt.data(), (rows, prompt.n_embd()), &Device::Cpu)?;
    engine.score(&plan, &[&prompt])?; // warm-up: the shared head, the context
    let (mut e, mut f, mut fb) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        engine.score(&plan, &[&prompt])?;
        e.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for p in &prepared {
            scorer.option_probs(p, Some(&x))?;
        }
        f.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        for p in &prepared {
            let var = Var::from_tensor(&x)?;
            let probs = scorer.option_probs(p, Some(var.as_tensor()))?;
            let mut total = probs[0].0.sum_all()?;
            for (q, _) in &probs[1..] {
                total = (total + (q * 1.0)?.sum_all()?)?;
            }
            total.backward()?;
        }
        fb.push(t.elapsed().as_secs_f64());
    }
    let (engine_seconds, forward_seconds, forward_backward_seconds) = (median(e), median(f), median(fb));
    let step_seconds = forward_seconds + forward_backward_seconds;
    Ok(TuneBench {
        model: name.to_string(),
        items: plan.items.len(),
        rows,
        chunk,
        positions,
        repeats: repeats.max(1),
        engine_seconds,
        forward_seconds,
        forward_backward_seconds,
        step_seconds,
        forward_backward_positions_per_s: positions as f64 / forward_backward_seconds,
        ratio_forward_backward_over_forward: forward_backward_seconds / forward_seconds,
        ratio_step_over_engine: step_seconds / engine_seconds,
        peak_rss_mb: peak_rss_mb(),
        backend_weights_mb: grad.weight_bytes() as f64 / 1e6,
    })
}
