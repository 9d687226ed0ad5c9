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
//!   checkpoint.json          optimizer state + history rows + counters, sealed with its
//!                            sha256 and the digest of the spec it belongs to, written atomically
//!   checkpoint.prev.json     the checkpoint before it (a damaged latest one falls back to it)
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
/// The checkpoint before the latest, kept so that a damaged latest one has a fallback.
pub const PREV_CHECKPOINT: &str = "checkpoint.prev.json";

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
    /// The DE optimizer's settings derived from the spec (absent for prompt tuning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<crate::optim::Config>,
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

    /// [`RunConfig::load`], then the recorded spec checked as the file's content (errors name
    /// config.json and the spec field, not a flag nobody gave).
    ///
    /// # Errors
    /// As `load`, or a spec value out of range.
    pub fn load_checked(dir: &Path) -> Result<RunConfig> {
        let config = RunConfig::load(dir)?;
        let path = dir.join(CONFIG);
        config.spec.validate().map_err(|e| match e.downcast_ref::<crate::run::spec::SpecError>() {
            Some(se) => {
                anyhow::anyhow!("{}: spec field {}: {}: {}", path.display(), se.field, se.value, se.expected)
            }
            None => e.context(path.display().to_string()),
        })?;
        Ok(config)
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
pub const CHECKPOINT_FORMAT: &str = "deopt-run-checkpoint-2";

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
    /// [`spec_digest`] of the run spec this checkpoint belongs to.
    pub spec_sha256: String,
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

/// The file form of a checkpoint: its body and the sha256 of the body's exact bytes, so a
/// damaged or edited file is detected before anything in it is believed.
#[derive(Deserialize)]
struct Sealed<'a> {
    sha256: String,
    #[serde(borrow)]
    checkpoint: &'a serde_json::value::RawValue,
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::provision::model_store::hex(&Sha256::digest(bytes))
}

/// Seal a checkpoint body (its JSON bytes) as a checkpoint file.
pub fn seal(body: &[u8]) -> Result<Vec<u8>> {
    let body = std::str::from_utf8(body).context("a checkpoint body must be UTF-8 JSON")?;
    Ok(format!("{{\"sha256\":\"{}\",\"checkpoint\":{body}}}", sha256_hex(body.as_bytes())).into_bytes())
}

/// The digest that ties a checkpoint to its run: sha256 of the spec without its stop
/// conditions (those may change on resume).
pub fn spec_digest(spec: &RunSpec) -> String {
    let mut v = serde_json::to_value(spec).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("stop");
        // Runs recorded before `batch_prompts` existed scored exactly (1): leaving the exact
        // value out keeps their digests, so they still resume.
        if let Some(m) = o.get_mut("model").and_then(|m| m.as_object_mut()) {
            if m.get("batch_prompts") == Some(&serde_json::json!(1)) {
                m.remove("batch_prompts");
            }
        }
    }
    sha256_hex(v.to_string().as_bytes())
}

/// A checkpoint read from a run directory, and whether it is the fallback.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// Set when the latest checkpoint was damaged and the previous one was read instead: why.
    pub fallback: Option<String>,
}

/// Test hook: `DEOPT_TEST_STALL_CHECKPOINT=<generation>` makes the checkpoint write of that
/// generation stop halfway through its temporary file and wait, so a test can SIGKILL the
/// process in the middle of the write.
const STALL_HOOK: &str = "DEOPT_TEST_STALL_CHECKPOINT";

impl Checkpoint {
    /// Write atomically to `dir/checkpoint.json`, sealed; the checkpoint it replaces becomes
    /// `checkpoint.prev.json`. A crash at any point leaves at least one intact checkpoint.
    ///
    /// # Errors
    /// Serialisation or I/O failure.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let body = serde_json::to_vec(self).context("serialising the checkpoint")?;
        let bytes = seal(&body)?;
        let path = dir.join(CHECKPOINT);
        let tmp = dir.join(format!(".{CHECKPOINT}.tmp-{}", std::process::id()));
        let generation = self.history.last().map(|r| r.generation.to_string());
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            if std::env::var(STALL_HOOK).ok().is_some_and(|g| Some(g) == generation) {
                f.write_all(&bytes[..bytes.len() / 2])?;
                f.sync_all()?;
                eprintln!("deopt: test hook: stalled in the middle of a checkpoint write");
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
            f.write_all(&bytes)?;
            f.sync_all()?;
            if path.exists() {
                std::fs::rename(&path, dir.join(PREV_CHECKPOINT))?;
            }
            std::fs::rename(&tmp, &path)
        };
        write().with_context(|| format!("{}: cannot write", path.display())).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// Read and check one checkpoint file: its seal, its format, its rows.
    fn read(path: &Path) -> Result<Checkpoint> {
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read the checkpoint", path.display()))?;
        let sealed: Sealed<'_> = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a deopt run checkpoint ({e})", path.display()))?;
        let body = sealed.checkpoint.get();
        let actual = sha256_hex(body.as_bytes());
        if actual != sealed.sha256 {
            bail!(
                "{}: damaged checkpoint: sha256 {actual}: expected the recorded {}",
                path.display(),
                crate::data::input_error::clip(&sealed.sha256)
            );
        }
        let c: Checkpoint = serde_json::from_str(body)
            .map_err(|e| anyhow::anyhow!("{}: not a deopt run checkpoint ({e})", path.display()))?;
        if c.format != CHECKPOINT_FORMAT {
            bail!(
                "{}: checkpoint format '{}': expected '{CHECKPOINT_FORMAT}'",
                path.display(),
                crate::data::input_error::clip(&c.format)
            );
        }
        Ok(c)
    }

