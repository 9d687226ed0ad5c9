//! The run directory: its file names, config.json (the run spec plus provenance), the
//! per-step history rows, timing, and the checkpoint that lets a run resume bit for bit.
//!
//! ```text
//! results/<YYYY-MM-DD>-<ISO3>-<survey>-<id>/
//!   config.json              the run spec (every setting and the seed), model path and sha256,
//!                            layout, example prompt, item split, baselines
//!   history.csv              one row per generation; deterministic (same seed => same bytes)
//!   timing.csv               wall-clock seconds per generation (not deterministic, kept apart)
//!   best_prompt.safetensors  best soft prompt so far, with metadata
//!   checkpoint.json          optimizer state + history rows + counters, written atomically
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::dimension::Dimension;
use crate::prompt::render::Layout;
use crate::run::spec::RunSpec;

/// Settings and provenance.
pub const CONFIG: &str = "config.json";
/// Deterministic per-generation history.
pub const HISTORY: &str = "history.csv";
/// Wall-clock figures per generation.
pub const TIMING: &str = "timing.csv";
/// Best soft prompt so far.
pub const BEST_PROMPT: &str = "best_prompt.safetensors";
/// Resumable state.
pub const CHECKPOINT: &str = "checkpoint.json";

/// Format tag of config.json ([`RunConfig`]).
pub const CONFIG_FORMAT: &str = "deopt-run-2";

/// The model a run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// The GGUF file scored (for the default model, its F16 or original copy).
    pub path: String,
    /// sha256 of that file; a resume must see the same.
    pub sha256: String,
    /// Display name.
    pub name: String,
    /// Width of the input embeddings.
    pub n_embd: usize,
}

/// config.json: the spec that defines the run, and what was derived from it when it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// [`CONFIG_FORMAT`].
    pub format: String,
    /// deopt version that started the run.
    pub deopt_version: String,
    /// Date the run started (UTC).
    pub created: String,
    /// The run specification (the stop conditions are the latest session's).
    pub spec: RunSpec,
    /// The model.
    pub model: ModelRecord,
    /// Rows of the soft prompt.
    pub rows: usize,
    /// The persona text of `init = persona`.
    pub persona_text: Option<String>,
    /// The optimizer settings derived from the spec.
    pub optimizer: crate::optim::Config,
    /// The rendered layout.
    pub layout: Layout,
    /// The first training item as the model sees it.
    pub example_prompt: String,
    /// Item ids in the fitness.
    pub train_items: Vec<String>,
    /// Item ids held out.
    pub holdout_items: Vec<String>,
    /// Row norms are kept within this range.
    pub repair_norm_range: [f32; 2],
    /// Standard deviation of the embedding table.
    pub embedding_std: f64,
    /// Fitness without a soft prompt on the training items.
    pub baseline_loss: f64,
    /// Fitness without a soft prompt on the held-out items.
    pub baseline_holdout_loss: Option<f64>,
}

impl RunConfig {
    /// Read `dir/config.json`.
    ///
    /// # Errors
    /// A missing or malformed file, or one written by another format, as one line naming it.
    pub fn load(dir: &Path) -> Result<RunConfig> {
        let path = dir.join(CONFIG);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{}: cannot read the run config", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a deopt run config ({e})", path.display()))?;
        match v.get("format").and_then(|f| f.as_str()) {
            Some(CONFIG_FORMAT) => {}
            Some(other) => bail!(
                "{}: run format '{other}' (expected '{CONFIG_FORMAT}'); it was written by another deopt version",
                path.display()
            ),
            None => bail!("{}: not a deopt run config (no format)", path.display()),
        }
        serde_json::from_value(v)
            .map_err(|e| anyhow::anyhow!("{}: not a deopt run config ({e})", path.display()))
    }

    /// Write `dir/config.json` atomically.
    ///
    /// # Errors
    /// Serialisation or I/O failure.
    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::fsutil::write_atomic(&dir.join(CONFIG), &serde_json::to_vec_pretty(self)?)
    }

    /// `key value` of the spec field named `key` (searched at any depth, e.g. `pop`,
    /// `country`), for messages; `None` if the spec has no such field.
    pub fn setting(&self, key: &str) -> Option<String> {
        fn find(v: &serde_json::Value, key: &str) -> Option<serde_json::Value> {
            let obj = v.as_object()?;
            obj.get(key).cloned().or_else(|| obj.values().find_map(|x| find(x, key)))
        }
        let spec = serde_json::to_value(&self.spec).ok()?;
        find(&spec, key).map(|v| format!("{key} {v}"))
    }

    /// Whether history.csv has the six dimension columns (a VSM13 run scored by dimensions).
    pub fn has_dimensions(&self) -> bool {
        self.spec.task.survey == crate::data::survey::SurveyKind::Vsm13
    }
}

