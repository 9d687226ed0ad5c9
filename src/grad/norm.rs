//! RMSNorm over the last dimension as one op with its gradient written out: the composite of
//! candle ops keeps five temporaries per call for the backward pass, which on Gemma 3 (six
//! norms per layer) was most of a step's memory. The weight is frozen (no gradient).

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x / sqrt(mean(x^2) + eps) * w`, rows along the last dimension.
pub struct RmsNorm {
    w: Vec<f64>,
    eps: f64,
}

impl RmsNorm {
    /// Normalise with weight `w` (a vector as long as the last dimension).
    ///
    /// # Errors
    /// A weight that is not a vector.
    pub fn new(w: &Tensor, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm { w: w.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?, eps })
    }

    /// Apply to `x`.
    ///
    /// # Errors
    /// A last dimension other than the weight's length.
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        if x.dim(candle_core::D::Minus1)? != self.w.len() {
            candle_core::bail!(
                "rms-norm: last dimension {} but a weight of {}",
                x.dim(candle_core::D::Minus1)?,
                self.w.len()
            );
        }
        x.contiguous()?.apply_op1(self)
    }

    fn inv_rms(&self, row: impl Iterator<Item = f64>) -> f64 {
        let (mut s, mut n) = (0.0, 0usize);
        for v in row {
            s += v * v;
            n += 1;
        }
        1.0 / (s / n.max(1) as f64 + self.eps).sqrt()
    }
}

macro_rules! forward_rows {
    ($self:expr, $x:expr, $t:ty) => {{
        let d = $self.w.len();
        let mut y = vec![0 as $t; $x.len()];
        y.par_chunks_mut(d).zip($x.par_chunks(d)).for_each(|(yr, xr)| {
            let r = $self.inv_rms(xr.iter().map(|&v| v as f64));
            for j in 0..d {
                yr[j] = (xr[j] as f64 * r * $self.w[j]) as $t;
            }
        });
        y
    }};
}

macro_rules! backward_rows {
    ($self:expr, $x:expr, $g:expr, $t:ty) => {{
        let d = $self.w.len();
        let mut dx = vec![0 as $t; $x.len()];
        dx.par_chunks_mut(d).zip($x.par_chunks(d).zip($g.par_chunks(d))).for_each(|(out, (xr, gr))| {
            let r = $self.inv_rms(xr.iter().map(|&v| v as f64));
            // d/dx_i of x_j r w_j, contracted with g: r g_i w_i - x_i r^3 (sum_j g_j w_j x_j) / d.
            let dot: f64 = (0..d).map(|j| gr[j] as f64 * $self.w[j] * xr[j] as f64).sum();
            let c = r * r * r * dot / d as f64;
            for i in 0..d {
                out[i] = (r * gr[i] as f64 * $self.w[i] - xr[i] as f64 * c) as $t;
            }
        });
        dx
    }};
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("rms-norm: expected a contiguous input");
        };
        let out = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(forward_rows!(self, &x[a..b], f32)),
            CpuStorage::F64(x) => CpuStorage::F64(forward_rows!(self, &x[a..b], f64)),
            _ => candle_core::bail!("rms-norm: expected f32 or f64 input"),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (x, g) = (arg.flatten_all()?, grad.contiguous()?.flatten_all()?);
        let dx = match arg.dtype() {
            candle_core::DType::F64 => {
                let (x, g) = (x.to_vec1::<f64>()?, g.to_vec1::<f64>()?);
                Tensor::from_vec(backward_rows!(self, x, g, f64), arg.shape(), arg.device())?
            }
            _ => {
                let (x, g) = (x.to_vec1::<f32>()?, g.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?);
                Tensor::from_vec(backward_rows!(self, x, g, f32), arg.shape(), arg.device())?
            }
        };
        Ok(Some(dx))
    }
}
