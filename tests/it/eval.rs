//! `deopt eval` on the real default model: baselines, prompt files, and bad input.

use crate::common::{deopt, deopt_json, fails, serial, tmpdir};

fn dims(v: &serde_json::Value) -> Vec<f64> {
    v["dimensions"].as_array().unwrap().iter().map(|d| d["model"].as_f64().unwrap()).collect()
}

#[test]
fn baselines_none_and_p1_give_different_dimensions() {
    let _serial = serial(); // uses both cores
    let none = deopt_json(&["eval", "--country", "SAU", "--survey", "vsm13", "--baseline", "none", "--json"]);
    let p1 = deopt_json(&["eval", "--country", "SAU", "--survey", "vsm13", "--baseline", "p1", "--json"]);
    let (a, b) = (dims(&none), dims(&p1));
    assert_eq!(a.len(), 6);
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 0.1), "{a:?} vs {b:?}");
    assert!(none["loss"].as_f64().unwrap() > 0.0);
    // The plain report shows the same loss.
    let out = deopt(&["eval", "--country", "SAU", "--baseline", "none"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("loss (l2 over PDI IDV MAS UAI LTO IVR)"), "{text}");
}

#[test]
fn prompt_file_round_trips_and_per_item_probabilities_sum_to_one() {
    let _serial = serial(); // uses both cores
    let dir = tmpdir("prompt");
    // A random soft prompt, saved and read back, answers as the random-soft baseline does.
    let rs = deopt_json(&[
        "eval",
        "--country",
        "SAU",
        "--baseline",
        "random-soft",
        "--tokens",
        "3",
        "--seed",
        "7",
        "--json",
        "--per-item",
    ]);
    for it in rs["items"].as_array().unwrap() {
        let s: f64 = it["probs"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).sum();
        assert!((s - 1.0).abs() < 1e-9);
    }
    let model = crate::common::model();
    use rand::SeedableRng;
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(7);
    let p = deopt::prompt::init::draw(model, deopt::prompt::init::InitKind::Vocab, 3, &mut rng).unwrap();
    let path = dir.join("p.safetensors");
    p.save(&path, &Default::default()).unwrap();
    let (back, meta) = deopt::prompt::softprompt::SoftPrompt::load(&path).unwrap();
    assert_eq!(back, p);
    assert_eq!(meta["format"], "deopt-softprompt");
    let fromfile = deopt_json(&["eval", "--country", "SAU", "--prompt", path.to_str().unwrap(), "--json"]);
    assert_eq!(fromfile["loss"], rs["loss"]);
}

#[test]
fn bad_model_and_prompt_files_give_one_clear_line() {
    let _serial = serial(); // uses both cores
    let dir = tmpdir("bad");
    let err = fails(&["eval", "--country", "SAU", "--model", "/nonexistent/model.gguf"]);
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
    let text = dir.join("notes.gguf");
    std::fs::write(&text, "this is not a model\n").unwrap();
    let err = fails(&["eval", "--country", "SAU", "--model", text.to_str().unwrap()]);
    assert!(err.contains("notes.gguf") && err.to_lowercase().contains("gguf"), "{err}");
    // The first MiB of the real model: a GGUF header whose data is missing.
    let m = deopt::provision::model_store::resolve_model(
        None,
        deopt::provision::model_store::Precision::Original,
    )
    .unwrap();
    let bytes = std::fs::read(&m.path).unwrap();
    let cut = dir.join("truncated.gguf");
    std::fs::write(&cut, &bytes[..1 << 20]).unwrap();
    let err = fails(&["eval", "--country", "SAU", "--model", cut.to_str().unwrap()]);
    assert!(err.contains("truncated.gguf"), "{err}");

    // Prompt files: wrong width, wrong rank, not safetensors.
    let narrow = deopt::prompt::softprompt::SoftPrompt::new(2, 100, vec![0.5; 200]).unwrap();
    let p = dir.join("narrow.safetensors");
    narrow.save(&p, &Default::default()).unwrap();
    let err = fails(&["eval", "--country", "SAU", "--prompt", p.to_str().unwrap()]);
    assert!(err.contains("100 wide") && err.contains("640 wide"), "{err}");
    let junk = dir.join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors at all").unwrap();
    let err = fails(&["eval", "--country", "SAU", "--prompt", junk.to_str().unwrap()]);
    assert!(err.contains("junk.safetensors") && err.contains("not a safetensors file"), "{err}");
    let rank3 = dir.join("rank3.safetensors");
    let data = vec![0u8; 4 * 2 * 2 * 640];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2, 640], &data).unwrap();
    safetensors::serialize_to_file([("prompt", view)], &None, &rank3).unwrap();
    let err = fails(&["eval", "--country", "SAU", "--prompt", rank3.to_str().unwrap()]);
    assert!(err.contains("shape [2, 2, 640]") && err.contains("[T, n_embd]"), "{err}");

    // A context too small for the layout.
    let err = fails(&["eval", "--country", "SAU", "--baseline", "p1", "--ctx", "64"]);
    assert!(err.contains("needs") && err.contains("context limit allows 64"), "{err}");
}

#[test]
fn generate_mode_parses_greedy_answers_consistent_with_the_distribution() {
    let _serial = serial(); // uses both cores
    let v = deopt_json(&["eval", "--country", "SAU", "--answers", "generate", "--per-item", "--json"]);
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 24);
    let mut checked = 0;
    for it in items {
        let text = it["generated"].as_str().unwrap();
        let probs: Vec<f64> = it["probs"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect();
        let mass = it["label_mass"].as_f64().unwrap();
        let (k, p) = probs.iter().enumerate().fold((0, 0.0), |b, (k, p)| if *p > b.1 { (k, *p) } else { b });
        // A label holding more than half of all probability is the greedy first token.
        if p * mass > 0.5 {
            assert_eq!(deopt::score::metrics::parse_culturespa_answer(text), Some(k as i32 + 1), "{it}");
            assert_eq!(it["answer"].as_f64().unwrap(), (k + 1) as f64);
            checked += 1;
        }
    }
    assert!(checked > 0, "no item had a dominant label");
    assert!(v["loss"].as_f64().unwrap() >= 0.0);
    // Optimisation refuses generation-based answers.
    let out = deopt(&["run", "--country", "SAU", "--answers", "generate", "--gens", "1", "--pop", "4"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success() && err.contains("--answers generate"), "{err}");
}
