//! Gradients of the scores with respect to the option probabilities, for the gradient path:
//! the fitness (what DE minimises) and the cross-entropy to target answer distributions. Plain
//! data in and out; the backend turns them into a gradient with respect to the prompt.

use anyhow::{bail, Result};

use crate::data::dimension::Dimension;
use crate::score::fitness::{AnswerMode, Evaluation, Target, Task};
use crate::score::item_score::ItemScore;
use crate::score::metrics::LossKind;

/// A score and its gradient: `grad[k][o]` is d score / d (probability of option o of the k-th
/// scored item), the probabilities taken as free variables (the backend differentiates the
/// normalisation).
#[derive(Debug, Clone)]
pub struct ScoreGradient {
    /// The value.
    pub value: f64,
    /// The gradient.
    pub grad: Vec<Vec<f64>>,
}

/// The fitness of `scores` (items `items` of the task's survey) and its gradient.
///
/// The answer of an item is its expected code, linear in the probabilities. VSM13: each index
/// is a fixed linear map of the answers, and the loss (L2, squared L2, L1) is differentiated
/// in closed form. WVS: the scores are piecewise smooth in the probabilities and are
/// differentiated by central differences of [`Task::evaluate`] itself in f64 (step 1e-6),
/// so every WVS metric has a gradient wherever it is differentiable.
///
/// # Errors
/// Argmax answers (not differentiable); what [`Task::evaluate`] refuses.
pub fn fitness_gradient(
    task: &Task,
    items: &[usize],
    scores: &[ItemScore],
) -> Result<(Evaluation, ScoreGradient)> {
    if task.mode != AnswerMode::Expected {
        bail!("answers {:?}: the gradient path needs expected answers (argmax and generated answers have no gradient)", task.mode);
    }
    let eval = task.evaluate(items, scores)?;
    let grad = match &task.target {
        Target::Hofstede { row, loss, .. } => {
            let l = eval.loss.as_ref().expect("VSM13 evaluations carry their loss");
            let dims = eval.dimensions.expect("VSM13 evaluations carry their indices");
            let target = row.values();
            // d loss / d index, for the dimensions in the loss.
            let mut d_index = [0.0; 6];
            for d in &l.used {
                let i = d.index();
                let e = dims[i].unwrap_or(f64::NAN) - target[i].unwrap_or(f64::NAN);
                d_index[i] = match loss {
                    LossKind::L2 if l.loss > 0.0 => e / l.loss,
                    LossKind::L2 => 0.0,
                    LossKind::SquaredL2 => 2.0 * e,
                    LossKind::L1 => e.signum() * f64::from(u8::from(e != 0.0)),
                };
            }
            items
                .iter()
                .zip(scores)
                .map(|(&i, s)| {
                    let item = &task.survey.items[i];
                    let d_answer =
                        item.term.map_or(0.0, |(d, coef): (Dimension, f64)| d_index[d.index()] * coef);
                    (0..s.probs.len()).map(|o| d_answer * f64::from(item.code(o))).collect()
                })
                .collect()
        }
        Target::Selfgen { .. } => {
            let ts = synthetic_targets(task, items)?;
            let refs: Vec<&[f64]> = ts.iter().map(Vec::as_slice).collect();
            cross_entropy(&refs, scores).grad
        }
        Target::Wvs { .. } => {
            let h = 1e-6;
            let mut work: Vec<ItemScore> = scores.to_vec();
            let mut grad = Vec::with_capacity(scores.len());
            for k in 0..scores.len() {
                let mut row = Vec::with_capacity(scores[k].probs.len());
                for o in 0..scores[k].probs.len() {
                    let p = scores[k].probs[o];
                    work[k].probs[o] = p + h;
                    let plus = task.evaluate(items, &work)?.fitness;
                    work[k].probs[o] = p - h;
                    let minus = task.evaluate(items, &work)?.fitness;
                    work[k].probs[o] = p;
                    row.push((plus - minus) / (2.0 * h));
                }
                grad.push(row);
            }
            grad
        }
    };
    Ok((eval.clone(), ScoreGradient { value: eval.fitness, grad }))
}

/// Mean cross-entropy `-mean_k sum_o target[k][o] ln p[k][o]` of the model's option
/// distributions against target distributions, and its gradient. Probabilities are floored at
/// 1e-12 so a zero never gives an infinite loss.
pub fn cross_entropy(targets: &[&[f64]], scores: &[ItemScore]) -> ScoreGradient {
    let n = scores.len().max(1) as f64;
    let mut value = 0.0;
    let grad = targets
        .iter()
        .zip(scores)
        .map(|(t, s)| {
            t.iter()
                .zip(&s.probs)
                .map(|(&tk, &pk)| {
                    let p = pk.max(1e-12);
                    value -= tk * p.ln() / n;
                    -tk / p / n
                })
                .collect()
        })
        .collect();
    ScoreGradient { value, grad }
}

