//! `deopt run` end to end with the real default model (Gemma 3 270M, F16): a run killed with
//! SIGKILL in the middle of a checkpoint write and resumed from its directory alone ends
//! exactly like an uninterrupted one; a finished run whose latest checkpoint is damaged is
//! extended from the one before; settings cannot change on resume; bad input is one line.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{assert_one_line_error, deopt, deopt_cmd, fails_with, serial, tmpdir};

/// The run of the resume test (the command), in the batched schedule with groups of 3,
/// 3 and 2 prompts, so the resume replays uneven groups.
const RUN: [&str; 13] = [
    "run",
    "--country",
    "USA",
    "--pop",
    "8",
    "--gens",
    "4",
    "--tokens",
    "2",
    "--seed",
    "5",
    "--batch-prompts",
    "3",
];

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "deopt failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn history(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("history.csv")).expect("history.csv")
}

/// Data rows of history.csv so far (0 while it does not exist yet).
fn generations_done(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("history.csv")).map_or(0, |h| h.lines().count().saturating_sub(1))
}

#[test]
fn sigkilled_run_resumes_from_its_directory_alone_identically() {
    let _serial = serial(); // uses both cores
    let base = tmpdir("run-kill");
    let (straight, killed) = (base.join("straight"), base.join("killed"));
    let with_out = |d: &Path| {
        let mut a = RUN.to_vec();
        a.extend(["--no-report", "--threads", "1", "--out", d.to_str().unwrap()]);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };

    // The uninterrupted run and the one to be killed side by side, one core each (both record
    // --threads 1, which the resume keeps).
    let spawn = |d: &Path, stall: Option<&str>| {
        let mut c = deopt_cmd();
        c.args(with_out(d)).stdout(Stdio::null()).stderr(Stdio::null());
        if let Some(g) = stall {
            // The test hook: the checkpoint write of generation 2 stops halfway and waits.
            c.env("DEOPT_TEST_STALL_CHECKPOINT", g);
        }
        c.spawn().expect("spawn deopt run")
    };
    let mut uninterrupted = spawn(&straight, None);
    let mut child = spawn(&killed, Some("2"));
    // Killed with SIGKILL in the middle of writing generation 2's checkpoint (half of it is in
    // the temporary file; no chance to clean up).
    let t0 = Instant::now();
    let tmp = killed.join(format!(".checkpoint.json.tmp-{}", child.id()));
    while !(generations_done(&killed) == 2 && tmp.metadata().is_ok_and(|m| m.len() > 0)) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "no checkpoint write of generation 2 after 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert_eq!(generations_done(&killed), 2, "killed during generation 2's checkpoint write");

    // Resumed with nothing but the directory, from the last good checkpoint (generation 1).
    let o = ok(deopt(&["run", "--resume", killed.to_str().unwrap(), "--no-report"]));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("resuming at generation 1"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(uninterrupted.wait().unwrap().success(), "the uninterrupted run failed");
    let h = history(&straight);
    assert_eq!(h.lines().count(), 6, "header + generations 0..=4:\n{h}");
    assert_eq!(history(&killed), h, "the resumed run's history.csv must equal the uninterrupted one's");
    for f in ["config.json", "checkpoint.json", "best_prompt.safetensors", "timing.csv"] {
        assert!(killed.join(f).is_file(), "{} lacks {f}", killed.display());
    }

    // A finished run is extended by a new stop condition, and the new one is recorded; its
    // latest checkpoint, damaged meanwhile, is replaced by the one before it (generation 3)
    // with a warning, and the history still comes out identical.
    let latest = killed.join("checkpoint.json");
    let text = std::fs::read(&latest).unwrap();
    std::fs::write(&latest, &text[..text.len() - 100]).unwrap();
    let o = ok(deopt(&["run", "--resume", killed.to_str().unwrap(), "--gens", "6", "--no-report"]));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("deopt: warning:") && err.contains("using") && err.contains("checkpoint.prev.json"),
        "{err}"
    );
    assert!(err.contains("resuming at generation 3"), "{err}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("6 generations"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let longer = history(&killed);
    assert_eq!(longer.lines().count(), 8);
    assert!(longer.starts_with(&h));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(killed.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["spec"]["stop"]["gens"], 6);

    // Nothing but stop conditions may come with --resume.
    let k = killed.to_str().unwrap();
    let line = fails_with(&["run", "--resume", k, "--pop", "16"], "--pop");
    assert!(line.contains("pop 8") && line.contains("--gens"), "{line}");
    fails_with(&["run", "--resume", k, "--country", "USA"], "--country");
    assert_eq!(history(&killed), longer, "a refused resume must not touch the run");

    // A run made with another model: edit its sha256.
    let cfg_path = killed.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["model"]["sha256"] = serde_json::Value::String("0".repeat(64));
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    fails_with(&["run", "--resume", k, "--gens", "7"], "sha256");

    let _ = std::fs::remove_dir_all(base);
}

#[test]
fn bad_input_is_one_line() {
    let _serial = serial(); // uses both cores
    let base = ["run", "--country", "SAU", "--gens", "1"];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        deopt(&a)
    };
    assert_one_line_error(&with(&["--strategy", "rand3bin"]), "unknown strategy 'rand3bin'");
    assert_one_line_error(&with(&["--pop", "3"]), "population of 3 is too small for rand1bin");
    assert_one_line_error(&with(&["--mutation", "-0.5"]), "F = -0.5");
    assert_one_line_error(&with(&["--recombination", "1.5"]), "CR = 1.5");
    assert_one_line_error(&with(&["--holdout", "1"]), "--holdout 1");
    assert_one_line_error(&with(&["--tokens", "0"]), "--tokens 0");
    assert_one_line_error(&with(&["--time-limit", "0"]), "--time-limit 0");
    fails_with(&["run", "--gens", "1"], "--country is required");
    let not_run = tmpdir("notrun");
    fails_with(
        &["run", "--resume", not_run.to_str().unwrap()],
        "no config.json: expected a deopt run directory",
    );
    let _ = std::fs::remove_dir_all(not_run);
}
