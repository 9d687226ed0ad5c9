//! [`Model`]: a loaded GGUF model (owns one `llama_model`), its vocabulary, metadata, chat
//! template, and direct access to its token-embedding rows ([`TokenEmbeddings`]).

use std::ffi::{c_char, CString};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;
use rayon::prelude::*;

use super::backend::init_backend;
use super::error::{io_err, LlamaError};
use super::gguf::{convert_to_f32, cstr_lossy, path_cstring, row_converter, row_size, GgufFile, ToFloat};
use super::Token;

/// Name of the token-embedding tensor in llama.cpp GGUF files.
const TOKEN_EMBD: &str = "token_embd.weight";

/// How to load a model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelParams {
    /// Layers to offload to a GPU (0 = CPU only; negative = all). Has no effect in a CPU-only
    /// build.
    pub n_gpu_layers: i32,
}

/// A loaded model. Owns its `llama_model`; shared across threads (`Send + Sync`), with one
/// [`super::Context`] per worker.
#[derive(Debug)]
pub struct Model {
    raw: NonNull<sys::llama_model>,
    vocab: NonNull<sys::llama_vocab>,
    path: PathBuf,
    architecture: String,
    n_embd: usize,
    n_embd_inp: usize,
    n_vocab: usize,
    n_layer: usize,
    n_ctx_train: usize,
    embeddings: TokenEmbeddings,
}

// SAFETY: a `llama_model` is immutable after loading; llama.cpp documents model and vocabulary
// queries (tokenization included) as thread-safe and shares one model between many contexts.
unsafe impl Send for Model {}
// SAFETY: see `Send`; all methods take `&self` and only read the model.
unsafe impl Sync for Model {}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `llama_model_load_from_file`, is owned only by `self`, and no
        // context outlives it (contexts borrow the model). `vocab` is owned by the model.
        unsafe { sys::llama_model_free(self.raw.as_ptr()) };
    }
}

impl Model {
    /// Load a GGUF model.
    ///
    /// The file is checked first (exists, GGUF magic, parsable header, tensor data inside the
    /// file), so bad inputs give an error rather than a llama.cpp abort.
    ///
    /// # Errors
    /// [`LlamaError::FileMissing`], [`LlamaError::NotGguf`], [`LlamaError::CorruptGguf`] (also
    /// for truncated files), [`LlamaError::ModelLoad`] when llama.cpp refuses the file,
    /// [`LlamaError::MissingTensor`] without `token_embd.weight`, [`LlamaError::NEmbdMismatch`]
    /// when that tensor's shape disagrees with the model's `n_embd`/`n_vocab`, and
    /// [`LlamaError::UnsupportedTensorType`] when its type cannot be read as f32.
    pub fn load(path: &Path, params: &ModelParams) -> Result<Self, LlamaError> {
        init_backend();
        let gguf = GgufFile::open(path)?;
        let embd_info = gguf
            .tensor(TOKEN_EMBD)
            .ok_or_else(|| LlamaError::MissingTensor { path: path.to_path_buf(), name: TOKEN_EMBD.into() })?;
        let architecture = gguf.architecture().unwrap_or_default();
        let embeddings = TokenEmbeddings::open(&gguf, &embd_info, &architecture)?;
        let cpath = path_cstring(path)?;
        // SAFETY: returns a plain struct of defaults.
        let mut mp = unsafe { sys::llama_model_default_params() };
        mp.n_gpu_layers = params.n_gpu_layers;
        // SAFETY: `cpath` is NUL-terminated; `mp` is a fully initialised parameter struct whose
        // pointers are the library defaults (null).
        let raw = unsafe { sys::llama_model_load_from_file(cpath.as_ptr(), mp) };
        let raw = NonNull::new(raw).ok_or_else(|| LlamaError::ModelLoad { path: path.to_path_buf() })?;
        // SAFETY: `raw` is a valid model; the vocabulary pointer is owned by it and non-null for
        // every loaded model (checked below).
        let vocab = unsafe { sys::llama_model_get_vocab(raw.as_ptr()) };
        let Some(vocab) = NonNull::new(vocab.cast_mut()) else {
            // SAFETY: `raw` is valid and not yet owned by a `Model`.
            unsafe { sys::llama_model_free(raw.as_ptr()) };
            return Err(LlamaError::ModelLoad { path: path.to_path_buf() });
        };
        // SAFETY: `raw` and `vocab` are valid; these are plain getters.
        let (n_embd, n_embd_inp, n_layer, n_ctx_train, n_vocab) = unsafe {
            (
                sys::llama_model_n_embd(raw.as_ptr()),
                sys::llama_model_n_embd_inp(raw.as_ptr()),
                sys::llama_model_n_layer(raw.as_ptr()),
                sys::llama_model_n_ctx_train(raw.as_ptr()),
                sys::llama_vocab_n_tokens(vocab.as_ptr()),
            )
        };
        // From here on `model` owns `raw`, so every early return frees it.
        let model = Self {
            raw,
            vocab,
            path: path.to_path_buf(),
            architecture,
            n_embd: n_embd.max(0) as usize,
            n_embd_inp: n_embd_inp.max(0) as usize,
            n_vocab: n_vocab.max(0) as usize,
            n_layer: n_layer.max(0) as usize,
            n_ctx_train: n_ctx_train.max(0) as usize,
            embeddings,
        };
        if model.embeddings.n_embd != model.n_embd_inp {
            return Err(LlamaError::NEmbdMismatch {
                what: format!("tensor {TOKEN_EMBD} in {}", path.display()),
                expected: model.n_embd_inp,
                got: model.embeddings.n_embd,
            });
        }
        if model.embeddings.n_vocab != model.n_vocab {
            return Err(LlamaError::CorruptGguf {
                path: path.to_path_buf(),
                reason: format!(
                    "{TOKEN_EMBD} has {} rows but the vocabulary has {} tokens",
                    model.embeddings.n_vocab, model.n_vocab
                ),
            });
        }
        Ok(model)
    }

