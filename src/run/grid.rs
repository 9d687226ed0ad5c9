//! Sweeps over the DE control parameters: the grid, the runs it implies, and the tables.
//!
//! ```text
//! <sweep dir>/
//!   sweep.json    format tag and the settings that define the sweep (a merge checks them)
//!   runs/F<m>-CR<r>-rep<k>/   one ordinary `deopt run` directory per run
//!   sweep.csv     one row per finished run
//!   summary.csv   one row per (mutation, recombination) cell, the best cell marked
//! ```
//!
//! Every run's seed is derived from the sweep seed, its cell and its repeat, so a run's
//! result does not depend on which process ran it: shards merged give the same tables as
//! one unsharded sweep. Each run is started or resumed with [`crate::run::launch`] from the
//! run spec of its grid point ([`point_spec`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::optim::stats::{self, mann_whitney_u, median, Alternative};
use crate::run::directory::{self, csv_cell, Checkpoint};
use crate::run::driver::ProgressObserver;
use crate::run::launch;
use crate::run::seeds::splitmix64;
use crate::run::spec::{DeSpec, MethodSpec, ModelSpec, RunSpec};

/// Settings file of a sweep directory.
pub const SWEEP_JSON: &str = "sweep.json";
/// One row per run.
pub const SWEEP_CSV: &str = "sweep.csv";
/// One row per cell.
pub const SUMMARY_CSV: &str = "summary.csv";
/// Folder of the run directories.
pub const RUNS: &str = "runs";
/// In a shard's directory: which share of the sweep it runs (`{"shard": i, "of": n}`).
pub const SHARD_JSON: &str = "shard.json";
/// Format tag of sweep.json.
pub const FORMAT: &str = "deopt-sweep-1";

/// Parse a comma-separated grid of a flag's values, each within `lo..=hi` (`lo` excluded
/// when `lo_open`).
///
/// # Errors
/// An empty list or value, a value that is not a number, out of range or repeated.
pub fn parse_grid(flag: &str, text: &str, lo: f64, lo_open: bool, hi: f64) -> Result<Vec<f64>> {
    if text.trim().is_empty() {
        bail!("{flag} '{text}': expected a comma-separated list of numbers");
    }
    let mut out: Vec<f64> = Vec::new();
    for (i, part) in text.split(',').enumerate() {
        let p = part.trim();
        if p.is_empty() {
            bail!("{flag} '{text}': value {} is empty", i + 1);
        }
        let v: f64 = p.parse().map_err(|_| anyhow!("{flag} '{text}': '{p}' is not a number"))?;
        let below = if lo_open { v <= lo } else { v < lo };
        if !v.is_finite() || below || v > hi {
            let open = if lo_open { "(" } else { "[" };
            bail!("{flag} '{text}': {p} is outside {open}{lo}, {hi}]");
        }
        if out.contains(&v) {
            bail!("{flag} '{text}': {p} is given twice");
        }
        out.push(v);
    }
    Ok(out)
}

/// Parse `i/n` (1-based shard `i` of `n`).
///
/// # Errors
/// Not two positive integers with `i <= n`.
pub fn parse_shard(text: &str) -> Result<(usize, usize)> {
    let bad = || anyhow!("shard '{text}': expected i/n with 1 <= i <= n, e.g. 1/2");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let i: usize = i.trim().parse().map_err(|_| bad())?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    if i == 0 || n == 0 || i > n {
        return Err(bad());
    }
    Ok((i, n))
}

/// What defines a sweep; shards and merges must agree on all of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepSettings {
    /// Country (as given).
    pub country: String,
    /// Survey name.
    pub survey: String,
    /// Population size.
    pub pop: usize,
    /// Soft prompt rows.
    pub tokens: usize,
    /// DE strategy name.
    pub strategy: String,
    /// Generations per run.
    pub gens: u64,
    /// Runs per cell.
    pub repeats: usize,
    /// Sweep seed.
    pub seed: u64,
    /// Held-out fraction.
    pub holdout: f64,
    /// Mutation factors F (columns of the grid).
    pub mutation: Vec<f64>,
    /// Recombination rates CR (rows of the grid).
    pub recombination: Vec<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SweepFile {
    format: String,
    settings: SweepSettings,
}

