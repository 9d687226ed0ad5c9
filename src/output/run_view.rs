//! What a run report needs from the model: the whole survey answered without a soft prompt
//! and with the run's best prompt, under the run's own spec (survey, country, loss, layout,
//! model). The run directory records neither the per-item answer shift nor the baseline
//! dimensions, so they are computed here.

use std::path::Path;

use anyhow::Result;

use crate::engine::{Engine, Plan};
use crate::output::report_files::EngineView;
use crate::prompt::render::Layout;
use crate::prompt::softprompt::SoftPrompt;
use crate::run::directory::{self, RunConfig};
use crate::run::spec::ModelSpec;
use crate::score::fitness::Target;

/// Score the whole survey without a soft prompt and with the best prompt of the run in `dir`;
/// `model` replaces the run's model settings (`None`: the run's own).
///
/// # Errors
/// Not a run, a missing best prompt, model or engine failures.
pub fn engine_view(dir: &Path, model: Option<&ModelSpec>) -> Result<EngineView> {
    let cfg = RunConfig::load(dir)?;
    let task = cfg.spec.task.load()?;
    let layout = cfg.spec.layout.layout();
    let mspec = model.unwrap_or(&cfg.spec.model);
    let (resolved, model) = mspec.load()?;
    if cfg.model.sha256 != resolved.sha256 {
        eprintln!(
            "deopt: warning: the run used model sha256 {}, the report uses {} ({})",
            cfg.model.sha256,
            resolved.sha256,
            resolved.path.display()
        );
    }
    let n_embd = model.n_embd_inp();
    let path = dir.join(directory::BEST_PROMPT);
    let (best, _) = SoftPrompt::load(&path)?;
    best.check_width(n_embd, &path.display().to_string())?;
    let items: Vec<_> = task.survey.items.iter().collect();
    let plan = Plan::new(&model, &items, &layout)?;
    let bare = Plan::new(&model, &items, &Layout { with_soft: false, ..layout.clone() })?;
    let mut engine = Engine::new(&model, mspec.engine_config())?;
    let empty = SoftPrompt::empty(n_embd);
    let base_scores = engine.score(&bare, &[&empty])?.remove(0);
    let best_scores = engine.score(&plan, &[&best])?.remove(0);
    let idx: Vec<usize> = (0..items.len()).collect();
    let base = task.evaluate(&idx, &base_scores)?;
    let opt = task.evaluate(&idx, &best_scores)?;
    let target_dims = match &task.target {
        Target::Hofstede { row, .. } => Some(crate::data::load::target_vector(row)),
        Target::Wvs { .. } | Target::Selfgen { .. } => None,
    };
    Ok(EngineView {
        items: items.iter().map(|i| i.id.clone()).collect(),
        baseline: base.answers,
        optimised: opt.answers,
        baseline_dims: base.dimensions,
        optimised_dims: opt.dimensions,
        target_dims,
        fitness: (base.fitness, opt.fitness),
    })
}
