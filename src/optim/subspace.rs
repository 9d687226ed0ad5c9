//! Random-subspace search (black-box tuning): optimise `z` in `R^k`, score `x = p0 + A z`.
//!
//! `A` is a fixed `D x k` matrix with i.i.d. `N(0, (scale / sqrt(k))^2)` entries. The
//! `1/sqrt(k)` makes each coordinate of `A z` have standard deviation `scale * |z| / sqrt(k)`,
//! i.e. exactly `scale` when `z ~ N(0, I_k)` (variance `k * scale^2 / k`): pick `scale` as the
//! per-coordinate spread you want around `p0` (e.g. a fraction of the embedding rms) and
//! initialise `z` with unit normals; the optimizer's `z` scale is then independent of `k`.
//!
//! `A` is never stored in checkpoints: row `j` is regenerated from its own RNG, seeded by
//! mixing the space's seed with `j`, so any row can be rebuilt alone, in parallel, and
//! identically on every machine. When `D k` floats fit the cache limit (default 512 MiB)
//! the matrix is built once, on first use, and kept in memory; otherwise rows are
//! regenerated on every batch. Both paths give bitwise-identical results.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::exact;
use super::objective::BatchObjective;
use super::population;

/// Default in-memory cache limit for `A`, in bytes.
pub const DEFAULT_CACHE_LIMIT: usize = 512 << 20;

/// Rows handled per parallel task.
const ROW_BLOCK: usize = 64;

/// A bad subspace setting or a `z` of the wrong length.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubspaceError {
    /// `k = 0` or `D = 0`.
    #[error("subspace needs k >= 1 and an origin of dimension >= 1 (got k = {k}, D = {dim})")]
    Empty {
        /// Subspace dimension.
        k: usize,
        /// Full dimension.
        dim: usize,
    },
    /// `scale` not finite and positive.
    #[error("subspace scale {0} is not a positive finite number")]
    Scale(f32),
    /// `z` of the wrong length.
    #[error("z vector {index} has length {got}, expected {expected}")]
    Dimension {
        /// Which vector in the batch.
        index: usize,
        /// `k`.
        expected: usize,
        /// Its length.
        got: usize,
    },
}

/// The affine map `z -> p0 + A z` with `A` regenerated from a seed (module docs).
#[derive(Clone, Serialize, Deserialize)]
pub struct RandomSubspace {
    #[serde(with = "exact::f32_vec")]
    origin: Vec<f32>,
    k: usize,
    #[serde(with = "exact::scalar")]
    scale: f32,
    seed: u64,
    cache_limit: usize,
    #[serde(skip)]
    matrix: OnceLock<Arc<Vec<f32>>>,
}

impl fmt::Debug for RandomSubspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RandomSubspace")
            .field("dim", &self.origin.len())
            .field("k", &self.k)
            .field("scale", &self.scale)
            .field("seed", &self.seed)
            .field("cached", &self.matrix.get().is_some())
            .finish()
    }
}

