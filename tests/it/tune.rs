//! `deopt tune` end to end on the default model: it lowers the engine's fitness, `deopt eval`
//! scores its prompt as it reports, a run killed with SIGKILL during a checkpoint write
//! resumes to the same result as an uninterrupted one, the synthetic objective runs, and bad
//! input is one line.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use deopt::prompt::softprompt::SoftPrompt;

use crate::common::{deopt, deopt_cmd, deopt_json, fails_with, serial, tmpdir};

const TUNE: [&str; 9] = ["tune", "--country", "SAU", "--steps", "3", "--tokens", "4", "--seed", "3"];

fn rows(dir: &Path, file: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
    text.lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect()
}

#[test]
fn tune_lowers_the_fitness_and_a_killed_run_resumes_identically() {
    let _serial = serial();
    let base = tmpdir("tune");
    let (straight, killed) = (base.join("straight"), base.join("killed"));
    let spawn = |d: &Path, stall: Option<&str>| {
        let mut c = deopt_cmd();
        c.args(TUNE).args(["--no-report", "--threads", "1", "--out", d.to_str().unwrap()]);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        if let Some(s) = stall {
            c.env("DEOPT_TEST_STALL_CHECKPOINT", s);
        }
        c.spawn().expect("spawn deopt tune")
    };
    let mut uninterrupted = spawn(&straight, None);
    let mut child = spawn(&killed, Some("2"));
    let t0 = Instant::now();
    let tmp = killed.join(format!(".checkpoint.json.tmp-{}", child.id()));
    while !(rows(&killed, "history.csv").len() == 2 && tmp.metadata().is_ok_and(|m| m.len() > 0)) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(t0.elapsed() < Duration::from_secs(600), "no checkpoint write of step 2 after 10 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let o = deopt(&["tune", "--resume", killed.to_str().unwrap(), "--no-report"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("resuming at step 1"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(uninterrupted.wait().unwrap().success(), "the uninterrupted run failed");

    // Identical: history, per-step figures, best prompt (values and metadata; the file's
    // metadata order is not fixed), optimizer state.
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    for f in ["history.csv", "tune.csv"] {
        assert!(read(&killed, f) == read(&straight, f), "{f} differs after the resume");
    }
    let best = |d: &Path| SoftPrompt::load(&d.join("best_prompt.safetensors")).unwrap();
    let ((a, ma), (b, mb)) = (best(&killed), best(&straight));
    assert!(a.data() == b.data() && ma == mb, "best_prompt.safetensors differs after the resume");
    let state = |d: &Path| {
        let c: serde_json::Value = serde_json::from_slice(&read(d, "checkpoint.json")).unwrap();
        c["optimizer"].clone()
    };
    assert!(state(&killed) == state(&straight), "the Adam state differs after the resume");

    // The fitness went down, and every step was scored by the engine.
    let h = rows(&straight, "history.csv");
    assert_eq!(h.len(), 4, "steps 0..=3");
    let best: Vec<f64> = h.iter().map(|r| r[5].parse().unwrap()).collect();
    assert!(best[3] < best[0], "three Adam steps did not lower the fitness: {best:?}");
    let t = rows(&straight, "tune.csv");
    assert!(t[1..].iter().all(|r| !r[1].is_empty() && !r[3].is_empty() && !r[4].is_empty()), "{t:?}");

    // deopt eval scores the best prompt as tune reported it.
    let prompt = straight.join("best_prompt.safetensors");
    let e = deopt_json(&["eval", "--country", "SAU", "--prompt", prompt.to_str().unwrap(), "--json"]);
    let loss = e["fitness"].as_f64().or_else(|| e["loss"].as_f64()).expect("fitness in eval's JSON");
    assert!((loss - best[3]).abs() <= 0.01 * best[3].abs(), "eval {loss} vs tune {}", best[3]);

    // The synthetic objective, on minibatches of items.
    let syn = base.join("synthetic");
    let o = deopt(&[
        "tune",
        "--country",
        "SAU",
        "--objective",
        "synthetic",
        "--steps",
        "1",
        "--tokens",
        "2",
        "--batch-items",
        "6",
        "--no-report",
        "--out",
        syn.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = rows(&syn, "tune.csv");
    let ce: f64 = t[1][1].parse().unwrap();
    assert!(ce.is_finite() && ce > 0.0, "cross-entropy {ce}");
    let _ = std::fs::remove_dir_all(base);
}

/// A GGUF of another architecture (metadata only) for the refusal test.
fn gguf_of_architecture(path: &Path, arch: &str) {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes()); // tensors
    b.extend_from_slice(&1u64.to_le_bytes()); // metadata pairs
    let key = b"general.architecture";
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(&8u32.to_le_bytes()); // string
    b.extend_from_slice(&(arch.len() as u64).to_le_bytes());
    b.extend_from_slice(arch.as_bytes());
    std::fs::write(path, b).unwrap();
}

#[test]
fn tune_bad_input_is_one_line() {
    let d = tmpdir("tune-bad");
    let other = d.join("gpt2.gguf");
    gguf_of_architecture(&other, "gpt2");
    let line = fails_with(&["tune", "--country", "SAU", "--model", other.to_str().unwrap()], "gpt2");
    assert!(line.contains("gemma3, llama"), "{line}");
    fails_with(&["tune", "--country", "SAU", "--objective", "selfgen"], "--data");
    fails_with(
        &["tune", "--country", "SAU", "--objective", "selfgen", "--data", d.to_str().unwrap()],
        "selfgen",
    );
    fails_with(&["tune", "--country", "SAU", "--lr", "0"], "--lr 0");
    fails_with(&["tune", "--country", "SAU", "--lr", "-1"], "--lr -1");
    fails_with(&["tune", "--country", "SAU", "--steps", "0"], "--steps 0");
    fails_with(&["tune", "--country", "SAU", "--chunk", "0"], "--chunk 0");
    fails_with(&["tune", "--country", "SAU", "--answers", "argmax"], "--answers");
    let _ = std::fs::remove_dir_all(d);
}
