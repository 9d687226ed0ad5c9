//! Writing GGUF files with seeded random weights (`deopt model synth`), through ggml's `gguf_*`
//! C API: the metadata and tensor table are built in a `gguf_context`, the data is generated
//! here and appended with ggml's alignment, as [`super::dequantize_to_f16`] does.
//!
//! The tokenizer comes from another GGUF (every `tokenizer.*` key is copied), so the file
//! tokenizes like a real model; the vocabulary is padded with unused tokens up to the shape's.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;
use rand::{RngCore, SeedableRng};
use rayon::prelude::*;

use super::error::LlamaError;
use super::gguf::{cstr_lossy, meta_bytes, tmp_path, GgufFile};

/// A metadata value of a synthetic model.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// `uint32`.
    U32(u32),
    /// `float32`.
    F32(f32),
    /// A string.
    Str(String),
}

/// How the weight matrices are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    /// ggml's Q4_0 (blocks of 32: an f16 scale and 16 bytes of 4-bit values).
    Q4_0,
    /// IEEE half precision.
    F16,
}

impl WeightType {
    fn ggml(self) -> sys::ggml_type {
        match self {
            WeightType::Q4_0 => sys::GGML_TYPE_Q4_0,
            WeightType::F16 => sys::GGML_TYPE_F16,
        }
    }
    /// `general.file_type` (llama_ftype) of a file whose matrices are all this type.
    pub fn file_type(self) -> u32 {
        match self {
            WeightType::Q4_0 => 2,
            WeightType::F16 => 1,
        }
    }
}

/// One tensor: a matrix of random weights, or a norm vector of ones (F32).
#[derive(Debug, Clone, PartialEq)]
pub struct SynthTensor {
    /// GGUF tensor name.
    pub name: String,
    /// Dimensions, ggml order (`ne[0]` is the row length).
    pub ne: Vec<i64>,
    /// A norm weight (F32 ones) rather than a random matrix.
    pub norm: bool,
}

/// Everything a synthetic file holds besides the tokenizer.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// Metadata keys, in order (architecture keys and `general.*`).
    pub meta: Vec<(String, MetaValue)>,
    /// Tensors, in file order.
    pub tensors: Vec<SynthTensor>,
    /// Storage of the matrices.
    pub weight_type: WeightType,
    /// Vocabulary size the token arrays are padded to.
    pub vocab: usize,
    /// Standard deviation of the random matrix entries.
    pub std: f32,
    /// Seed of the weights.
    pub seed: u64,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthReport {
    /// Tensors written.
    pub tensors: usize,
    /// Size of the file in bytes.
    pub bytes_written: u64,
    /// Tokens the tokenizer source had, and padding tokens added.
    pub tokenizer_tokens: usize,
    /// Unused tokens appended to reach the shape's vocabulary.
    pub padded_tokens: usize,
}

const TOKENS: &str = "tokenizer.ggml.tokens";
const SCORES: &str = "tokenizer.ggml.scores";
const TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
/// llama.cpp's `LLAMA_TOKEN_TYPE_UNUSED`.
const TOKEN_TYPE_UNUSED: i32 = 5;

/// Owns a `gguf_context` made with `gguf_init_empty`.
struct GgufBuilder(NonNull<sys::gguf_context>);

impl Drop for GgufBuilder {
    fn drop(&mut self) {
        // SAFETY: created by `gguf_init_empty`, owned only by this value.
        unsafe { sys::gguf_free(self.0.as_ptr()) }
    }
}

/// Owns a `ggml_context` (no_alloc: tensor descriptors only).
struct GgmlMeta(NonNull<sys::ggml_context>);

impl Drop for GgmlMeta {
    fn drop(&mut self) {
        // SAFETY: created by `ggml_init`, owned only by this value.
        unsafe { sys::ggml_free(self.0.as_ptr()) }
    }
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).expect("no NUL left")
}

fn write_err(path: &Path, reason: impl Into<String>) -> LlamaError {
    LlamaError::GgufWrite { path: path.to_path_buf(), reason: reason.into() }
}

