//! The gradient path's backend on the real models: candle's option probabilities against the
//! llama.cpp engine's, and the full loss gradient against finite differences, for Gemma 3
//! (the default model) and Llama (SmolLM2-135M-Instruct).

use candle_core::{Device, Tensor, Var};
use deopt::data::survey::{Survey, SurveyKind};
use deopt::engine::{Engine, EngineConfig, Plan};
use deopt::grad::model::GradModel;
use deopt::grad::scorer::GradScorer;
use deopt::llama::Model;
use deopt::prompt::init::{self, InitKind};
use deopt::prompt::render::Layout;
use deopt::prompt::softprompt::SoftPrompt;
use deopt::run::spec::LayoutSpec;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::common::{model, serial, smollm2_f16, smollm2_path};

/// Per architecture: the engine's model (an F16 file: the default model's F16 copy, and an
/// F16 copy of SmolLM2's Q4_1 file, because llama.cpp's quantized matmuls also quantize the
/// activations: on SmolLM2 that alone moves option probabilities by 3.5e-2) and the GGUF the
/// gradient path loads (the same weights, dequantized).
fn models() -> Vec<(&'static str, &'static Model, std::path::PathBuf)> {
    let gemma = model();
    vec![("gemma3", gemma, gemma.path().to_path_buf()), ("smollm2", smollm2_f16(), smollm2_path())]
}

fn plans(m: &Model) -> (Plan, Plan) {
    let survey = Survey::builtin(SurveyKind::Vsm13).unwrap();
    let items: Vec<_> = survey.items.iter().collect();
    let layout = LayoutSpec::default().layout();
    let bare = Layout { with_soft: false, ..layout.clone() };
    (Plan::new(m, &items, &layout).unwrap(), Plan::new(m, &items, &bare).unwrap())
}

#[test]
fn candle_option_probabilities_match_the_engine_on_all_vsm13_items() {
    let _g = serial();
    for (name, m, path) in models() {
        let gm = GradModel::load(&path).unwrap();
        let scorer = GradScorer::new(&gm, m).unwrap();
        let (plan, bare) = plans(m);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let prompt = init::draw(m, InitKind::Normal, 10, &mut rng).unwrap();
        let mut engine = Engine::new(m, EngineConfig::default()).unwrap();
        let empty = SoftPrompt::empty(m.n_embd_inp());
        for (what, plan, p) in [("random soft prompt", &plan, &prompt), ("no prompt", &bare, &empty)] {
            let want = engine.score(plan, &[p]).unwrap().remove(0);
            let got = scorer.score(plan, p, 8).unwrap();
            assert_eq!(got.len(), 24);
            let worst = want
                .iter()
                .zip(&got)
                .flat_map(|(a, b)| a.probs.iter().zip(&b.probs).map(|(x, y)| (x - y).abs()))
                .fold(0.0, f64::max);
            eprintln!("{name}, {what}: largest probability difference {worst:.2e}");
            assert!(worst < 3e-3, "{name}, {what}: candle and llama.cpp differ by {worst}");
        }
    }
}

/// Sum over items of weight . probabilities.
fn weighted(probs: &[(Tensor, Option<Tensor>)], weights: &[Vec<f64>]) -> Tensor {
    let mut acc: Option<Tensor> = None;
    for ((p, _), w) in probs.iter().zip(weights) {
        let t = (p * Tensor::new(w.as_slice(), &Device::Cpu).unwrap()).unwrap().sum_all().unwrap();
        acc = Some(match acc {
            None => t,
            Some(a) => (a + t).unwrap(),
        });
    }
    acc.unwrap()
}

#[test]
fn the_full_loss_gradient_matches_finite_differences_on_the_real_models() {
    let _g = serial();
    for (name, m, path) in models() {
        // In f64, so the central differences are not lost in rounding (f32 and f64 option
        // probabilities agree to about 2e-6 on both models).
        let gm = GradModel::load_as(&path, candle_core::DType::F64).unwrap();
        let scorer = GradScorer::new(&gm, m).unwrap();
        let (plan, _) = plans(m);
        let items: Vec<_> = plan.items[..3].iter().collect();
        let prep = scorer.prepare(&items, 4).unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let prompt = init::draw(m, InitKind::Vocab, 4, &mut rng).unwrap();
        let d = m.n_embd_inp();
        // A fixed random weighting of every option probability: any smooth loss of them.
        let weights: Vec<Vec<f64>> =
            items.iter().map(|it| (0..it.labels.len()).map(|_| rng.gen::<f64>() - 0.5).collect()).collect();
        let loss = |soft: &Tensor| -> f64 {
            let probs = scorer.option_probs(&prep, Some(soft)).unwrap();
            weighted(&probs, &weights).to_scalar::<f64>().unwrap()
        };
        let x0 = Tensor::from_slice(prompt.data(), (4, d), &Device::Cpu)
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap();
        let var = Var::from_tensor(&x0).unwrap();
        let probs = scorer.option_probs(&prep, Some(var.as_tensor())).unwrap();
        let grads = weighted(&probs, &weights).backward().unwrap();
        let g: Vec<f64> = grads
            .get(var.as_tensor())
            .expect("no gradient reached the soft prompt")
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let xnorm = prompt.data().iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        for k in 0..3 {
            let u: Vec<f64> = (0..4 * d).map(|_| rng.gen::<f64>() - 0.5).collect();
            let unorm = u.iter().map(|v| v * v).sum::<f64>().sqrt();
            let h = 1e-4 * xnorm / unorm;
            let shifted = |sign: f64| {
                let v: Vec<f64> =
                    prompt.data().iter().zip(&u).map(|(x, du)| f64::from(*x) + sign * h * du).collect();
                loss(&Tensor::from_vec(v, (4, d), &Device::Cpu).unwrap())
            };
            let fd = (shifted(1.0) - shifted(-1.0)) / (2.0 * h);
            let an: f64 = g.iter().zip(&u).map(|(a, b)| a * b).sum();
            let rel = (an - fd).abs() / fd.abs().max(1e-12);
            eprintln!("{name}: direction {k}: analytic {an:.6e}, central difference {fd:.6e}, relative error {rel:.2e}");
            assert!(rel < 1e-2, "{name}: direction {k}: gradient {an} vs finite difference {fd}");
        }
    }
}