/// One run of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct GridPoint {
    /// Position in the sweep (what `--shard` splits).
    pub index: usize,
    /// Index into [`SweepSettings::mutation`].
    pub mi: usize,
    /// Index into [`SweepSettings::recombination`].
    pub ri: usize,
    /// Mutation factor F.
    pub mutation: f64,
    /// Recombination rate CR.
    pub recombination: f64,
    /// Repeat, from 0.
    pub repeat: usize,
    /// The run's seed.
    pub seed: u64,
}

impl GridPoint {
    /// Name of the run directory under `runs/`.
    pub fn name(&self) -> String {
        format!("F{}-CR{}-rep{}", self.mutation, self.recombination, self.repeat)
    }
}

/// The seed of the run of cell (`mi`, `ri`), repeat `repeat`.
pub fn run_seed(seed: u64, mi: usize, ri: usize, repeat: usize) -> u64 {
    splitmix64(seed ^ splitmix64(((mi as u64) << 42) | ((ri as u64) << 21) | repeat as u64)) >> 1
}

/// Every run of the sweep, in order: mutation, then recombination, then repeat.
pub fn plan(s: &SweepSettings) -> Vec<GridPoint> {
    let mut out = Vec::new();
    for (mi, &m) in s.mutation.iter().enumerate() {
        for (ri, &r) in s.recombination.iter().enumerate() {
            for repeat in 0..s.repeats {
                out.push(GridPoint {
                    index: out.len(),
                    mi,
                    ri,
                    mutation: m,
                    recombination: r,
                    repeat,
                    seed: run_seed(s.seed, mi, ri, repeat),
                });
            }
        }
    }
    out
}

/// The run spec of a grid point: the sweep's settings, the point's F, CR and seed, `model`,
/// and every other setting at its default.
///
/// # Errors
/// A survey or strategy name in the settings that deopt does not know.
pub fn point_spec(s: &SweepSettings, p: &GridPoint, model: &ModelSpec) -> Result<RunSpec> {
    let mut spec = RunSpec::new(&s.country);
    spec.task.survey = serde_json::from_value(serde_json::Value::String(s.survey.clone()))
        .map_err(|_| anyhow!("sweep survey '{}': expected vsm13 or wvs", s.survey))?;
    spec.method = MethodSpec::De(DeSpec {
        strategy: s.strategy.parse()?,
        pop: s.pop,
        mutation: p.mutation,
        recombination: p.recombination,
        subspace: None,
    });
    spec.prompt.tokens = s.tokens;
    spec.holdout = s.holdout;
    spec.seed = p.seed;
    spec.stop.gens = s.gens;
    spec.model = model.clone();
    Ok(spec)
}

/// The `deopt sweep` flags that define this sweep and its model settings (no `--out`, no
/// `--shard`): what each Slurm array task runs.
pub fn sweep_argv(s: &SweepSettings, model: &ModelSpec) -> Vec<String> {
    let list = |xs: &[f64]| xs.iter().map(f64::to_string).collect::<Vec<_>>().join(",");
    let mut a: Vec<String> = [
        ("--country", s.country.clone()),
        ("--survey", s.survey.clone()),
        ("--mutation", list(&s.mutation)),
        ("--recombination", list(&s.recombination)),
        ("--pop", s.pop.to_string()),
        ("--tokens", s.tokens.to_string()),
        ("--strategy", s.strategy.clone()),
        ("--gens", s.gens.to_string()),
        ("--repeats", s.repeats.to_string()),
        ("--seed", s.seed.to_string()),
        ("--holdout", s.holdout.to_string()),
        ("--batch", model.batch.to_string()),
        ("--ctx", model.ctx.to_string()),
        ("--gpu-layers", model.gpu_layers.to_string()),
        ("--batch-prompts", model.batch_prompts.to_string()),
    ]
    .into_iter()
    .flat_map(|(f, v)| [f.to_string(), v])
    .collect();
    let precision = serde_json::to_value(model.precision).ok().and_then(|v| v.as_str().map(String::from));
    if let Some(p) = precision {
        a.extend(["--precision".to_string(), p]);
    }
    if let Some(p) = &model.path {
        a.extend([
            "--model".to_string(),
            std::path::absolute(p).unwrap_or_else(|_| p.clone()).display().to_string(),
        ]);
    }
    if let Some(t) = model.threads {
        a.extend(["--threads".to_string(), t.to_string()]);
    }
    a
}