/// Number of tokens in a GGUF's tokenizer (0 if it has none).
///
/// # Errors
/// As [`GgufFile::open`].
pub fn tokenizer_size(path: &Path) -> Result<usize, LlamaError> {
    let g = GgufFile::open(path)?;
    let key = cstring(TOKENS);
    // SAFETY: valid context and key.
    let n = unsafe {
        let id = sys::gguf_find_key(g.ctx.as_ptr(), key.as_ptr());
        if id < 0 {
            0
        } else {
            sys::gguf_get_arr_n(g.ctx.as_ptr(), id)
        }
    };
    Ok(n)
}

/// Write a synthetic model: `spec`'s metadata and tensors, the tokenizer of `tokenizer`.
/// Written to a temporary file next to `out`, read back and renamed into place.
///
/// # Errors
/// An unreadable tokenizer source, a tokenizer without tokens or larger than `spec.vocab`, a
/// tensor whose rows do not split into Q4_0 blocks, write failures.
pub fn write_synthetic(spec: &SynthSpec, tokenizer: &Path, out: &Path) -> Result<SynthReport, LlamaError> {
    let src = GgufFile::open(tokenizer)?;
    // SAFETY: gguf_init_empty returns a fresh context or NULL.
    let b = GgufBuilder(
        NonNull::new(unsafe { sys::gguf_init_empty() })
            .ok_or_else(|| write_err(out, "gguf_init_empty failed"))?,
    );
    let ctx = b.0.as_ptr();
    // Metadata: the tokenizer's keys, then the shape's.
    // SAFETY: valid contexts; keys are NUL-terminated strings from ggml or `cstring`.
    unsafe {
        sys::gguf_set_kv(ctx, src.ctx.as_ptr());
        let n = sys::gguf_get_n_kv(ctx);
        let keys: Vec<String> = (0..n).map(|i| cstr_lossy(sys::gguf_get_key(ctx, i))).collect();
        for k in keys.iter().filter(|k| !k.starts_with("tokenizer.")) {
            sys::gguf_remove_key(ctx, cstring(k).as_ptr());
        }
    }
    let (tokenizer_tokens, padded_tokens) = pad_vocab(ctx, spec.vocab, tokenizer)?;
    for (k, v) in &spec.meta {
        let key = cstring(k);
        // SAFETY: valid context, key and value strings.
        unsafe {
            match v {
                MetaValue::U32(x) => sys::gguf_set_val_u32(ctx, key.as_ptr(), *x),
                MetaValue::F32(x) => sys::gguf_set_val_f32(ctx, key.as_ptr(), *x),
                MetaValue::Str(s) => sys::gguf_set_val_str(ctx, key.as_ptr(), cstring(s).as_ptr()),
            }
        }
    }
    // Tensor table: descriptors in a no_alloc ggml context.
    let params = sys::ggml_init_params {
        // SAFETY: pure function.
        mem_size: (spec.tensors.len() + 1) * unsafe { sys::ggml_tensor_overhead() },
        mem_buffer: std::ptr::null_mut(),
        no_alloc: true,
    };
    // SAFETY: valid parameters; NULL on failure.
    let meta = GgmlMeta(
        NonNull::new(unsafe { sys::ggml_init(params) }).ok_or_else(|| write_err(out, "ggml_init failed"))?,
    );
    let mut types = Vec::with_capacity(spec.tensors.len());
    for t in &spec.tensors {
        let ty = if t.norm { sys::GGML_TYPE_F32 } else { spec.weight_type.ggml() };
        if ty == sys::GGML_TYPE_Q4_0 && t.ne[0] % 32 != 0 {
            return Err(write_err(
                out,
                format!("tensor {}: rows of {} do not split into Q4_0 blocks of 32", t.name, t.ne[0]),
            ));
        }
        // SAFETY: the context has room for every descriptor; `ne` holds n_dims values; the
        // name is shorter than GGML_MAX_NAME (checked by ggml, which truncates).
        unsafe {
            let tensor = sys::ggml_new_tensor(meta.0.as_ptr(), ty, t.ne.len() as i32, t.ne.as_ptr());
            if tensor.is_null() {
                return Err(write_err(out, format!("cannot describe tensor {}", t.name)));
            }
            sys::ggml_set_name(tensor, cstring(&t.name).as_ptr());
            sys::gguf_add_tensor(ctx, tensor);
        }
        types.push(ty);
    }
    let tmp = tmp_path(out);
    let result = write_data(ctx, spec, &types, &tmp).and_then(|bytes| {
        let back = GgufFile::open(&tmp)
            .map_err(|e| write_err(out, format!("the written file does not read back: {e}")))?;
        if back.tensors().len() != spec.tensors.len() || back.file_len() != bytes {
            return Err(write_err(out, "the written file has a different tensor table or size"));
        }
        std::fs::rename(&tmp, out).map_err(|e| write_err(out, format!("cannot rename into place: {e}")))?;
        Ok(SynthReport { tensors: spec.tensors.len(), bytes_written: bytes, tokenizer_tokens, padded_tokens })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Pad the token arrays to `vocab` entries with unused tokens. Returns (tokens before, added).
fn pad_vocab(
    ctx: *mut sys::gguf_context,
    vocab: usize,
    tokenizer: &Path,
) -> Result<(usize, usize), LlamaError> {
    let bad = |reason: String| LlamaError::GgufWrite { path: tokenizer.to_path_buf(), reason };
    let find = |k: &str| {
        let key = cstring(k);
        // SAFETY: valid context and key.
        unsafe { sys::gguf_find_key(ctx, key.as_ptr()) }
    };
    let id = find(TOKENS);
    if id < 0 {
        return Err(bad("has no tokenizer (no tokenizer.ggml.tokens): expected a model GGUF".into()));
    }
    // SAFETY: `id` is a valid key id of `ctx`.
    let n = unsafe { sys::gguf_get_arr_n(ctx, id) };
    if n > vocab {
        return Err(bad(format!("has {n} tokens, more than the shape's vocabulary of {vocab}")));
    }
    if n == vocab {
        return Ok((n, 0));
    }
    // SAFETY: `id` is a string array of `n` entries.
    let mut tokens: Vec<CString> =
        (0..n).map(|i| unsafe { cstring(&cstr_lossy(sys::gguf_get_arr_str(ctx, id, i))) }).collect();
    tokens.extend((n..vocab).map(|i| cstring(&format!("<deopt_synth_unused_{i}>"))));
    let mut ptrs: Vec<*const std::ffi::c_char> = tokens.iter().map(|t| t.as_ptr()).collect();
    // SAFETY: `ptrs` holds `vocab` valid C strings, alive during the call (ggml copies them).
    unsafe { sys::gguf_set_arr_str(ctx, cstring(TOKENS).as_ptr(), ptrs.as_mut_ptr(), vocab) };
    for (key, ty) in [(SCORES, sys::GGUF_TYPE_FLOAT32), (TOKEN_TYPE, sys::GGUF_TYPE_INT32)] {
        let id = find(key);
        if id < 0 {
            continue;
        }
        // SAFETY: valid key id; its array type and length are checked before reading.
        unsafe {
            if sys::gguf_get_arr_type(ctx, id) != ty || sys::gguf_get_arr_n(ctx, id) != n {
                return Err(bad(format!("{key} is not a {n}-entry array of the expected type")));
            }
            let data = sys::gguf_get_arr_data(ctx, id).cast::<u8>();
            let mut bytes = std::slice::from_raw_parts(data, n * 4).to_vec();
            let fill = if ty == sys::GGUF_TYPE_FLOAT32 {
                0f32.to_le_bytes()
            } else {
                TOKEN_TYPE_UNUSED.to_le_bytes()
            };
            for _ in n..vocab {
                bytes.extend_from_slice(&fill);
            }
            sys::gguf_set_arr_data(ctx, cstring(key).as_ptr(), ty, bytes.as_ptr().cast(), vocab);
        }
    }
    Ok((n, vocab - n))
}

/// Rows generated per parallel task (each from its own seeded generator, so the bytes do
/// not depend on the thread count).
const CHUNK_ROWS: usize = 64;

fn write_data(
    ctx: *mut sys::gguf_context,
    spec: &SynthSpec,
    types: &[sys::ggml_type],
    tmp: &PathBuf,
) -> Result<u64, LlamaError> {
    let wr = |e: std::io::Error| write_err(tmp, format!("cannot write: {e}"));
    let file = File::create(tmp).map_err(wr)?;
    let mut w = BufWriter::with_capacity(1 << 22, file);
    let meta = meta_bytes(ctx);
    w.write_all(&meta).map_err(wr)?;
    let data_start = meta.len() as u64;
    // SAFETY: valid context.
    let align = unsafe { sys::gguf_get_alignment(ctx) } as u64;
    let mut written = data_start;
    for (i, (t, &ty)) in spec.tensors.iter().zip(types).enumerate() {
        // SAFETY: `i` is a valid tensor id (same table as `spec.tensors`).
        let rel = unsafe { sys::gguf_get_tensor_offset(ctx, i as i64) } as u64;
        if written != data_start + rel {
            return Err(write_err(
                tmp,
                format!(
                    "tensor {} would start at byte {written}, its offset says {}",
                    t.name,
                    data_start + rel
                ),
            ));
        }
        let row = t.ne[0] as usize;
        let rows: usize = t.ne[1..].iter().map(|&d| d as usize).product();
        // SAFETY: pure function of type and length.
        let row_bytes = unsafe { sys::ggml_row_size(ty, row as i64) };
        let mut data = vec![0u8; row_bytes * rows];
        let tensor_seed = spec.seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        data.par_chunks_mut(row_bytes * CHUNK_ROWS).enumerate().for_each(|(c, chunk)| {
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(tensor_seed.wrapping_add(c as u64));
            fill(chunk, ty, row, spec.std, &mut rng);
        });
        w.write_all(&data).map_err(wr)?;
        written += data.len() as u64;
        let pad = (align - written % align) % align;
        w.write_all(&vec![0u8; pad as usize]).map_err(wr)?;
        written += pad;
    }
    let file = w.into_inner().map_err(|e| wr(e.into_error()))?;
    file.sync_all().map_err(wr)?;
    Ok(written)
}

/// Fill whole rows: F32 norm weights with ones; F16 with uniform values of standard deviation
/// `std`; Q4_0 with a fixed scale and uniform 4-bit values (the same spread).
fn fill(chunk: &mut [u8], ty: sys::ggml_type, row: usize, std: f32, rng: &mut impl RngCore) {
    match ty {
        sys::GGML_TYPE_F32 => {
            for v in chunk.chunks_exact_mut(4) {
                v.copy_from_slice(&1f32.to_le_bytes());
            }
        }
        sys::GGML_TYPE_F16 => {
            let a = std * 3f32.sqrt();
            let mut f = vec![0f32; row];
            let mut h = vec![0u16; row];
            for r in chunk.chunks_exact_mut(row * 2) {
                for x in &mut f {
                    *x = (rng.next_u32() as f32 / u32::MAX as f32 * 2.0 - 1.0) * a;
                }
                // SAFETY: `f` and `h` both hold `row` elements.
                unsafe { sys::ggml_fp32_to_fp16_row(f.as_ptr(), h.as_mut_ptr(), row as i64) };
                for (o, v) in r.chunks_exact_mut(2).zip(&h) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        _ => {
            // Q4_0 block: f16 scale d, then 32 values (q - 8) * d packed in 16 bytes. Uniform q
            // in 0..16 has a standard deviation of about 4.61 steps.
            let mut d = [0u16; 1];
            // SAFETY: one element each.
            unsafe { sys::ggml_fp32_to_fp16_row([std / 4.61].as_ptr(), d.as_mut_ptr(), 1) };
            rng.fill_bytes(chunk);
            for block in chunk.chunks_exact_mut(18) {
                block[..2].copy_from_slice(&d[0].to_le_bytes());
            }
        }
    }
}
