//! Handing a sharded sweep to Slurm: an sbatch script for a job array (one array task per
//! shard, each writing its own shard directory), a merge job that depends on the array, and
//! their submission with `sbatch --parsable`. Slurm does the scheduling; deopt only writes and
//! submits the jobs.
//!
//! ```text
//! <sweep dir>/
//!   slurm/array.sbatch     the array: task i runs `deopt sweep ... --shard i/N --out shards/i`
//!   slurm/merge.sbatch     `deopt sweep merge shards/1 .. shards/N --out <sweep dir>`
//!   slurm/logs/            one log per array task and one for the merge
//!   shards/<i>/            shard i's sweep directory (runs resume from here after a requeue)
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context as _, Result};

/// What clusters need in the job headers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` (e.g. `02:00:00`).
    pub time: Option<String>,
    /// `--cpus-per-task`; also the threads each task gives llama.cpp.
    pub cpus: Option<usize>,
    /// `--mem` (e.g. `8G`).
    pub mem: Option<String>,
    /// `--gpus` (e.g. `1` or `h100:1`).
    pub gpus: Option<String>,
    /// At most this many array tasks at once (`--array=1-N%K`).
    pub array_limit: Option<usize>,
    /// More sbatch options, passed as they are (e.g. `--account=abc --qos=short`).
    pub extra: Vec<String>,
}

impl SlurmOptions {
    /// Check the values sbatch would otherwise refuse only at submission (or, for `extra`,
    /// would put into the script as they are).
    ///
    /// # Errors
    /// The first bad value, naming its flag.
    pub fn validate(&self) -> Result<()> {
        use crate::data::input_error::clip;
        if let Some(t) = &self.time {
            if !slurm_time_ok(t) {
                bail!("--slurm-time '{}': expected MINUTES, HH:MM:SS, D-HH or D-HH:MM:SS", clip(t));
            }
        }
        if let Some(m) = &self.mem {
            let digits = m.trim_end_matches(['K', 'M', 'G', 'T']);
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || m.len() - digits.len() > 1
            {
                bail!("--slurm-mem '{}': expected a size such as 8G or 16000M", clip(m));
            }
        }
        if self.array_limit == Some(0) {
            bail!("--slurm-array-limit 0: expected at least one task at a time");
        }
        if self.cpus == Some(0) {
            bail!("--slurm-cpus 0: expected at least one CPU");
        }
        for e in &self.extra {
            let safe = e.chars().all(|c| c.is_ascii_alphanumeric() || "-_=.,:/+@%".contains(c));
            if !e.starts_with('-') || !safe {
                bail!(
                    "--slurm-extra '{}': expected sbatch options such as --account=abc (no shell characters)",
                    clip(e)
                );
            }
        }
        Ok(())
    }
}

/// Slurm's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (all numbers).
fn slurm_time_ok(t: &str) -> bool {
    let num = |s: &str| !s.is_empty() && s.len() <= 6 && s.chars().all(|c| c.is_ascii_digit());
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, t),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    days.is_none_or(num) && parts.iter().all(|p| num(p)) && parts.len() <= 3
}

/// The scripts written for a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmJobs {
    /// The array script.
    pub array_script: PathBuf,
    /// The merge script.
    pub merge_script: PathBuf,
    /// Array tasks (= shards).
    pub tasks: usize,
}

/// Folder of the scripts inside a sweep directory.
pub const SLURM_DIR: &str = "slurm";
/// Folder of the shard directories inside a sweep directory.
pub const SHARDS_DIR: &str = "shards";