/// Run this shard's share of the sweep in `dir` (every run with `shard` `None`): finished
/// runs are skipped, checkpointed ones resumed, the rest started. `note` gets one line per
/// run. Returns false when a run was interrupted (Ctrl-C); the tables are written either way.
///
/// # Errors
/// A run that fails, with its directory named.
pub fn run_points(
    dir: &Path,
    s: &SweepSettings,
    shard: Option<(usize, usize)>,
    model: &ModelSpec,
    mut note: impl FnMut(&str),
) -> Result<bool> {
    if let Some(sh) = shard {
        claim_shard(dir, sh)?;
    }
    let all = plan(s);
    let mine: Vec<&GridPoint> =
        all.iter().filter(|r| shard.is_none_or(|(i, n)| r.index % n == i - 1)).collect();
    for (k, point) in mine.iter().enumerate() {
        let rd = run_dir(dir, point);
        let state = run_state(&rd, s.gens);
        let what = match state {
            RunState::Finished => "finished already, skipped",
            RunState::Partial => "resuming",
            RunState::Missing => "running",
        };
        note(&format!("sweep: run {}/{} {} (seed {}): {what}", k + 1, mine.len(), point.name(), point.seed));
        if state == RunState::Finished {
            continue;
        }
        let mut obs = ProgressObserver::new(&format!("run {}/{}: ", k + 1, mine.len()), s.gens, false);
        let outcome = match state {
            RunState::Partial => launch::resume(&rd, None, &mut obs),
            _ => launch::start(point_spec(s, point, model)?, Some(&rd), false, &mut obs),
        }
        .map_err(|e| anyhow!("run {}: {e:#}", rd.display()))?;
        if !outcome.finished() {
            write_tables(dir, s)?;
            return Ok(false);
        }
    }
    Ok(true)
}

/// Record in `dir` that it holds shard `i/n`, or check that it already does: a directory
/// never holds runs of two shards (two array tasks never write the same run directory).
///
/// # Errors
/// `dir` holds another shard, or I/O failure.
pub fn claim_shard(dir: &Path, (i, n): (usize, usize)) -> Result<()> {
    match read_shard(dir)? {
        Some(old) if old == (i, n) => Ok(()),
        Some((oi, on)) => bail!("{}: holds shard {oi}/{on}, not {i}/{n}", dir.display()),
        None => crate::fsutil::write_atomic(
            &dir.join(SHARD_JSON),
            serde_json::json!({ "shard": i, "of": n }).to_string().as_bytes(),
        ),
    }
}

/// The shard a directory holds (`None`: not a shard).
///
/// # Errors
/// A shard.json that cannot be read.
pub fn read_shard(dir: &Path) -> Result<Option<(usize, usize)>> {
    let path = dir.join(SHARD_JSON);
    if !path.exists() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .map_err(|e| anyhow!("{}: not a shard file ({e})", path.display()))?;
    let get = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).map(|x| x as usize);
    match (get("shard"), get("of")) {
        (Some(i), Some(n)) if i >= 1 && i <= n => Ok(Some((i, n))),
        _ => bail!("{}: expected {{\"shard\": i, \"of\": n}} with 1 <= i <= n", path.display()),
    }
}

/// Directory of a run.
pub fn run_dir(sweep: &Path, spec: &GridPoint) -> PathBuf {
    sweep.join(RUNS).join(spec.name())
}

/// What state a run directory is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Nothing usable yet: start it.
    Missing,
    /// Checkpointed but not at the last generation: resume it.
    Partial,
    /// Done.
    Finished,
}

/// State of the run in `dir` for a sweep of `gens` generations.
pub fn run_state(dir: &Path, gens: u64) -> RunState {
    if !directory::is_run(dir) {
        return RunState::Missing;
    }
    match Checkpoint::load(dir) {
        Ok(c) if c.history.last().is_some_and(|r| r.generation >= gens) => RunState::Finished,
        Ok(_) => RunState::Partial,
        Err(_) => RunState::Missing,
    }
}

/// One finished run, a row of sweep.csv.
#[derive(Debug, Clone, PartialEq)]
pub struct GridResult {
    /// The run.
    pub spec: GridPoint,
    /// Final best fitness (loss).
    pub best: f64,
    /// Held-out loss of the best prompt, if the sweep holds items out.
    pub holdout: Option<f64>,
    /// Generation in which the best was found.
    pub best_generation: u64,
    /// Objective evaluations.
    pub evaluations: u64,
    /// Wall-clock seconds over all sessions of the run.
    pub wall_s: f64,
}