/// Append one row to timing.csv (created with its header).
///
/// # Errors
/// I/O failure.
pub fn append_timing(dir: &Path, generation: u64, trials: usize, secs: f64) -> Result<()> {
    use std::io::Write as _;
    let path = dir.join(TIMING);
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    if new {
        writeln!(f, "generation,trials,seconds,evaluations_per_s")?;
    }
    writeln!(f, "{generation},{trials},{secs:.3},{:.3}", trials as f64 / secs.max(1e-9))?;
    Ok(())
}

/// Format tag of [`Checkpoint`] files.
pub const CHECKPOINT_FORMAT: &str = "deopt-run-checkpoint-1";

/// One generation of a run, as written to history.csv.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    /// Generation (0 = the initial population).
    pub generation: u64,
    /// Objective evaluations so far.
    pub evaluations: u64,
    /// Best fitness in the population.
    pub best: f64,
    /// Median fitness in the population.
    pub median: f64,
    /// Worst fitness in the population.
    pub worst: f64,
    /// Best fitness seen so far.
    pub best_so_far: f64,
    /// VSM13: the six indices of the best-so-far individual (PDI..IVR); empty for WVS.
    pub dimensions: Vec<Option<f64>>,
    /// WVS: the best-so-far individual's CAS; `None` for VSM13.
    pub cas: Option<f64>,
    /// Held-out loss of the best-so-far individual (`None` without `--holdout`).
    pub holdout: Option<f64>,
    /// Mean and sd of F used this generation (`None` at generation 0).
    pub f: Option<(f64, f64)>,
    /// Mean and sd of CR used this generation.
    pub cr: Option<(f64, f64)>,
    /// Mean distance of individuals to their centroid.
    pub diversity: f64,
    /// Trials strictly better than their parent.
    pub successes: usize,
    /// Units (tokens and soft rows) the engine decoded this generation.
    pub tokens: u64,
}

/// A CSV cell of an optional number: empty when missing, else Rust's shortest round-trip form
/// (history.csv, sweep.csv and summary.csv alike).
pub fn csv_cell(v: Option<f64>) -> String {
    v.map_or_else(String::new, |x| x.to_string())
}

/// The history.csv header.
fn header(vsm: bool) -> String {
    let mut s = String::from("generation,evaluations,best,median,worst,best_so_far,");
    if vsm {
        for d in Dimension::ALL {
            let _ = write!(s, "{},", d.code());
        }
    } else {
        s.push_str("cas,");
    }
    s.push_str("holdout,f_mean,f_sd,cr_mean,cr_sd,diversity,successes,tokens");
    s
}

/// One row as a CSV line (no newline); VSM13 rows are those with dimensions.
fn row_line(r: &HistoryRow, vsm: bool) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "{},{},{},{},{},{},",
        r.generation, r.evaluations, r.best, r.median, r.worst, r.best_so_far
    );
    if vsm {
        for i in 0..6 {
            let _ = write!(s, "{},", csv_cell(r.dimensions.get(i).copied().flatten()));
        }
    } else {
        let _ = write!(s, "{},", csv_cell(r.cas));
    }
    let _ = write!(
        s,
        "{},{},{},{},{},{},{},{}",
        csv_cell(r.holdout),
        csv_cell(r.f.map(|m| m.0)),
        csv_cell(r.f.map(|m| m.1)),
        csv_cell(r.cr.map(|m| m.0)),
        csv_cell(r.cr.map(|m| m.1)),
        r.diversity,
        r.successes,
        r.tokens
    );
    s
}

/// Parse what [`row_line`] wrote (20 fields for VSM13, 15 for WVS). Rust's float formatting
/// and parsing round-trip exactly, unlike JSON numbers through serde_json's default parser,
/// which is why checkpoints keep history rows as these lines.
fn parse_line(line: &str) -> Result<HistoryRow, String> {
    let c: Vec<&str> = line.split(',').collect();
    let vsm = match c.len() {
        20 => true,
        15 => false,
        n => return Err(format!("history row has {n} fields: {line}")),
    };
    let bad = |i: usize| format!("history row field {} is not a number: {line}", i + 1);
    let f = |i: usize| c[i].parse::<f64>().map_err(|_| bad(i));
    let u = |i: usize| c[i].parse::<u64>().map_err(|_| bad(i));
    let o = |i: usize| if c[i].is_empty() { Ok(None) } else { f(i).map(Some) };
    let pair = |i: usize| -> Result<Option<(f64, f64)>, String> { Ok(o(i)?.zip(o(i + 1)?)) };
    let k = if vsm { 12 } else { 7 };
    Ok(HistoryRow {
        generation: u(0)?,
        evaluations: u(1)?,
        best: f(2)?,
        median: f(3)?,
        worst: f(4)?,
        best_so_far: f(5)?,
        dimensions: if vsm { (6..12).map(o).collect::<Result<_, _>>()? } else { Vec::new() },
        cas: if vsm { None } else { o(6)? },
        holdout: o(k)?,
        f: pair(k + 1)?,
        cr: pair(k + 3)?,
        diversity: f(k + 5)?,
        successes: u(k + 6)? as usize,
        tokens: u(k + 7)?,
    })
}

