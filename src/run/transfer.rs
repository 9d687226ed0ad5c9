//! Real-survey scores of a run trained on self-generated data: the best prompt, no prompt and
//! CultureSPA's P1 on the VSM13 (loss to the country's Hofstede scores) and WVS-7 (CAS), which
//! the training never saw. Written to `transfer.json` at the end of such a run.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::data::survey::SurveyKind;
use crate::engine::{Engine, Plan};
use crate::llama::Model;
use crate::prompt::baseline::{text_layout, Baseline};
use crate::prompt::render::Layout;
use crate::prompt::softprompt::SoftPrompt;
use crate::run::spec::{ModelSpec, TaskSpec};

/// File name in the run directory.
pub const TRANSFER: &str = "transfer.json";

/// One prompt's real-survey scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferRow {
    /// `best` (the run's prompt), `none` or `p1`.
    pub prompt: String,
    /// VSM13 L2 loss to the country's Hofstede scores (lower is better); None without targets.
    pub vsm13_loss: Option<f64>,
    /// WVS-7 CAS (higher is better); None without WVS data for the country.
    pub wvs_cas: Option<f64>,
}

/// The scores of a run's prompt on the real surveys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    /// Country (ISO3).
    pub country: String,
    /// Best prompt, no prompt, P1.
    pub rows: Vec<TransferRow>,
}

/// Score `prompt` (and the none/p1 baselines) on VSM13 and WVS-7 for `country`, in `layout`.
///
/// # Errors
/// Engine failures.
pub fn score(
    model: &Model,
    model_spec: &ModelSpec,
    country: &str,
    layout: &Layout,
    prompt: &SoftPrompt,
) -> Result<Transfer> {
    let mut engine = Engine::new(model, model_spec.engine_config())?;
    let mut rows: Vec<TransferRow> = ["best", "none", "p1"]
        .iter()
        .map(|p| TransferRow { prompt: p.to_string(), vsm13_loss: None, wvs_cas: None })
        .collect();
    let empty = SoftPrompt::empty(model.n_embd_inp());
    for kind in [SurveyKind::Vsm13, SurveyKind::Wvs] {
        let spec = TaskSpec { survey: kind, ..TaskSpec::new(country) };
        // A country without targets for a survey keeps None there.
        let Ok(task) = spec.load() else { continue };
        let items: Vec<_> = task.survey.items.iter().collect();
        let idx: Vec<usize> = (0..items.len()).collect();
        for row in &mut rows {
            let (l, p) = match row.prompt.as_str() {
                "best" => (layout.clone(), prompt),
                "none" => (text_layout(Baseline::None, layout, &task, kind)?, &empty),
                _ => (text_layout(Baseline::P1, layout, &task, kind)?, &empty),
            };
            let plan = Plan::new(model, &items, &l)?;
            let scores = engine.score(&plan, &[p])?.remove(0);
            let ev = task.evaluate(&idx, &scores)?;
            match kind {
                SurveyKind::Vsm13 => row.vsm13_loss = Some(ev.fitness),
                SurveyKind::Wvs => row.wvs_cas = ev.cas.map(|c| c.cas),
            }
        }
    }
    Ok(Transfer { country: country.to_string(), rows })
}

/// Read `transfer.json` from a run directory, if there is one.
pub fn load(dir: &Path) -> Option<Transfer> {
    let text = std::fs::read_to_string(dir.join(TRANSFER)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The scores as a Markdown table.
pub fn table(t: &Transfer) -> String {
    let f = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
    let mut s = format!(
        "Real-survey scores for {} (never seen in training):\n\n| prompt | VSM13 loss (lower is better) | WVS-7 CAS (higher is better) |\n|---|---:|---:|\n",
        t.country
    );
    for r in &t.rows {
        s.push_str(&format!("| {} | {} | {} |\n", r.prompt, f(r.vsm13_loss, 2), f(r.wvs_cas, 2)));
    }
    s
}