    /// The file this model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hidden size.
    pub fn n_embd(&self) -> usize {
        self.n_embd
    }

    /// Width of input rows (embedding batches and token-embedding rows); equal to
    /// [`Self::n_embd`] for ordinary text models.
    pub fn n_embd_inp(&self) -> usize {
        self.n_embd_inp
    }

    /// Vocabulary size.
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// Number of layers.
    pub fn n_layer(&self) -> usize {
        self.n_layer
    }

    /// Training context length.
    pub fn n_ctx_train(&self) -> usize {
        self.n_ctx_train
    }

    /// `general.architecture`, e.g. `gemma3`, `llama`.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// Beginning-of-sequence token, if the vocabulary has one.
    pub fn bos(&self) -> Option<Token> {
        // SAFETY: `vocab` is valid for the lifetime of `self`.
        let t = unsafe { sys::llama_vocab_bos(self.vocab.as_ptr()) };
        (t >= 0).then_some(t)
    }

    /// Whether the model expects a BOS token at the start of a prompt.
    pub fn add_bos(&self) -> bool {
        // SAFETY: as above.
        unsafe { sys::llama_vocab_get_add_bos(self.vocab.as_ptr()) }
    }

    /// End-of-sequence token, if the vocabulary has one.
    pub fn eos(&self) -> Option<Token> {
        // SAFETY: as above.
        let t = unsafe { sys::llama_vocab_eos(self.vocab.as_ptr()) };
        (t >= 0).then_some(t)
    }

