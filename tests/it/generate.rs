//! `deopt generate` and [`deopt::engine::generation`] on the real default model.

use crate::common::{deopt, fails_with, model, serial, tmpdir};

use deopt::engine::generation::{generate, GenerateConfig};
use deopt::prompt::softprompt::SoftPrompt;
use rand::SeedableRng;

fn prompt(model: &deopt::llama::Model, rows: usize) -> SoftPrompt {
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(5);
    deopt::prompt::init::draw(model, deopt::prompt::init::InitKind::Vocab, rows, &mut rng).unwrap()
}

const Q: &str = "What is the most important quality in a friend?";

#[test]
fn greedy_is_deterministic_and_zero_rows_equal_no_prompt() {
    let _serial = serial(); // uses both cores
    let m = model();
    let cfg = GenerateConfig { max_tokens: 6, ..GenerateConfig::default() };
    let p = prompt(m, 3);
    let a = generate(m, &p, Q, &cfg).unwrap();
    let b = generate(m, &p, Q, &cfg).unwrap();
    assert_eq!(a, b);
    assert!(!a.tokens.is_empty());
    assert!(a.rendered.contains("[SOFT PROMPT: 3 rows]"), "{}", a.rendered);
    let zero = generate(m, &SoftPrompt::new(0, 640, vec![]).unwrap(), Q, &cfg).unwrap();
    let none = generate(m, &SoftPrompt::empty(640), Q, &cfg).unwrap();
    assert_eq!(zero, none);
    assert!(!none.rendered.contains("SOFT PROMPT"));
    // Sampling with a seed is reproducible too.
    let hot = GenerateConfig { temperature: 1.0, seed: 3, ..cfg };
    assert_eq!(generate(m, &p, Q, &hot).unwrap(), generate(m, &p, Q, &hot).unwrap());
}

#[test]
fn compare_prints_both_answers() {
    let _serial = serial(); // uses both cores
    let m = model();
    let dir = tmpdir("generate-compare");
    let p = prompt(m, 3);
    let path = dir.join("p.safetensors");
    p.save(&path, &Default::default()).unwrap();
    let cfg = GenerateConfig { max_tokens: 6, threads: 2, ..GenerateConfig::default() };
    let with = generate(m, &p, Q, &cfg).unwrap();
    let without = generate(m, &SoftPrompt::empty(640), Q, &cfg).unwrap();
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
    let _serial = serial(); // uses both cores
    let dir = tmpdir("generate-bad");
    let junk = dir.join("junk.npy");
    std::fs::write(&junk, b"not a prompt").unwrap();
    fails_with(&["generate", "--prompt", junk.to_str().unwrap(), Q], "junk.npy");
    fails_with(&["generate", "--prompt", "/nonexistent/p.safetensors", Q], "/nonexistent/p.safetensors");
}
