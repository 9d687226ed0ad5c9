//! Seeded initial populations.

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;

/// `n` vectors of dimension `dim`, each coordinate uniform in `[low, high)`.
pub fn uniform(n: usize, dim: usize, low: f32, high: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let (lo, hi) = (low as f64, high as f64);
    (0..n).map(|_| (0..dim).map(|_| (lo + (hi - lo) * rng.gen::<f64>()) as f32).collect()).collect()
}

/// `n` vectors `center + sd * N(0, I)`.
///
/// For soft prompts: start around a known embedding (e.g. a hand-written prompt's) with a
/// spread of a fraction of the embedding scale.
pub fn gaussian(center: &[f32], n: usize, sd: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            center
                .iter()
                .map(|&c| {
                    let z: f64 = rng.sample(StandardNormal);
                    (c as f64 + sd as f64 * z) as f32
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_seeded_and_in_range() {
        let a = uniform(10, 7, -2.0, 3.0, 5);
        assert_eq!(a, uniform(10, 7, -2.0, 3.0, 5));
        assert_ne!(a, uniform(10, 7, -2.0, 3.0, 6));
        assert!(a.iter().flatten().all(|&v| (-2.0..3.0).contains(&v)));
        assert_eq!(a.len(), 10);
        assert!(a.iter().all(|x| x.len() == 7));
    }

    #[test]
    fn gaussian_is_centred() {
        let c = vec![10.0f32; 3];
        let p = gaussian(&c, 4000, 2.0, 1);
        let m: f64 = p.iter().map(|x| x[1] as f64).sum::<f64>() / 4000.0;
        let sd = (p.iter().map(|x| (x[1] as f64 - m).powi(2)).sum::<f64>() / 3999.0).sqrt();
        assert!((m - 10.0).abs() < 0.1, "{m}");
        assert!((sd - 2.0).abs() < 0.1, "{sd}");
    }
}
