//! Regression tests of bad input, one per failure class a hostile-input audit found: each is
//! refused with one line `deopt: <what>: <value>: <what was expected>`, non-zero, no panic,
//! before the model loads where the check needs no model, and without touching earlier
//! results. (Set `DEOPT_TEST_BIN` to an older build to see them fail there.)

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{deopt, fails, fails_with, serial, tmpdir};

/// A small finished run (USA, pop 4, 2 generations, 1 row), made once; tests copy it.
fn finished_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let _serial = serial(); // uses both cores
        let dir = tmpdir("bad-run").join("run");
        let args = ["run", "--country", "USA", "--pop", "4", "--gens", "2", "--tokens", "1", "--seed", "3"];
        let mut a = args.to_vec();
        a.extend(["--no-report", "--threads", "1", "--out", dir.to_str().unwrap()]);
        let o = deopt(&a);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        dir
    })
}

/// A copy of the finished run, to damage.
fn copy_run(tag: &str) -> PathBuf {
    let to = tmpdir(tag).join("run");
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(finished_run()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

/// Edit the body of `dir`'s checkpoint.json with `f` and seal it again (so the check under
/// test is the field check, not the seal).
fn edit_checkpoint(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("checkpoint.json");
    let sealed: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut body = sealed["checkpoint"].clone();
    f(&mut body);
    let bytes = deopt::run::directory::seal(&serde_json::to_vec(&body).unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
}

/// `deopt run --resume DIR` must fail fast (before the model loads), naming `needle`.
fn resume_refused(dir: &Path, needle: &str) -> String {
    let t0 = Instant::now();
    let line = fails_with(&["run", "--resume", dir.to_str().unwrap(), "--no-report"], needle);
    assert!(t0.elapsed() < Duration::from_secs(5), "refused only after {:?}: {line}", t0.elapsed());
    line
}

/// An edit of a checkpoint body.
type Edit = fn(&mut serde_json::Value);

#[test]
fn resume_checks_the_checkpoint_field_by_field() {
    let cases: [(&str, &str, Edit); 10] = [
        ("empty", "history: empty", |b| b["history"] = serde_json::json!([])),
        ("gen", "optimizer generation: 3: expected 2", |b| {
            let g = b["optimizer"]["state"]["generation"].as_u64().unwrap();
            b["optimizer"]["state"]["generation"] = serde_json::json!(g + 1);
        }),
        ("mutation", "optimizer config.mutation: \"0.9\": expected \"0.5\"", |b| {
            b["optimizer"]["config"]["mutation"] = serde_json::json!("0.9")
        }),
        ("pop", "population of 3", |b| {
            b["optimizer"]["state"]["population"].as_array_mut().unwrap().pop();
            b["optimizer"]["state"]["fitness"].as_array_mut().unwrap().pop();
        }),
        ("best", "optimizer best_fitness: 1.5", |b| {
            b["optimizer"]["state"]["best_fitness"] = serde_json::json!("1.5")
        }),
        ("elapsed", "elapsed_s: -5", |b| b["elapsed_s"] = serde_json::json!(-5.0)),
        ("improvement", "last_improvement", |b| {
            let g = b["last_improvement"].as_u64().unwrap();
            b["last_improvement"] = serde_json::json!(g + 7);
        }),
        ("spec", "spec_sha256", |b| b["spec_sha256"] = serde_json::json!("0".repeat(64))),
        // A generator that would yield zeros for ever (the old code hung on it).
        ("rng", "rng state all zero", |b| {
            b["optimizer"]["state"]["rng"] = serde_json::json!({"s": [0, 0, 0, 0]})
        }),
        ("nan", "non-finite", |b| {
            let row = b["optimizer"]["state"]["population"][0].as_str().unwrap().to_string();
            b["optimizer"]["state"]["population"][0] = serde_json::json!(format!("7fc00000{}", &row[8..]));
        }),
    ];
    for (tag, needle, edit) in cases {
        let dir = copy_run(tag);
        let before = std::fs::read(dir.join("history.csv")).unwrap();
        edit_checkpoint(&dir, edit);
        let line = resume_refused(&dir, needle);
        assert!(line.contains("checkpoint.json"), "{tag}: {line}");
        if tag == "empty" || tag == "elapsed" || tag == "spec" {
            // A report reads the history with the same checks.
            fails_with(&["report", dir.to_str().unwrap(), "--no-model"], needle);
        }
        assert_eq!(std::fs::read(dir.join("history.csv")).unwrap(), before, "{tag}: history touched");
    }
}

#[test]
fn resume_checks_history_csv_and_config_json() {
    let dir = copy_run("hist");
    let h = std::fs::read_to_string(dir.join("history.csv")).unwrap();
    let edited = h.replacen("\n1,", "\n1,9", 1);
    std::fs::write(dir.join("history.csv"), &edited).unwrap();
    resume_refused(&dir, "history.csv: row 3 (generation 1)");

    let dir = copy_run("cfg");
    let p = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    cfg["spec"]["prompt"]["tokens"] = serde_json::json!(0);
    std::fs::write(&p, serde_json::to_vec(&cfg).unwrap()).unwrap();
    // Blames the file, not a --tokens flag nobody gave.
    let line = resume_refused(&dir, "config.json: spec field tokens: 0");
    assert!(!line.contains("--tokens"), "{line}");

    let dir = copy_run("cfg2");
    let p = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    cfg["spec"]["seed"] = serde_json::json!(4);
    std::fs::write(&p, serde_json::to_vec(&cfg).unwrap()).unwrap();
    resume_refused(&dir, "config.json was edited, or the checkpoint belongs to another run");
}

#[test]
fn a_damaged_checkpoint_falls_back_to_the_previous_one_or_is_refused() {
    // No previous checkpoint: a damaged latest one is refused, naming the seal.
    let dir = copy_run("damaged");
    std::fs::remove_file(dir.join("checkpoint.prev.json")).unwrap();
    let p = dir.join("checkpoint.json");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replacen("\"elapsed_s\":", "\"elapsed_s\":1", 1)).unwrap();
    resume_refused(&dir, "damaged checkpoint: sha256");
    std::fs::write(&p, &text[..text.len() / 2]).unwrap();
    resume_refused(&dir, "not a deopt run checkpoint");
}

#[test]
fn prompt_files_are_parsed_strictly() {
    let dir = tmpdir("prompts");
    let npy = |name: &str, header: &str, data: usize| {
        let mut h = header.to_string();
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data));
        let p = dir.join(name);
        std::fs::write(&p, b).unwrap();
        p.to_str().unwrap().to_string()
    };
    let eval = |p: &str, needle: &str| {
        let t0 = Instant::now();
        fails_with(&["eval", "--country", "SAU", "--prompt", p], needle);
        assert!(t0.elapsed() < Duration::from_secs(5), "checked only after the model loaded");
    };
    let p = npy(
        "overflow.npy",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 640), }",
        0,
    );
    eval(&p, "more than can be addressed");
    let p = npy("dtype.npy", "{'descr': '<f4x', 'fortran_order': False, 'shape': (1, 640), }", 2560);
    eval(&p, "dtype '<f4x': expected little-endian float32");
    let p = npy("dtype2.npy", "{'descr': 'xx<f4', 'fortran_order': False, 'shape': (1, 640), }", 2560);
    eval(&p, "dtype 'xx<f4'");
    let p = npy("zero.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 17), }", 0);
    eval(&p, "shape (0, 17): expected at least one row");

    // safetensors whose deopt metadata contradicts the tensor; a file too short to be one.
    let zeros = vec![0u8; 2 * 640 * 4];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 640], &zeros).unwrap();
    let meta = std::collections::HashMap::from([("rows".to_string(), "7".to_string())]);
    let st = dir.join("meta.safetensors");
    std::fs::write(&st, safetensors::serialize([("prompt", view)], &Some(meta)).unwrap()).unwrap();
    eval(st.to_str().unwrap(), "metadata rows '7': expected 2");
    let st = dir.join("short.safetensors");
    std::fs::write(&st, b"abc").unwrap();
    let line =
        fails_with(&["eval", "--country", "SAU", "--prompt", st.to_str().unwrap()], "not a safetensors file");
    assert!(!line.contains("HeaderTooSmall"), "{line}");

    // PEFT adapters whose config contradicts the tensor beside it.
    let prompt = deopt::prompt::softprompt::SoftPrompt::new(2, 640, vec![0.0; 1280]).unwrap();
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("config.json"), r#"{"model": {"name": "x"}}"#).unwrap();
    prompt.save(&run.join("best_prompt.safetensors"), &Default::default()).unwrap();
    let rp = deopt::output::prompt_export::read_run(&run).unwrap();
    for (key, value, needle) in [
        ("num_virtual_tokens", serde_json::json!(5), "num_virtual_tokens 5: expected 2"),
        ("token_dim", serde_json::json!(576), "token_dim 576: expected 640"),
        ("num_transformer_submodules", serde_json::json!(2), "num_transformer_submodules 2: expected 1"),
        ("peft_type", serde_json::json!("LORA"), "peft_type \"LORA\": expected \"PROMPT_TUNING\""),
    ] {
        let out = dir.join(format!("peft-{key}"));
        deopt::output::prompt_export::export(
            &rp,
            deopt::output::prompt_export::Format::Peft,
            &out,
            &Default::default(),
            false,
        )
        .unwrap();
        let cfg_path = out.join("adapter_config.json");
        let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
        cfg[key] = value;
        std::fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        eval(out.to_str().unwrap(), needle);
    }
}

