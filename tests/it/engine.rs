//! The scoring engine on the real default model (Gemma 3 270M, F16 copy): sharing must not
//! change answers, batching must not change answers, probabilities must be proper.

use crate::common::{model, serial};

use deopt::data::survey::{Survey, SurveyKind};
use deopt::engine::{Engine, EngineConfig, Plan, CPU_WAVE};
use deopt::llama::Model;
use deopt::prompt::render::Layout;
use deopt::prompt::softprompt::SoftPrompt;
use deopt::score::item_score::ItemScore;

fn vsm() -> Survey {
    Survey::builtin(SurveyKind::Vsm13).unwrap()
}

/// A soft prompt of `rows` rows drawn from the scaled embeddings of some vocabulary tokens,
/// shifted by a seed so different seeds give different prompts.
fn prompt(m: &Model, rows: usize, seed: u32) -> SoftPrompt {
    let toks: Vec<i32> = (0..rows as i32).map(|r| 1000 + (seed as i32) * 37 + r * 101).collect();
    let data = m.token_embeddings().scaled_rows(&toks).unwrap();
    SoftPrompt::new(rows, m.n_embd_inp(), data).unwrap()
}

fn assert_proper(scores: &[ItemScore]) {
    for s in scores {
        let sum: f64 = s.probs.iter().sum();
        assert!((sum - 1.0).abs() < 1e-9, "probabilities sum to {sum}");
        assert!(s.probs.iter().all(|p| (0.0..=1.0).contains(p)));
        assert!(s.label_mass > 0.0 && s.label_mass <= 1.0 + 1e-9, "mass {}", s.label_mass);
    }
}

fn max_diff(a: &[ItemScore], b: &[ItemScore]) -> f64 {
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| x.probs.iter().zip(&y.probs).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f64::max)
}

#[test]
fn answers_do_not_depend_on_batch_or_order() {
    let _g = serial();
    let m = model();
    let survey = vsm();
    let items: Vec<_> = survey.items.iter().collect();
    let plan = Plan::new(m, &items, &Layout::default()).unwrap();
    let prompts: Vec<SoftPrompt> = (0..8).map(|s| prompt(m, 10, s)).collect();
    let refs: Vec<&SoftPrompt> = prompts.iter().collect();
    let mut engine = Engine::new(m, EngineConfig::default()).unwrap();
    let all = engine.score(&plan, &refs).unwrap();
    for s in &all {
        assert_proper(s);
    }
    // Alone, first and last in a batch of 8 (reversed order): bit-identical.
    let target = &prompts[5];
    let alone = engine.score(&plan, &[target]).unwrap().remove(0);
    let mut order: Vec<&SoftPrompt> =
        refs.iter().rev().copied().filter(|p| !std::ptr::eq(*p, target)).collect();
    order.insert(0, target);
    let first = engine.score(&plan, &order).unwrap().remove(0);
    order.remove(0);
    order.push(target);
    let last = engine.score(&plan, &order).unwrap().pop().unwrap();
    assert_eq!(alone, all[5]);
    assert_eq!(first, all[5]);
    assert_eq!(last, all[5]);
    // A fresh engine with another batch size gives the same answers too.
    let mut small = Engine::new(m, EngineConfig { batch: 64, ..EngineConfig::default() }).unwrap();
    let again = small.score(&plan, &[target]).unwrap().remove(0);
    assert!(max_diff(&again, &all[5]) < 1e-3, "batch size changed answers by {}", max_diff(&again, &all[5]));
    // Different prompts give different answers (the soft prompt matters).
    assert!(max_diff(&all[0], &all[1]) > 1e-4);
    let st = engine.stats();
    assert!(st.logical > 2 * st.computed, "sharing: {} logical vs {} computed", st.logical, st.computed);
}