/// Results of the finished runs in the sweep directory, in plan order.
///
/// # Errors
/// A finished run whose checkpoint cannot be read.
pub fn collect(dir: &Path, s: &SweepSettings) -> Result<Vec<GridResult>> {
    let mut out = Vec::new();
    for spec in plan(s) {
        let rd = run_dir(dir, &spec);
        if run_state(&rd, s.gens) != RunState::Finished {
            continue;
        }
        let c = Checkpoint::load(&rd)?;
        let last = c.history.last().expect("a finished run has history");
        out.push(GridResult {
            best: last.best_so_far,
            holdout: last.holdout,
            best_generation: c.best_generation,
            evaluations: last.evaluations,
            wall_s: c.elapsed_s,
            spec,
        });
    }
    Ok(out)
}

/// One row of summary.csv.
#[derive(Debug, Clone, PartialEq)]
pub struct CellSummary {
    /// Mutation factor F.
    pub mutation: f64,
    /// Recombination rate CR.
    pub recombination: f64,
    /// Final best losses of the cell's finished runs.
    pub losses: Vec<f64>,
    /// Whether this is the cell with the lowest median.
    pub best_cell: bool,
    /// One-sided Mann-Whitney p-value that the best cell's losses are smaller than this
    /// cell's (`None` for the best cell and empty cells).
    pub p_value: Option<f64>,
}

/// Per-cell statistics, in grid order, the best cell (lowest median, first on ties) marked.
pub fn summarize(s: &SweepSettings, results: &[GridResult]) -> Vec<CellSummary> {
    let mut cells: Vec<CellSummary> = Vec::new();
    for (mi, &m) in s.mutation.iter().enumerate() {
        for (ri, &r) in s.recombination.iter().enumerate() {
            let losses =
                results.iter().filter(|x| x.spec.mi == mi && x.spec.ri == ri).map(|x| x.best).collect();
            cells.push(CellSummary {
                mutation: m,
                recombination: r,
                losses,
                best_cell: false,
                p_value: None,
            });
        }
    }
    let best = cells
        .iter()
        .enumerate()
        .filter_map(|(i, c)| median(&c.losses).map(|m| (i, m)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i);
    if let Some(b) = best {
        cells[b].best_cell = true;
        let best_losses = cells[b].losses.clone();
        for (i, c) in cells.iter_mut().enumerate() {
            if i != b && !c.losses.is_empty() {
                c.p_value = Some(mann_whitney_u(&best_losses, &c.losses, Alternative::Less).p_value);
            }
        }
    }
    cells
}

fn mean_sd(xs: &[f64]) -> (Option<f64>, Option<f64>) {
    (stats::mean(xs), stats::sd(xs, stats::Spread::Sample))
}

/// sweep.csv text.
pub fn sweep_csv(results: &[GridResult]) -> String {
    let mut s = String::from(
        "mutation,recombination,repeat,seed,best_loss,holdout_loss,best_generation,evaluations,wall_s\n",
    );
    for r in results {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{:.3}",
            r.spec.mutation,
            r.spec.recombination,
            r.spec.repeat,
            r.spec.seed,
            r.best,
            csv_cell(r.holdout),
            r.best_generation,
            r.evaluations,
            r.wall_s
        );
    }
    s
}

/// summary.csv text (deterministic: no wall-clock figures).
pub fn summary_csv(cells: &[CellSummary]) -> String {
    let mut s = String::from("mutation,recombination,n,mean,sd,median,best,best_cell,p_value_vs_best\n");
    for c in cells {
        let (mean, sd) = mean_sd(&c.losses);
        let min = c.losses.iter().copied().min_by(f64::total_cmp);
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{}",
            c.mutation,
            c.recombination,
            c.losses.len(),
            csv_cell(mean),
            csv_cell(sd),
            csv_cell(median(&c.losses)),
            csv_cell(min),
            if c.best_cell { "yes" } else { "" },
            csv_cell(c.p_value)
        );
    }
    s
}

/// Whether `dir` is a sweep directory (it has sweep.json).
pub fn is_sweep(dir: &Path) -> bool {
    dir.join(SWEEP_JSON).is_file()
}