    /// Any GGUF metadata value as text (numbers rendered in decimal), e.g. `general.name`.
    pub fn meta_str(&self, key: &str) -> Option<String> {
        let ckey = CString::new(key).ok()?;
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: `raw` is valid, `ckey` NUL-terminated and `buf` writable for `buf.len()`
            // bytes; llama.cpp writes at most that many (snprintf semantics).
            let n = unsafe {
                sys::llama_model_meta_val_str(
                    self.raw.as_ptr(),
                    ckey.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return None;
            }
            let n = n as usize;
            if n < buf.len() {
                buf.truncate(n);
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.resize(n + 1, 0);
        }
    }

    /// `general.name`, if present.
    pub fn name(&self) -> Option<String> {
        self.meta_str("general.name")
    }

    /// The model's default chat template (Jinja source), if any.
    pub fn chat_template(&self) -> Option<String> {
        // SAFETY: `raw` is valid; a null name asks for the default template; the returned
        // string is owned by the model and copied at once.
        let p = unsafe { sys::llama_model_chat_template(self.raw.as_ptr(), std::ptr::null()) };
        // SAFETY: `p` is null or a NUL-terminated string owned by the model.
        (!p.is_null()).then(|| unsafe { cstr_lossy(p) })
    }

    /// Format `(role, content)` messages with the model's chat template; see [`format_chat`].
    ///
    /// # Errors
    /// [`LlamaError::NoChatTemplate`], [`LlamaError::ChatTemplate`] when llama.cpp does not
    /// recognise the template, [`LlamaError::InteriorNul`] for a NUL byte in a message.
    pub fn apply_chat_template(
        &self,
        messages: &[(&str, &str)],
        add_assistant: bool,
    ) -> Result<String, LlamaError> {
        let tmpl =
            self.chat_template().ok_or_else(|| LlamaError::NoChatTemplate { path: self.path.clone() })?;
        format_chat(&tmpl, messages, add_assistant)
    }

    /// Tokenize `text`. `add_special` adds BOS (and EOS, for models configured so) as the
    /// model's vocabulary prescribes; `parse_special` turns special-token text such as
    /// `<start_of_turn>` into those tokens instead of plain text.
    ///
    /// # Errors
    /// [`LlamaError::Tokenize`] when llama.cpp fails (e.g. text longer than `i32::MAX` bytes).
    pub fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<Token>, LlamaError> {
        let len = i32::try_from(text.len())
            .map_err(|_| LlamaError::Tokenize { len: text.len(), code: i32::MIN })?;
        let mut tokens: Vec<Token> = vec![0; text.len() + 4];
        loop {
            let cap = i32::try_from(tokens.len()).unwrap_or(i32::MAX);
            // SAFETY: `vocab` is valid; `text` is read for exactly `len` bytes (no NUL needed);
            // `tokens` is writable for `cap` entries.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab.as_ptr(),
                    text.as_ptr().cast(),
                    len,
                    tokens.as_mut_ptr(),
                    cap,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                tokens.truncate(n as usize);
                return Ok(tokens);
            }
            if n == i32::MIN || (n.unsigned_abs() as usize) <= tokens.len() {
                return Err(LlamaError::Tokenize { len: text.len(), code: n });
            }
            tokens.resize(n.unsigned_abs() as usize, 0);
        }
    }

    /// The bytes a token stands for (may be part of a UTF-8 character). With `special`, control
    /// tokens render as their text (e.g. `<bos>`); otherwise as nothing.
    ///
    /// # Errors
    /// [`LlamaError::TokenOutOfRange`].
    pub fn token_to_bytes(&self, token: Token, special: bool) -> Result<Vec<u8>, LlamaError> {
        self.check_token(token)?;
        let mut buf = vec![0u8; 32];
        loop {
            let cap = i32::try_from(buf.len()).unwrap_or(i32::MAX);
            // SAFETY: `vocab` is valid, `token` is in range (llama.cpp would throw through the C
            // boundary otherwise), and `buf` is writable for `cap` bytes.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.vocab.as_ptr(),
                    token,
                    buf.as_mut_ptr().cast(),
                    cap,
                    0,
                    special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            buf.resize(n.unsigned_abs() as usize, 0);
        }
    }

    /// A token as text (lossy UTF-8); see [`Self::token_to_bytes`].
    ///
    /// # Errors
    /// [`LlamaError::TokenOutOfRange`].
    pub fn token_to_piece(&self, token: Token, special: bool) -> Result<String, LlamaError> {
        Ok(String::from_utf8_lossy(&self.token_to_bytes(token, special)?).into_owned())
    }

    /// Check that `token` is a vocabulary id.
    ///
    /// # Errors
    /// [`LlamaError::TokenOutOfRange`].
    pub fn check_token(&self, token: Token) -> Result<(), LlamaError> {
        if token < 0 || token as usize >= self.n_vocab {
            return Err(LlamaError::TokenOutOfRange { token, n_vocab: self.n_vocab });
        }
        Ok(())
    }

