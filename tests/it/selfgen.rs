//! `deopt selfgen` on the default model: deterministic, resumable after SIGKILL, selection keeps
//! exactly the shifted pairs, the survey file reads back; training on the data with DE and with
//! gradients lowers its loss and reports real-survey scores; bad input is one line.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use deopt::data::survey::Survey;
use deopt::selfgen::{AnswerRecord, GenRecord, Question, Summary};

use crate::common::{deopt, deopt_cmd, fails_with, serial, tmpdir};

const FILES: [&str; 6] =
    ["generations.jsonl", "questions.jsonl", "survey.csv", "answers.jsonl", "summary.json", "report.md"];

fn args(out: &Path) -> Vec<String> {
    [
        "selfgen",
        "--countries",
        "USA,CHN",
        "--per-topic",
        "2",
        "--per-round",
        "1",
        "--seed",
        "1",
        "--max-tokens",
        "96",
        "--min-shift",
        "0.02",
        "--threads",
        "2",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string()])
    .collect()
}

fn jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// One selfgen directory, made once (an uninterrupted run), shared by the tests below.
fn data() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tmpdir("selfgen").join("straight");
        let a = args(&d);
        let o = deopt(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        d
    })
}

#[test]
fn selfgen_is_deterministic_resumes_after_sigkill_and_keeps_exactly_the_shifted_pairs() {
    let _serial = serial();
    let straight = data().clone();
    // Killed after its first round is written, then resumed: the same files.
    let killed = tmpdir("selfgen").join("killed");
    let a = args(&killed);
    let mut child = deopt_cmd()
        .args(&a)
        .env("DEOPT_TEST_STALL_SELFGEN", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let gens = killed.join("generations.jsonl");
    while !gens.is_file() {
        assert!(child.try_wait().unwrap().is_none(), "selfgen ended before it could be killed");
        assert!(t0.elapsed() < Duration::from_secs(600), "no round written after 10 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let first: Vec<GenRecord> = jsonl(&gens);
    assert_eq!(first.len(), 13, "one round of 13 topics when killed");
    assert!(!killed.join("answers.jsonl").exists());
    let o = deopt(&["selfgen", "--resume", killed.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming selfgen at round 2"));
    for f in FILES {
        let (x, y) = (std::fs::read(straight.join(f)).unwrap(), std::fs::read(killed.join(f)).unwrap());
        assert!(x == y, "{f} differs between the resumed and the uninterrupted run");
    }

    // Counts add up; every generation is accepted or has a reason.
    let records: Vec<GenRecord> = jsonl(&straight.join("generations.jsonl"));
    let questions: Vec<Question> = jsonl(&straight.join("questions.jsonl"));
    let answers: Vec<AnswerRecord> = jsonl(&straight.join("answers.jsonl"));
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(straight.join("summary.json")).unwrap()).unwrap();
    assert_eq!(records.len(), 26);
    assert_eq!(summary.generated, 26);
    assert!(records.iter().all(|r| r.id.is_some() != r.reject.is_some()));
    assert_eq!(summary.accepted, questions.len());
    assert_eq!(summary.accepted + summary.rejected.values().sum::<usize>(), summary.generated);
    assert!(!questions.is_empty(), "no question accepted: {summary:?}");
    // Round 2 sees round 1's accepted questions of its topic as examples.
    for r in records.iter().filter(|r| r.round == 1) {
        let earlier = records.iter().filter(|x| x.round == 0 && x.topic == r.topic && x.id.is_some()).count();
        let shown = r.examples.iter().filter(|e| e.starts_with('G')).count();
        assert_eq!(shown, earlier.min(2), "{}: examples {:?}", r.topic, r.examples);
        assert_eq!(r.examples.len(), 5);
    }
    // Both countries answered every question; the answer is the most probable option, the
    // expected answer is the probability-weighted code, and kept is exactly "the expected answer
    // moved by at least --min-shift" (the data is made with a small shift so that a few
    // questions give kept pairs to train on; the default rule is covered by a unit test).
    assert_eq!(answers.len(), 2 * questions.len());
    let argmax = |p: &[f64]| 1 + (0..p.len()).fold(0, |b, k| if p[k] > p[b] { k } else { b }) as i32;
    let mean = |p: &[f64]| p.iter().enumerate().map(|(k, x)| (k + 1) as f64 * x).sum::<f64>();
    for a in &answers {
        let (u, w) = (a.unaware.probs.as_ref().unwrap(), a.aware.probs.as_ref().unwrap());
        assert_eq!(a.unaware.answer, Some(argmax(u)));
        assert_eq!(a.aware.answer, Some(argmax(w)));
        let (eu, ew) = (a.unaware.expected.unwrap(), a.aware.expected.unwrap());
        assert!((eu - mean(u)).abs() < 1e-9 && (ew - mean(w)).abs() < 1e-9);
        assert_eq!(a.kept, (ew - eu).abs() >= 0.02, "{a:?}");
    }
    assert!(answers.iter().any(|a| a.country == "USA" && a.kept), "no kept pair for USA to train on");
    for c in ["USA", "CHN"] {
        let kept = answers.iter().filter(|a| a.country == c && a.kept).count();
        assert_eq!(summary.countries[c].kept, kept);
    }
    // The survey file is an instrument like any other.
    let s = Survey::from_file(&straight.join("survey.csv")).unwrap();
    assert_eq!(s.items.len(), questions.len());
    assert_eq!(s.items[0].text, questions[0].question);
    let report = std::fs::read_to_string(straight.join("report.md")).unwrap();
    assert!(report.contains("| near-copy |") && report.contains("| USA |"), "{report}");
}

fn history_fitness(dir: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(dir.join("history.csv")).unwrap();
    let head: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let col = head.iter().position(|h| *h == "best_so_far").expect("best_so_far column");
    text.lines().skip(1).map(|l| l.split(',').nth(col).unwrap().parse().unwrap()).collect()
}

#[test]
fn training_on_selfgen_data_lowers_its_loss_and_reports_real_survey_scores() {
    let _serial = serial();
    let data = data().clone();
    let base = tmpdir("selfgen-train");
    let d = data.to_str().unwrap();
    for (cmd, extra) in [
        ("tune", vec!["--objective", "selfgen", "--steps", "3", "--lr", "0.05"]),
        ("run", vec!["--objective", "selfgen", "--pop", "6", "--gens", "3"]),
    ] {
        let out = base.join(cmd);
        let mut a = vec![cmd, "--country", "USA", "--data", d, "--tokens", "2", "--seed", "1", "--no-report"];
        a.extend(extra);
        a.extend(["--out", out.to_str().unwrap()]);
        let o = deopt(&a);
        assert!(o.status.success(), "{cmd}: {}", String::from_utf8_lossy(&o.stderr));
        let f = history_fitness(&out);
        assert!(f.last().unwrap() < &f[0], "{cmd}: the self-generated-data loss did not go down: {f:?}");
        let t: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("transfer.json")).unwrap()).unwrap();
        let rows = t["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 3);
        for r in rows {
            assert!(r["vsm13_loss"].as_f64().is_some_and(|v| v > 0.0), "{t}");
            assert!(r["wvs_cas"].as_f64().is_some_and(|v| v > 0.0), "{t}");
        }
        assert!(String::from_utf8_lossy(&o.stdout).contains("real surveys for USA"));
    }
}

#[test]
fn bad_selfgen_input_is_one_line() {
    let _serial = serial();
    let data = data().clone();
    let base = tmpdir("selfgen-bad");
    // A data directory from another model.
    let other = base.join("other");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["questions.jsonl", "answers.jsonl", "survey.csv"] {
        std::fs::copy(data.join(f), other.join(f)).unwrap();
    }
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("selfgen.json")).unwrap()).unwrap();
    s["model_sha256"] = serde_json::json!("0".repeat(64));
    std::fs::write(other.join("selfgen.json"), serde_json::to_vec(&s).unwrap()).unwrap();
    let o = other.to_str().unwrap();
    fails_with(
        &["run", "--objective", "selfgen", "--data", o, "--country", "USA"],
        "belongs to the model that wrote it",
    );
    // Nothing kept for the country (data of the right model again).
    std::fs::copy(data.join("selfgen.json"), other.join("selfgen.json")).unwrap();
    let answers = std::fs::read_to_string(data.join("answers.jsonl"))
        .unwrap()
        .replace("\"kept\":true", "\"kept\":false");
    std::fs::write(other.join("answers.jsonl"), answers).unwrap();
    fails_with(&["tune", "--objective", "selfgen", "--data", o, "--country", "USA"], "nothing kept for USA");
    fails_with(&["run", "--objective", "selfgen", "--data", o, "--country", "DEU"], "no answers for DEU");
    // A country without a culture name; flags that need each other.
    fails_with(&["selfgen", "--countries", "USA,Atlantis"], "no culture name");
    fails_with(&["run", "--objective", "selfgen", "--country", "USA"], "needs --data DIR");
    fails_with(&["tune", "--objective", "selfgen", "--country", "USA"], "--data");
    fails_with(&["selfgen", "--countries", "USA", "--per-topic", "0"], "--per-topic 0");
    fails_with(&["selfgen", "--countries", "USA", "--top-p", "1.5"], "--top-p 1.5");
    fails_with(&["selfgen", "--resume", base.to_str().unwrap()], "no selfgen.json");
    // An existing data directory is not overwritten.
    fails_with(&["selfgen", "--countries", "USA", "--out", data.to_str().unwrap()], "--resume");
}
