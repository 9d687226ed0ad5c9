//! Standard test functions for checking optimizers without a model.
//!
//! Every function has minimum value 0. A [`TestFunction`] evaluates
//! `g(Q (x - o) + c)`, where `g` is the raw function, `o` the optimum (0, or a seeded
//! uniform point in 80% of the domain, rounded to `f32`, when shifted), `Q` an optional seeded random
//! rotation and `c` the raw function's own minimiser (1 for Rosenbrock, 0 otherwise), so
//! the minimum is always at `x = o` (unshifted Rosenbrock: `o = (1, ..., 1)`, as usual).
//!
//! The rotation is a Haar-distributed orthogonal matrix stored as a product of Householder
//! reflections (Stewart 1980): `Q = H_1 ... H_{D-1} diag(s)`, where `H_k` reflects the last
//! `D - k + 1` coordinates along a fresh Gaussian direction and `s` are the signs that make
//! the implied QR factor's diagonal positive. It needs `D (D + 1) / 2` numbers instead of
//! `D^2` and `Q y` costs about `2 D^2` flops (D = 3,200: 40 MB, a few ms per vector).

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::objective::BatchObjective;
use super::population;

/// A raw test function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Function {
    /// `sum z_i^2`; domain [-100, 100].
    Sphere,
    /// `sum_{i<D} 100 (z_{i+1} - z_i^2)^2 + (z_i - 1)^2`; domain [-30, 30].
    Rosenbrock,
    /// `10 D + sum (z_i^2 - 10 cos(2 pi z_i))`; domain [-5.12, 5.12].
    Rastrigin,
    /// `-20 exp(-0.2 sqrt(mean z^2)) - exp(mean cos(2 pi z)) + 20 + e`; domain [-32, 32].
    Ackley,
    /// `sum 10^(6 i / (D - 1)) z_i^2` (condition number 10^6); domain [-100, 100].
    Ellipsoid,
}

