//! The differentiable forward pass: Gemma 3 and Llama from the same GGUF the engine loads,
//! weights dequantized to f32 and frozen, input given as embedding rows, any attention mask.
//!
//! Only candle ops whose backward pass is implemented are used (../shared/NOTES.md: the fused
//! softmax, RMSNorm and RoPE kernels and quantized matmuls drop gradients silently): softmax,
//! RMSNorm and RoPE are written out, and the projections go through [`FrozenLinear`].

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};
use candle_core::quantized::gguf_file::Content;
use candle_core::{DType, Device, Tensor, D};

use crate::grad::arch::{Arch, ArchConfig};
use crate::grad::frozen::FrozenLinear;
use crate::grad::norm::RmsNorm;

/// One transformer block's weights.
struct Layer {
    attn_norm: Tensor,
    wq: FrozenLinear,
    wk: FrozenLinear,
    wv: FrozenLinear,
    wo: FrozenLinear,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    post_attn_norm: Option<Tensor>,
    ffn_norm: Tensor,
    gate: FrozenLinear,
    up: FrozenLinear,
    down: FrozenLinear,
    post_ffn_norm: Option<Tensor>,
}

/// What a forward call needs besides the input rows: masks and rotary tables for the
/// positions of one sequence, and which rows to return.
pub struct SeqInputs {
    /// Additive mask `[L, L]` of global layers.
    pub mask: Tensor,
    /// Additive mask of sliding-window layers (None: the model has none).
    pub mask_swa: Option<Tensor>,
    /// `cos`, `sin` `[L, head_dim / 2]` of global layers.
    pub rope: (Tensor, Tensor),
    /// The same for sliding-window layers.
    pub rope_swa: Option<(Tensor, Tensor)>,
    /// Rows whose final hidden state is wanted (u32 indices).
    pub select: Tensor,
}

/// A frozen model for gradients with respect to its input rows.
pub struct GradModel {
    /// Shapes and constants.
    pub cfg: ArchConfig,
    layers: Vec<Layer>,
    out_norm: Tensor,
    /// The output matrix when it is not tied to the token embeddings.
    output: Option<Tensor>,
    path: PathBuf,
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    RmsNorm::new(w, eps)?.forward(x)
}

fn softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

impl GradModel {
    /// Load and dequantize every weight except the token embeddings (the inputs are rows
    /// given by the caller; a tied output reads the few label rows it needs from there).
    ///
    /// # Errors
    /// An unreadable file, an unsupported architecture, missing tensors.
    pub fn load(path: &Path) -> Result<GradModel> {
        Self::load_as(path, DType::F32)
    }

