//! `x W^T` for a frozen weight `W`, as a custom op whose backward pass returns the input's
//! gradient only. candle's own matmul also computes the weight's gradient, whether or not
//! anything asked for it: for every projection of every layer, each step (about half the
//! time and memory of a prompt-tuning step, ../shared/NOTES.md).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Device, Layout, Result, Shape, Tensor};

/// A frozen linear map; see the module docs.
pub struct Frozen {
    /// `[out, in]`, as stored in the GGUF.
    w: Tensor,
}

type Op = Arc<Box<dyn CustomOp1 + Send + Sync>>;

/// A frozen weight ready to apply.
#[derive(Clone)]
pub struct FrozenLinear {
    op: Op,
    w: Tensor,
}

impl FrozenLinear {
    /// Wrap `w` (`[out, in]`).
    pub fn new(w: Tensor) -> FrozenLinear {
        FrozenLinear { op: Arc::new(Box::new(Frozen { w: w.clone() })), w }
    }

    /// `x W^T` over the last dimension of `x`. Tracks the gradient of `x` only.
    ///
    /// # Errors
    /// Shape mismatches.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.track_op() {
            x.contiguous()?.apply_op1_arc(self.op.clone())
        } else {
            x.broadcast_matmul(&self.w.t()?)
        }
    }

    /// The weight.
    pub fn weight(&self) -> &Tensor {
        &self.w
    }
}

impl CustomOp1 for Frozen {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-linear: expected a contiguous input");
        };
        // A copy of the input (cheap next to the product), so candle's own matmul does the work.
        let x = match storage {
            CpuStorage::F32(d) => Tensor::from_slice(&d[a..b], layout.shape(), &Device::Cpu)?,
            CpuStorage::F64(d) => Tensor::from_slice(&d[a..b], layout.shape(), &Device::Cpu)?,
            _ => candle_core::bail!("frozen-linear: expected f32 or f64 input"),
        };
        let y = x.broadcast_matmul(&self.w.t()?)?;
        let shape = y.shape().clone();
        let flat = y.flatten_all()?;
        let out = match storage {
            CpuStorage::F64(_) => CpuStorage::F64(flat.to_vec1::<f64>()?),
            _ => CpuStorage::F32(flat.to_vec1::<f32>()?),
        };
        Ok((out, shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.broadcast_matmul(&self.w)?))
    }
}
