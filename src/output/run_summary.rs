//! The text `deopt run` prints when a run session ends.

use std::fmt::Write as _;

use crate::data::dimension::Dimension;
use crate::output::report_files::fixed_or_dash;
use crate::run::directory;
use crate::run::launch::RunOutcome;
use crate::score::fitness::Target;

/// What `deopt run` prints on stdout at the end: generations and evaluations, why it stopped,
/// the fitness without a prompt, of the initial population and of the best prompt, held-out
/// loss, the dimensions (VSM13) or CAS (WVS), and the files.
pub fn run_summary(o: &RunOutcome) -> String {
    let mut out = String::new();
    let _ = write_summary(&mut out, o);
    out
}

fn write_summary(out: &mut String, o: &RunOutcome) -> std::fmt::Result {
    let (task, ckpt, dir) = (&o.task, &o.checkpoint, &o.dir);
    let Some(last) = ckpt.history.last() else {
        return writeln!(out, "{}: no generation was run", dir.display());
    };
    let first = ckpt.history.first().unwrap_or(last);
    let tune = o.config.spec.tune();
    let (steps, work) = match tune {
        Some(t) => (
            "Adam steps",
            format!("{} forward-pass equivalents ({} objective)", last.evaluations, t.objective),
        ),
        None => ("generations", format!("{} evaluations", last.evaluations)),
    };
    writeln!(
        out,
        "{} for {} ({}): {} {steps}, {work}{}",
        task.survey.name,
        task.country.iso3,
        task.country.name,
        last.generation,
        o.stop.map(|r| format!(", stopped: {r}")).unwrap_or_default()
    )?;
    writeln!(out, "  baseline (no soft prompt) fitness: {:.4}", o.baseline.fitness)?;
    if tune.is_some() {
        writeln!(out, "  starting prompt fitness:           {:.4}", first.best)?;
        writeln!(
            out,
            "  best fitness:                      {:.4} (step {})",
            last.best_so_far, ckpt.best_generation
        )?;
    } else {
        writeln!(out, "  initial population best fitness:   {:.4} (median {:.4})", first.best, first.median)?;
        writeln!(
            out,
            "  best fitness:                      {:.4} (generation {})",
            last.best_so_far, ckpt.best_generation
        )?;
    }
    if let Some(h) = last.holdout {
        writeln!(
            out,
            "  held-out loss: best prompt {h:.4}, no soft prompt {}",
            o.baseline_holdout.as_ref().map_or_else(|| "-".into(), |e| format!("{:.4}", e.fitness))
        )?;
    }
    if o.config.has_dimensions() {
        if let Target::Hofstede { row, .. } = &task.target {
            let target = crate::data::load::target_vector(row);
            let base = o.baseline.dimensions.unwrap_or([None; 6]);
            writeln!(out, "  dimension   target  best   no-prompt")?;
            for d in Dimension::ALL {
                let i = d.index();
                writeln!(
                    out,
                    "  {:<9} {:>7} {:>7} {:>7}",
                    d.code(),
                    fmt_opt(target[i]),
                    fmt_opt(last.dimensions.get(i).copied().flatten()),
                    fmt_opt(base[i])
                )?;
            }
        }
    } else if let Some(c) = last.cas {
        writeln!(
            out,
            "  CAS: best {c:.4}, no soft prompt {}",
            o.baseline.cas.as_ref().map_or_else(|| "-".into(), |r| format!("{:.4}", r.cas))
        )?;
    }
    if let Some(t) = crate::run::transfer::load(dir) {
        let f = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |v| format!("{v:.d$}"));
        writeln!(out, "  real surveys for {} (not seen in training):", t.country)?;
        for r in &t.rows {
            writeln!(
                out,
                "    {:<5} VSM13 loss {:>8}  WVS-7 CAS {:>7}",
                r.prompt,
                f(r.vsm13_loss, 2),
                f(r.wvs_cas, 2)
            )?;
        }
    }
    writeln!(
        out,
        "  files: {}/{{{}, {}, {}, {}, {}{}}}",
        dir.display(),
        directory::CONFIG,
        directory::HISTORY,
        directory::TIMING,
        directory::BEST_PROMPT,
        directory::CHECKPOINT,
        if tune.is_some() { format!(", {}", crate::run::tune_method::TUNE_CSV) } else { String::new() }
    )
}

fn fmt_opt(v: Option<f64>) -> String {
    fixed_or_dash(v, 2)
}