    /// The factor the token path applies to `token_embd` rows that embedding input does not get:
    /// multiply a raw row by it (see [`TokenEmbeddings::scaled_rows`]) and feeding the result as
    /// an embedding reproduces the token.
    ///
    /// `sqrt(n_embd)` for `gemma3`, `gemma3n`, `gemma-embedding` and `gemma4`, whose graphs in
    /// this llama.cpp release scale token rows only. `1.0` for everything else, including
    /// `gemma` and `gemma2`, whose graphs scale by `sqrt(n_embd)` after the token/embedding
    /// select, i.e. on both paths alike.
    pub fn embedding_scale(&self) -> f32 {
        self.embeddings.scale
    }

    /// Direct access to the rows of `token_embd.weight`.
    pub fn token_embeddings(&self) -> &TokenEmbeddings {
        &self.embeddings
    }

    pub(crate) fn raw(&self) -> *mut sys::llama_model {
        self.raw.as_ptr()
    }
}

/// Format `(role, content)` messages with a chat template given as Jinja source or as the name
/// of one of llama.cpp's built-in templates (`chatml`, `gemma`, `llama3`, ...). Matching is
/// llama.cpp's, not a Jinja engine. With `add_assistant`, the result ends with the prefix of an
/// assistant turn.
///
/// # Errors
/// [`LlamaError::ChatTemplate`] when llama.cpp does not recognise the template,
/// [`LlamaError::InteriorNul`] for a NUL byte in the template or a message.
pub fn format_chat(
    template: &str,
    messages: &[(&str, &str)],
    add_assistant: bool,
) -> Result<String, LlamaError> {
    let ctmpl = CString::new(template)
        .map_err(|e| LlamaError::InteriorNul { what: "chat template", offset: e.nul_position() })?;
    let mut owned = Vec::with_capacity(messages.len());
    for (role, content) in messages {
        let role = CString::new(*role)
            .map_err(|e| LlamaError::InteriorNul { what: "chat role", offset: e.nul_position() })?;
        let content = CString::new(*content)
            .map_err(|e| LlamaError::InteriorNul { what: "chat message", offset: e.nul_position() })?;
        owned.push((role, content));
    }
    let chat: Vec<sys::llama_chat_message> = owned
        .iter()
        .map(|(r, c)| sys::llama_chat_message { role: r.as_ptr(), content: c.as_ptr() })
        .collect();
    let total: usize = messages.iter().map(|(r, c)| r.len() + c.len()).sum();
    let mut buf = vec![0u8; 2 * total + 256];
    loop {
        let len = i32::try_from(buf.len()).unwrap_or(i32::MAX);
        // SAFETY: `ctmpl` and every string in `chat` are NUL-terminated and outlive the
        // call (`owned`); `buf` is writable for `len` bytes.
        let n = unsafe {
            sys::llama_chat_apply_template(
                ctmpl.as_ptr(),
                chat.as_ptr(),
                chat.len(),
                add_assistant,
                buf.as_mut_ptr().cast::<c_char>(),
                len,
            )
        };
        if n < 0 {
            return Err(LlamaError::ChatTemplate { start: template.chars().take(60).collect() });
        }
        let n = n as usize;
        if n <= buf.len() {
            buf.truncate(n);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        buf.resize(n, 0);
    }
}

/// See [`Model::embedding_scale`]. Checked against the `build_inp_embd` calls in llama.cpp's
/// `src/models/*.cpp` of the pinned llama-cpp-sys-2 release.
fn token_path_scale(arch: &str, n_embd: usize) -> f32 {
    match arch {
        "gemma3" | "gemma3n" | "gemma-embedding" | "gemma4" => (n_embd as f32).sqrt(),
        _ => 1.0,
    }
}

/// Rows of `token_embd.weight`, read straight from the GGUF file and converted to f32.
///
/// "Raw" rows are the stored values; "scaled" rows are multiplied by
/// [`Model::embedding_scale`], i.e. exactly what the token path feeds the first layer, and what
/// an embedding batch must contain to stand for that token. Reads are positioned (`pread`), so
/// `&self` methods can run from many threads at once.
#[derive(Debug)]
pub struct TokenEmbeddings {
    file: File,
    path: PathBuf,
    data_start: u64,
    convert: Option<ToFloat>,
    type_name: String,
    n_embd: usize,
    n_vocab: usize,
    row_bytes: usize,
    scale: f32,
}

/// Summary statistics of the scaled token-embedding table (see [`TokenEmbeddings::stats`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingStats {
    /// Rows the statistics were computed over.
    pub rows: usize,
    /// Mean of all values.
    pub mean: f64,
    /// Standard deviation of all values (population).
    pub std: f64,
    /// Smallest per-row L2 norm.
    pub norm_min: f32,
    /// Largest per-row L2 norm.
    pub norm_max: f32,
    /// Mean per-row L2 norm.
    pub norm_mean: f64,
    sorted_norms: Vec<f32>,
}