/// history.csv from its rows. Floats use Rust's shortest round-trip form, so the bytes depend
/// only on the values.
pub fn history_csv(rows: &[HistoryRow], vsm: bool) -> String {
    let mut s = header(vsm);
    s.push('\n');
    for r in rows {
        s.push_str(&row_line(r, vsm));
        s.push('\n');
    }
    s
}

/// Serde for checkpoint history: rows as their exact CSV lines.
mod rows_as_lines {
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    use super::HistoryRow;

    pub fn serialize<S: Serializer>(rows: &[HistoryRow], s: S) -> Result<S::Ok, S::Error> {
        let lines: Vec<String> = rows.iter().map(|r| super::row_line(r, !r.dimensions.is_empty())).collect();
        lines.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<HistoryRow>, D::Error> {
        let lines = Vec::<String>::deserialize(d)?;
        lines.iter().map(|l| super::parse_line(l).map_err(D::Error::custom)).collect()
    }
}

/// Everything a resumed run needs besides config.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`CHECKPOINT_FORMAT`].
    pub format: String,
    /// The method's state (for DE what [`crate::optim::Optimizer::to_checkpoint`] wrote), as
    /// JSON.
    pub optimizer: serde_json::Value,
    /// History rows so far, stored as their CSV lines so floats round-trip exactly.
    #[serde(with = "rows_as_lines")]
    pub history: Vec<HistoryRow>,
    /// Last generation whose best-so-far improved (for `--stagnation`).
    pub last_improvement: u64,
    /// Generation of the best prompt saved so far.
    pub best_generation: u64,
    /// Wall-clock seconds spent so far over all sessions (for reports only).
    pub elapsed_s: f64,
}

impl Checkpoint {
    /// Write atomically to `dir/checkpoint.json`.
    ///
    /// # Errors
    /// Serialisation or I/O failure.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self).context("serialising the checkpoint")?;
        crate::fsutil::write_atomic(&dir.join(CHECKPOINT), &bytes)
    }

    /// Load `dir/checkpoint.json`.
    ///
    /// # Errors
    /// A missing or malformed file, as one line naming it.
    pub fn load(dir: &Path) -> Result<Checkpoint> {
        let path = dir.join(CHECKPOINT);
        let bytes = std::fs::read(&path)
            .with_context(|| format!("{}: cannot read the checkpoint", path.display()))?;
        let c: Checkpoint = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a deopt run checkpoint ({e})", path.display()))?;
        if c.format != CHECKPOINT_FORMAT {
            bail!("{}: unknown checkpoint format '{}'", path.display(), c.format);
        }
        Ok(c)
    }
}

/// Short id of a run: the first 8 hex digits of the sha256 of its settings.
pub fn short_id(settings: &serde_json::Value) -> String {
    let digest = Sha256::digest(settings.to_string().as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// `root/<date>-<ISO3>-<survey>-<id>`, with `-2`, `-3`, ... appended if that already exists.
pub fn default_dir(root: &Path, date: &str, iso3: &str, survey: &str, id: &str) -> PathBuf {
    let base = format!("{date}-{iso3}-{survey}-{id}");
    let mut path = root.join(&base);
    let mut k = 2;
    while path.exists() {
        path = root.join(format!("{base}-{k}"));
        k += 1;
    }
    path
}

/// Today's UTC date as YYYY-MM-DD (civil-from-days, no time-zone database needed).
pub fn today_utc() -> String {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Whether `dir` holds a run (config.json and checkpoint.json).
pub fn is_run(dir: &Path) -> bool {
    dir.join(CONFIG).is_file() && dir.join(CHECKPOINT).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn history_rows_render_empty_for_missing() {
        let r = HistoryRow {
            generation: 1,
            evaluations: 8,
            best: 1.5,
            median: 2.0,
            worst: 3.0,
            best_so_far: 1.5,
            dimensions: vec![Some(1.0), None, None, None, None, Some(-2.5)],
            cas: None,
            holdout: None,
            f: Some((0.5, 0.0)),
            cr: None,
            diversity: 0.25,
            successes: 2,
            tokens: 100,
        };
        let s = history_csv(std::slice::from_ref(&r), true);
        let line = s.lines().nth(1).unwrap();
        assert_eq!(line, "1,8,1.5,2,3,1.5,1,,,,,-2.5,,0.5,0,,,0.25,2,100");
        assert_eq!(parse_line(line).unwrap(), r);
        let awkward = HistoryRow { best: 49.800450998635036, dimensions: vec![Some(0.1 + 0.2); 6], ..r };
        assert_eq!(parse_line(&row_line(&awkward, true)).unwrap(), awkward);
    }
}