/// Read a sweep directory's settings.
///
/// # Errors
/// Not a sweep directory (no or a malformed sweep.json).
pub fn read_settings(dir: &Path) -> Result<SweepSettings> {
    let path = dir.join(SWEEP_JSON);
    let text = std::fs::read_to_string(&path)
        .map_err(|_| anyhow!("{}: not a deopt sweep directory (no {SWEEP_JSON})", dir.display()))?;
    let f: SweepFile = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{}: not a deopt sweep file ({e})", path.display()))?;
    if f.format != FORMAT {
        bail!("{}: unknown sweep format '{}'", path.display(), f.format);
    }
    Ok(f.settings)
}

/// Create `dir` with `s` as its settings, or check that an existing sweep there has them.
///
/// # Errors
/// A sweep with other settings is already there, or I/O failure.
pub fn init_dir(dir: &Path, s: &SweepSettings) -> Result<()> {
    if dir.join(SWEEP_JSON).exists() {
        let old = read_settings(dir)?;
        if &old != s {
            bail!(
                "{}: holds a sweep with other settings ({})",
                dir.display(),
                differences(&old, s).join(", ")
            );
        }
        return Ok(());
    }
    std::fs::create_dir_all(dir.join(RUNS))
        .with_context(|| format!("{}: cannot create directory", dir.display()))?;
    let f = SweepFile { format: FORMAT.into(), settings: s.clone() };
    crate::fsutil::write_atomic(&dir.join(SWEEP_JSON), &serde_json::to_vec_pretty(&f)?)
}

/// Names and values of the settings that differ.
pub fn differences(a: &SweepSettings, b: &SweepSettings) -> Vec<String> {
    let (va, vb) = (serde_json::to_value(a).unwrap_or_default(), serde_json::to_value(b).unwrap_or_default());
    let mut out = Vec::new();
    if let (Some(oa), Some(ob)) = (va.as_object(), vb.as_object()) {
        for (k, x) in oa {
            let y = ob.get(k).cloned().unwrap_or_default();
            if *x != y {
                out.push(format!("{k} {x} vs {y}"));
            }
        }
    }
    out
}

/// Write sweep.csv and summary.csv from the finished runs; returns the summary.
///
/// # Errors
/// Reading a run or writing a table fails.
pub fn write_tables(dir: &Path, s: &SweepSettings) -> Result<(Vec<GridResult>, Vec<CellSummary>)> {
    let results = collect(dir, s)?;
    let cells = summarize(s, &results);
    crate::fsutil::write_atomic(&dir.join(SWEEP_CSV), sweep_csv(&results).as_bytes())?;
    crate::fsutil::write_atomic(&dir.join(SUMMARY_CSV), summary_csv(&cells).as_bytes())?;
    Ok((results, cells))
}

/// Every planned run must be finished in one of `dirs`, and every shard directory must have
/// finished all of its own runs.
fn check_complete(dirs: &[PathBuf], s: &SweepSettings) -> Result<()> {
    let all = plan(s);
    let mut done = vec![false; all.len()];
    // Runs a shard directory should have finished but did not, by plan index.
    let mut unfinished: Vec<Vec<String>> = vec![Vec::new(); all.len()];
    for d in dirs {
        let shard = read_shard(d)?;
        for p in &all {
            let finished = run_state(&run_dir(d, p), s.gens) == RunState::Finished;
            done[p.index] |= finished;
            if let Some((i, n)) = shard {
                if p.index % n == i - 1 && !finished {
                    unfinished[p.index].push(format!("shard {i}/{n} in {}", d.display()));
                }
            }
        }
    }
    let mut missing: Vec<String> = Vec::new();
    for p in &all {
        if !unfinished[p.index].is_empty() {
            missing.push(format!("{} ({})", p.name(), unfinished[p.index].join("; ")));
        } else if !done[p.index] {
            missing.push(format!("{} (in no directory)", p.name()));
        }
    }
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(8).map(String::as_str).collect();
        bail!(
            "sweep merge: {} of {} runs are not finished: {}{}; rerun their shards, then merge again",
            missing.len(),
            all.len(),
            shown.join(", "),
            if missing.len() > shown.len() { ", ..." } else { "" }
        );
    }
    Ok(())
}