    /// [`Self::load`] with weights of another float type (f64 for finite-difference checks).
    ///
    /// # Errors
    /// As [`Self::load`].
    pub fn load_as(path: &Path, dtype: DType) -> Result<GradModel> {
        let source = path.display().to_string();
        let mut f = File::open(path).with_context(|| format!("{source}: cannot open"))?;
        let content =
            Content::read(&mut f).map_err(|e| anyhow!("{source}: not a readable GGUF file: {e}"))?;
        let cfg = ArchConfig::from_metadata(&content.metadata, &source)?;
        let dev = Device::Cpu;
        let mut get = |name: &str| -> Result<Tensor> {
            let q =
                content.tensor(&mut f, name, &dev).map_err(|e| anyhow!("{source}: tensor {name}: {e}"))?;
            Ok(q.dequantize(&dev)?.to_dtype(dtype)?)
        };
        let has = |name: &str| content.tensor_infos.contains_key(name);
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for il in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}.weight");
            let gemma = cfg.arch == Arch::Gemma3;
            let opt = |s: &str, get: &mut dyn FnMut(&str) -> Result<Tensor>| -> Result<Option<Tensor>> {
                if gemma && has(&n(s)) {
                    Ok(Some(get(&n(s))?))
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                attn_norm: get(&n("attn_norm"))?,
                wq: FrozenLinear::new(get(&n("attn_q"))?),
                wk: FrozenLinear::new(get(&n("attn_k"))?),
                wv: FrozenLinear::new(get(&n("attn_v"))?),
                wo: FrozenLinear::new(get(&n("attn_output"))?),
                q_norm: opt("attn_q_norm", &mut get)?,
                k_norm: opt("attn_k_norm", &mut get)?,
                post_attn_norm: opt("post_attention_norm", &mut get)?,
                ffn_norm: get(&n("ffn_norm"))?,
                gate: FrozenLinear::new(get(&n("ffn_gate"))?),
                up: FrozenLinear::new(get(&n("ffn_up"))?),
                down: FrozenLinear::new(get(&n("ffn_down"))?),
                post_ffn_norm: opt("post_ffw_norm", &mut get)?,
            });
        }
        let out_norm = get("output_norm.weight")?;
        let output = if has("output.weight") { Some(get("output.weight")?) } else { None };
        Ok(GradModel { cfg, layers, out_norm, output, path: path.to_path_buf() })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Element type of the weights (f32; f64 in the finite-difference tests of the blocks).
    pub fn dtype(&self) -> DType {
        self.out_norm.dtype()
    }

    /// The untied output matrix `[vocab, n_embd]`, if the model has one.
    pub fn output(&self) -> Option<&Tensor> {
        self.output.as_ref()
    }

    /// Bytes of weights held.
    pub fn weight_bytes(&self) -> usize {
        let t = |x: &Tensor| x.elem_count() * 4;
        let lin = |x: &FrozenLinear| t(x.weight());
        let o = |x: &Option<Tensor>| x.as_ref().map_or(0, t);
        self.layers
            .iter()
            .map(|l| {
                t(&l.attn_norm)
                    + lin(&l.wq)
                    + lin(&l.wk)
                    + lin(&l.wv)
                    + lin(&l.wo)
                    + o(&l.q_norm)
                    + o(&l.k_norm)
                    + o(&l.post_attn_norm)
                    + t(&l.ffn_norm)
                    + lin(&l.gate)
                    + lin(&l.up)
                    + lin(&l.down)
                    + o(&l.post_ffn_norm)
            })
            .sum::<usize>()
            + t(&self.out_norm)
            + o(&self.output)
    }

    /// Rotary tables for `pos`: `cos`, `sin` of `pos * scale * base^(-2i / head_dim)`.
    ///
    /// # Errors
    /// Tensor construction failures.
    pub fn rope_tables(&self, pos: &[usize], base: f64, scale: f64) -> Result<(Tensor, Tensor)> {
        let half = self.cfg.head_dim / 2;
        let mut c = Vec::with_capacity(pos.len() * half);
        let mut s = Vec::with_capacity(pos.len() * half);
        for &p in pos {
            for i in 0..half {
                let theta = p as f64 * scale * base.powf(-2.0 * i as f64 / self.cfg.head_dim as f64);
                c.push(theta.cos() as f32);
                s.push(theta.sin() as f32);
            }
        }
        let (dev, dt) = (Device::Cpu, self.dtype());
        Ok((
            Tensor::from_vec(c, (pos.len(), half), &dev)?.to_dtype(dt)?,
            Tensor::from_vec(s, (pos.len(), half), &dev)?.to_dtype(dt)?,
        ))
    }

    /// Masks and tables for a sequence with positions `pos` and a mask builder
    /// (`window` -> row-major `[L, L]` additive mask), returning rows `select`.
    ///
    /// # Errors
    /// Tensor construction failures.
    pub fn seq_inputs(
        &self,
        pos: &[usize],
        mask: impl Fn(Option<usize>) -> Vec<f32>,
        select: &[usize],
    ) -> Result<SeqInputs> {
        let n = pos.len();
        let dev = Device::Cpu;
        let t = |m: Vec<f32>| Tensor::from_vec(m, (n, n), &dev)?.to_dtype(self.dtype());
        let swa = self.cfg.sliding_window;
        let sel: Vec<u32> = select.iter().map(|&i| i as u32).collect();
        Ok(SeqInputs {
            mask: t(mask(None))?,
            mask_swa: swa.map(|w| t(mask(Some(w)))).transpose()?,
            rope: self.rope_tables(pos, self.cfg.rope_base, self.cfg.rope_scale)?,
            rope_swa: swa.map(|_| self.rope_tables(pos, self.cfg.rope_base_swa, 1.0)).transpose()?,
            select: Tensor::from_vec(sel, select.len(), &dev)?,
        })
    }

    fn rope(&self, x: &Tensor, cs: &(Tensor, Tensor)) -> candle_core::Result<Tensor> {
        // x: [heads, L, head_dim]; the candle helpers take [batch, heads, L, head_dim].
        let x = x.unsqueeze(0)?.contiguous()?;
        let y = match self.cfg.arch {
            // llama.cpp's NeoX mode (halves) for Gemma, normal mode (pairs) for Llama.
            Arch::Gemma3 => candle_nn::rotary_emb::rope_slow(&x, &cs.0, &cs.1)?,
            Arch::Llama => candle_nn::rotary_emb::rope_i_slow(&x, &cs.0, &cs.1)?,
        };
        y.squeeze(0)
    }

    fn attention(&self, l: &Layer, h: &Tensor, s: &SeqInputs, swa: bool) -> candle_core::Result<Tensor> {
        let c = &self.cfg;
        let n = h.dim(0)?;
        let heads = |x: Tensor, k: usize| x.reshape((n, k, c.head_dim))?.transpose(0, 1)?.contiguous();
        let mut q = heads(l.wq.forward(h)?, c.n_head)?;
        let mut k = heads(l.wk.forward(h)?, c.n_head_kv)?;
        let v = heads(l.wv.forward(h)?, c.n_head_kv)?;
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            q = rms_norm(&q, qn, c.eps)?;
            k = rms_norm(&k, kn, c.eps)?;
        }
        let cs = if swa { s.rope_swa.as_ref().unwrap_or(&s.rope) } else { &s.rope };
        let q = (self.rope(&q, cs)? * (1.0 / (c.head_dim as f64).sqrt()))?;
        let k = self.rope(&k, cs)?;
        // Grouped-query attention: each key/value head serves n_head / n_head_kv query heads.
        let rep = c.n_head / c.n_head_kv;
        let expand = |x: Tensor| -> candle_core::Result<Tensor> {
            if rep == 1 {
                return Ok(x);
            }
            x.unsqueeze(1)?.expand((c.n_head_kv, rep, n, c.head_dim))?.reshape((c.n_head, n, c.head_dim))
        };
        let (k, v) = (expand(k)?, expand(v)?);
        let mask = if swa { s.mask_swa.as_ref().unwrap_or(&s.mask) } else { &s.mask };
        let att = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let out = softmax(&att)?.matmul(&v)?; // [H, L, hd]
        let out = out.transpose(0, 1)?.reshape((n, c.n_head * c.head_dim))?;
        l.wo.forward(&out)
    }

    fn mlp(&self, l: &Layer, h: &Tensor) -> candle_core::Result<Tensor> {
        let g = l.gate.forward(h)?;
        let g = match self.cfg.arch {
            Arch::Gemma3 => g.gelu()?, // tanh approximation, as llama.cpp's ggml_gelu
            Arch::Llama => g.silu()?,
        };
        l.down.forward(&(g * l.up.forward(h)?)?)
    }

    /// Run the blocks on input rows `x` (`[L, n_embd]`) and return the final-normed hidden
    /// states of the rows `s.select`.
    ///
    /// # Errors
    /// Shape mismatches.
    pub fn forward(&self, x: &Tensor, s: &SeqInputs) -> Result<Tensor> {
        let eps = self.cfg.eps;
        let mut x = x.clone();
        for (il, l) in self.layers.iter().enumerate() {
            let swa = self.cfg.is_swa(il);
            let h = rms_norm(&x, &l.attn_norm, eps)?;
            let mut a = self.attention(l, &h, s, swa)?;
            if let Some(w) = &l.post_attn_norm {
                a = rms_norm(&a, w, eps)?;
            }
            x = (x + a)?;
            let h = rms_norm(&x, &l.ffn_norm, eps)?;
            let mut m = self.mlp(l, &h)?;
            if let Some(w) = &l.post_ffn_norm {
                m = rms_norm(&m, w, eps)?;
            }
            x = (x + m)?;
        }
        let x = x.index_select(&s.select, 0)?;
        Ok(rms_norm(&x, &self.out_norm, eps)?)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Every building block and the whole forward pass against central finite differences,
    //! in f64 on a tiny model with random weights (the real models are checked the same way,
    //! in f32, by the integration tests).

    use super::*;
    use candle_core::Var;
    use rand::{Rng, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn randn(rng: &mut Xoshiro256PlusPlus, dims: &[usize], scale: f64) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f64> = (0..n).map(|_| (rng.gen::<f64>() - 0.5) * 2.0 * scale).collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    /// A 6-layer model of width 8 with random f64 weights (Gemma 3: five sliding-window
    /// layers with a window of 3, then a global one).
    pub(crate) fn tiny(arch: Arch, seed: u64) -> GradModel {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let (d, h, kv, hd, ff) = (8, 2, 1, 4, 12);
        let gemma = arch == Arch::Gemma3;
        let cfg = ArchConfig {
            arch,
            n_embd: d,
            n_layer: 6,
            n_head: h,
            n_head_kv: kv,
            head_dim: hd,
            eps: 1e-6,
            rope_base: 10_000.0,
            rope_base_swa: 100.0,
            rope_scale: 1.0,
            sliding_window: gemma.then_some(3),
            n_ctx: 64,
        };
        let norm = |n: usize, r: &mut Xoshiro256PlusPlus| (randn(r, &[n], 0.3) + 1.0).unwrap();
        let layers = (0..6)
            .map(|_| {
                let mut r2 = Xoshiro256PlusPlus::seed_from_u64(rng.gen());
                let mut lin = |o: usize, i: usize| FrozenLinear::new(randn(&mut rng, &[o, i], 0.6));
                let (wq, wk, wv, wo) = (lin(h * hd, d), lin(kv * hd, d), lin(kv * hd, d), lin(d, h * hd));
                let (gate, up, down) = (lin(ff, d), lin(ff, d), lin(d, ff));
                Layer {
                    attn_norm: norm(d, &mut r2),
                    wq,
                    wk,
                    wv,
                    wo,
                    q_norm: gemma.then(|| norm(hd, &mut r2)),
                    k_norm: gemma.then(|| norm(hd, &mut r2)),
                    post_attn_norm: gemma.then(|| norm(d, &mut r2)),
                    ffn_norm: norm(d, &mut r2),
                    gate,
                    up,
                    down,
                    post_ffn_norm: gemma.then(|| norm(d, &mut r2)),
                }
            })
            .collect();
        let out_norm = norm(d, &mut rng);
        GradModel { cfg, layers, out_norm, output: None, path: PathBuf::from("tiny") }
    }

    /// A chain 0..n plus a branch: positions 0 1 2 3 4 5 | 4 5 (the last two units branch
    /// off after unit 3), with the tree mask.
    fn tree_inputs(m: &GradModel) -> (usize, SeqInputs) {
        let parent = [None, Some(0), Some(1), Some(2), Some(3), Some(4), Some(3), Some(6)];
        let pos = [0usize, 1, 2, 3, 4, 5, 4, 5];
        let n = pos.len();
        let mask = |w: Option<usize>| {
            let mut v = vec![f32::NEG_INFINITY; n * n];
            for q in 0..n {
                let mut k = Some(q);
                while let Some(kk) = k {
                    if w.is_none_or(|w| pos[q] - pos[kk] < w) {
                        v[q * n + kk] = 0.0;
                    }
                    k = parent[kk];
                }
            }
            v
        };
        (n, m.seq_inputs(&pos, mask, &[5, 7, 2]).unwrap())
    }

    /// The gradient of `f` (a scalar) at `x0` against central differences along random
    /// directions and single coordinates; returns the worst relative error.
    pub(crate) fn check_gradient(
        x0: &Tensor,
        f: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
        seed: u64,
    ) -> f64 {
        let var = Var::from_tensor(x0).unwrap();
        let y = f(var.as_tensor()).unwrap();
        let grads = y.backward().unwrap();
        let g = grads.get(var.as_tensor()).expect("no gradient reached the input: an op dropped it");
        let g: Vec<f64> = g.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap();
        let scalar = |x: &Tensor| f(x).unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let n = x0.elem_count();
        let mut worst: f64 = 0.0;
        let h = 1e-5;
        for k in 0..6 {
            let u: Vec<f64> = if k < 3 {
                (0..n).map(|_| rng.gen::<f64>() - 0.5).collect()
            } else {
                let mut e = vec![0.0; n];
                e[rng.gen_range(0..n)] = 1.0;
                e
            };
            let ut =
                Tensor::from_vec(u.clone(), x0.shape(), &Device::Cpu).unwrap().to_dtype(x0.dtype()).unwrap();
            let plus = scalar(&(x0 + (&ut * h).unwrap()).unwrap());
            let minus = scalar(&(x0 - (&ut * h).unwrap()).unwrap());
            let fd = (plus - minus) / (2.0 * h);
            let an: f64 = g.iter().zip(&u).map(|(a, b)| a * b).sum();
            let rel = (an - fd).abs() / (an.abs() + fd.abs()).max(1e-9);
            worst = worst.max(rel);
        }
        worst
    }

    fn weighted_sum(y: &Tensor, seed: u64) -> candle_core::Result<Tensor> {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let r = randn(&mut rng, y.dims(), 1.0);
        (y * r)?.sum_all()
    }

    #[test]
    fn every_block_matches_finite_differences() {
        for arch in [Arch::Gemma3, Arch::Llama] {
            let m = tiny(arch, 7);
            let (n, s) = tree_inputs(&m);
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
            let x = randn(&mut rng, &[n, m.cfg.n_embd], 1.0);
            let l = &m.layers[0];
            let checks: Vec<(&str, f64)> = vec![
                ("rms norm", check_gradient(&x, |x| weighted_sum(&rms_norm(x, &l.attn_norm, 1e-6)?, 1), 11)),
                ("frozen linear", check_gradient(&x, |x| weighted_sum(&l.wq.forward(x)?, 2), 12)),
                (
                    "rope",
                    check_gradient(
                        &randn(&mut rng, &[2, n, m.cfg.head_dim], 1.0),
                        |q| weighted_sum(&m.rope(q, &s.rope)?, 3),
                        13,
                    ),
                ),
                (
                    "attention (sliding window)",
                    check_gradient(&x, |x| weighted_sum(&m.attention(l, x, &s, true)?, 4), 14),
                ),
                (
                    "attention (global)",
                    check_gradient(&x, |x| weighted_sum(&m.attention(l, x, &s, false)?, 5), 15),
                ),
                ("mlp", check_gradient(&x, |x| weighted_sum(&m.mlp(l, x)?, 6), 16)),
                ("forward", check_gradient(&x, |x| weighted_sum(&m.forward(x, &s).unwrap(), 7), 17)),
            ];
            for (name, err) in checks {
                assert!(err < 1e-5, "{arch:?} {name}: relative error {err:e} against finite differences");
            }
        }
    }

    #[test]
    fn the_tree_mask_keeps_branches_apart() {
        // A unit's output depends on its ancestors only: changing the other branch leaves it.
        let m = tiny(Arch::Gemma3, 9);
        let (n, s) = tree_inputs(&m);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(4);
        let x = randn(&mut rng, &[n, m.cfg.n_embd], 1.0);
        let y = m.forward(&x, &s).unwrap().to_vec2::<f64>().unwrap();
        let mut v = x.to_vec2::<f64>().unwrap();
        v[7].iter_mut().for_each(|a| *a += 1.0); // the branch's second unit
        let x2 = Tensor::new(v, &Device::Cpu).unwrap();
        let y2 = m.forward(&x2, &s).unwrap().to_vec2::<f64>().unwrap();
        assert_eq!(y[0], y2[0], "unit 5 must not see unit 7");
        assert_eq!(y[2], y2[2], "unit 2 must not see unit 7");
        assert_ne!(y[1], y2[1]);
    }
}