impl Function {
    /// All functions.
    pub const ALL: [Function; 5] =
        [Function::Sphere, Function::Rosenbrock, Function::Rastrigin, Function::Ackley, Function::Ellipsoid];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Function::Sphere => "sphere",
            Function::Rosenbrock => "rosenbrock",
            Function::Rastrigin => "rastrigin",
            Function::Ackley => "ackley",
            Function::Ellipsoid => "ellipsoid",
        }
    }

    /// The usual search domain, the same for every coordinate.
    pub fn domain(self) -> (f64, f64) {
        match self {
            Function::Sphere | Function::Ellipsoid => (-100.0, 100.0),
            Function::Rosenbrock => (-30.0, 30.0),
            Function::Rastrigin => (-5.12, 5.12),
            Function::Ackley => (-32.0, 32.0),
        }
    }

    /// Where the raw function is minimal (the same value in every coordinate).
    fn raw_minimiser(self) -> f64 {
        match self {
            Function::Rosenbrock => 1.0,
            _ => 0.0,
        }
    }

    /// The raw function at `z`; `weights` are the ellipsoid's coefficients.
    fn raw(self, z: &[f64], weights: &[f64]) -> f64 {
        let d = z.len() as f64;
        match self {
            Function::Sphere => z.iter().map(|v| v * v).sum(),
            Function::Ellipsoid => z.iter().zip(weights).map(|(v, w)| w * v * v).sum(),
            Function::Rosenbrock => {
                z.windows(2).map(|p| 100.0 * (p[1] - p[0] * p[0]).powi(2) + (p[0] - 1.0).powi(2)).sum()
            }
            Function::Rastrigin => {
                let two_pi = 2.0 * std::f64::consts::PI;
                10.0 * d + z.iter().map(|v| v * v - 10.0 * (two_pi * v).cos()).sum::<f64>()
            }
            Function::Ackley => {
                let two_pi = 2.0 * std::f64::consts::PI;
                let sq = z.iter().map(|v| v * v).sum::<f64>() / d;
                let cs = z.iter().map(|v| (two_pi * v).cos()).sum::<f64>() / d;
                (-20.0 * (-0.2 * sq.sqrt()).exp() - cs.exp() + 20.0 + std::f64::consts::E).max(0.0)
            }
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Function {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Function::ALL.into_iter().find(|f| f.name() == lower).ok_or_else(|| {
            format!(
                "unknown test function '{s}' (expected one of: {})",
                Function::ALL.map(Function::name).join(", ")
            )
        })
    }
}

/// A seeded random rotation (see the module docs).
#[derive(Debug, Clone)]
pub struct Rotation {
    dim: usize,
    /// Unit Householder vectors, packed: vector `k` has length `dim - k`, `k < dim - 1`.
    reflections: Vec<f64>,
    signs: Vec<f64>,
}

impl Rotation {
    /// A Haar-random `dim x dim` rotation from `seed`.
    pub fn random(dim: usize, seed: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut reflections = Vec::with_capacity(dim * (dim + 1) / 2);
        let mut signs = Vec::with_capacity(dim);
        for k in 0..dim.saturating_sub(1) {
            let mut v: Vec<f64> = (0..dim - k).map(|_| rng.sample(StandardNormal)).collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let s = if v[0] >= 0.0 { 1.0 } else { -1.0 };
            v[0] += s * norm;
            let vnorm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter_mut().for_each(|x| *x /= vnorm);
            reflections.extend_from_slice(&v);
            // H maps the column to -s |x| e_1; the sign flip makes that diagonal positive.
            signs.push(-s);
        }
        if dim > 0 {
            let g: f64 = rng.sample(StandardNormal);
            signs.push(if g >= 0.0 { 1.0 } else { -1.0 });
        }
        Rotation { dim, reflections, signs }
    }

    /// Dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `y <- Q y`.
    ///
    /// # Panics
    /// If `y.len() != self.dim()`.
    pub fn apply(&self, y: &mut [f64]) {
        assert_eq!(y.len(), self.dim, "rotation dimension mismatch");
        y.iter_mut().zip(&self.signs).for_each(|(v, s)| *v *= s);
        // Apply H_{D-1} first, H_1 last; vector k starts at offset sum_{i<k} (dim - i).
        let mut end = self.reflections.len();
        for k in (0..self.dim.saturating_sub(1)).rev() {
            let len = self.dim - k;
            let u = &self.reflections[end - len..end];
            end -= len;
            let tail = &mut y[k..];
            let dot: f64 = u.iter().zip(tail.iter()).map(|(a, b)| a * b).sum();
            tail.iter_mut().zip(u).for_each(|(t, a)| *t -= 2.0 * dot * a);
        }
    }
}

/// A test function with optional shift and rotation, usable as a [`BatchObjective`].
#[derive(Debug, Clone)]
pub struct TestFunction {
    function: Function,
    optimum: Vec<f64>,
    rotation: Option<Rotation>,
    weights: Vec<f64>,
}

impl TestFunction {
    /// The plain function in dimension `dim` (minimum at 0, Rosenbrock at 1).
    pub fn new(function: Function, dim: usize) -> Self {
        Self::with_transform(function, dim, false, false, 0)
    }

    /// Shifted to a seeded optimum uniform in 80% of the domain.
    pub fn shifted(function: Function, dim: usize, seed: u64) -> Self {
        Self::with_transform(function, dim, true, false, seed)
    }

    /// Shifted and/or rotated, both drawn from `seed`.
    pub fn with_transform(function: Function, dim: usize, shift: bool, rotate: bool, seed: u64) -> Self {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5348_4946_545f_524f);
        let (lo, hi) = function.domain();
        let optimum = if shift {
            (0..dim)
                // Rounded to f32 so the optimum itself is a representable search point.
                .map(|_| (0.8 * (lo + (hi - lo) * rng.gen::<f64>())) as f32 as f64)
                .collect()
        } else {
            vec![function.raw_minimiser(); dim]
        };
        let rotation = rotate.then(|| Rotation::random(dim, rng.gen()));
        let weights = if function == Function::Ellipsoid {
            (0..dim)
                .map(|i| if dim > 1 { 10f64.powf(6.0 * i as f64 / (dim - 1) as f64) } else { 1.0 })
                .collect()
        } else {
            Vec::new()
        };
        TestFunction { function, optimum, rotation, weights }
    }

    /// The raw function.
    pub fn function(&self) -> Function {
        self.function
    }

    /// Dimension.
    pub fn dim(&self) -> usize {
        self.optimum.len()
    }

    /// Where the minimum is.
    pub fn optimum(&self) -> &[f64] {
        &self.optimum
    }

    /// The minimum value, `f*` (always 0).
    pub fn optimal_value(&self) -> f64 {
        0.0
    }

    /// Whether a rotation is applied.
    pub fn is_rotated(&self) -> bool {
        self.rotation.is_some()
    }

    /// The function's value at `x`.
    ///
    /// # Panics
    /// If `x.len() != self.dim()`.
    pub fn value(&self, x: &[f32]) -> f64 {
        assert_eq!(x.len(), self.dim(), "test function dimension mismatch");
        let mut z: Vec<f64> = x.iter().zip(&self.optimum).map(|(&xi, &oi)| xi as f64 - oi).collect();
        if let Some(r) = &self.rotation {
            r.apply(&mut z);
        }
        let c = self.function.raw_minimiser();
        if c != 0.0 {
            z.iter_mut().for_each(|v| *v += c);
        }
        self.function.raw(&z, &self.weights)
    }

    /// `n` vectors uniform in the usual domain.
    pub fn initial_population(&self, n: usize, seed: u64) -> Vec<Vec<f32>> {
        let (lo, hi) = self.function.domain();
        population::uniform(n, self.dim(), lo as f32, hi as f32, seed)
    }
}