    /// Load the latest good checkpoint of `dir`: checkpoint.json, or checkpoint.prev.json when
    /// the latest is missing or damaged (the returned note says why).
    ///
    /// # Errors
    /// No readable checkpoint: the latest one's error.
    pub fn load_latest(dir: &Path) -> Result<LoadedCheckpoint> {
        let latest = Checkpoint::read(&dir.join(CHECKPOINT));
        match latest {
            Ok(checkpoint) => Ok(LoadedCheckpoint { checkpoint, fallback: None }),
            Err(e) => {
                let prev = dir.join(PREV_CHECKPOINT);
                match Checkpoint::read(&prev) {
                    Ok(checkpoint) => Ok(LoadedCheckpoint {
                        fallback: Some(format!("{e:#}; using {} instead", prev.display())),
                        checkpoint,
                    }),
                    Err(_) => Err(e),
                }
            }
        }
    }

    /// Load the latest good checkpoint of `dir` (see [`Checkpoint::load_latest`]).
    ///
    /// # Errors
    /// No readable checkpoint.
    pub fn load(dir: &Path) -> Result<Checkpoint> {
        Checkpoint::load_latest(dir).map(|l| l.checkpoint)
    }

    /// Check the checkpoint against itself and the run it claims to belong to: the spec
    /// digest, the history (consecutive generations, finite and consistent figures), the
    /// counters. The method's state is checked by the method when it restores it.
    ///
    /// # Errors
    /// The first inconsistency, naming the field.
    pub fn validate(&self, config: &RunConfig, path: &Path) -> Result<()> {
        let p = path.display();
        let want = spec_digest(&config.spec);
        if self.spec_sha256 != want {
            bail!(
                "{p}: spec_sha256 {}: expected {want}, the digest of the spec in {CONFIG} ({CONFIG} was edited, or the checkpoint belongs to another run)",
                crate::data::input_error::clip(&self.spec_sha256)
            );
        }
        if self.history.is_empty() {
            bail!("{p}: history: empty: expected at least generation 0");
        }
        let mut best = f64::INFINITY;
        let mut evaluations = 0;
        for (i, r) in self.history.iter().enumerate() {
            let field = |name: &str, v: &dyn std::fmt::Display, want: &str| {
                anyhow::anyhow!("{p}: history row {i} {name}: {v}: expected {want}")
            };
            if r.generation != i as u64 {
                return Err(field(
                    "generation",
                    &r.generation,
                    &format!("{i} (rows are consecutive generations)"),
                ));
            }
            if r.evaluations < evaluations {
                return Err(field(
                    "evaluations",
                    &r.evaluations,
                    &format!("at least {evaluations}, the row before"),
                ));
            }
            evaluations = r.evaluations;
            for (name, v) in
                [("best", r.best), ("median", r.median), ("worst", r.worst), ("best_so_far", r.best_so_far)]
            {
                if !v.is_finite() {
                    return Err(field(name, &v, "a finite number"));
                }
            }
            if !(r.best <= r.median && r.median <= r.worst) {
                return Err(field(
                    "best/median/worst",
                    &format!("{}/{}/{}", r.best, r.median, r.worst),
                    "best <= median <= worst",
                ));
            }
            best = best.min(r.best);
            if r.best_so_far.to_bits() != best.to_bits() {
                return Err(field(
                    "best_so_far",
                    &r.best_so_far,
                    &format!("{best}, the lowest best up to this row"),
                ));
            }
            let finite = r.dimensions.iter().flatten().chain(&r.cas).chain(&r.holdout).all(|v| v.is_finite());
            if !finite {
                return Err(field("dimensions/cas/holdout", &"non-finite", "finite numbers"));
            }
        }
        // The generation whose best-so-far last went down (0: the initial population).
        let improved = self
            .history
            .windows(2)
            .rposition(|w| w[1].best_so_far < w[0].best_so_far)
            .map_or(0, |i| i as u64 + 1);
        if self.last_improvement != improved {
            bail!(
                "{p}: last_improvement: {}: expected {improved}, the last generation that improved",
                self.last_improvement
            );
        }
        if self.best_generation != improved {
            bail!(
                "{p}: best_generation: {}: expected {improved}, the last generation that improved",
                self.best_generation
            );
        }
        if !(self.elapsed_s.is_finite() && self.elapsed_s >= 0.0) {
            bail!("{p}: elapsed_s: {}: expected a finite number of seconds >= 0", self.elapsed_s);
        }
        Ok(())
    }

