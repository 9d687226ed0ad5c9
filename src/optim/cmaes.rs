//! CMA-ES, the (mu/mu_W, lambda) covariance matrix adaptation evolution strategy, as in
//! Hansen's tutorial (arXiv:1604.00772, "The CMA Evolution Strategy: A Tutorial", 2016,
//! Table 1 with positive recombination weights only), and its separable variant (Ros and
//! Hansen 2008, "A Simple Modification in CMA-ES Achieving Linear Time and Space
//! Complexity") for dimensions above [`FULL_LIMIT`], where a full covariance matrix would not
//! fit a checkpoint or an eigendecomposition per generation.
//!
//! CMA-ES in a random subspace (`--strategy cmaes --subspace k`) is black-box tuning (BBT,
//! Sun et al. 2022), the strongest black-box baseline in the soft-prompt literature.
//!
//! The state is the distribution: mean, step size, covariance (full or diagonal) and the two
//! evolution paths. The eigendecomposition is recomputed from the covariance at every
//! generation rather than stored, so a checkpoint holds only the state above and a resumed run
//! continues bit for bit (nalgebra's symmetric eigensolver is sequential and deterministic).
//! Evaluated points are the samples after the box bounds and the objective's repair; the update
//! uses those points, so the distribution learns from what was actually scored.

use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use super::exact;

/// Largest dimension with a full covariance matrix; above it the separable (diagonal) variant
/// runs. 500 is BBT's subspace size: a 500 x 500 matrix is 250,000 values in a checkpoint and
/// an eigendecomposition of about 0.1 s per generation, against seconds per LLM evaluation.
pub const FULL_LIMIT: usize = 500;

/// The strategy's constants for dimension `n` and population `lambda` (Hansen's defaults).
#[derive(Debug, Clone)]
struct Constants {
    mu: usize,
    weights: Vec<f64>,
    mueff: f64,
    cc: f64,
    cs: f64,
    c1: f64,
    cmu: f64,
    damps: f64,
    chi_n: f64,
}

impl Constants {
    fn new(n: usize, lambda: usize, separable: bool) -> Constants {
        let nf = n as f64;
        let mu = lambda / 2;
        let raw: Vec<f64> = (1..=mu).map(|i| ((lambda as f64 + 1.0) / 2.0).ln() - (i as f64).ln()).collect();
        let sum: f64 = raw.iter().sum();
        let weights: Vec<f64> = raw.iter().map(|w| w / sum).collect();
        let mueff = 1.0 / weights.iter().map(|w| w * w).sum::<f64>();
        let cc = (4.0 + mueff / nf) / (nf + 4.0 + 2.0 * mueff / nf);
        let cs = (mueff + 2.0) / (nf + mueff + 5.0);
        let mut c1 = 2.0 / ((nf + 1.3).powi(2) + mueff);
        let mut cmu = (1.0 - c1).min(2.0 * (mueff - 2.0 + 1.0 / mueff) / ((nf + 2.0).powi(2) + mueff));
        if separable {
            // Ros and Hansen: a diagonal matrix has n free values, not n^2/2, so it may learn
            // (n + 2) / 3 times faster.
            let speed = (nf + 2.0) / 3.0;
            c1 = (c1 * speed).min(1.0);
            cmu = (cmu * speed).min(1.0 - c1);
        }
        let damps = 1.0 + 2.0 * (((mueff - 1.0) / (nf + 1.0)).sqrt() - 1.0).max(0.0) + cs;
        let chi_n = nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf));
        Constants { mu, weights, mueff, cc, cs, c1, cmu, damps, chi_n }
    }
}

/// The search distribution and its evolution paths (module docs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CmaState {
    #[serde(with = "exact::seq")]
    mean: Vec<f64>,
    #[serde(with = "exact::scalar")]
    sigma: f64,
    /// Row-major `n x n` when full, the diagonal when separable.
    #[serde(with = "exact::seq")]
    cov: Vec<f64>,
    #[serde(with = "exact::seq")]
    pc: Vec<f64>,
    #[serde(with = "exact::seq")]
    ps: Vec<f64>,
    /// Updates done (the `g` of the `h_sigma` test).
    updates: u64,
}

/// `C = B diag(d)^2 B^T` for the generation being sampled; `b` is `None` when separable.
pub(crate) struct Factor {
    b: Option<DMatrix<f64>>,
    d: Vec<f64>,
}

