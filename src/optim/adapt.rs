//! Parameter sampling and the means used by JADE, SHADE and L-SHADE.

use rand::Rng;
use rand_distr::StandardNormal;

/// `F_i ~ Cauchy(mu, 0.1)`, regenerated while `<= 0`, truncated to 1 (JADE eq. (7),
/// SHADE eq. (2)). Always in (0, 1].
pub(crate) fn sample_f<R: Rng>(rng: &mut R, mu: f64) -> f64 {
    loop {
        let u: f64 = rng.gen();
        let f = mu + 0.1 * (std::f64::consts::PI * (u - 0.5)).tan();
        if f > 0.0 {
            return f.min(1.0);
        }
    }
}

/// `CR_i ~ N(mu, 0.1)` clipped to [0, 1] (JADE eq. (6), SHADE eq. (1)).
pub(crate) fn sample_cr<R: Rng>(rng: &mut R, mu: f64) -> f64 {
    let z: f64 = rng.sample(StandardNormal);
    (mu + 0.1 * z).clamp(0.0, 1.0)
}

pub(crate) use super::stats::mean;

/// Lehmer mean `sum x^2 / sum x` (JADE's `mean_L`); `None` when empty or the sum is 0.
pub(crate) fn lehmer_mean(xs: &[f64]) -> Option<f64> {
    let den: f64 = xs.iter().sum();
    (den > 0.0).then(|| xs.iter().map(|x| x * x).sum::<f64>() / den)
}

/// Normalised improvement weights `w_k = delta_k / sum delta` (SHADE eq. (8)).
///
/// A parent with fitness `+inf` replaced by a finite trial gives an infinite improvement;
/// then those entries share the weight equally and the finite ones get none. All-zero
/// improvements (impossible for strict successes, kept for safety) get equal weights.
pub(crate) fn improvement_weights(deltas: &[f64]) -> Vec<f64> {
    let n = deltas.len() as f64;
    let infinite = deltas.iter().filter(|d| d.is_infinite()).count();
    if infinite > 0 {
        return deltas.iter().map(|d| if d.is_infinite() { 1.0 / infinite as f64 } else { 0.0 }).collect();
    }
    let sum: f64 = deltas.iter().sum();
    if sum > 0.0 && sum.is_finite() {
        deltas.iter().map(|d| d / sum).collect()
    } else {
        vec![1.0 / n; deltas.len()]
    }
}

/// Weighted arithmetic mean `sum w x` (SHADE eq. (7) for `CR`).
pub(crate) fn weighted_mean(w: &[f64], xs: &[f64]) -> f64 {
    w.iter().zip(xs).map(|(w, x)| w * x).sum()
}

/// Weighted Lehmer mean `sum w x^2 / sum w x` (SHADE eq. (9)); `None` when the
/// denominator is 0 (all values 0, L-SHADE's terminal case for `CR`).
pub(crate) fn weighted_lehmer_mean(w: &[f64], xs: &[f64]) -> Option<f64> {
    let den: f64 = w.iter().zip(xs).map(|(w, x)| w * x).sum();
    (den > 0.0).then(|| w.iter().zip(xs).map(|(w, x)| w * x * x).sum::<f64>() / den)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn sampled_f_is_in_unit_interval_and_centred() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let fs: Vec<f64> = (0..20_000).map(|_| sample_f(&mut rng, 0.5)).collect();
        assert!(fs.iter().all(|&f| f > 0.0 && f <= 1.0));
        // Given C > 0 (regeneration), truncation puts a point mass of P(C >= 1) / P(C > 0)
        // at 1, and the median is the C-quantile at P(C <= 0) + P(C > 0) / 2.
        let pi = std::f64::consts::PI;
        let p_pos = 0.5 + 5f64.atan() / pi;
        let p_ge1 = 0.5 - 5f64.atan() / pi;
        let at_one = fs.iter().filter(|&&f| f == 1.0).count() as f64 / fs.len() as f64;
        assert!((at_one - p_ge1 / p_pos).abs() < 0.01, "{at_one}");
        let q = (1.0 - p_pos) + p_pos / 2.0;
        let expected_median = 0.5 + 0.1 * (pi * (q - 0.5)).tan();
        let mut sorted = fs.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        assert!((median - expected_median).abs() < 0.005, "median {median} vs {expected_median}");
    }

    #[test]
    fn sampled_cr_is_clipped_normal() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let crs: Vec<f64> = (0..20_000).map(|_| sample_cr(&mut rng, 0.95)).collect();
        assert!(crs.iter().all(|&c| (0.0..=1.0).contains(&c)));
        let at_one = crs.iter().filter(|&&c| c == 1.0).count() as f64 / crs.len() as f64;
        // P(N(0.95, 0.1) > 1) = 1 - Phi(0.5) = 0.3085.
        assert!((at_one - 0.3085).abs() < 0.015, "{at_one}");
    }

    #[test]
    fn means_match_hand_computation() {
        assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
        assert_eq!(mean(&[]), None);
        assert_eq!(lehmer_mean(&[1.0, 2.0, 3.0]), Some(14.0 / 6.0));
        let w = improvement_weights(&[1.0, 3.0]);
        assert_eq!(w, vec![0.25, 0.75]);
        assert_eq!(weighted_mean(&w, &[0.2, 0.6]), 0.25 * 0.2 + 0.75 * 0.6);
        let wl = weighted_lehmer_mean(&w, &[0.2, 0.6]).unwrap();
        let expected = (0.25 * 0.04 + 0.75 * 0.36) / (0.25 * 0.2 + 0.75 * 0.6);
        assert!((wl - expected).abs() < 1e-15);
        assert_eq!(weighted_lehmer_mean(&w, &[0.0, 0.0]), None);
        assert_eq!(improvement_weights(&[f64::INFINITY, 2.0]), vec![1.0, 0.0]);
    }
}
