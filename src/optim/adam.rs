//! Adam (Kingma & Ba) over a plain `f32` vector, with clipping of the gradient's global norm,
//! and a state that serialises exactly, so a resumed run continues bit for bit.
//!
//! Written here rather than taken from candle-nn because its `AdamW` keeps its moments
//! private: they could not be checkpointed.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Adam's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    /// Largest global gradient norm; larger gradients are scaled down to it (None: no clipping).
    pub clip: Option<f64>,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, clip: Some(1.0) }
    }
}

/// A setting of [`AdamConfig`] out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} {value}: {expected}")]
pub struct AdamError {
    /// The setting (`lr`, `clip`, `beta1`, `beta2`).
    pub field: &'static str,
    /// Its value.
    pub value: f64,
    /// What was expected.
    pub expected: &'static str,
}

impl AdamConfig {
    /// Check the values; the error names the setting.
    ///
    /// # Errors
    /// A non-positive learning rate or clip norm, decays outside [0, 1).
    pub fn validate(&self) -> Result<(), AdamError> {
        let err = |field, value, expected| Err(AdamError { field, value, expected });
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return err("lr", self.lr, "expected a positive learning rate");
        }
        if let Some(c) = self.clip {
            if !(c.is_finite() && c > 0.0) {
                return err("clip", c, "expected a positive gradient norm");
            }
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return err(name, b, "expected a value in [0, 1)");
            }
        }
        Ok(())
    }
}

/// Adam's state: the parameters, both moments and the step count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adam {
    /// Settings.
    pub config: AdamConfig,
    /// Parameters.
    pub x: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Steps taken.
    pub t: u64,
}

impl Adam {
    /// Start at `x`.
    pub fn new(config: AdamConfig, x: Vec<f32>) -> Adam {
        let n = x.len();
        Adam { config, x, m: vec![0.0; n], v: vec![0.0; n], t: 0 }
    }

    /// One step along `grad`; returns the gradient's global norm before clipping.
    ///
    /// # Errors
    /// A gradient of the wrong length or with non-finite values.
    pub fn step(&mut self, grad: &[f32]) -> Result<f64> {
        if grad.len() != self.x.len() {
            bail!("gradient of {} values for {} parameters", grad.len(), self.x.len());
        }
        let norm = grad.iter().map(|&g| f64::from(g) * f64::from(g)).sum::<f64>().sqrt();
        if !norm.is_finite() {
            bail!("the gradient has non-finite values (norm {norm})");
        }
        let scale = match self.config.clip {
            Some(c) if norm > c => c / norm,
            _ => 1.0,
        };
        self.t += 1;
        let c = &self.config;
        let (b1, b2) = (c.beta1, c.beta2);
        let bc1 = 1.0 - b1.powf(self.t as f64);
        let bc2 = 1.0 - b2.powf(self.t as f64);
        for (i, &gi) in grad.iter().enumerate() {
            let g = f64::from(gi) * scale;
            let m = b1 * f64::from(self.m[i]) + (1.0 - b1) * g;
            let v = b2 * f64::from(self.v[i]) + (1.0 - b2) * g * g;
            self.m[i] = m as f32;
            self.v[i] = v as f32;
            let update = c.lr * (m / bc1) / ((v / bc2).sqrt() + c.eps);
            self.x[i] = (f64::from(self.x[i]) - update) as f32;
        }
        Ok(norm)
    }

    /// Whether every value is finite and the sizes agree (a sane checkpoint).
    pub fn is_consistent(&self) -> bool {
        let n = self.x.len();
        self.m.len() == n
            && self.v.len() == n
            && self.x.iter().chain(&self.m).chain(&self.v).all(|v| v.is_finite())
            && self.v.iter().all(|&v| v >= 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_minimises_a_quadratic_and_round_trips_exactly() {
        // f(x) = sum (x_i - i)^2.
        let mut a =
            Adam::new(AdamConfig { lr: 0.1, clip: None, ..AdamConfig::default() }, vec![5.0, -3.0, 0.0]);
        for _ in 0..500 {
            let g: Vec<f32> = a.x.iter().enumerate().map(|(i, &x)| 2.0 * (x - i as f32)).collect();
            a.step(&g).unwrap();
        }
        for (i, &x) in a.x.iter().enumerate() {
            assert!((x - i as f32).abs() < 1e-2, "{:?}", a.x);
        }
        let text = serde_json::to_string(&a).unwrap();
        let mut b: Adam = serde_json::from_str(&text).unwrap();
        assert_eq!(a, b);
        let g = [0.3f32, -0.1, 0.7];
        a.step(&g).unwrap();
        b.step(&g).unwrap();
        assert_eq!(a.x, b.x);
    }

    #[test]
    fn clipping_bounds_the_first_step() {
        // The first Adam step moves each coordinate by about lr whatever the scale; clipping
        // is checked through the moments: a huge gradient gives the same step as a clipped one.
        let cfg = AdamConfig { lr: 0.5, clip: Some(1.0), ..AdamConfig::default() };
        let mut a = Adam::new(cfg, vec![0.0, 0.0]);
        let n = a.step(&[300.0, 400.0]).unwrap();
        assert_eq!(n, 500.0);
        let mut b = Adam::new(cfg, vec![0.0, 0.0]);
        b.step(&[0.6, 0.8]).unwrap();
        assert!(a.x.iter().zip(&b.x).all(|(p, q)| (p - q).abs() < 1e-6), "{:?} vs {:?}", a.x, b.x);
        assert!(Adam::new(cfg, vec![0.0]).step(&[f32::NAN]).is_err());
        assert!(AdamConfig { lr: 0.0, ..cfg }.validate().unwrap_err().to_string().starts_with("lr 0:"));
    }
}
