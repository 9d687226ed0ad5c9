//! Property and fuzz tests of every input parser deopt has: random bytes and mutated valid
//! files must never panic, and whatever a parser accepts must be in range (finite numbers,
//! sizes that match, codes within bounds). No model is needed.
//!
//! Case counts are set per parser (`CASES`); `PROPTEST_CASES` in the environment overrides
//! them all (e.g. a longer local fuzzing session).

use std::collections::HashMap;
use std::path::Path;

use deopt::data::answers;
use deopt::data::survey::{Survey, SurveyKind, CODE_RANGE, MAX_COEFFICIENT, MAX_OPTIONS};
use deopt::optim::{population, Config, FnObjective, Optimizer, StopRule, Strategy as DeStrategy};
use deopt::output::prompt_export::{self, npy_bytes, parse_npy};
use deopt::prompt::softprompt::SoftPrompt;
use deopt::run::directory::{self, Checkpoint, HistoryRow};
use deopt::score::metrics::{Constants, MAX_CONSTANT};
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};

use crate::common::tmpdir;

/// Cases per parser.
const CASES: u32 = 5000;

fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    // No failure-persistence files in the source tree; a failure prints its input.
    TestRunner::new(PtConfig { cases, failure_persistence: None, ..PtConfig::default() })
}

/// A valid input, mutated: some bytes replaced, a slice inserted or removed, or cut short.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let n = base.len().max(1);
    let edits = prop::collection::vec((0..n, any::<u8>(), 0u8..4), 1..6);
    (edits, prop::option::weighted(0.2, 0..n)).prop_map(move |(edits, cut)| {
        let mut b = base.clone();
        for (at, byte, kind) in edits {
            let at = at.min(b.len());
            match kind {
                0 | 1 if at < b.len() => b[at] = byte,
                2 => b.insert(at, byte),
                _ if at < b.len() => {
                    b.remove(at);
                }
                _ => b.push(byte),
            }
        }
        if let Some(c) = cut {
            b.truncate(c);
        }
        b
    })
}

/// Random bytes or a mutation of `base`.
fn any_or_mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..400), mutated(base)]
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check_survey(s: &Survey) {
    assert!(!s.items.is_empty());
    for it in &s.items {
        assert!((2..=MAX_OPTIONS).contains(&it.n_options()), "{it:?}");
        assert!(CODE_RANGE.contains(&it.first_code), "{it:?}");
        if let Some((_, c)) = it.term {
            assert!(c.is_finite() && c.abs() <= MAX_COEFFICIENT, "{it:?}");
        }
    }
}

