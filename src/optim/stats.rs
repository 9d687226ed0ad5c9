//! Small statistics: mean, sd and median, and the Mann-Whitney U test used to compare
//! optimizers over seeds.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// Arithmetic mean; `None` when empty.
pub fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Which divisor a standard deviation uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Divisor n: the spread of these values themselves (a population's parameters).
    Population,
    /// Divisor n - 1: an estimate from a sample (runs over seeds); needs two values.
    Sample,
}

/// Standard deviation with the given divisor; `None` when empty, or for [`Spread::Sample`]
/// with fewer than two values.
pub fn sd(xs: &[f64], spread: Spread) -> Option<f64> {
    let m = mean(xs)?;
    let n = xs.len() as f64;
    let div = match spread {
        Spread::Population => n,
        Spread::Sample if xs.len() < 2 => return None,
        Spread::Sample => n - 1.0,
    };
    Some((xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / div).sqrt())
}

/// Median (mean of the two middle values for an even count; NaN sorts last); `None` if empty.
pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 { s[m] } else { (s[m - 1] + s[m]) / 2.0 })
}

/// Which way the Mann-Whitney test looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Alternative {
    /// Values in `a` tend to be smaller than in `b`.
    Less,
    /// Values in `a` tend to be larger than in `b`.
    Greater,
    /// Either.
    TwoSided,
}

/// Result of [`mann_whitney_u`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// `U` of the first sample: the number of pairs `(a_i, b_j)` with `a_i > b_j`, ties 1/2.
    pub u: f64,
    /// Standardised statistic (with continuity correction).
    pub z: f64,
    /// p-value of the normal approximation.
    pub p_value: f64,
}

/// Mann-Whitney U test by the normal approximation with tie correction and a 0.5
/// continuity correction (what scipy's `mannwhitneyu(..., method="asymptotic")` computes).
///
/// Ties get average ranks; the variance is
/// `n_a n_b / 12 * ((n + 1) - sum(t^3 - t) / (n (n - 1)))` over tie groups of size `t`.
/// If every value is tied the variance is 0 and the p-value is 1.
///
/// # Panics
/// If either sample is empty.
pub fn mann_whitney_u(a: &[f64], b: &[f64], alternative: Alternative) -> MannWhitney {
    assert!(!a.is_empty() && !b.is_empty(), "mann_whitney_u needs two non-empty samples");
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let mut all: Vec<(f64, bool)> =
        a.iter().map(|&x| (x, true)).chain(b.iter().map(|&x| (x, false))).collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let mut rank_sum_a = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && all[j].0 == all[i].0 {
            j += 1;
        }
        // Positions i..j (0-based) share the average of ranks i+1..=j.
        let avg = (i + 1 + j) as f64 / 2.0;
        let t = (j - i) as f64;
        tie_term += t * t * t - t;
        rank_sum_a += avg * all[i..j].iter().filter(|e| e.1).count() as f64;
        i = j;
    }
    let u = rank_sum_a - na * (na + 1.0) / 2.0;
    let mean = na * nb / 2.0;
    let nf = n as f64;
    let var = na * nb / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    if var <= 0.0 {
        return MannWhitney { u, z: 0.0, p_value: 1.0 };
    }
    let sd = var.sqrt();
    let normal = Normal::new(0.0, 1.0).expect("standard normal");
    let (z, p) = match alternative {
        Alternative::Less => {
            let z = (u - mean + 0.5) / sd;
            (z, normal.cdf(z))
        }
        Alternative::Greater => {
            let z = (u - mean - 0.5) / sd;
            (z, normal.sf(z))
        }
        Alternative::TwoSided => {
            let z = ((u - mean).abs() - 0.5).max(0.0) / sd;
            (z, (2.0 * normal.sf(z)).min(1.0))
        }
    };
    MannWhitney { u, z, p_value: p }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn separated_samples() {
        // U = 0, mean 4.5, var 3*3*7/12 = 5.25; z = (0 - 4.5 + 0.5)/sqrt(5.25) = -1.7457,
        // Phi(-1.7457) = 0.04043 (scipy: mannwhitneyu([1,2,3],[4,5,6],alternative="less",
        // method="asymptotic") -> 0.0404).
        let r = mann_whitney_u(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], Alternative::Less);
        assert_eq!(r.u, 0.0);
        assert!((r.z + 1.745_743).abs() < 1e-5, "{}", r.z);
        assert!((r.p_value - 0.040_43).abs() < 1e-4, "{}", r.p_value);
        let g = mann_whitney_u(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], Alternative::Greater);
        assert!(g.p_value > 0.95);
        let t = mann_whitney_u(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], Alternative::TwoSided);
        assert!((t.p_value - 2.0 * 0.040_43).abs() < 2e-4);
    }

    #[test]
    fn ties_use_average_ranks_and_corrected_variance() {
        // a = [1, 2, 2], b = [2, 3, 4]: sorted 1a 2a 2a 2b 3b 4b, the three 2s share rank 3.
        // R_a = 1 + 3 + 3 = 7, U = 7 - 6 = 1. Tie term 3^3 - 3 = 24.
        // var = 9/12 * (7 - 24/30) = 0.75 * 6.2 = 4.65; z = (1 - 4.5 + 0.5)/sqrt(4.65).
        let r = mann_whitney_u(&[1.0, 2.0, 2.0], &[2.0, 3.0, 4.0], Alternative::Less);
        assert_eq!(r.u, 1.0);
        let z = -3.0 / 4.65f64.sqrt();
        assert!((r.z - z).abs() < 1e-12);
        let all_tied = mann_whitney_u(&[1.0, 1.0], &[1.0, 1.0], Alternative::TwoSided);
        assert_eq!(all_tied.p_value, 1.0);
    }
}