/// Quote `s` for a POSIX shell (single quotes, `'` written as `'\''`).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,%+@".contains(c)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shard this process is, from Slurm's array variables: task ids `TASK_MIN..` map to
/// shards `1..=TASK_COUNT`.
///
/// # Errors
/// Not inside a Slurm array job, or variables that are not numbers.
pub fn shard_from_env() -> Result<(usize, usize)> {
    let var = |name: &str| -> Result<Option<usize>> {
        match std::env::var(name) {
            Err(_) => Ok(None),
            Ok(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| anyhow!("shard auto: {name}={v} is not a whole number")),
        }
    };
    let id = var("SLURM_ARRAY_TASK_ID")?.ok_or_else(|| {
        anyhow!("shard auto: not inside a Slurm array job (SLURM_ARRAY_TASK_ID is not set); give --shard i/n")
    })?;
    let count = var("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
        anyhow!("shard auto: SLURM_ARRAY_TASK_COUNT is not set (Slurm 20.11 or newer sets it)")
    })?;
    let min = var("SLURM_ARRAY_TASK_MIN")?.unwrap_or(1);
    if id < min || id - min >= count || count == 0 {
        bail!("shard auto: array task {id} is outside {min}..{} (SLURM_ARRAY_TASK_MIN/COUNT)", min + count);
    }
    Ok((id - min + 1, count))
}

fn header(job: &str, log: &Path, opts: &SlurmOptions) -> String {
    let mut h = format!(
        "#!/bin/bash\n#SBATCH --job-name={job}\n#SBATCH --output={}\n",
        shell_quote(&log.display().to_string())
    );
    let mut line = |k: &str, v: &str| h.push_str(&format!("#SBATCH --{k}={}\n", shell_quote(v)));
    if let Some(p) = &opts.partition {
        line("partition", p);
    }
    if let Some(t) = &opts.time {
        line("time", t);
    }
    if let Some(c) = opts.cpus {
        line("cpus-per-task", &c.to_string());
    }
    if let Some(m) = &opts.mem {
        line("mem", m);
    }
    if let Some(g) = &opts.gpus {
        line("gpus", g);
    }
    for e in &opts.extra {
        h.push_str(&format!("#SBATCH {e}\n"));
    }
    h
}

/// Write `dir/slurm/array.sbatch` and `dir/slurm/merge.sbatch` for `tasks` shards. `exe` is
/// the deopt binary the jobs run; `sweep_args` the sweep's flags without `--out` and
/// `--shard` (each task adds its own).
///
/// # Errors
/// I/O failure, or no tasks.
pub fn write_jobs(
    dir: &Path,
    tasks: usize,
    exe: &Path,
    sweep_args: &[String],
    opts: &SlurmOptions,
) -> Result<SlurmJobs> {
    if tasks == 0 {
        bail!("slurm: a sweep with no runs has nothing to submit");
    }
    let dir = std::path::absolute(dir).with_context(|| format!("{}: cannot resolve", dir.display()))?;
    let sdir = dir.join(SLURM_DIR);
    let logs = sdir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("{}: cannot create directory", logs.display()))?;
    let exe = shell_quote(&exe.display().to_string());
    let args: Vec<String> = sweep_args.iter().map(|a| shell_quote(a)).collect();
    let shards = dir.join(SHARDS_DIR);
    let q = |p: &Path| shell_quote(&p.display().to_string());

    let mut array = header("deopt-sweep", &logs.join("shard-%a.log"), opts);
    let limit = opts.array_limit.map(|k| format!("%{k}")).unwrap_or_default();
    array.push_str(&format!("#SBATCH --array=1-{tasks}{limit}\n#SBATCH --requeue\n"));
    array.push_str(
        "# One shard per array task. A requeued or resubmitted task resumes its runs from their\n\
         # checkpoints in its own shard directory; no two tasks share a run directory.\n",
    );
    array.push_str("set -euo pipefail\n");
    array.push_str(&format!(
        "exec {exe} sweep {} --shard \"${{SLURM_ARRAY_TASK_ID}}/{tasks}\" --out {}/\"${{SLURM_ARRAY_TASK_ID}}\"\n",
        args.join(" "),
        q(&shards)
    ));

    let mut merge = header(
        "deopt-sweep-merge",
        &logs.join("merge.log"),
        &SlurmOptions { cpus: Some(1), gpus: None, ..opts.clone() },
    );
    merge.push_str("set -euo pipefail\n");
    let parts: Vec<String> = (1..=tasks).map(|i| q(&shards.join(i.to_string()))).collect();
    merge.push_str(&format!("exec {exe} sweep merge {} --out {}\n", parts.join(" "), q(&dir)));

    let jobs =
        SlurmJobs { array_script: sdir.join("array.sbatch"), merge_script: sdir.join("merge.sbatch"), tasks };
    crate::fsutil::write_atomic(&jobs.array_script, array.as_bytes())?;
    crate::fsutil::write_atomic(&jobs.merge_script, merge.as_bytes())?;
    Ok(jobs)
}

