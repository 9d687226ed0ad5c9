//! Reading GGUF files directly (metadata, tensor table, raw tensor bytes) and writing a
//! dequantized F16 copy, through ggml's `gguf_*` C API.

use std::ffi::{c_char, CStr, CString};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;
use rayon::prelude::*;

use super::backend::init_backend;
use super::error::{io_err, LlamaError};

/// The four bytes every GGUF file starts with.
const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// Rows converted per read/convert/write step of [`dequantize_to_f16`] (bounded memory).
const DEQUANT_CHUNK_ROWS: usize = 8192;

/// Check that `path` exists and starts with the GGUF magic; return its length in bytes.
///
/// llama.cpp may abort on some malformed inputs, so every file is checked here before any C
/// call sees it.
pub(crate) fn check_gguf_magic(path: &Path) -> Result<u64, LlamaError> {
    let mut file = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            LlamaError::FileMissing { path: path.to_path_buf() }
        } else {
            io_err("cannot open", path, e)
        }
    })?;
    let len = file.metadata().map_err(|e| io_err("cannot stat", path, e))?.len();
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(LlamaError::NotGguf { path: path.to_path_buf(), magic: "(not a regular file)".into() });
    }
    let mut magic = Vec::with_capacity(4);
    (&mut file).take(4).read_to_end(&mut magic).map_err(|e| io_err("cannot read", path, e))?;
    if magic != GGUF_MAGIC {
        return Err(LlamaError::NotGguf {
            path: path.to_path_buf(),
            magic: format!("{:?}", String::from_utf8_lossy(&magic)),
        });
    }
    Ok(len)
}

/// A path as a C string for llama.cpp.
pub(crate) fn path_cstring(path: &Path) -> Result<CString, LlamaError> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    CString::new(bytes).map_err(|e| LlamaError::InteriorNul { what: "path", offset: e.nul_position() })
}

/// One tensor of a GGUF file, as described by its tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `token_embd.weight`.
    pub name: String,
    /// ggml type name, e.g. `q8_0`, `f16`, `f32`.
    pub type_name: String,
    /// Whether the type is a quantized block format.
    pub is_quantized: bool,
    /// Number of dimensions in use (1 to 4).
    pub n_dims: usize,
    /// Extent of each dimension; `ne[0]` is the row length.
    pub ne: [i64; 4],
    /// Absolute byte offset of the tensor's data in the file.
    pub file_offset: u64,
    /// Size of the tensor's data in bytes.
    pub nbytes: u64,
    /// Raw ggml type id.
    pub(crate) ggml_type: sys::ggml_type,
    /// Offset relative to the start of the data section.
    pub(crate) rel_offset: u64,
}

impl TensorInfo {
    /// Number of rows (`nelements / ne[0]`).
    pub fn n_rows(&self) -> u64 {
        let n: i64 = self.ne.iter().product();
        (n / self.ne[0].max(1)) as u64
    }
}

/// An open GGUF file: its metadata and tensor table, without tensor data.
///
/// Owns a `gguf_context` and the `ggml_context` holding its tensor descriptors (created with
/// `no_alloc`, so no tensor data is loaded). Opening validates the magic, parses the header,
/// and checks that every tensor's data lies inside the file, so a truncated file is reported
/// here rather than later.
#[derive(Debug)]
pub struct GgufFile {
    pub(super) ctx: NonNull<sys::gguf_context>,
    meta: NonNull<sys::ggml_context>,
    path: PathBuf,
    file_len: u64,
}

// SAFETY: the gguf and ggml contexts are plain heap data owned by this value; every `&self`
// method only reads them, and the only mutation (`set_tensor_type`) takes `&mut self`.
unsafe impl Send for GgufFile {}
// SAFETY: see `Send`: shared references only read.
unsafe impl Sync for GgufFile {}

impl Drop for GgufFile {
    fn drop(&mut self) {
        // SAFETY: both pointers came from `gguf_init_from_file`, are owned by this value only,
        // and are freed exactly once here. The ggml context holds only tensor descriptors.
        unsafe {
            sys::gguf_free(self.ctx.as_ptr());
            sys::ggml_free(self.meta.as_ptr());
        }
    }
}

