//! `deopt export` on the real default model: every format reads back through `deopt eval
//! --prompt` with bit-equal fitness, the PEFT directory's layout, and bad input.

use crate::common::{deopt, fails, model, serial, tmpdir};

use std::path::Path;

use rand::SeedableRng;

/// A minimal run directory: config.json naming the default model and a best prompt drawn from
/// the vocabulary (what `deopt run` writes, without spending minutes on evolution).
fn fake_run(dir: &Path, rows: usize) -> deopt::prompt::softprompt::SoftPrompt {
    let m = deopt::provision::model_store::resolve_model(None, deopt::provision::model_store::Precision::F16)
        .unwrap();
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(11);
    let p = deopt::prompt::init::draw(model(), deopt::prompt::init::InitKind::Vocab, rows, &mut rng).unwrap();
    let config = serde_json::json!({
        "format": "deopt-run-1",
        "model": {"path": m.path.display().to_string(), "sha256": m.sha256, "name": m.display_name, "n_embd": 640},
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    let meta = std::collections::HashMap::from([("country".to_string(), "SAU".to_string())]);
    p.save(&dir.join("best_prompt.safetensors"), &meta).unwrap();
    p
}

fn eval_fitness(prompt: &Path) -> String {
    let out = deopt(&["eval", "--country", "SAU", "--prompt", prompt.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Compare the printed number: bit-equal floats print identically.
    v["fitness"].to_string()
}

#[test]
fn every_format_round_trips_with_identical_fitness() {
    let _serial = serial(); // uses both cores
    let dir = tmpdir("roundtrip");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let p = fake_run(&run, 3);
    let reference = eval_fitness(&run.join("best_prompt.safetensors"));
    for (format, path) in
        [("safetensors", "safetensors/prompt.safetensors"), ("peft", "peft"), ("npy", "npy/prompt.npy")]
    {
        let out_dir = dir.join(format);
        let out =
            deopt(&["export", run.to_str().unwrap(), "--format", format, "--out", out_dir.to_str().unwrap()]);
        assert!(out.status.success(), "{format}: {}", String::from_utf8_lossy(&out.stderr));
        let exported = dir.join(path);
        let (back, meta) = deopt::output::prompt_export::load_any(&exported).unwrap();
        assert_eq!(back, p, "{format}: values differ");
        if format != "peft" {
            assert_eq!(meta.get("country").map(String::as_str), Some("SAU"), "{format}: {meta:?}");
        }
        assert_eq!(eval_fitness(&exported), reference, "{format}: fitness differs");
    }
}

#[test]
fn peft_directory_has_exactly_the_adapter_files() {
    let _serial = serial(); // uses both cores
    let dir = tmpdir("peft");
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let p = fake_run(&run, 2);
    let out_dir = dir.join("adapter");
    let out =
        deopt(&["export", run.to_str().unwrap(), "--format", "peft", "--out", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut names: Vec<String> =
        std::fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["adapter_config.json", "adapter_model.safetensors"]);
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["peft_type"], "PROMPT_TUNING");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(cfg["num_virtual_tokens"], 2);
    assert_eq!(cfg["token_dim"], 640);
    assert_eq!(cfg["num_transformer_submodules"], 1);
    assert_eq!(cfg["num_layers"], 18);
    assert_eq!(cfg["num_attention_heads"], 4);
    assert_eq!(cfg["prompt_tuning_init"], "RANDOM");
    assert_eq!(cfg["inference_mode"], true);
    assert!(cfg["base_model_name_or_path"].as_str().unwrap().to_lowercase().contains("gemma"), "{cfg}");
    let bytes = std::fs::read(out_dir.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.names(), vec!["prompt_embeddings"]);
    let t = st.tensor("prompt_embeddings").unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    assert_eq!(t.shape(), &[2, 640]);
    let vals: Vec<f32> =
        t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(vals, p.data());
}

#[test]
fn bad_input_gives_one_line() {
    let _serial = serial(); // uses both cores
    let dir = tmpdir("bad");
    let err = fails(&["export", dir.to_str().unwrap(), "--format", "npy", "--out", "/tmp/x"]);
    assert!(err.contains("not a deopt run") && err.contains("config.json"), "{err}");
    let err = fails(&["export", "/nonexistent/run", "--format", "npy", "--out", "/tmp/x"]);
    assert!(err.contains("/nonexistent/run"), "{err}");
    // clap names the bad value and lists the valid ones.
    let out = deopt(&["export", dir.to_str().unwrap(), "--format", "onnx", "--out", "/tmp/x"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(err.contains("'onnx'") && err.contains("possible values: safetensors, peft, npy"), "{err}");
    // A run whose --out is under a regular file cannot be written.
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    fake_run(&run, 1);
    let blocker = dir.join("file");
    std::fs::write(&blocker, "x").unwrap();
    let out = blocker.join("sub");
    let err = fails(&["export", run.to_str().unwrap(), "--format", "peft", "--out", out.to_str().unwrap()]);
    assert!(err.contains("cannot create the output directory"), "{err}");
}