/// Merge shard directories into `out`: checks that all are sweeps with the same settings,
/// copies their finished runs, and writes the tables.
///
/// # Errors
/// A directory is not a sweep or has other settings, or I/O failure.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<(SweepSettings, Vec<GridResult>, Vec<CellSummary>)> {
    let first = dirs.first().ok_or_else(|| anyhow!("sweep merge: give at least one sweep directory"))?;
    let s = read_settings(first)?;
    for d in &dirs[1..] {
        let o = read_settings(d)?;
        if o != s {
            bail!(
                "{}: a sweep with other settings than {} ({})",
                d.display(),
                first.display(),
                differences(&s, &o).join(", ")
            );
        }
    }
    check_complete(dirs, &s)?;
    init_dir(out, &s)?;
    for d in dirs {
        if d.canonicalize().ok() == out.canonicalize().ok() {
            continue;
        }
        for spec in plan(&s) {
            let (src, dst) = (run_dir(d, &spec), run_dir(out, &spec));
            if run_state(&src, s.gens) == RunState::Finished && run_state(&dst, s.gens) != RunState::Finished
            {
                copy_flat(&src, &dst)?;
            }
        }
    }
    let (results, cells) = write_tables(out, &s)?;
    Ok((s, results, cells))
}

/// Copy the files of a run directory (it has no subdirectories); checkpoint.json last, so a
/// copy cut short is not taken for a finished run.
fn copy_flat(src: &Path, dst: &Path) -> Result<()> {
    copy_files_last(src, dst, directory::CHECKPOINT)
}

/// Copy the plain files of `src` into `dst`, the file named `last` last: the one whose
/// presence marks the copy as complete.
///
/// # Errors
/// I/O failure, naming the path.
pub fn copy_files_last(src: &Path, dst: &Path, last: &str) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("{}: cannot create directory", dst.display()))?;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(src)
        .with_context(|| format!("{}: cannot read", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort_by_key(|p| p.file_name().is_some_and(|n| n == last));
    for p in entries {
        let to = dst.join(p.file_name().expect("a file name"));
        std::fs::copy(&p, &to).with_context(|| format!("copying {} to {}", p.display(), to.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SweepSettings {
        SweepSettings {
            country: "SAU".into(),
            survey: "vsm13".into(),
            pop: 4,
            tokens: 2,
            strategy: "rand1bin".into(),
            gens: 2,
            repeats: 2,
            seed: 1,
            holdout: 0.0,
            mutation: vec![0.3, 0.5],
            recombination: vec![0.7],
        }
    }

    #[test]
    fn grids_and_shards() {
        assert_eq!(parse_grid("--mutation", "0.3, 0.5,0.8", 0.0, true, 2.0).unwrap(), vec![0.3, 0.5, 0.8]);
        for bad in ["", "0.3,,0.5", "abc", "0", "2.5", "0.3,0.3", "nan"] {
            assert!(parse_grid("--mutation", bad, 0.0, true, 2.0).is_err(), "{bad}");
        }
        assert!(parse_grid("--recombination", "0,1", 0.0, false, 1.0).is_ok());
        assert_eq!(parse_shard("2/3").unwrap(), (2, 3));
        for bad in ["3/2", "0/2", "1/0", "1", "a/b", "-1/2"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plan_seeds_are_distinct_and_stable() {
        let p = plan(&settings());
        assert_eq!(p.len(), 4);
        assert_eq!(p[3].name(), "F0.5-CR0.7-rep1");
        let mut seeds: Vec<u64> = p.iter().map(|r| r.seed).collect();
        assert_eq!(seeds, plan(&settings()).iter().map(|r| r.seed).collect::<Vec<_>>());
        seeds.dedup();
        assert_eq!(seeds.len(), 4);
        assert_ne!(plan(&SweepSettings { seed: 2, ..settings() })[0].seed, p[0].seed);
    }

    #[test]
    fn summary_marks_lowest_median() {
        let s = settings();
        let p = plan(&s);
        let res = |i: usize, best: f64| GridResult {
            spec: p[i].clone(),
            best,
            holdout: None,
            best_generation: 1,
            evaluations: 12,
            wall_s: 1.0,
        };
        let results = vec![res(0, 5.0), res(1, 6.0), res(2, 1.0), res(3, 2.0)];
        let cells = summarize(&s, &results);
        assert!(!cells[0].best_cell && cells[1].best_cell);
        assert!(cells[0].p_value.unwrap() < 0.5 && cells[1].p_value.is_none());
        let csv = summary_csv(&cells);
        assert_eq!(csv.lines().nth(2).unwrap(), "0.5,0.7,2,1.5,0.7071067811865476,1.5,1,yes,");
    }
}