impl GgufFile {
    /// Open a GGUF file and read its metadata and tensor table.
    ///
    /// # Errors
    /// [`LlamaError::FileMissing`], [`LlamaError::NotGguf`] (wrong magic),
    /// [`LlamaError::CorruptGguf`] (unparsable header or tensor data past the end of the file),
    /// [`LlamaError::Io`].
    pub fn open(path: &Path) -> Result<Self, LlamaError> {
        init_backend();
        let file_len = check_gguf_magic(path)?;
        let cpath = path_cstring(path)?;
        let mut meta: *mut sys::ggml_context = std::ptr::null_mut();
        let params = sys::gguf_init_params { no_alloc: true, ctx: &mut meta };
        // SAFETY: `cpath` is a valid NUL-terminated string; `meta` is a valid out-pointer that
        // gguf fills with a new ggml context (or leaves null on failure).
        let raw = unsafe { sys::gguf_init_from_file(cpath.as_ptr(), params) };
        let (Some(ctx), Some(meta)) = (NonNull::new(raw), NonNull::new(meta)) else {
            // SAFETY: free whichever of the two was created; both functions accept only
            // pointers they returned, and null is checked.
            unsafe {
                if !raw.is_null() {
                    sys::gguf_free(raw);
                }
                if !meta.is_null() {
                    sys::ggml_free(meta);
                }
            }
            return Err(LlamaError::CorruptGguf {
                path: path.to_path_buf(),
                reason: "its header, metadata or tensor table cannot be parsed".into(),
            });
        };
        let gguf = Self { ctx, meta, path: path.to_path_buf(), file_len };
        let end = gguf.tensors().iter().map(|t| t.file_offset + t.nbytes).max().unwrap_or(0);
        if end > file_len {
            return Err(LlamaError::CorruptGguf {
                path: path.to_path_buf(),
                reason: format!("its tensor data ends at byte {end} but the file has {file_len} bytes"),
            });
        }
        Ok(gguf)
    }

    /// The path this file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// File size in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Byte offset of the data section.
    pub fn data_offset(&self) -> u64 {
        // SAFETY: `ctx` is a valid gguf context for the lifetime of `self`.
        unsafe { sys::gguf_get_data_offset(self.ctx.as_ptr()) as u64 }
    }

    /// Data alignment in bytes.
    pub fn alignment(&self) -> usize {
        // SAFETY: as above.
        unsafe { sys::gguf_get_alignment(self.ctx.as_ptr()) }
    }

    /// All metadata keys, in file order.
    pub fn meta_keys(&self) -> Vec<String> {
        // SAFETY: `ctx` is valid; ids are in `0..n_kv`; returned key strings live as long as
        // `ctx` and are copied out immediately.
        unsafe {
            let n = sys::gguf_get_n_kv(self.ctx.as_ptr());
            (0..n).map(|i| cstr_lossy(sys::gguf_get_key(self.ctx.as_ptr(), i))).collect()
        }
    }

    /// A metadata value rendered as text: strings as they are, numbers and booleans in decimal.
    /// Arrays and missing keys give `None`.
    pub fn meta_str(&self, key: &str) -> Option<String> {
        let ckey = CString::new(key).ok()?;
        let ctx = self.ctx.as_ptr();
        // SAFETY: `ctx` is valid and `ckey` NUL-terminated.
        let id = unsafe { sys::gguf_find_key(ctx, ckey.as_ptr()) };
        if id < 0 {
            return None;
        }
        // SAFETY: `id` is a valid key id; each getter is called only for its own value type
        // (the getters assert on a type mismatch), so none of them can abort.
        unsafe {
            let value = match sys::gguf_get_kv_type(ctx, id) {
                sys::GGUF_TYPE_STRING => cstr_lossy(sys::gguf_get_val_str(ctx, id)),
                sys::GGUF_TYPE_UINT8 => sys::gguf_get_val_u8(ctx, id).to_string(),
                sys::GGUF_TYPE_INT8 => sys::gguf_get_val_i8(ctx, id).to_string(),
                sys::GGUF_TYPE_UINT16 => sys::gguf_get_val_u16(ctx, id).to_string(),
                sys::GGUF_TYPE_INT16 => sys::gguf_get_val_i16(ctx, id).to_string(),
                sys::GGUF_TYPE_UINT32 => sys::gguf_get_val_u32(ctx, id).to_string(),
                sys::GGUF_TYPE_INT32 => sys::gguf_get_val_i32(ctx, id).to_string(),
                sys::GGUF_TYPE_UINT64 => sys::gguf_get_val_u64(ctx, id).to_string(),
                sys::GGUF_TYPE_INT64 => sys::gguf_get_val_i64(ctx, id).to_string(),
                sys::GGUF_TYPE_FLOAT32 => sys::gguf_get_val_f32(ctx, id).to_string(),
                sys::GGUF_TYPE_FLOAT64 => sys::gguf_get_val_f64(ctx, id).to_string(),
                sys::GGUF_TYPE_BOOL => sys::gguf_get_val_bool(ctx, id).to_string(),
                _ => return None,
            };
            Some(value)
        }
    }