impl CmaState {
    /// Mean `mean`, step size `sigma`, identity covariance, zero paths.
    pub(crate) fn new(mean: Vec<f64>, sigma: f64) -> CmaState {
        let n = mean.len();
        let cov = if n > FULL_LIMIT {
            vec![1.0; n]
        } else {
            let mut c = vec![0.0; n * n];
            (0..n).for_each(|i| c[i * n + i] = 1.0);
            c
        };
        CmaState { mean, sigma, cov, pc: vec![0.0; n], ps: vec![0.0; n], updates: 0 }
    }

    /// Whether the diagonal variant runs (dimension above [`FULL_LIMIT`]).
    pub(crate) fn separable(&self) -> bool {
        self.mean.len() > FULL_LIMIT
    }

    /// Step size.
    pub(crate) fn sigma(&self) -> f64 {
        self.sigma
    }

    /// Distribution mean.
    pub(crate) fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// Sizes agree with dimension `n` and every value is finite (a checkpoint check).
    pub(crate) fn consistent(&self, n: usize) -> bool {
        let cov_len = if n > FULL_LIMIT { n } else { n * n };
        self.mean.len() == n
            && self.pc.len() == n
            && self.ps.len() == n
            && self.cov.len() == cov_len
            && self.sigma.is_finite()
            && self.sigma > 0.0
            && self.mean.iter().chain(&self.cov).chain(&self.pc).chain(&self.ps).all(|v| v.is_finite())
    }

    /// The factorisation of the current covariance.
    pub(crate) fn factor(&self) -> Factor {
        let n = self.mean.len();
        if self.separable() {
            return Factor { b: None, d: self.cov.iter().map(|c| c.max(0.0).sqrt()).collect() };
        }
        let eig = SymmetricEigen::new(DMatrix::from_row_slice(n, n, &self.cov));
        // Rounding can leave a tiny negative eigenvalue; a standard deviation of zero there.
        let d = eig.eigenvalues.iter().map(|e| e.max(0.0).sqrt()).collect();
        Factor { b: Some(eig.eigenvectors), d }
    }

    /// One sample `m + sigma B (d * z)`, `z` standard normal, drawn in coordinate order.
    pub(crate) fn sample<R: Rng>(&self, rng: &mut R, factor: &Factor) -> Vec<f64> {
        let n = self.mean.len();
        let scaled: Vec<f64> = (0..n)
            .map(|j| {
                let z: f64 = rng.sample(StandardNormal);
                factor.d[j] * z
            })
            .collect();
        let y = match &factor.b {
            None => scaled,
            Some(b) => (b * DVector::from_vec(scaled)).as_slice().to_vec(),
        };
        self.mean.iter().zip(&y).map(|(m, y)| m + self.sigma * y).collect()
    }