#[test]
fn nothing_is_clobbered() {
    let base = tmpdir("clobber");
    // A directory holding another run's config.json (and no checkpoint).
    let other = base.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(finished_run().join("config.json"), other.join("config.json")).unwrap();
    let before = std::fs::read(other.join("config.json")).unwrap();
    let o = other.to_str().unwrap();
    fails_with(
        &["run", "--country", "SAU", "--gens", "1", "--out", o],
        "holds the config.json of another run (USA",
    );
    assert_eq!(std::fs::read(other.join("config.json")).unwrap(), before);
    // A directory of unrelated files.
    let notes = base.join("notes");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("paper.tex"), "x").unwrap();
    fails_with(
        &["run", "--country", "SAU", "--out", notes.to_str().unwrap()],
        "holds paper.tex, which deopt did not write",
    );
    // A finished run.
    let run = finished_run().to_str().unwrap();
    fails_with(&["run", "--country", "SAU", "--out", run], "already holds a run");
    // export onto existing files.
    let out = base.join("export");
    let ok = deopt(&["export", run, "--format", "npy", "--out", out.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    std::fs::write(out.join("prompt.npy"), "mine").unwrap();
    fails_with(
        &["export", run, "--format", "npy", "--out", out.to_str().unwrap()],
        "prompt.npy: exists already",
    );
    assert_eq!(std::fs::read(out.join("prompt.npy")).unwrap(), b"mine");
    let ok = deopt(&["export", run, "--format", "npy", "--out", out.to_str().unwrap(), "--force"]);
    assert!(ok.status.success());
    assert_ne!(std::fs::read(out.join("prompt.npy")).unwrap(), b"mine");
}

#[test]
fn sizes_are_refused_before_the_model_loads() {
    for (args, needle) in [
        (&["--tokens", "40000"][..], "--tokens 40000: expected fewer than 32768"),
        (&["--pop", "100000000"][..], "--pop 100000000: expected at most"),
        (&["--tokens", "2", "--subspace", "100000000"][..], "--subspace 100000000: expected at most 1280"),
        (&["--max-evals", "0"][..], "--max-evals 0: expected a budget"),
        (&["--threads", "0"][..], "--threads 0: expected at least one thread"),
        (&["--batch-prompts", "0"][..], "invalid value '0' for '--batch-prompts <N>': 0 is not in 1..=256"),
        (&["--exact", "--batch-prompts", "4"][..], "'--exact' cannot be used with '--batch-prompts <N>'"),
    ] {
        let mut a = vec!["run", "--country", "SAU", "--gens", "1"];
        a.extend_from_slice(args);
        let t0 = Instant::now();
        fails_with(&a, needle);
        assert!(t0.elapsed() < Duration::from_secs(5), "{args:?}: refused only after {:?}", t0.elapsed());
    }
}

#[test]
fn survey_and_answer_files_are_strict() {
    let dir = tmpdir("files");
    let w = |name: &str, text: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = w("good.csv", b"item,answer\n1,3\n");
    let vsm = |survey: &str| {
        fails(&["score", "vsm13", "--country", "SAU", "--answers", &good, "--survey-file", survey])
    };
    let builtin = deopt::data::embedded::file("surveys/vsm13.csv").text;

    // first_code that would overflow the last code.
    let s = w("overflow.csv", b"id,text,options,first_code\n1,a,x | y,2147483647\n");
    assert!(vsm(&s).contains("first_code '2147483647': expected an integer in -1000000..=1000000"));
    // A coefficient that makes the loss infinite.
    let s = w("coef.csv", builtin.replacen(",-35,", ",-1e308,", 1).as_bytes());
    let line = vsm(&s);
    assert!(line.contains("coefficient '-1e308': expected a number within"), "{line}");
    // --constants: huge, repeated.
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("surveys/examples/vsm13_neutral.csv");
    let ex = ex.to_str().unwrap();
    fails_with(
        &["score", "vsm13", "--country", "SAU", "--answers", ex, "--constants", "1e308"],
        "'1e308': expected a number within",
    );
    fails_with(
        &["score", "vsm13", "--country", "SAU", "--answers", ex, "--constants", "PDI=3,PDI=4"],
        "PDI: given twice",
    );
    // Line numbers for CRLF files and after blank lines.
    let f = w("crlf.csv", b"item,answer\r\n1,3\r\n\r\n2,x\r\n");
    fails_with(
        &["score", "vsm13", "--country", "SAU", "--answers", &f],
        "crlf.csv:4: item 2: answer 'x': expected a number",
    );
    let f = w("blank.csv", b"item,answer\n1,3\n\n\n2,x\n");
    fails_with(&["score", "vsm13", "--country", "SAU", "--answers", &f], "blank.csv:5:");
    let s = w("survey_crlf.csv", b"id,text,options\r\n1,a,x | y\r\n\r\n2,b,z\r\n");
    assert!(vsm(&s).contains("survey_crlf.csv:4: item 2: options"));
    // A 50 MB field is not echoed back.
    let mut big = b"item,answer\n".to_vec();
    big.extend(std::iter::repeat_n(b'7', 50_000_000));
    big.extend(b",3\n");
    let f = w("big.csv", &big);
    fails_with(&["score", "vsm13", "--country", "SAU", "--answers", &f], "(50000000 bytes in all)");

    // WVS answers as JSON: 3.0 counts like 3 and "3"; a BOM is skipped; {} and null are JSON.
    let score_wvs = |f: &str| deopt(&["score", "wvs", "--country", "USA", "--responses", f, "--json"]);
    let a = w("int.json", br#"[{"Q_id": "Q1", "answer": 3}, {"Q_id": "Q2", "answer": "2"}]"#);
    let b = w(
        "float.json",
        b"\xef\xbb\xbf[{\"Q_id\": \"Q1\", \"answer\": 3.0}, {\"Q_id\": \"Q2\", \"answer\": \"2\"}]",
    );
    let (a, b) = (score_wvs(&a), score_wvs(&b));
    assert!(a.status.success() && b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let va: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let vb: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    assert_eq!(va["cas"], vb["cas"]);
    assert_eq!(va["unparsable"], vb["unparsable"]);
    for (name, text) in [("obj.json", &b"{}"[..]), ("null.json", b"null"), ("bomobj.json", b"\xef\xbb\xbf{}")]
    {
        let f = w(name, text);
        fails_with(&["score", "wvs", "--country", "USA", "--responses", &f], "expected an array of");
    }
    // An instrument that does not fit the reference answers it is scored with.
    let wvs = deopt::data::embedded::file("surveys/wvs7.csv").text;
    let short = wvs.replacen(
        "Very important | Rather important | Not very important | Not at all important",
        "Very important | Rather important",
        1,
    );
    let s = w("wvs_short.csv", short.as_bytes());
    let r = w("q1.csv", b"Q1,1\n");
    fails_with(
        &["score", "wvs", "--country", "USA", "--responses", &r, "--survey-file", &s],
        "item Q1: options code 1..2: expected them to cover code 3",
    );
}

#[test]
fn messages_are_one_deopt_line() {
    // Negative numbers reach the flag's own check instead of clap's "unexpected argument".
    let line = fails(&["run", "--country", "SAU", "--seed", "-1"]);
    assert!(line.contains("'-1' for '--seed <SEED>'") && !line.contains("unexpected argument"), "{line}");
    fails_with(&["run", "--country", "SAU", "--pop", "-4"], "--pop");
    // clap's own errors are one deopt line too, with the possible values.
    fails_with(&["eval", "--country", "SAU", "--baseline", "nope"], "possible values:");
    // Flags that would do nothing in this mode.
    let run = finished_run().join("best_prompt.safetensors");
    fails_with(
        &["eval", "--country", "SAU", "--prompt", run.to_str().unwrap(), "--tokens", "3"],
        "--tokens: has no effect here: expected only with --baseline random-soft",
    );
    fails_with(&["eval", "--country", "SAU", "--max-tokens", "3"], "--max-tokens: has no effect here");
    fails_with(
        &["eval", "--country", "SAU", "--answers", "generate", "--max-tokens", "0"],
        "--max-tokens 0: expected at least one",
    );
    fails_with(
        &["run", "--country", "USA", "--survey", "wvs", "--constants", "5"],
        "--constants: has no effect on --survey wvs",
    );
    fails_with(
        &["eval", "--country", "SAU", "--metric", "distribution"],
        "--metric: has no effect on --survey vsm13",
    );
    let tmp = tmpdir("modeldir");
    fails_with(
        &["eval", "--country", "SAU", "--model", tmp.to_str().unwrap()],
        "a directory: expected a GGUF file",
    );
    // llama.cpp's own messages stay off stderr; its error is quoted in deopt's line.
    let dir = tmpdir("gguf");
    let bad = dir.join("bad.gguf");
    let mut bytes = b"GGUF".to_vec();
    bytes.extend([0xff; 64]);
    std::fs::write(&bad, bytes).unwrap();
    fails_with(&["eval", "--country", "SAU", "--model", bad.to_str().unwrap()], "llama.cpp: ");
    // Loss kinds by their flag names, not Rust's.
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("surveys/examples/vsm13_neutral.csv");
    let o = deopt(&[
        "score",
        "vsm13",
        "--country",
        "SAU",
        "--answers",
        ex.to_str().unwrap(),
        "--loss",
        "squared-l2",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("loss (squared-l2 over") && !out.contains("SquaredL2"), "{out}");
}
