//! `deopt run` end to end with the real default model (Gemma 3 270M, F16), kept tiny:
//! population 4, T = 2 rows, at most 2 generations.
//!
//! The interruption of the resume test is simulated by stopping early with `--gens 1` (a
//! stop condition, which may change on resume) and continuing with `--resume DIR --gens 2`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn deopt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deopt")).args(args).output().expect("running deopt")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("deopt-test-run-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// With one VSM13 dimension held out (its 4 items), so the held-out column is exercised too.
const SMALL: [&str; 10] =
    ["--country", "SAU", "--pop", "4", "--tokens", "2", "--seed", "7", "--holdout", "0.2"];

fn run_small(out_flag: &str, dir: &Path, gens: &str) -> Output {
    let mut a: Vec<&str> = SMALL.to_vec();
    a.extend([out_flag, dir.to_str().unwrap(), "--gens", gens]);
    let o = deopt(&["run"].iter().copied().chain(a).collect::<Vec<_>>());
    assert!(o.status.success(), "deopt run failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn history(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("history.csv")).expect("history.csv")
}

/// One line on stderr, non-zero exit, no panic.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure, got success; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line on stderr, got: {err}");
    assert!(err.contains(needle), "stderr should mention '{needle}': {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn same_seed_same_history_and_resume_matches_uninterrupted() {
    // Straight: generations 0..=2.
    let straight = tmp("straight");
    run_small("--out", &straight, "2");
    // Interrupted after generation 1, then resumed to 2.
    let resumed = tmp("resumed");
    run_small("--out", &resumed, "1");
    let first_part = history(&resumed);
    let o = run_small("--resume", &resumed, "2");
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming"));
    // Same seed, separate directory, stopped after generation 1 like the first part.
    let again = tmp("again");
    run_small("--out", &again, "1");

    let h = history(&straight);
    assert_eq!(h.lines().count(), 4, "header + generations 0, 1, 2:\n{h}");
    assert_eq!(history(&again), first_part, "same seed must give the same history.csv");
    assert_eq!(history(&resumed), h, "resumed run must match the uninterrupted one");
    assert!(h.starts_with(&first_part));
    // One dimension held out: its column is empty, the held-out loss is filled in.
    let header: Vec<&str> = h.lines().next().unwrap().split(',').collect();
    let holdout_col = header.iter().position(|c| *c == "holdout").unwrap();
    for line in h.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[6..12].iter().filter(|c| c.is_empty()).count(), 1, "{line}");
        assert!(cells[holdout_col].parse::<f64>().unwrap() > 0.0, "{line}");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["holdout_items"].as_array().unwrap().len(), 4);
    assert_eq!(cfg["train_items"].as_array().unwrap().len(), 20);
    for d in [&straight, &resumed, &again] {
        for f in ["config.json", "checkpoint.json", "best_prompt.safetensors", "timing.csv"] {
            assert!(d.join(f).is_file(), "{} lacks {f}", d.display());
        }
    }
    let (p, meta) = deopt::prompt::softprompt::SoftPrompt::load(&straight.join("best_prompt.safetensors")).unwrap();
    assert_eq!(p.rows(), 2);
    assert_eq!(meta.get("country").map(String::as_str), Some("SAU"));
    // The best prompt's fitness is the last best-so-far.
    let last = h.lines().last().unwrap().split(',').nth(5).unwrap().to_string();
    assert_eq!(meta.get("fitness").unwrap(), &last);

    // Resume with a changed setting: one line naming it.
    let o = deopt(&[
        "run",
        "--country",
        "SAU",
        "--pop",
        "6",
        "--tokens",
        "2",
        "--seed",
        "7",
        "--holdout",
        "0.2",
        "--resume",
        resumed.to_str().unwrap(),
        "--gens",
        "3",
    ]);
    assert_one_line_error(&o, "'pop'");

    // Resume of a run made with another model: edit its sha256.
    let cfg_path = resumed.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    cfg["model"]["sha256"] = serde_json::Value::String("0".repeat(64));
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let mut a: Vec<&str> = vec!["run"];
    a.extend(SMALL);
    a.extend(["--resume", resumed.to_str().unwrap(), "--gens", "3"]);
    assert_one_line_error(&deopt(&a), "sha256");

    for d in [straight, resumed, again] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn bad_input_is_one_line() {
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
    let not_run = tmp("notrun");
    std::fs::create_dir_all(&not_run).unwrap();
    assert_one_line_error(&with(&["--resume", not_run.to_str().unwrap()]), "not a deopt run directory");
    let _ = std::fs::remove_dir_all(not_run);
}