    /// `general.architecture`, if present.
    pub fn architecture(&self) -> Option<String> {
        self.meta_str("general.architecture")
    }

    /// The tensor table, in file order.
    pub fn tensors(&self) -> Vec<TensorInfo> {
        // SAFETY: `ctx` is valid.
        let n = unsafe { sys::gguf_get_n_tensors(self.ctx.as_ptr()) };
        (0..n).map(|i| self.tensor_at(i)).collect()
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<TensorInfo> {
        let cname = CString::new(name).ok()?;
        // SAFETY: `ctx` is valid and `cname` NUL-terminated.
        let id = unsafe { sys::gguf_find_tensor(self.ctx.as_ptr(), cname.as_ptr()) };
        (id >= 0).then(|| self.tensor_at(id))
    }

    /// Change the type of tensor `name` to F16 in the tensor table (offsets of later tensors
    /// are recomputed by gguf). Only the in-memory table changes.
    fn set_tensor_type_f16(&mut self, name: &str) -> Result<(), LlamaError> {
        let cname = CString::new(name)
            .map_err(|e| LlamaError::InteriorNul { what: "tensor name", offset: e.nul_position() })?;
        // SAFETY: `ctx` is valid and exclusively borrowed. gguf aborts on an unknown name, so
        // the name is looked up first. F16 has block size 1, so the row-size assertion in
        // `gguf_set_tensor_type` always holds.
        unsafe {
            if sys::gguf_find_tensor(self.ctx.as_ptr(), cname.as_ptr()) < 0 {
                return Err(LlamaError::MissingTensor { path: self.path.clone(), name: name.to_string() });
            }
            sys::gguf_set_tensor_type(self.ctx.as_ptr(), cname.as_ptr(), sys::GGML_TYPE_F16);
        }
        Ok(())
    }

    /// Set `general.file_type` to 1 (`LLAMA_FTYPE_MOSTLY_F16`) in the in-memory metadata.
    fn set_file_type_f16(&mut self) {
        // SAFETY: `ctx` is valid and exclusively borrowed; the key is a NUL-terminated literal
        // that is not reserved; the call replaces any previous value.
        unsafe { sys::gguf_set_val_u32(self.ctx.as_ptr(), c"general.file_type".as_ptr(), 1) };
    }

    fn tensor_at(&self, id: i64) -> TensorInfo {
        let ctx = self.ctx.as_ptr();
        // SAFETY: `id` is in `0..n_tensors`; the name string lives as long as `ctx`. The ggml
        // context created alongside holds a descriptor for every tensor of the table under the
        // same name, so `ggml_get_tensor` returns a valid pointer (checked anyway).
        unsafe {
            let name_ptr = sys::gguf_get_tensor_name(ctx, id);
            let name = cstr_lossy(name_ptr);
            let ggml_type = sys::gguf_get_tensor_type(ctx, id);
            let rel_offset = sys::gguf_get_tensor_offset(ctx, id) as u64;
            let nbytes = sys::gguf_get_tensor_size(ctx, id) as u64;
            let t = sys::ggml_get_tensor(self.meta.as_ptr(), name_ptr);
            let (ne, n_dims) = if t.is_null() {
                ([nbytes as i64, 1, 1, 1], 1)
            } else {
                ((*t).ne, sys::ggml_n_dims(t) as usize)
            };
            TensorInfo {
                name,
                type_name: type_name(ggml_type),
                is_quantized: sys::ggml_is_quantized(ggml_type),
                n_dims,
                ne,
                file_offset: self.data_offset() + rel_offset,
                nbytes,
                ggml_type,
                rel_offset,
            }
        }
    }
}

/// Copy a C string into a `String` (lossy UTF-8); null gives an empty string.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string valid for this call.
pub(crate) unsafe fn cstr_lossy(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The ggml name of a type id.
pub(crate) fn type_name(t: sys::ggml_type) -> String {
    if t >= sys::GGML_TYPE_COUNT {
        return format!("type {t}");
    }
    // SAFETY: `t` is a valid type id; the name is a static string.
    unsafe { cstr_lossy(sys::ggml_type_name(t)) }
}

/// A function converting `k` values of some ggml type to f32.
pub(crate) type ToFloat = unsafe extern "C" fn(*const std::ffi::c_void, *mut f32, i64);

/// Row converter for type `t` with rows of `row_len` values: `None` for F32 (a plain copy),
/// `Some(f)` for types with a `to_float`.
///
/// # Errors
/// [`LlamaError::UnsupportedTensorType`] when the type has no `to_float` or `row_len` is not a
/// multiple of its block size.
pub(crate) fn row_converter(
    t: sys::ggml_type,
    row_len: i64,
    tensor: &str,
) -> Result<Option<ToFloat>, LlamaError> {
    let unsupported =
        || LlamaError::UnsupportedTensorType { tensor: tensor.to_string(), type_name: type_name(t) };
    if t == sys::GGML_TYPE_F32 {
        return Ok(None);
    }
    if t >= sys::GGML_TYPE_COUNT {
        return Err(unsupported());
    }
    // SAFETY: `t` is a valid type id; the traits table is static.
    let traits = unsafe { &*sys::ggml_get_type_traits(t) };
    if traits.blck_size <= 0 || row_len % traits.blck_size != 0 {
        return Err(unsupported());
    }
    traits.to_float.map(Some).ok_or_else(unsupported)
}

/// Bytes of one row of `row_len` values of type `t`.
pub(crate) fn row_size(t: sys::ggml_type, row_len: i64) -> usize {
    // SAFETY: pure computation on a valid type id (callers validated it via `row_converter`).
    unsafe { sys::ggml_row_size(t, row_len) }
}

/// Convert `out.len()` values from `bytes` (one or more whole rows of type given by
/// `convert`) to f32.
pub(crate) fn convert_to_f32(convert: Option<ToFloat>, bytes: &[u8], out: &mut [f32]) {
    match convert {
        None => {
            assert_eq!(bytes.len(), out.len() * 4, "f32 row byte count");
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Some(f) => {
            // SAFETY: `bytes` holds whole rows of the converter's type covering exactly
            // `out.len()` values (callers size both from `ggml_row_size`), and `out` is a
            // writable buffer of that many floats. The C function reads `bytes` and writes
            // `out` only.
            unsafe { f(bytes.as_ptr().cast(), out.as_mut_ptr(), out.len() as i64) }
        }
    }
}

/// What [`dequantize_to_f16`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DequantizeReport {
    /// Tensors converted to F16.
    pub converted: usize,
    /// Tensors copied unchanged.
    pub kept: usize,
    /// Size of the written file in bytes.
    pub bytes_written: u64,
}

/// Write a copy of the GGUF `src` to `dst` with every quantized tensor of two or more
/// dimensions dequantized to F16.
///
/// F32/F16/BF16 and 1-D tensors are copied byte for byte, and all metadata is kept, except
/// `general.file_type`, which is set to 1 (`MOSTLY_F16`) when present so that llama.cpp
/// reports the new type. The copy is written to a temporary file next to `dst` and renamed into
/// place, so `dst` is either absent, the previous file, or complete. The result is reopened and
/// checked before the rename. Memory use is bounded (a few chunks of rows at a time).
///
/// # Errors
/// Any error of [`GgufFile::open`] for `src`, [`LlamaError::UnsupportedTensorType`] for a
/// quantized type without a dequantizer, [`LlamaError::Io`] / [`LlamaError::GgufWrite`] for
/// write failures.
pub fn dequantize_to_f16(src: &Path, dst: &Path) -> Result<DequantizeReport, LlamaError> {
    let mut gguf = GgufFile::open(src)?;
    let old = gguf.tensors();
    let mut convert = Vec::with_capacity(old.len());
    for t in &old {
        let conv = t.is_quantized && t.n_dims >= 2;
        if conv {
            row_converter(t.ggml_type, t.ne[0], &t.name)?;
            gguf.set_tensor_type_f16(&t.name)?;
        }
        convert.push(conv);
    }
    let all_converted = old.iter().zip(&convert).all(|(t, &c)| c || !t.is_quantized);
    if all_converted && gguf.meta_str("general.file_type").is_some() {
        gguf.set_file_type_f16();
    }

    let tmp = tmp_path(dst);
    let result = write_dequantized(&gguf, &old, &convert, &tmp);
    let result = result.and_then(|report| {
        let check = GgufFile::open(&tmp).map_err(|e| LlamaError::GgufWrite {
            path: dst.to_path_buf(),
            reason: format!("the written copy does not read back: {e}"),
        })?;
        if check.tensors().len() != old.len() || check.file_len() != report.bytes_written {
            return Err(LlamaError::GgufWrite {
                path: dst.to_path_buf(),
                reason: "the written copy has a different tensor table or size".into(),
            });
        }
        std::fs::rename(&tmp, dst).map_err(|e| io_err("cannot rename into", dst, e))?;
        Ok(report)
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The header, metadata and tensor table of a gguf context as ggml writes them, padded to the
/// alignment: what precedes the tensor data in the file.
pub(super) fn meta_bytes(ctx: *const sys::gguf_context) -> Vec<u8> {
    // SAFETY: the caller's context is valid; `meta` has exactly `gguf_get_meta_size` bytes.
    unsafe {
        let n = sys::gguf_get_meta_size(ctx);
        let mut meta = vec![0u8; n];
        sys::gguf_get_meta_data(ctx, meta.as_mut_ptr().cast());
        meta
    }
}

/// A temporary file next to `dst`, renamed into place once written.
pub(super) fn tmp_path(dst: &Path) -> PathBuf {
    let mut name = dst.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    dst.with_file_name(name)
}

fn write_dequantized(
    gguf: &GgufFile,
    old: &[TensorInfo],
    convert: &[bool],
    tmp: &Path,
) -> Result<DequantizeReport, LlamaError> {
    let ctx = gguf.ctx.as_ptr();
    let src = File::open(&gguf.path).map_err(|e| io_err("cannot open", &gguf.path, e))?;
    let out = File::create(tmp).map_err(|e| io_err("cannot create", tmp, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let wr = |e| io_err("cannot write", tmp, e);

    let meta = meta_bytes(ctx);
    w.write_all(&meta).map_err(wr)?;
    let data_start = meta.len() as u64;
    let mut written = data_start;
    let align = gguf.alignment() as u64;
    let mut report = DequantizeReport { converted: 0, kept: 0, bytes_written: 0 };

    for (i, (t, &conv)) in old.iter().zip(convert).enumerate() {
        // SAFETY: `i` is a valid tensor id of `ctx` (same table as `old`).
        let new_rel = unsafe { sys::gguf_get_tensor_offset(ctx, i as i64) } as u64;
        if written != data_start + new_rel {
            return Err(LlamaError::GgufWrite {
                path: tmp.to_path_buf(),
                reason: format!(
                    "tensor {:?} would start at byte {written}, but its offset says {}",
                    t.name,
                    data_start + new_rel
                ),
            });
        }
        if conv {
            let to_f32 = row_converter(t.ggml_type, t.ne[0], &t.name)?;
            let row_len = t.ne[0] as usize;
            let src_row = row_size(t.ggml_type, t.ne[0]);
            let n_rows = t.n_rows() as usize;
            let mut row0 = 0usize;
            let mut bytes = Vec::new();
            let mut halves: Vec<u8> = Vec::new();
            while row0 < n_rows {
                let rows = DEQUANT_CHUNK_ROWS.min(n_rows - row0);
                bytes.resize(rows * src_row, 0);
                src.read_exact_at(&mut bytes, t.file_offset + (row0 * src_row) as u64)
                    .map_err(|e| io_err("cannot read", &gguf.path, e))?;
                halves.resize(rows * row_len * 2, 0);
                bytes.par_chunks(src_row).zip(halves.par_chunks_mut(row_len * 2)).for_each_init(
                    || (vec![0f32; row_len], vec![0u16; row_len]),
                    |(f, h), (b, out)| {
                        convert_to_f32(to_f32, b, f);
                        // SAFETY: `f` and `h` both hold `row_len` elements.
                        unsafe { sys::ggml_fp32_to_fp16_row(f.as_ptr(), h.as_mut_ptr(), row_len as i64) };
                        for (o, v) in out.chunks_exact_mut(2).zip(h.iter()) {
                            o.copy_from_slice(&v.to_le_bytes());
                        }
                    },
                );
                w.write_all(&halves).map_err(wr)?;
                written += halves.len() as u64;
                row0 += rows;
            }
            report.converted += 1;
        } else {
            let mut left = t.nbytes;
            let mut pos = t.file_offset;
            let mut buf = vec![0u8; (1 << 22).min(t.nbytes as usize)];
            while left > 0 {
                let n = (buf.len() as u64).min(left) as usize;
                src.read_exact_at(&mut buf[..n], pos).map_err(|e| io_err("cannot read", &gguf.path, e))?;
                w.write_all(&buf[..n]).map_err(wr)?;
                pos += n as u64;
                left -= n as u64;
            }
            written += t.nbytes;
            report.kept += 1;
        }
        // Same padding as ggml's own writer: zeros up to the alignment after every tensor.
        let pad = (align - written % align) % align;
        w.write_all(&vec![0u8; pad as usize]).map_err(wr)?;
        written += pad;
    }
    let file = w.into_inner().map_err(|e| io_err("cannot write", tmp, e.into_error()))?;
    file.sync_all().map_err(wr)?;
    report.bytes_written = written;
    Ok(report)
}