    /// Check history.csv against the checkpoint: the rows they share must be identical, and
    /// history.csv may be one row behind or ahead (a crash between the two writes, or a
    /// fallback to the previous checkpoint), no more.
    ///
    /// # Errors
    /// A differing row or a gap, naming history.csv and the row.
    pub fn check_history_file(&self, dir: &Path) -> Result<()> {
        let path = dir.join(HISTORY);
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
        let rows: Vec<&str> = text.lines().skip(1).collect();
        let ours: Vec<String> = self.history.iter().map(|r| row_line(r, !r.dimensions.is_empty())).collect();
        if let Some(i) = rows.iter().zip(&ours).position(|(a, b)| *a != b) {
            bail!(
                "{}: row {} (generation {i}): {}: expected the checkpoint's row {}",
                path.display(),
                i + 2,
                crate::data::input_error::clip(rows[i]),
                ours[i]
            );
        }
        if rows.len().abs_diff(ours.len()) > 1 {
            bail!(
                "{}: {} generations: expected {} as in the checkpoint (or one more or fewer)",
                path.display(),
                rows.len(),
                ours.len()
            );
        }
        Ok(())
    }
}

/// Drop timing.csv rows after `generation` (a resumed run repeats them).
///
/// # Errors
/// I/O failure.
pub fn trim_timing(dir: &Path, generation: u64) -> Result<()> {
    let path = dir.join(TIMING);
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let keep: String = text
        .lines()
        .enumerate()
        .filter(|(i, l)| {
            *i == 0
                || l.split(',').next().and_then(|g| g.parse::<u64>().ok()).is_some_and(|g| g <= generation)
        })
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    if keep != text {
        crate::fsutil::write_atomic(&path, keep.as_bytes())?;
    }
    Ok(())
}

/// Short id of a run: the first 8 hex digits of the sha256 of its settings.
pub fn short_id(settings: &serde_json::Value) -> String {
    sha256_hex(settings.to_string().as_bytes())[..8].to_string()
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

/// Why `dir` is not a run, as a message: what is missing.
pub fn not_a_run(dir: &Path) -> String {
    let shown = dir.display();
    if !dir.is_dir() {
        format!("{shown}: no such directory: expected a deopt run directory")
    } else if !dir.join(CONFIG).is_file() {
        format!("{shown}: no {CONFIG}: expected a deopt run directory")
    } else {
        format!(
            "{shown}: no {CHECKPOINT}: expected a run with at least one generation (this one stopped before its first; start it again with the same flags and --out)"
        )
    }
}

/// Whether `dir` holds a run (config.json and a checkpoint, latest or previous).
pub fn is_run(dir: &Path) -> bool {
    dir.join(CONFIG).is_file() && (dir.join(CHECKPOINT).is_file() || dir.join(PREV_CHECKPOINT).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config.json written before `batch_prompts` existed: it resumes with the exact
    /// schedule, and its spec digest is the one its checkpoint recorded then.
    #[test]
    fn configs_from_before_batch_prompts_keep_their_digest() {
        let text = include_str!("../../tests/fixtures/run_config.json");
        let config: RunConfig = serde_json::from_str(text).unwrap();
        assert_eq!(config.spec.model.batch_prompts, 1);
        let mut raw: serde_json::Value = serde_json::from_str(text).unwrap();
        let spec = raw["spec"].as_object_mut().unwrap();
        spec.remove("stop");
        assert!(spec["model"].get("batch_prompts").is_none());
        let recorded = sha256_hex(serde_json::Value::Object(spec.clone()).to_string().as_bytes());
        assert_eq!(spec_digest(&config.spec), recorded);
        // A batched run's digest differs from the exact one's.
        let mut batched = config.spec.clone();
        batched.model.batch_prompts = 8;
        assert_ne!(spec_digest(&batched), recorded);
    }

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
