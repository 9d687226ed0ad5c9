//! [`Context`]: one `llama_context` (KV memory plus compute buffers) borrowed from a
//! [`Model`]. Decodes token and embedding batches, hands out logits rows, and edits the KV
//! memory per sequence.

use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::batch::{EmbdBatch, RawBatch, TokenBatch};
use super::error::{DecodeError, LlamaError};
use super::model::Model;
use super::{Pos, SeqId};

/// Most sequences one context can hold (llama.cpp's `LLAMA_MAX_SEQ`).
const MAX_SEQ: u32 = 256;

/// How to build a [`Context`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextParams {
    /// Total context size in tokens over all sequences. With `kv_unified = false` each of the
    /// `n_seq_max` sequences gets `n_ctx / n_seq_max` (llama.cpp rounds up to a multiple of
    /// 256). 0 = the model's training context.
    pub n_ctx: u32,
    /// Most entries one `decode` call may take (llama.cpp caps it at `n_ctx` for causal
    /// models; [`Context::n_batch`] gives the value in force).
    pub n_batch: u32,
    /// Physical micro-batch size (entries computed at once); at most `n_batch`.
    pub n_ubatch: u32,
    /// Number of distinct sequences (KV streams), 1 to 256.
    pub n_seq_max: u32,
    /// Threads for single-token generation.
    pub n_threads: i32,
    /// Threads for batch (prompt) processing.
    pub n_threads_batch: i32,
    /// One KV buffer shared by all sequences. Keep `false` (the default): results of a
    /// sequence are then independent of what other sequences hold, and shared-prefix decoding
    /// via [`Context::seq_cp`] equals decoding each sequence on its own.
    pub kv_unified: bool,
    /// Flash attention: `None` lets llama.cpp decide.
    pub flash_attn: Option<bool>,
}

impl Default for ContextParams {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as i32;
        Self {
            n_ctx: 2048,
            n_batch: 512,
            n_ubatch: 512,
            n_seq_max: 1,
            n_threads: threads,
            n_threads_batch: threads,
            kv_unified: false,
            flash_attn: None,
        }
    }
}

/// A llama.cpp context over a borrowed [`Model`]. `Send` (move it to a worker thread) but not
/// `Sync`: build one per worker.
///
/// Logits are only produced for batch entries that asked for them, and only until the next
/// decode: [`Self::logits`] borrows the context, so a stale row cannot be read.
#[derive(Debug)]
pub struct Context<'model> {
    raw: NonNull<sys::llama_context>,
    model: &'model Model,
    n_ctx: u32,
    n_ctx_seq: u32,
    n_batch: u32,
    n_ubatch: u32,
    n_seq_max: u32,
    kv_unified: bool,
    /// Batch indices of the last successful decode that have logits, ascending.
    outputs: Vec<usize>,
    /// Entries in the last successful decode.
    last_batch_len: usize,
}

// SAFETY: a `llama_context` may be used from any thread as long as only one thread uses it at a
// time; `Context` is not `Sync` and every mutating call takes `&mut self`. The borrowed
// `Model` is `Sync`.
unsafe impl Send for Context<'_> {}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `llama_init_from_model`, is owned only by `self`, and is
        // freed once; the model it refers to outlives `self` (borrow).
        unsafe { sys::llama_free(self.raw.as_ptr()) };
    }
}