impl BatchObjective for TestFunction {
    /// Evaluates in parallel (rayon), one value per vector in order.
    fn evaluate(&mut self, xs: &[Vec<f32>]) -> anyhow::Result<Vec<f64>> {
        if let Some(x) = xs.iter().find(|x| x.len() != self.dim()) {
            anyhow::bail!(
                "{} has dimension {}, got a vector of length {}",
                self.function,
                self.dim(),
                x.len()
            );
        }
        Ok(xs.par_iter().map(|x| self.value(x)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        let d = 5;
        assert_eq!(TestFunction::new(Function::Sphere, d).value(&[1.0; 5]), 5.0);
        assert_eq!(TestFunction::new(Function::Rosenbrock, d).value(&[0.0; 5]), 4.0);
        assert_eq!(TestFunction::new(Function::Rosenbrock, d).value(&[1.0; 5]), 0.0);
        assert!(TestFunction::new(Function::Rastrigin, d).value(&[0.0; 5]).abs() < 1e-12);
        // Rastrigin at integer points: sum z^2.
        assert!((TestFunction::new(Function::Rastrigin, d).value(&[1.0; 5]) - 5.0).abs() < 1e-9);
        assert!(TestFunction::new(Function::Ackley, d).value(&[0.0; 5]) < 1e-12);
        let e = TestFunction::new(Function::Ellipsoid, 3);
        assert!((e.value(&[1.0, 1.0, 1.0]) - (1.0 + 1e3 + 1e6)).abs() < 1e-6);
    }

    #[test]
    fn optimum_is_zero_with_shift_and_rotation() {
        for f in Function::ALL {
            for (shift, rotate) in [(false, false), (true, false), (false, true), (true, true)] {
                let t = TestFunction::with_transform(f, 17, shift, rotate, 3);
                let x: Vec<f32> = t.optimum().iter().map(|&v| v as f32).collect();
                let v = t.value(&x);
                assert!(v < 1e-12, "{f} shift={shift} rotate={rotate}: {v}");
                let mut y = x.clone();
                y[0] += 0.5;
                assert!(t.value(&y) > v, "{f} is not minimal at its optimum");
            }
        }
    }

    #[test]
    fn shift_stays_in_the_domain_and_is_seeded() {
        let t = TestFunction::shifted(Function::Rastrigin, 50, 1);
        assert!(t.optimum().iter().all(|&o| o.abs() <= 0.8 * 5.12));
        assert_eq!(t.optimum(), TestFunction::shifted(Function::Rastrigin, 50, 1).optimum());
        assert_ne!(t.optimum(), TestFunction::shifted(Function::Rastrigin, 50, 2).optimum());
    }

    #[test]
    fn rotation_is_orthogonal() {
        let d = 40;
        let r = Rotation::random(d, 9);
        let cols: Vec<Vec<f64>> = (0..d)
            .map(|i| {
                let mut e = vec![0.0; d];
                e[i] = 1.0;
                r.apply(&mut e);
                e
            })
            .collect();
        for i in 0..d {
            for j in 0..d {
                let dot: f64 = cols[i].iter().zip(&cols[j]).map(|(a, b)| a * b).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-12, "({i},{j}) {dot}");
            }
        }
        // Not the identity or a signed permutation: mixes coordinates.
        assert!(cols[0].iter().filter(|v| v.abs() > 1e-3).count() > d / 2);
    }

    #[test]
    fn rotation_is_unbiased_in_distribution() {
        // For a Haar rotation every entry has mean 0 and variance 1/D.
        let d = 8;
        let mut sum = 0.0;
        let mut sq = 0.0;
        let reps = 2000;
        for seed in 0..reps {
            let r = Rotation::random(d, seed);
            let mut e = vec![0.0; d];
            e[0] = 1.0;
            r.apply(&mut e);
            sum += e[0];
            sq += e[0] * e[0];
        }
        let mean = sum / reps as f64;
        let var = sq / reps as f64 - mean * mean;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0 / d as f64).abs() < 0.02, "var {var}");
    }

    #[test]
    fn batch_evaluation_matches_single_and_checks_dims() {
        let mut t = TestFunction::with_transform(Function::Ackley, 6, true, true, 4);
        let xs = t.initial_population(9, 1);
        let batch = t.evaluate(&xs).unwrap();
        let single: Vec<f64> = xs.iter().map(|x| t.value(x)).collect();
        assert_eq!(batch, single);
        let err = t.evaluate(&[vec![0.0; 5]]).unwrap_err().to_string();
        assert!(err.contains("dimension 6"), "{err}");
    }
}