/// SplitMix64 finaliser, used to derive independent per-row seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `sum a_i b_i` over 16 independent f32 lanes, combined in f64 (fixed order, so
/// deterministic; the lanes vectorise with plain SSE2).
fn dot(a: &[f32], b: &[f32]) -> f64 {
    const L: usize = 16;
    let mut acc = [0.0f32; L];
    let ca = a.chunks_exact(L);
    let cb = b.chunks_exact(L);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..L {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f64 = acc.iter().map(|&v| v as f64).sum();
    for (x, y) in ra.iter().zip(rb) {
        s += *x as f64 * *y as f64;
    }
    s
}

impl RandomSubspace {
    /// `x = origin + A z` with `z` in `R^k`, entries of `A` drawn from `seed` with
    /// standard deviation `scale / sqrt(k)`.
    ///
    /// # Errors
    /// [`SubspaceError`] for `k = 0`, an empty origin, or a non-positive scale.
    pub fn new(origin: Vec<f32>, k: usize, scale: f32, seed: u64) -> Result<Self, SubspaceError> {
        if k == 0 || origin.is_empty() {
            return Err(SubspaceError::Empty { k, dim: origin.len() });
        }
        if !(scale.is_finite() && scale > 0.0) {
            return Err(SubspaceError::Scale(scale));
        }
        Ok(RandomSubspace {
            origin,
            k,
            scale,
            seed,
            cache_limit: DEFAULT_CACHE_LIMIT,
            matrix: OnceLock::new(),
        })
    }

    /// Keep `A` in memory only if it takes at most `bytes` (0: always regenerate).
    pub fn with_cache_limit(mut self, bytes: usize) -> Self {
        self.cache_limit = bytes;
        self.matrix = OnceLock::new();
        self
    }

    /// Full dimension `D`.
    pub fn dim(&self) -> usize {
        self.origin.len()
    }

    /// Subspace dimension `k`.
    pub fn subspace_dim(&self) -> usize {
        self.k
    }

    /// Per-coordinate sd of `A z` for `z ~ N(0, I)`.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Seed of `A`.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// `p0`.
    pub fn origin(&self) -> &[f32] {
        &self.origin
    }

    /// Row `j` of `A` (length `k`).
    ///
    /// # Panics
    /// If `j >= self.dim()`.
    pub fn row(&self, j: usize) -> Vec<f32> {
        assert!(j < self.dim(), "row {j} out of range");
        let mut out = vec![0.0; self.k];
        self.fill_row(j, &mut out);
        out
    }

    fn fill_row(&self, j: usize, out: &mut [f32]) {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix(self.seed ^ mix(j as u64)));
        let sigma = self.scale as f64 / (self.k as f64).sqrt();
        for v in out {
            let z: f64 = rng.sample(StandardNormal);
            *v = (sigma * z) as f32;
        }
    }

    /// The cached matrix (row-major `D x k`), built on first use, if it fits the limit.
    fn cached(&self) -> Option<&Arc<Vec<f32>>> {
        let bytes = self.dim().saturating_mul(self.k).saturating_mul(4);
        if bytes > self.cache_limit {
            return None;
        }
        Some(self.matrix.get_or_init(|| {
            let mut a = vec![0.0f32; self.dim() * self.k];
            a.par_chunks_mut(self.k).enumerate().for_each(|(j, row)| self.fill_row(j, row));
            Arc::new(a)
        }))
    }

    /// `p0 + A z`.
    ///
    /// # Errors
    /// [`SubspaceError::Dimension`] if `z.len() != k`.
    pub fn map(&self, z: &[f32]) -> Result<Vec<f32>, SubspaceError> {
        let mut xs = self.map_batch(std::slice::from_ref(&z.to_vec()))?;
        Ok(xs.pop().unwrap_or_default())
    }

    /// `p0 + A z` for every `z`, in order; rows of `A` are processed in parallel.
    ///
    /// # Errors
    /// [`SubspaceError::Dimension`] if some `z` has the wrong length.
    pub fn map_batch(&self, zs: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, SubspaceError> {
        if let Some((index, z)) = zs.iter().enumerate().find(|(_, z)| z.len() != self.k) {
            return Err(SubspaceError::Dimension { index, expected: self.k, got: z.len() });
        }
        let b = zs.len();
        if b == 0 {
            return Ok(Vec::new());
        }
        let d = self.dim();
        let k = self.k;
        let cache = self.cached();
        // Coordinate-major scratch: xt[j * b + i] is coordinate j of output i.
        let mut xt = vec![0.0f32; d * b];
        xt.par_chunks_mut(ROW_BLOCK * b).enumerate().for_each(|(blk, out)| {
            let mut row = vec![0.0f32; k];
            for (r, dst) in out.chunks_mut(b).enumerate() {
                let j = blk * ROW_BLOCK + r;
                let a = match cache {
                    Some(m) => &m[j * k..(j + 1) * k],
                    None => {
                        self.fill_row(j, &mut row);
                        &row[..]
                    }
                };
                for (x, z) in dst.iter_mut().zip(zs) {
                    *x = (self.origin[j] as f64 + dot(a, z)) as f32;
                }
            }
        });
        Ok((0..b).into_par_iter().map(|i| (0..d).map(|j| xt[j * b + i]).collect()).collect())
    }

    /// `n` starting points `z ~ N(0, sd^2 I_k)`; with `sd = 1` the mapped points spread
    /// `scale` per coordinate around `p0`.
    pub fn initial_population(&self, n: usize, sd: f32, seed: u64) -> Vec<Vec<f32>> {
        population::gaussian(&vec![0.0; self.k], n, sd, seed)
    }

    /// Wrap `inner` so an optimizer searching `z` is scored on `x = p0 + A z`.
    pub fn objective<O: BatchObjective>(&self, inner: O) -> SubspaceObjective<'_, O> {
        SubspaceObjective { space: self, inner }
    }
}

/// An objective over `z` that maps to `x = p0 + A z` and scores `x` with the inner one.
///
/// The inner objective's `repair` is applied to each mapped `x` before it is scored (so,
/// for example, row-norm clipping still holds for what the model sees); `z` itself is
/// not repaired.
#[derive(Debug)]
pub struct SubspaceObjective<'s, O> {
    space: &'s RandomSubspace,
    /// The objective on the full space.
    pub inner: O,
}

impl<O: BatchObjective> BatchObjective for SubspaceObjective<'_, O> {
    fn evaluate(&mut self, zs: &[Vec<f32>]) -> anyhow::Result<Vec<f64>> {
        let mut xs = self.space.map_batch(zs)?;
        for x in &mut xs {
            self.inner.repair(x);
        }
        self.inner.evaluate(&xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_sum_closely() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.25 - 3.0).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32).sin()).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-5 * naive.abs().max(1.0));
    }
}