impl EmbeddingStats {
    /// The `p`-th percentile (0 to 100, clamped) of the per-row L2 norms, linearly
    /// interpolated.
    pub fn norm_percentile(&self, p: f64) -> f32 {
        let v = &self.sorted_norms;
        if v.is_empty() {
            return f32::NAN;
        }
        let x = p.clamp(0.0, 100.0) / 100.0 * (v.len() - 1) as f64;
        let (i, frac) = (x.floor() as usize, x - x.floor());
        let hi = v[(i + 1).min(v.len() - 1)];
        (v[i] as f64 + (hi as f64 - v[i] as f64) * frac) as f32
    }
}

impl TokenEmbeddings {
    fn open(gguf: &GgufFile, info: &super::gguf::TensorInfo, architecture: &str) -> Result<Self, LlamaError> {
        let convert = row_converter(info.ggml_type, info.ne[0], &info.name)?;
        let row_bytes = row_size(info.ggml_type, info.ne[0]);
        let n_embd = info.ne[0].max(0) as usize;
        let path = gguf.path().to_path_buf();
        let file = File::open(&path).map_err(|e| io_err("cannot open", &path, e))?;
        Ok(Self {
            file,
            path,
            data_start: info.file_offset,
            convert,
            type_name: info.type_name.clone(),
            n_embd,
            n_vocab: info.n_rows() as usize,
            row_bytes,
            scale: token_path_scale(architecture, n_embd),
        })
    }

    /// Values per row.
    pub fn n_embd(&self) -> usize {
        self.n_embd
    }