/// The batched schedule (several prompts per decode call) is deterministic for a given
/// grouping, stays within the drift README documents of the exact schedule, and needs fewer
/// decode calls.
#[test]
fn batched_schedule_agrees_with_exact_within_documented_drift() {
    let _g = serial();
    let m = model();
    let survey = vsm();
    let items: Vec<_> = survey.items.iter().take(12).collect();
    let plan = Plan::new(m, &items, &Layout::default()).unwrap();
    let prompts: Vec<SoftPrompt> = (0..6).map(|s| prompt(m, 10, s)).collect();
    let refs: Vec<&SoftPrompt> = prompts.iter().collect();
    let mut exact = Engine::new(m, EngineConfig::default()).unwrap();
    let want = exact.score(&plan, &refs).unwrap();
    let mut batched = Engine::new(m, EngineConfig { prompt_group: 3, ..EngineConfig::default() }).unwrap();
    let got = batched.score(&plan, &refs).unwrap();
    assert_eq!(got.len(), 6);
    let mut drift: f64 = 0.0;
    for (g, w) in got.iter().zip(&want) {
        assert_proper(g);
        drift = drift.max(max_diff(g, w));
    }
    // README, "Exact and batched scoring": at most 5e-3 on the default (F16) model.
    assert!(drift < 5e-3, "batched answers moved by {drift}");
    // Same grouping, same answers, bit for bit (a run is reproducible in batched mode).
    let mut again = Engine::new(m, EngineConfig { prompt_group: 3, ..EngineConfig::default() }).unwrap();
    assert_eq!(again.score(&plan, &refs).unwrap(), got);
    // The prompts' answers are told apart (no mix-up between a group's prompts): each batched
    // answer is nearer its own exact answer than any other prompt's.
    for (i, g) in got.iter().enumerate() {
        let own = max_diff(g, &want[i]);
        for (j, w) in want.iter().enumerate().filter(|(j, _)| *j != i) {
            assert!(max_diff(g, w) > own, "prompt {i}'s batched answers are closer to prompt {j}'s");
        }
    }
    // A group larger than the context holds is cut to what fits (each prompt keeps its own
    // cells): with room for two prompts, groups of 6 score as groups of 2.
    let two = exact.cells_needed(&plan, 10) * 2;
    let cfg = |g| EngineConfig { prompt_group: g, max_ctx: Some(two), ..EngineConfig::default() };
    let capped = Engine::new(m, cfg(6)).unwrap().score(&plan, &refs).unwrap();
    assert_eq!(capped, Engine::new(m, cfg(2)).unwrap().score(&plan, &refs).unwrap());
    // The narrower waves a CPU uses stay within the same drift, in more, smaller calls.
    let mut narrow =
        Engine::new(m, EngineConfig { prompt_group: 3, wave: Some(CPU_WAVE), ..EngineConfig::default() })
            .unwrap();
    for (g, w) in narrow.score(&plan, &refs).unwrap().iter().zip(&want) {
        assert!(max_diff(g, w) < 5e-3, "answers moved by {} in waves of {CPU_WAVE}", max_diff(g, w));
    }
    let (e, b) = (exact.stats(), batched.stats());
    assert!(narrow.stats().decode_calls > b.decode_calls);
    assert_eq!(e.logical, b.logical);
    assert_eq!(e.computed, b.computed, "grouping must not change what is computed");
    assert!(
        b.decode_calls * 2 < e.decode_calls,
        "decode calls: batched {} vs exact {}",
        b.decode_calls,
        e.decode_calls
    );
}

#[test]
fn shared_prefix_scoring_equals_unshared() {
    let _g = serial();
    let m = model();
    let survey = vsm();
    let items: Vec<_> = survey.items.iter().collect();
    let plan = Plan::new(m, &items, &Layout::default()).unwrap();
    let p = prompt(m, 6, 3);
    let mut engine = Engine::new(m, EngineConfig::default()).unwrap();
    let shared = engine.score(&plan, &[&p]).unwrap().remove(0);
    // Each item on its own plan: nothing shared between items.
    let mut worst: f64 = 0.0;
    for (i, item) in items.iter().enumerate() {
        let single = Plan::new(m, &[*item], &Layout::default()).unwrap();
        let mut e = Engine::new(m, EngineConfig::default()).unwrap();
        let alone = e.score(&single, &[&p]).unwrap().remove(0);
        worst = worst.max(max_diff(&alone, &shared[i..i + 1]));
    }
    assert!(worst < 2e-3, "shared vs unshared probabilities differ by {worst}");
}

