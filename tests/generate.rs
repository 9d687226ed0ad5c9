//! `deopt generate` and [`deopt::engine::generation`] on the real default model.

use std::process::{Command, Output};

use deopt::engine::generation::{generate, GenerateConfig};
use deopt::prompt::softprompt::SoftPrompt;
use rand::SeedableRng;

fn deopt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deopt")).args(args).output().expect("run deopt")
}

fn model() -> deopt::llama::Model {
    let m = deopt::provision::model_store::resolve_model(None, deopt::provision::model_store::Precision::F16).unwrap();
    deopt::llama::Model::load(&m.path, &Default::default()).unwrap()
}

fn prompt(model: &deopt::llama::Model, rows: usize) -> SoftPrompt {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(5);
    deopt::prompt::init::draw(model, deopt::prompt::init::InitKind::Vocab, rows, &mut rng).unwrap()
}

const Q: &str = "What is the most important quality in a friend?";

#[test]
fn greedy_is_deterministic_and_zero_rows_equal_no_prompt() {
    let m = model();
    let cfg = GenerateConfig { max_tokens: 6, ..GenerateConfig::default() };
    let p = prompt(&m, 3);
    let a = generate(&m, &p, Q, &cfg).unwrap();
    let b = generate(&m, &p, Q, &cfg).unwrap();
    assert_eq!(a, b);
    assert!(!a.tokens.is_empty());
    assert!(a.rendered.contains("[SOFT PROMPT: 3 rows]"), "{}", a.rendered);
    let zero = generate(&m, &SoftPrompt::new(0, 640, vec![]).unwrap(), Q, &cfg).unwrap();
    let none = generate(&m, &SoftPrompt::empty(640), Q, &cfg).unwrap();
    assert_eq!(zero, none);
    assert!(!none.rendered.contains("SOFT PROMPT"));
    // Sampling with a seed is reproducible too.
    let hot = GenerateConfig { temperature: 1.0, seed: 3, ..cfg };
    assert_eq!(generate(&m, &p, Q, &hot).unwrap(), generate(&m, &p, Q, &hot).unwrap());
}

#[test]
fn compare_prints_both_answers() {
    let m = model();
    let dir = std::env::temp_dir().join(format!("deopt-generate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = prompt(&m, 3);
    let path = dir.join("p.safetensors");
    p.save(&path, &Default::default()).unwrap();
    let cfg = GenerateConfig { max_tokens: 6, threads: 2, ..GenerateConfig::default() };
    let with = generate(&m, &p, Q, &cfg).unwrap();
    let without = generate(&m, &SoftPrompt::empty(640), Q, &cfg).unwrap();
    let out = deopt(&["generate", "--prompt", path.to_str().unwrap(), "--max-tokens", "6", "--compare", Q]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("=== baseline (no soft prompt) ===") && text.contains("=== with soft prompt"),
        "{text}"
    );
    let show = |s: &str| if s.is_empty() { "(empty)".to_string() } else { s.to_string() };
    let (b, w) = text.split_once("=== with soft prompt").unwrap();
    assert!(b.contains(&show(&without.text)), "{text}");
    assert!(w.contains(&show(&with.text)), "{text}");
}

#[test]
fn bad_prompt_file_gives_one_line() {
    let dir = std::env::temp_dir().join(format!("deopt-generate-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let junk = dir.join("junk.npy");
    std::fs::write(&junk, b"not a prompt").unwrap();
    let out = deopt(&["generate", "--prompt", junk.to_str().unwrap(), Q]);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("deopt:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("junk.npy"), "{err}");
    let out = deopt(&["generate", "--prompt", "/nonexistent/p.safetensors", Q]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && err.contains("/nonexistent/p.safetensors"), "{err}");
}