#[test]
fn survey_files() {
    let base = deopt::data::embedded::file("surveys/vsm13.csv").text.as_bytes().to_vec();
    runner(CASES)
        .run(&any_or_mutated(base), |b| {
            if let Ok(s) = Survey::parse("fuzz.csv", &text(&b)) {
                check_survey(&s);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn answer_files_csv_and_json() {
    let vsm = Survey::builtin(SurveyKind::Vsm13).unwrap();
    let wvs = Survey::builtin(SurveyKind::Wvs).unwrap();
    let csv = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("surveys/examples/vsm13_neutral.csv"))
        .unwrap();
    let json = br#"[{"Q_id": "Q1", "answer": "3"}, {"Q_id": "Q2", "answer": 2.0}, {"Q_id": "Q3", "answer": "I'd say 4"}]"#;
    let strategy = prop_oneof![any_or_mutated(csv), any_or_mutated(json.to_vec())];
    runner(CASES)
        .run(&strategy, |b| {
            let t = text(&b);
            for survey in [&vsm, &wvs] {
                if let Ok(a) = answers::parse_csv("fuzz.csv", &t, survey) {
                    assert!(!a.answers.is_empty());
                    for (id, v) in &a.answers {
                        assert!(survey.item(id).is_some_and(|it| it.in_range(*v)), "{id} {v}");
                    }
                }
                if let Ok(a) = answers::parse_culturespa_json("fuzz.json", &t, survey) {
                    for (_, v) in &a.answers {
                        assert!((0.0..=10.0).contains(v) && v.fract() == 0.0, "{v}");
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn constants_flag() {
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| text(&b)),
        mutated(b"PDI=20,IDV=50,MAS=1e3".to_vec()).prop_map(|b| text(&b)),
    ];
    runner(CASES)
        .run(&strategy, |s| {
            if let Ok(c) = s.parse::<Constants>() {
                assert!(c.0.iter().all(|v| v.is_finite() && v.abs() <= MAX_CONSTANT), "{s}: {c:?}");
            }
            Ok(())
        })
        .unwrap();
}

fn check_prompt(p: &SoftPrompt) {
    assert!(p.rows() >= 1 && p.n_embd() >= 1);
    assert_eq!(p.data().len(), p.rows() * p.n_embd());
    assert!(p.data().iter().all(|v| v.is_finite()));
}

#[test]
fn npy_files() {
    let p = SoftPrompt::new(3, 5, (0..15).map(|i| i as f32 * 0.25 - 1.0).collect()).unwrap();
    runner(CASES)
        .run(&any_or_mutated(npy_bytes(&p)), |b| {
            if let Ok(q) = parse_npy(&b, "fuzz.npy") {
                check_prompt(&q);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn safetensors_and_peft_files() {
    let dir = tmpdir("fuzz-st");
    let p = SoftPrompt::new(2, 4, vec![0.5, -1.0, 2.0, 0.0, 1.5, -0.25, 3.0, 1.0]).unwrap();
    let file = dir.join("p.safetensors");
    p.save(&file, &HashMap::from([("country".to_string(), "SAU".to_string())])).unwrap();
    let st = std::fs::read(&file).unwrap();
    // A PEFT adapter made by deopt's own export, whose two files are then mutated.
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("config.json"), r#"{"model": {"name": "fuzz"}}"#).unwrap();
    p.save(&run.join("best_prompt.safetensors"), &HashMap::new()).unwrap();
    let rp = prompt_export::read_run(&run).unwrap();
    let peft = dir.join("peft");
    prompt_export::export(&rp, prompt_export::Format::Peft, &peft, &Default::default(), false).unwrap();
    let cfg = std::fs::read(peft.join("adapter_config.json")).unwrap();
    let weights = std::fs::read(peft.join("adapter_model.safetensors")).unwrap();
    let (case_file, case_dir) = (dir.join("case.safetensors"), dir.join("case_peft"));
    std::fs::create_dir_all(&case_dir).unwrap();
    let strategy = (any_or_mutated(st), any_or_mutated(cfg.clone()), any_or_mutated(weights.clone()), 0u8..3);
    runner(CASES / 3)
        .run(&strategy, |(st, c, w, which)| {
            std::fs::write(&case_file, &st).unwrap();
            if let Ok((q, _)) = prompt_export::load_any(&case_file) {
                check_prompt(&q);
            }
            // Mutate the config, the weights, or both.
            let (c, w) = match which {
                0 => (c, weights.clone()),
                1 => (cfg.clone(), w),
                _ => (c, w),
            };
            std::fs::write(case_dir.join("adapter_config.json"), &c).unwrap();
            std::fs::write(case_dir.join("adapter_model.safetensors"), &w).unwrap();
            if let Ok((q, _)) = prompt_export::load_any(&case_dir) {
                check_prompt(&q);
                let v: serde_json::Value = serde_json::from_slice(&c).unwrap();
                assert_eq!(v["num_virtual_tokens"].as_u64(), Some(q.rows() as u64));
                assert_eq!(v["token_dim"].as_u64(), Some(q.n_embd() as u64));
                assert_eq!(v["peft_type"], "PROMPT_TUNING");
            }
            Ok(())
        })
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// A real checkpoint body: an optimizer after two generations on the sphere, with history.
fn checkpoint_body() -> Vec<u8> {
    let mut sphere = FnObjective(|x: &[f32]| x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>());
    let mut opt =
        Optimizer::new(Config::new(DeStrategy::Shade), population::uniform(6, 3, -2.0, 2.0, 1), 9).unwrap();
    let mut stop = StopRule::new().max_generations(2);
    let mut history = Vec::new();
    opt.run(&mut sphere, &mut stop, |r| {
        history.push(HistoryRow {
            generation: r.generation,
            evaluations: r.evaluations,
            best: r.best_fitness,
            median: r.median_fitness,
            worst: r.worst_fitness,
            best_so_far: r.best_so_far,
            dimensions: vec![Some(1.5), None, Some(-2.0), Some(0.1), Some(3.0), Some(4.0)],
            cas: None,
            holdout: Some(0.25),
            f: r.f.map(|m| (m.mean, m.sd)),
            cr: r.cr.map(|m| (m.mean, m.sd)),
            diversity: r.diversity,
            successes: r.successes,
            tokens: 100,
        })
    })
    .unwrap();
    let c = Checkpoint {
        format: directory::CHECKPOINT_FORMAT.into(),
        spec_sha256: "0".repeat(64),
        optimizer: serde_json::from_slice(&opt.to_checkpoint().unwrap()).unwrap(),
        history,
        last_improvement: 1,
        best_generation: 1,
        elapsed_s: 2.5,
    };
    serde_json::to_vec(&c).unwrap()
}

#[test]
fn checkpoints() {
    let dir = tmpdir("fuzz-ckpt");
    let body = checkpoint_body();
    // Mutated bodies are sealed again, so the parsers beneath the seal are exercised too;
    // mutated sealed files must fail the seal (or parse to the same checkpoint).
    let sealed = directory::seal(&body).unwrap();
    let strategy = (mutated(body), any_or_mutated(sealed.clone()), any::<bool>());
    runner(CASES / 3)
        .run(&strategy, |(b, s, reseal)| {
            let bytes = if reseal { directory::seal(&b).unwrap_or(s) } else { s };
            std::fs::write(dir.join(directory::CHECKPOINT), &bytes).unwrap();
            if let Ok(c) = Checkpoint::load(&dir) {
                if !reseal {
                    assert_eq!(directory::seal(&serde_json::to_vec(&c).unwrap()).unwrap(), sealed);
                }
                let _ = Optimizer::from_checkpoint(&serde_json::to_vec(&c.optimizer).unwrap());
                for r in &c.history {
                    assert!(r.dimensions.is_empty() || r.dimensions.len() == 6);
                }
            }
            Ok(())
        })
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn run_configs() {
    let dir = tmpdir("fuzz-config");
    let base =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/run_config.json")).unwrap();
    runner(CASES / 3)
        .run(&any_or_mutated(base), |b| {
            std::fs::write(dir.join(directory::CONFIG), &b).unwrap();
            if let Ok(c) = directory::RunConfig::load(&dir) {
                let _ = c.spec.validate();
                let _ = c.setting("pop");
            }
            Ok(())
        })
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// A small GGUF v3 file: three metadata keys, one tiny F32 tensor.
fn small_gguf() -> Vec<u8> {
    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(3u64.to_le_bytes()); // metadata pairs
    s(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes()); // string
    s(&mut b, "llama");
    for (k, v) in [("llama.context_length", 2048u32), ("llama.embedding_length", 4)] {
        s(&mut b, k);
        b.extend(4u32.to_le_bytes()); // uint32
        b.extend(v.to_le_bytes());
    }
    s(&mut b, "token_embd.weight");
    b.extend(2u32.to_le_bytes()); // dimensions
    b.extend(4u64.to_le_bytes());
    b.extend(2u64.to_le_bytes());
    b.extend(0u32.to_le_bytes()); // F32
    b.extend(0u64.to_le_bytes()); // offset in the data section
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend((0..8).flat_map(|i| (i as f32).to_le_bytes()));
    b
}

#[test]
fn gguf_metadata() {
    let dir = tmpdir("fuzz-gguf");
    let file = dir.join("m.gguf");
    let base = small_gguf();
    std::fs::write(&file, &base).unwrap();
    let g = deopt::llama::GgufFile::open(&file).expect("the unmutated file is valid");
    assert_eq!(g.meta_str("llama.embedding_length").as_deref(), Some("4"));
    runner(CASES / 3)
        .run(&mutated(base), |b| {
            std::fs::write(&file, &b).unwrap();
            if let Ok(g) = deopt::llama::GgufFile::open(&file) {
                for k in g.meta_keys() {
                    let _ = g.meta_str(&k);
                }
                for t in g.tensors() {
                    assert!(t.file_offset + t.nbytes <= b.len() as u64, "{t:?}");
                }
            }
            Ok(())
        })
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