#[test]
fn plan_larger_than_the_context_is_scored_in_pieces() {
    let _g = serial();
    let m = model();
    let survey = vsm();
    let items: Vec<_> = survey.items.iter().collect();
    let plan = Plan::new(m, &items, &Layout::default()).unwrap();
    let p = prompt(m, 6, 5);
    let mut whole = Engine::new(m, EngineConfig::default()).unwrap();
    let want = whole.score(&plan, &[&p]).unwrap().remove(0);
    // Room for a third of the plan: it is cut into runs of items that fit, same answers.
    let third = whole.cells_needed(&plan, 6) / 3;
    let cfg = EngineConfig { max_ctx: Some(third), ..EngineConfig::default() };
    let mut cut = Engine::new(m, cfg.clone()).unwrap();
    let got = cut.score(&plan, &[&p]).unwrap().remove(0);
    assert_eq!(got.len(), want.len());
    assert_proper(&got);
    assert!(max_diff(&got, &want) < 2e-3, "pieces vs whole plan differ by {}", max_diff(&got, &want));
    assert!(cut.stats().decode_calls > whole.stats().decode_calls, "the plan was not cut");
    // The same pieces again: bit for bit.
    assert_eq!(Engine::new(m, cfg).unwrap().score(&plan, &[&p]).unwrap().remove(0), got);
    // One item that does not fit on its own is an error that says what to shorten.
    let one = Plan::new(m, &items[..1], &Layout::default()).unwrap();
    let tiny = EngineConfig { max_ctx: Some(8), ..EngineConfig::default() };
    let err = Engine::new(m, tiny).unwrap().score(&one, &[&p]).unwrap_err().to_string();
    assert!(err.contains("tokens of context") && err.contains("shorten"), "{err}");
}

#[test]
fn zero_length_prompt_equals_no_prompt_and_rows_equal_tokens() {
    let _g = serial();
    let m = model();
    let survey = vsm();
    let items: Vec<_> = survey.items.iter().take(6).collect();
    let mut engine = Engine::new(m, EngineConfig::default()).unwrap();
    let with_slot = Plan::new(m, &items, &Layout::default()).unwrap();
    let without = Plan::new(m, &items, &Layout { with_soft: false, ..Layout::default() }).unwrap();
    let empty = SoftPrompt::empty(m.n_embd_inp());
    let a = engine.score(&with_slot, &[&empty]).unwrap().remove(0);
    let b = engine.score(&without, &[&empty]).unwrap().remove(0);
    assert!(max_diff(&a, &b) < 1e-3, "T=0 vs no soft prompt: {}", max_diff(&a, &b));

    // Scaled token-embedding rows fed as a soft prompt answer like the same text as tokens.
    let text = "You are a person from Saudi Arabia.";
    let toks = m.tokenize(text, false, false).unwrap();
    let rows = SoftPrompt::new(toks.len(), m.n_embd_inp(), m.token_embeddings().scaled_rows(&toks).unwrap())
        .unwrap();
    let soft = engine.score(&with_slot, &[&rows]).unwrap().remove(0);
    let textual = Layout { with_soft: false, system: None, ..Layout::default() };
    // Same position: the text at the start of the user message, where the soft prompt goes.
    let mut shifted: Vec<deopt::data::survey::Item> = items.iter().map(|it| (*it).clone()).collect();
    let _ = &mut shifted;
    let plan_text = Plan::new(m, &items, &textual).unwrap();
    let mut tokens_plan = plan_text.clone();
    for it in &mut tokens_plan.items {
        // Insert the text tokens where the soft prompt would be (right after the `before` part).
        let before_len = with_slot.items[0].before.len();
        it.before.truncate(before_len);
        let mut after = with_slot.items.iter().find(|x| x.id == it.id).unwrap().after.clone();
        let mut mid = toks.clone();
        mid.append(&mut after);
        it.after = mid;
    }
    let tok = engine.score(&tokens_plan, &[&empty]).unwrap().remove(0);
    assert!(max_diff(&soft, &tok) < 1e-3, "rows vs tokens: {}", max_diff(&soft, &tok));
}