    /// Number of rows (vocabulary size).
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }

    /// The factor of [`Model::embedding_scale`].
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// ggml type of the stored tensor (e.g. `q8_0`, `f16`).
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// Read `count` consecutive raw rows starting at `first` into `out` (`count * n_embd`).
    fn read_range(&self, first: usize, count: usize, out: &mut [f32]) -> Result<(), LlamaError> {
        debug_assert_eq!(out.len(), count * self.n_embd);
        let mut bytes = vec![0u8; count * self.row_bytes];
        self.file
            .read_exact_at(&mut bytes, self.data_start + (first * self.row_bytes) as u64)
            .map_err(|e| io_err("cannot read token embeddings from", &self.path, e))?;
        for (b, o) in bytes.chunks_exact(self.row_bytes).zip(out.chunks_exact_mut(self.n_embd)) {
            convert_to_f32(self.convert, b, o);
        }
        Ok(())
    }

    fn check(&self, token: Token) -> Result<usize, LlamaError> {
        if token < 0 || token as usize >= self.n_vocab {
            return Err(LlamaError::TokenOutOfRange { token, n_vocab: self.n_vocab });
        }
        Ok(token as usize)
    }

    /// The raw (unscaled) row of `token` written into `out`.
    ///
    /// # Errors
    /// [`LlamaError::TokenOutOfRange`], [`LlamaError::NEmbdMismatch`] when `out.len()` is not
    /// `n_embd`, [`LlamaError::Io`].
    pub fn row_into(&self, token: Token, out: &mut [f32]) -> Result<(), LlamaError> {
        let t = self.check(token)?;
        if out.len() != self.n_embd {
            return Err(LlamaError::NEmbdMismatch {
                what: "the output buffer".into(),
                expected: self.n_embd,
                got: out.len(),
            });
        }
        self.read_range(t, 1, out)
    }

    /// Raw (unscaled) rows of `tokens`, concatenated (`tokens.len() * n_embd` values).
    ///
    /// # Errors
    /// [`LlamaError::TokenOutOfRange`], [`LlamaError::Io`].
    pub fn rows(&self, tokens: &[Token]) -> Result<Vec<f32>, LlamaError> {
        let mut out = vec![0f32; tokens.len() * self.n_embd];
        for (&t, o) in tokens.iter().zip(out.chunks_exact_mut(self.n_embd.max(1))) {
            self.read_range(self.check(t)?, 1, o)?;
        }
        Ok(out)
    }

    /// Rows of `tokens` times [`Self::scale`]: what the token path feeds the first layer.
    /// Fed as embeddings, they reproduce the tokens.
    ///
    /// # Errors
    /// As [`Self::rows`].
    pub fn scaled_rows(&self, tokens: &[Token]) -> Result<Vec<f32>, LlamaError> {
        let mut rows = self.rows(tokens)?;
        if self.scale != 1.0 {
            rows.iter_mut().for_each(|v| *v *= self.scale);
        }
        Ok(rows)
    }

    /// Statistics of the scaled table: mean and standard deviation of all values, and the
    /// distribution of per-row L2 norms. `max_rows = None` uses every row (about 0.5 s for 262k
    /// rows); `Some(k)` uses `k` evenly spaced rows.
    ///
    /// # Errors
    /// [`LlamaError::Io`].
    pub fn stats(&self, max_rows: Option<usize>) -> Result<EmbeddingStats, LlamaError> {
        const CHUNK: usize = 2048;
        let n = self.n_embd;
        let scale = self.scale as f64;
        // Partial sums per chunk: (sum, sum of squares, norms).
        let partial = |rows: &[f32]| -> (f64, f64, Vec<f32>) {
            let mut s = 0f64;
            let mut ss = 0f64;
            let mut norms = Vec::with_capacity(rows.len() / n.max(1));
            for r in rows.chunks_exact(n.max(1)) {
                let mut rs = 0f64;
                let mut rss = 0f64;
                for &v in r {
                    rs += v as f64;
                    rss += v as f64 * v as f64;
                }
                s += rs * scale;
                ss += rss * scale * scale;
                norms.push((rss.sqrt() * scale) as f32);
            }
            (s, ss, norms)
        };
        let parts: Vec<(f64, f64, Vec<f32>)> = match max_rows {
            Some(k) if k < self.n_vocab => {
                let ids: Vec<usize> = (0..k.max(1)).map(|i| i * self.n_vocab / k.max(1)).collect();
                ids.par_chunks(CHUNK)
                    .map(|chunk| {
                        let mut buf = vec![0f32; chunk.len() * n];
                        for (&id, o) in chunk.iter().zip(buf.chunks_exact_mut(n.max(1))) {
                            self.read_range(id, 1, o)?;
                        }
                        Ok(partial(&buf))
                    })
                    .collect::<Result<_, LlamaError>>()?
            }
            _ => (0..self.n_vocab.div_ceil(CHUNK))
                .into_par_iter()
                .map(|c| {
                    let first = c * CHUNK;
                    let count = CHUNK.min(self.n_vocab - first);
                    let mut buf = vec![0f32; count * n];
                    self.read_range(first, count, &mut buf)?;
                    Ok(partial(&buf))
                })
                .collect::<Result<_, LlamaError>>()?,
        };
        let (mut s, mut ss, mut norms) = (0f64, 0f64, Vec::new());
        for (ps, pss, pn) in parts {
            s += ps;
            ss += pss;
            norms.extend(pn);
        }
        let rows = norms.len();
        let count = (rows * n).max(1) as f64;
        let mean = s / count;
        let std = (ss / count - mean * mean).max(0.0).sqrt();
        norms.sort_by(f32::total_cmp);
        let norm_mean = norms.iter().map(|&x| x as f64).sum::<f64>() / rows.max(1) as f64;
        Ok(EmbeddingStats {
            rows,
            mean,
            std,
            norm_min: norms.first().copied().unwrap_or(f32::NAN),
            norm_max: norms.last().copied().unwrap_or(f32::NAN),
            norm_mean,
            sorted_norms: norms,
        })
    }
}