impl<'model> Context<'model> {
    /// Create a context.
    ///
    /// # Errors
    /// [`LlamaError::InvalidParam`] for a zero batch size or thread count, or `n_seq_max`
    /// outside 1..=256; [`LlamaError::ContextCreate`] when llama.cpp fails (e.g. out of
    /// memory).
    pub fn new(model: &'model Model, params: &ContextParams) -> Result<Self, LlamaError> {
        let bad = |name: &'static str, value: String, reason: &str| LlamaError::InvalidParam {
            name,
            value,
            reason: reason.into(),
        };
        if params.n_seq_max == 0 || params.n_seq_max > MAX_SEQ {
            return Err(bad("n_seq_max", params.n_seq_max.to_string(), "must be 1 to 256"));
        }
        if params.n_batch == 0 {
            return Err(bad("n_batch", "0".into(), "must be at least 1"));
        }
        if params.n_ubatch == 0 {
            return Err(bad("n_ubatch", "0".into(), "must be at least 1"));
        }
        if params.n_threads < 1 || params.n_threads_batch < 1 {
            return Err(bad(
                "thread count",
                format!("{}/{}", params.n_threads, params.n_threads_batch),
                "must be at least 1",
            ));
        }
        // SAFETY: returns a plain struct of defaults.
        let mut cp = unsafe { sys::llama_context_default_params() };
        cp.n_ctx = params.n_ctx;
        cp.n_batch = params.n_batch;
        cp.n_ubatch = params.n_ubatch.min(params.n_batch);
        cp.n_seq_max = params.n_seq_max;
        cp.n_threads = params.n_threads;
        cp.n_threads_batch = params.n_threads_batch;
        cp.kv_unified = params.kv_unified;
        cp.embeddings = false;
        cp.flash_attn_type = match params.flash_attn {
            None => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            Some(true) => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            Some(false) => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        };
        // SAFETY: the model pointer is valid for `'model`, which outlives the context; `cp` is
        // a fully initialised struct whose pointer fields are the library defaults (null).
        let raw = unsafe { sys::llama_init_from_model(model.raw(), cp) };
        let raw =
            NonNull::new(raw).ok_or_else(|| LlamaError::ContextCreate { params: format!("{params:?}") })?;
        // SAFETY: `raw` is a valid context; plain getters.
        let (n_ctx, n_ctx_seq, n_batch, n_ubatch, n_seq_max) = unsafe {
            (
                sys::llama_n_ctx(raw.as_ptr()),
                sys::llama_n_ctx_seq(raw.as_ptr()),
                sys::llama_n_batch(raw.as_ptr()),
                sys::llama_n_ubatch(raw.as_ptr()),
                sys::llama_n_seq_max(raw.as_ptr()),
            )
        };
        Ok(Self {
            raw,
            model,
            n_ctx,
            n_ctx_seq,
            n_batch,
            n_ubatch,
            n_seq_max,
            kv_unified: params.kv_unified,
            outputs: Vec::new(),
            last_batch_len: 0,
        })
    }

    /// The model this context runs.
    pub fn model(&self) -> &'model Model {
        self.model
    }

    /// Actual total context size (after llama.cpp's rounding).
    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    /// Context size available to each sequence.
    pub fn n_ctx_seq(&self) -> u32 {
        self.n_ctx_seq
    }

    /// Most entries per `decode`.
    pub fn n_batch(&self) -> u32 {
        self.n_batch
    }

    /// Physical micro-batch size.
    pub fn n_ubatch(&self) -> u32 {
        self.n_ubatch
    }

    /// Number of sequences.
    pub fn n_seq_max(&self) -> u32 {
        self.n_seq_max
    }

    /// Decode a batch of tokens.
    ///
    /// # Errors
    /// See [`Self::decode_embd`]; also [`LlamaError::TokenOutOfRange`].
    pub fn decode_tokens(&mut self, batch: &TokenBatch) -> Result<(), LlamaError> {
        for &t in batch.0.tokens() {
            self.model.check_token(t)?;
        }
        self.decode_raw(&batch.0)
    }

    /// Decode a batch of embedding rows (used as given, no scaling).
    ///
    /// On success, [`Self::logits`] serves the entries that requested logits; on any error no
    /// logits are available. After a [`DecodeError`] llama.cpp has restored the KV memory,
    /// except for fatal errors and aborts, which may leave processed micro-batches behind.
    ///
    /// # Errors
    /// [`LlamaError::EmptyBatch`], [`LlamaError::BatchTooLarge`] (more than `n_batch`
    /// entries), [`LlamaError::NEmbdMismatch`] (row width is not the model's `n_embd_inp`),
    /// [`LlamaError::SeqIdOutOfRange`], [`LlamaError::PositionGap`] (a sequence does not
    /// continue where its KV memory ends), [`LlamaError::Decode`] with
    /// [`DecodeError::NoKvSlot`] when the context is too small.
    pub fn decode_embd(&mut self, batch: &EmbdBatch) -> Result<(), LlamaError> {
        if batch.0.n_embd() != self.model.n_embd_inp() {
            return Err(LlamaError::NEmbdMismatch {
                what: "the embedding batch".into(),
                expected: self.model.n_embd_inp(),
                got: batch.0.n_embd(),
            });
        }
        self.decode_raw(&batch.0)
    }

    fn decode_raw(&mut self, batch: &RawBatch) -> Result<(), LlamaError> {
        self.outputs.clear();
        self.last_batch_len = 0;
        let n_tokens = batch.raw().n_tokens as usize;
        if n_tokens == 0 {
            return Err(LlamaError::EmptyBatch);
        }
        if n_tokens > self.n_batch as usize {
            return Err(LlamaError::BatchTooLarge { n_tokens, n_batch: self.n_batch });
        }
        // First position of each sequence in the batch, to explain a rejected batch.
        let mut first = vec![Pos::MAX; self.n_seq_max as usize];
        for (pos, seqs) in batch.entries() {
            for &s in seqs {
                if s < 0 || s as u32 >= self.n_seq_max {
                    return Err(LlamaError::SeqIdOutOfRange { seq: s, n_seq_max: self.n_seq_max });
                }
                first[s as usize] = first[s as usize].min(pos);
            }
        }
        // SAFETY: `raw` is a valid context used by this thread only (`&mut self`). The batch
        // struct is passed by value but its arrays stay owned by `batch`, which outlives the
        // call; its first `n_tokens` entries are initialised, seq ids are in range, and
        // `n_tokens <= n_batch` (llama.cpp asserts that).
        let ret = unsafe { sys::llama_decode(self.raw.as_ptr(), batch.raw()) };
        match ret {
            0 => {}
            1 => {
                return Err(
                    DecodeError::NoKvSlot { n_tokens, n_ctx: self.n_ctx, n_ctx_seq: self.n_ctx_seq }.into()
                )
            }
            2 => return Err(DecodeError::Aborted.into()),
            -1 => return Err(self.explain_invalid(&first)),
            code => return Err(DecodeError::Fatal { code }.into()),
        }
        self.outputs.extend_from_slice(batch.logit_indices());
        self.last_batch_len = n_tokens;
        if let Some(&i) = self.outputs.first() {
            // Fetch one row now: this waits for the computation and applies llama.cpp's output
            // reordering once, so later `&self` reads do not mutate the buffer.
            // SAFETY: `i` is a batch index of the last decode that requested logits.
            let p = unsafe { sys::llama_get_logits_ith(self.raw.as_ptr(), i as i32) };
            if p.is_null() {
                self.outputs.clear();
                return Err(LlamaError::NoLogits {
                    index: i,
                    reason: "llama.cpp returned no logits after a successful decode".into(),
                });
            }
        }
        Ok(())
    }

    /// Name the reason llama.cpp most likely rejected a batch (it only logs it): a sequence that
    /// does not continue where its KV memory ends. The memory is unchanged after a rejection.
    fn explain_invalid(&self, first: &[Pos]) -> LlamaError {
        for (s, &p) in first.iter().enumerate() {
            if p == Pos::MAX {
                continue;
            }
            if let Some(last) = self.seq_pos_max(s as SeqId) {
                if p != last + 1 {
                    return LlamaError::PositionGap { seq: s as SeqId, got: p, last, expected: last + 1 };
                }
            }
        }
        DecodeError::InvalidBatch.into()
    }

    /// Batch indices of the last decode that have logits, ascending.
    pub fn output_indices(&self) -> &[usize] {
        &self.outputs
    }

    /// Logits (`n_vocab` values) of entry `batch_index` of the last successful decode. The entry
    /// must have requested logits.
    ///
    /// # Errors
    /// [`LlamaError::NoLogits`] when the index is out of range, the entry did not request
    /// logits, or the last decode failed.
    pub fn logits(&self, batch_index: usize) -> Result<&[f32], LlamaError> {
        if self.outputs.binary_search(&batch_index).is_err() {
            let reason = if self.last_batch_len == 0 {
                "no successful decode since the last error or since creation".to_string()
            } else if batch_index >= self.last_batch_len {
                format!("the last batch had {} entries", self.last_batch_len)
            } else {
                "that entry did not request logits".to_string()
            };
            return Err(LlamaError::NoLogits { index: batch_index, reason });
        }
        // SAFETY: the index requested logits in the last successful decode, so llama.cpp holds
        // a row of `n_vocab` floats for it; it stays valid and unmodified until the next decode,
        // which needs `&mut self` and so cannot happen while the returned slice lives. Output
        // reordering was already applied in `decode_raw`, so this call does not move rows.
        unsafe {
            let p = sys::llama_get_logits_ith(self.raw.as_ptr(), batch_index as i32);
            if p.is_null() {
                return Err(LlamaError::NoLogits {
                    index: batch_index,
                    reason: "llama.cpp returned no row".into(),
                });
            }
            Ok(std::slice::from_raw_parts(p, self.model.n_vocab()))
        }
    }

    fn check_seq(&self, seq: SeqId) -> Result<(), LlamaError> {
        if seq < 0 || seq as u32 >= self.n_seq_max {
            return Err(LlamaError::SeqIdOutOfRange { seq, n_seq_max: self.n_seq_max });
        }
        Ok(())
    }

    fn memory(&self) -> sys::llama_memory_t {
        // SAFETY: `raw` is valid; the memory handle is owned by the context (not null for
        // decoder models, which are the only ones a context is built for here).
        unsafe { sys::llama_get_memory(self.raw.as_ptr()) }
    }

    /// Clear the KV memory of all sequences (metadata and data).
    pub fn clear(&mut self) {
        // SAFETY: valid memory handle of a context we use exclusively.
        unsafe { sys::llama_memory_clear(self.memory(), true) };
    }

    /// Remove positions `[p0, p1)` of sequence `seq` (negative `p0` = from 0, negative `p1` =
    /// to the end).
    ///
    /// # Errors
    /// [`LlamaError::SeqIdOutOfRange`]; [`LlamaError::SeqRm`] when the memory cannot remove
    /// part of a sequence (recurrent models).
    pub fn seq_rm(&mut self, seq: SeqId, p0: Pos, p1: Pos) -> Result<(), LlamaError> {
        self.check_seq(seq)?;
        // SAFETY: valid memory handle; `seq` is in range (llama.cpp asserts that).
        let ok = unsafe { sys::llama_memory_seq_rm(self.memory(), seq, p0, p1) };
        if ok {
            Ok(())
        } else {
            Err(LlamaError::SeqRm { seq, p0, p1 })
        }
    }

    /// Copy positions `[p0, p1)` of sequence `src` to sequence `dst` (negative bounds = open).
    /// The usual use: decode a shared prefix once in `src`, copy it to each continuation's
    /// sequence, then decode the continuations together.
    ///
    /// With `kv_unified = false` each sequence has its own KV stream and llama.cpp can only copy
    /// whole sequences (`p0 < 0` or 0, `p1 < 0`); the copy replaces `dst`'s contents and is
    /// performed at the next decode.
    ///
    /// # Errors
    /// [`LlamaError::SeqIdOutOfRange`]; [`LlamaError::PartialSeqCopy`] for a partial copy
    /// between separate streams (llama.cpp would abort).
    pub fn seq_cp(&mut self, src: SeqId, dst: SeqId, p0: Pos, p1: Pos) -> Result<(), LlamaError> {
        self.check_seq(src)?;
        self.check_seq(dst)?;
        if !self.kv_unified && src != dst && (p0 > 0 || p1 >= 0) {
            return Err(LlamaError::PartialSeqCopy { src, dst, p0, p1 });
        }
        // SAFETY: valid memory handle; ids in range; for separate streams the range is the
        // whole sequence, which is what llama.cpp's assertion requires.
        unsafe { sys::llama_memory_seq_cp(self.memory(), src, dst, p0, p1) };
        Ok(())
    }

    /// Last position stored for `seq`, or `None` when it is empty (or out of range).
    pub fn seq_pos_max(&self, seq: SeqId) -> Option<Pos> {
        self.check_seq(seq).ok()?;
        // SAFETY: valid memory handle; `seq` in range.
        let p = unsafe { sys::llama_memory_seq_pos_max(self.memory(), seq) };
        (p >= 0).then_some(p)
    }
}