/// The synthetic survey of the seed paper's gradient baseline: a target answer distribution
/// per item (in `items` order). VSM13: the item means that reproduce the country's Hofstede
/// scores exactly ([`crate::score::metrics::vsm_inverse`]), each as the maximum-entropy
/// distribution with that mean. WVS: the country's answer distribution over the item's
/// options (all zeros, so no loss, for an item without a reference answer). Self-generated
/// data: the kept culture-aware answers.
///
/// # Errors
/// Targets the item scale cannot reproduce.
pub fn synthetic_targets(task: &Task, items: &[usize]) -> Result<Vec<Vec<f64>>> {
    let survey = &task.survey;
    match &task.target {
        Target::Hofstede { row, constants, .. } => {
            let means = crate::score::metrics::vsm_inverse(survey, &row.values(), constants)
                .map_err(|e| anyhow::anyhow!("synthetic survey for {}: {e}", task.country.iso3))?;
            items
                .iter()
                .map(|&i| {
                    let it = &survey.items[i];
                    maxent_with_mean(it.first_code, it.n_options(), means[i])
                })
                .collect()
        }
        Target::Wvs { reference, .. } => Ok(items
            .iter()
            .map(|&i| {
                let it = &survey.items[i];
                match reference.get(&it.id.to_ascii_uppercase()) {
                    None => vec![0.0; it.n_options()],
                    Some(d) => {
                        let raw: Vec<f64> = (0..it.n_options()).map(|o| d.share(it.code(o))).collect();
                        let s: f64 = raw.iter().sum();
                        if s > 0.0 {
                            raw.into_iter().map(|x| x / s).collect()
                        } else {
                            raw
                        }
                    }
                }
            })
            .collect()),
        Target::Selfgen { targets, data } => items
            .iter()
            .map(|&i| {
                let id = &survey.items[i].id;
                targets
                    .get(id)
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("{}: no kept answer for question {id}", data.display()))
            })
            .collect(),
    }
}

/// The maximum-entropy distribution over `n` consecutive codes from `first` with the given
/// mean (`p_o` proportional to `exp(lambda * o)`), for a synthetic survey that reproduces
/// target item means: the least committal answer distribution with that mean.
///
/// # Errors
/// A mean outside the codes.
pub fn maxent_with_mean(first: i32, n: usize, mean: f64) -> Result<Vec<f64>> {
    let lo = f64::from(first);
    let hi = lo + n as f64 - 1.0;
    if !(lo..=hi).contains(&mean) || n == 0 {
        bail!("mean {mean}: expected a value within the codes {lo}..{hi}");
    }
    let dist = |lambda: f64| -> Vec<f64> {
        let w: Vec<f64> = (0..n).map(|o| (lambda * (o as f64 - (n as f64 - 1.0) / 2.0)).exp()).collect();
        let s: f64 = w.iter().sum();
        w.into_iter().map(|x| x / s).collect()
    };
    let mean_of = |p: &[f64]| p.iter().enumerate().map(|(o, q)| q * (lo + o as f64)).sum::<f64>();
    // The mean is increasing in lambda: bisect.
    let (mut a, mut b) = (-60.0, 60.0);
    for _ in 0..200 {
        let m = 0.5 * (a + b);
        if mean_of(&dist(m)) < mean {
            a = m;
        } else {
            b = m;
        }
    }
    Ok(dist(0.5 * (a + b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::spec::TaskSpec;
    use rand::{Rng, SeedableRng};

    fn random_scores(task: &Task, items: &[usize], seed: u64) -> Vec<ItemScore> {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
        items
            .iter()
            .map(|&i| {
                let w: Vec<f64> =
                    (0..task.survey.items[i].n_options()).map(|_| rng.gen::<f64>() + 0.05).collect();
                let s: f64 = w.iter().sum();
                ItemScore { probs: w.iter().map(|x| x / s).collect(), label_mass: 1.0 }
            })
            .collect()
    }

    fn check_against_differences(task: &Task, items: &[usize], seed: u64) {
        let scores = random_scores(task, items, seed);
        let (_, g) = fitness_gradient(task, items, &scores).unwrap();
        let h = 1e-6;
        let mut work = scores.clone();
        for k in 0..scores.len() {
            for o in 0..scores[k].probs.len() {
                let p = scores[k].probs[o];
                work[k].probs[o] = p + h;
                let plus = task.evaluate(items, &work).unwrap().fitness;
                work[k].probs[o] = p - h;
                let minus = task.evaluate(items, &work).unwrap().fitness;
                work[k].probs[o] = p;
                let fd = (plus - minus) / (2.0 * h);
                let an = g.grad[k][o];
                assert!((an - fd).abs() <= 1e-2 * fd.abs().max(1e-6), "item {k} option {o}: {an} vs {fd}");
            }
        }
    }

    #[test]
    fn the_vsm13_fitness_map_matches_finite_differences() {
        for loss in ["l2", "squared-l2", "l1"] {
            let mut spec = TaskSpec::new("SAU");
            spec.loss = serde_json::from_value(serde_json::json!(loss)).unwrap();
            let task = spec.load().unwrap();
            let all: Vec<usize> = (0..task.survey.items.len()).collect();
            check_against_differences(&task, &all, 1);
            // With items held out, only the complete dimensions count.
            check_against_differences(&task, &all[3..], 2);
        }
    }

    #[test]
    fn maxent_distributions_have_the_asked_mean() {
        for m in [1.0, 1.3, 2.5, 3.0, 4.9, 5.0] {
            let p = maxent_with_mean(1, 5, m).unwrap();
            let mean: f64 = p.iter().enumerate().map(|(o, q)| q * (1.0 + o as f64)).sum();
            assert!((mean - m).abs() < 1e-6, "{m}: {mean}");
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert!((maxent_with_mean(1, 5, 3.0).unwrap()[0] - 0.2).abs() < 1e-9);
        assert!(maxent_with_mean(1, 5, 5.5).is_err());
    }

    #[test]
    fn cross_entropy_gradient_is_minus_target_over_probability() {
        let s = [ItemScore { probs: vec![0.25, 0.75], label_mass: 1.0 }];
        let t: [&[f64]; 1] = [&[1.0, 0.0]];
        let g = cross_entropy(&t, &s);
        assert!((g.value - 4f64.ln()).abs() < 1e-12);
        assert_eq!(g.grad[0], vec![-4.0, 0.0]);
    }
}