/// Whether `sbatch` is on PATH (checked before any work when jobs are to be submitted).
pub fn sbatch_on_path() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join("sbatch").is_file()))
}

/// Submit the array, then the merge with `--dependency=afterok:<array id>`; returns both job
/// ids.
///
/// # Errors
/// No `sbatch` on PATH, or sbatch refusing a job (its message).
pub fn submit(jobs: &SlurmJobs) -> Result<(String, String)> {
    let array = sbatch(&[], &jobs.array_script)?;
    let merge = sbatch(&[format!("--dependency=afterok:{array}")], &jobs.merge_script)?;
    Ok((array, merge))
}

fn sbatch(args: &[String], script: &Path) -> Result<String> {
    let out = Command::new("sbatch").arg("--parsable").args(args).arg(script).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!(
                "sbatch: not found on PATH (submit from a Slurm login node, or run {} there)",
                script.display()
            )
        } else {
            anyhow!("sbatch: cannot run it ({e})")
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("sbatch {}: {}", script.display(), err.trim().lines().last().unwrap_or("failed"));
    }
    // --parsable prints "<id>" or "<id>;<cluster>".
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch {}: unexpected answer '{}'", script.display(), text.trim());
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_before_sbatch_sees_them() {
        let ok = SlurmOptions {
            time: Some("1-02:00:00".into()),
            mem: Some("8G".into()),
            extra: vec!["--account=abc".into(), "--qos=short".into()],
            ..SlurmOptions::default()
        };
        ok.validate().unwrap();
        for t in ["30", "30:00", "02:00:00", "2-12", "2-12:30"] {
            assert!(slurm_time_ok(t), "{t}");
        }
        let bad = |o: SlurmOptions, needle: &str| {
            let e = o.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        };
        bad(SlurmOptions { time: Some("foo".into()), ..ok.clone() }, "--slurm-time 'foo'");
        bad(SlurmOptions { time: Some("1:2:3:4".into()), ..ok.clone() }, "--slurm-time");
        bad(SlurmOptions { mem: Some("8GB".into()), ..ok.clone() }, "--slurm-mem '8GB'");
        bad(SlurmOptions { array_limit: Some(0), ..ok.clone() }, "--slurm-array-limit 0");
        bad(SlurmOptions { extra: vec!["$(id)".into()], ..ok.clone() }, "--slurm-extra '$(id)'");
        bad(SlurmOptions { extra: vec!["--x=`id`".into()], ..ok }, "no shell characters");
    }

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(shell_quote("0.3,0.5"), "0.3,0.5");
        assert_eq!(shell_quote("Saudi Arabia"), "'Saudi Arabia'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn scripts_name_every_shard_and_the_options() {
        let dir = std::env::temp_dir().join(format!("deopt-slurm-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = SlurmOptions {
            partition: Some("gpu".into()),
            cpus: Some(4),
            array_limit: Some(2),
            extra: vec!["--account=abc".into()],
            ..SlurmOptions::default()
        };
        let args = vec!["--country".to_string(), "SAU".to_string()];
        let jobs = write_jobs(&dir, 3, Path::new("/opt/deopt"), &args, &opts).unwrap();
        let a = std::fs::read_to_string(&jobs.array_script).unwrap();
        assert!(a.contains("#SBATCH --array=1-3%2\n"), "{a}");
        assert!(a.contains("#SBATCH --partition=gpu\n") && a.contains("#SBATCH --cpus-per-task=4\n"), "{a}");
        assert!(a.contains("#SBATCH --account=abc\n") && a.contains("#SBATCH --requeue\n"), "{a}");
        assert!(a.contains("--shard \"${SLURM_ARRAY_TASK_ID}/3\""), "{a}");
        let m = std::fs::read_to_string(&jobs.merge_script).unwrap();
        assert!(m.contains("sweep merge") && m.contains("shards/1") && m.contains("shards/3"), "{m}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