    /// Update the distribution from the evaluated points `xs` (as scored) ranked by `order`
    /// (best first), with `factor` the factorisation they were sampled from.
    pub(crate) fn update(&mut self, xs: &[Vec<f32>], order: &[usize], factor: &Factor) {
        let n = self.mean.len();
        let k = Constants::new(n, xs.len(), self.separable());
        let sigma = self.sigma;
        let ys: Vec<Vec<f64>> = order[..k.mu]
            .iter()
            .map(|&i| xs[i].iter().zip(&self.mean).map(|(&x, m)| (x as f64 - m) / sigma).collect())
            .collect();
        let mut yw = vec![0.0; n];
        for (w, y) in k.weights.iter().zip(&ys) {
            yw.iter_mut().zip(y).for_each(|(a, b)| *a += w * b);
        }
        self.mean.iter_mut().zip(&yw).for_each(|(m, y)| *m += sigma * y);

        // C^{-1/2} y_w = B diag(1/d) B^T y_w (an axis with d = 0 contributes nothing).
        let inv = |v: f64, d: f64| if d > 0.0 { v / d } else { 0.0 };
        let whitened: Vec<f64> = match &factor.b {
            None => yw.iter().zip(&factor.d).map(|(&v, &d)| inv(v, d)).collect(),
            Some(b) => {
                let bt_y = b.tr_mul(&DVector::from_column_slice(&yw));
                let scaled = DVector::from_iterator(n, bt_y.iter().zip(&factor.d).map(|(&v, &d)| inv(v, d)));
                (b * scaled).as_slice().to_vec()
            }
        };
        let cs_norm = (k.cs * (2.0 - k.cs) * k.mueff).sqrt();
        self.ps.iter_mut().zip(&whitened).for_each(|(p, w)| *p = (1.0 - k.cs) * *p + cs_norm * w);
        let ps_norm = self.ps.iter().map(|p| p * p).sum::<f64>().sqrt();
        self.updates += 1;
        let decay = 1.0 - (1.0 - k.cs).powf(2.0 * self.updates as f64);
        let h_sigma = ps_norm / decay.sqrt() < (1.4 + 2.0 / (n as f64 + 1.0)) * k.chi_n;
        let cc_norm = (k.cc * (2.0 - k.cc) * k.mueff).sqrt();
        let h = if h_sigma { 1.0 } else { 0.0 };
        self.pc.iter_mut().zip(&yw).for_each(|(p, y)| *p = (1.0 - k.cc) * *p + h * cc_norm * y);
        let delta = (1.0 - h) * k.cc * (2.0 - k.cc);
        let keep = 1.0 + k.c1 * delta - k.c1 - k.cmu;
        if self.separable() {
            for j in 0..n {
                let rank_mu: f64 = k.weights.iter().zip(&ys).map(|(w, y)| w * y[j] * y[j]).sum();
                self.cov[j] = keep * self.cov[j] + k.c1 * self.pc[j] * self.pc[j] + k.cmu * rank_mu;
            }
        } else {
            for i in 0..n {
                for j in i..n {
                    let rank_mu: f64 = k.weights.iter().zip(&ys).map(|(w, y)| w * y[i] * y[j]).sum();
                    let c = keep * self.cov[i * n + j] + k.c1 * self.pc[i] * self.pc[j] + k.cmu * rank_mu;
                    self.cov[i * n + j] = c;
                    self.cov[j * n + i] = c;
                }
            }
        }
        // The exponent is capped at 1 (as pycma does) so one lucky generation cannot blow the
        // step size up by orders of magnitude.
        let step = ((k.cs / k.damps) * (ps_norm / k.chi_n - 1.0)).min(1.0);
        self.sigma = (sigma * step.exp()).clamp(1e-300, 1e300);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hansens_default_constants() {
        // n = 10, lambda = 4 + floor(3 ln 10) = 10: the tutorial's values.
        let k = Constants::new(10, 10, false);
        assert_eq!(k.mu, 5);
        assert!((k.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(k.weights.windows(2).all(|w| w[0] > w[1]));
        assert!((k.mueff - 3.1672).abs() < 1e-3, "{}", k.mueff);
        assert!((k.c1 - 2.0 / (11.3f64.powi(2) + k.mueff)).abs() < 1e-15);
        assert!((k.chi_n - 3.0847).abs() < 1e-3, "{}", k.chi_n);
        let s = Constants::new(10, 10, true);
        assert!(s.c1 > k.c1 && s.cmu > k.cmu && s.c1 + s.cmu <= 1.0);
    }

    #[test]
    fn samples_follow_the_covariance() {
        use rand::SeedableRng;
        // C = [[4, 1.2], [1.2, 1]]: sample covariance within a few percent.
        let mut st = CmaState::new(vec![1.0, -2.0], 1.0);
        st.cov = vec![4.0, 1.2, 1.2, 1.0];
        let f = st.factor();
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        let xs: Vec<Vec<f64>> = (0..40_000).map(|_| st.sample(&mut rng, &f)).collect();
        let m = |j: usize| xs.iter().map(|x| x[j]).sum::<f64>() / xs.len() as f64;
        let (m0, m1) = (m(0), m(1));
        let c = |a: usize, b: usize, ma: f64, mb: f64| {
            xs.iter().map(|x| (x[a] - ma) * (x[b] - mb)).sum::<f64>() / xs.len() as f64
        };
        assert!((m0 - 1.0).abs() < 0.05 && (m1 + 2.0).abs() < 0.05);
        assert!((c(0, 0, m0, m0) - 4.0).abs() < 0.15);
        assert!((c(0, 1, m0, m1) - 1.2).abs() < 0.06);
        assert!((c(1, 1, m1, m1) - 1.0).abs() < 0.04);
    }
}
