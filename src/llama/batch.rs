//! Owned `llama_batch`es: [`TokenBatch`] (token ids) and [`EmbdBatch`] (embedding rows).
//!
//! A classic `llama_batch` carries either tokens or embeddings, never both, so a prompt made of
//! a soft prompt and text is decoded as consecutive batches. Every entry carries its position,
//! the sequences it belongs to, and whether its logits are wanted.

use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::error::LlamaError;
use super::{Pos, SeqId, Token};

/// The allocation shared by both batch kinds. Owns the arrays of one `llama_batch_init`.
#[derive(Debug)]
pub(crate) struct RawBatch {
    raw: sys::llama_batch,
    capacity: usize,
    /// Row width for embedding batches; 0 for token batches.
    n_embd: usize,
    n_seq_max: usize,
    /// Batch indices whose logits are requested, ascending.
    logits: Vec<usize>,
}

// SAFETY: the arrays are plain heap memory owned by this value alone; nothing else points into
// them between calls.
unsafe impl Send for RawBatch {}

impl Drop for RawBatch {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `llama_batch_init` and is freed once. `llama_batch_free`
        // walks `seq_id` up to its terminating null, which `push` never touches.
        unsafe { sys::llama_batch_free(self.raw) };
    }
}

impl RawBatch {
    fn new(capacity: usize, n_embd: usize, n_seq_max: usize) -> Result<Self, LlamaError> {
        let cap =
            i32::try_from(capacity).ok().filter(|&c| c > 0).ok_or_else(|| LlamaError::InvalidParam {
                name: "batch capacity",
                value: capacity.to_string(),
                reason: "must be between 1 and 2^31-1".into(),
            })?;
        let embd = i32::try_from(n_embd).map_err(|_| LlamaError::InvalidParam {
            name: "n_embd",
            value: n_embd.to_string(),
            reason: "too large".into(),
        })?;
        let seq =
            i32::try_from(n_seq_max).ok().filter(|&s| s > 0).ok_or_else(|| LlamaError::InvalidParam {
                name: "batch n_seq_max",
                value: n_seq_max.to_string(),
                reason: "must be at least 1".into(),
            })?;
        // SAFETY: sizes are positive and in range; the returned arrays are uninitialised but
        // only entries below `n_tokens` (which `push` writes first) are ever read.
        let raw = unsafe { sys::llama_batch_init(cap, embd, seq) };
        let data_ok = if n_embd > 0 { !raw.embd.is_null() } else { !raw.token.is_null() };
        if !data_ok
            || raw.pos.is_null()
            || raw.n_seq_id.is_null()
            || raw.seq_id.is_null()
            || raw.logits.is_null()
        {
            // SAFETY: `llama_batch_free` skips null arrays.
            unsafe { sys::llama_batch_free(raw) };
            return Err(LlamaError::InvalidParam {
                name: "batch capacity",
                value: capacity.to_string(),
                reason: "allocation failed".into(),
            });
        }
        Ok(Self { raw, capacity, n_embd, n_seq_max, logits: Vec::new() })
    }

    fn len(&self) -> usize {
        self.raw.n_tokens as usize
    }

    /// Fill the common fields of the next entry and return its index.
    fn push_meta(&mut self, pos: Pos, seq_ids: &[SeqId], logits: bool) -> Result<usize, LlamaError> {
        let i = self.len();
        if i >= self.capacity {
            return Err(LlamaError::BatchFull { capacity: self.capacity });
        }
        if seq_ids.is_empty() || seq_ids.len() > self.n_seq_max {
            return Err(LlamaError::SeqIdCount { max: self.n_seq_max, got: seq_ids.len() });
        }
        if let Some(&s) = seq_ids.iter().find(|&&s| s < 0) {
            return Err(LlamaError::SeqIdOutOfRange { seq: s, n_seq_max: self.n_seq_max as u32 });
        }
        if pos < 0 {
            return Err(LlamaError::NegativePos { pos });
        }
        // SAFETY: `i < capacity`, the length of every array; `seq_id[i]` points to an array of
        // `n_seq_max >= seq_ids.len()` ids.
        unsafe {
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = seq_ids.len() as i32;
            let dst = *self.raw.seq_id.add(i);
            std::ptr::copy_nonoverlapping(seq_ids.as_ptr(), dst, seq_ids.len());
            *self.raw.logits.add(i) = i8::from(logits);
        }
        if logits {
            self.logits.push(i);
        }
        Ok(i)
    }

    fn clear(&mut self) {
        self.raw.n_tokens = 0;
        self.logits.clear();
    }

    /// Per entry: (position, sequence ids). For checks before decoding.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (Pos, &[SeqId])> + '_ {
        (0..self.len()).map(move |i| {
            // SAFETY: entries below `n_tokens` were fully written by `push_meta`.
            unsafe {
                let n = *self.raw.n_seq_id.add(i) as usize;
                let ids = std::slice::from_raw_parts(*self.raw.seq_id.add(i), n);
                (*self.raw.pos.add(i), ids)
            }
        })
    }

    pub(crate) fn raw(&self) -> sys::llama_batch {
        self.raw
    }

    pub(crate) fn logit_indices(&self) -> &[usize] {
        &self.logits
    }

    pub(crate) fn n_embd(&self) -> usize {
        self.n_embd
    }

    /// Token ids (token batches only).
    pub(crate) fn tokens(&self) -> &[Token] {
        match NonNull::new(self.raw.token) {
            // SAFETY: the first `n_tokens` ids were written by `TokenBatch::push`.
            Some(p) => unsafe { std::slice::from_raw_parts(p.as_ptr(), self.len()) },
            None => &[],
        }
    }
}

/// A batch of token ids. Reusable: [`Self::clear`] and push again.
#[derive(Debug)]
pub struct TokenBatch(pub(crate) RawBatch);

impl TokenBatch {
    /// A batch of up to `capacity` entries, each in up to `n_seq_max` sequences.
    ///
    /// # Errors
    /// [`LlamaError::InvalidParam`] for a zero or oversized capacity or `n_seq_max`.
    pub fn new(capacity: usize, n_seq_max: usize) -> Result<Self, LlamaError> {
        RawBatch::new(capacity, 0, n_seq_max).map(Self)
    }

    /// Append one token at `pos` in the sequences `seq_ids`; `logits` requests its output row.
    /// Returns the entry's batch index (the index for [`super::Context::logits`]).
    ///
    /// # Errors
    /// [`LlamaError::BatchFull`], [`LlamaError::SeqIdCount`], [`LlamaError::SeqIdOutOfRange`]
    /// (negative id), [`LlamaError::NegativePos`]. Token ids are checked by `decode`.
    pub fn push(
        &mut self,
        token: Token,
        pos: Pos,
        seq_ids: &[SeqId],
        logits: bool,
    ) -> Result<usize, LlamaError> {
        let i = self.0.push_meta(pos, seq_ids, logits)?;
        // SAFETY: `push_meta` checked `i < capacity`, the length of `token`.
        unsafe { *self.0.raw.token.add(i) = token };
        self.0.raw.n_tokens += 1;
        Ok(i)
    }

    /// Append `tokens` at positions `start_pos..`, all in `seq_ids`; with `logits_last`, the
    /// last one requests logits. Returns the batch index of the last entry.
    ///
    /// # Errors
    /// As [`Self::push`]; on error the entries pushed so far stay in the batch.
    pub fn push_seq(
        &mut self,
        tokens: &[Token],
        start_pos: Pos,
        seq_ids: &[SeqId],
        logits_last: bool,
    ) -> Result<Option<usize>, LlamaError> {
        let mut last = None;
        for (k, &t) in tokens.iter().enumerate() {
            let is_last = k + 1 == tokens.len();
            last = Some(self.push(t, start_pos + k as Pos, seq_ids, logits_last && is_last)?);
        }
        Ok(last)
    }

    /// Remove all entries.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the batch has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }
}

/// A batch of embedding rows of width `n_embd` (the model's [`super::Model::n_embd_inp`]).
/// Rows are used as given: no scaling is applied (see [`super::Model::embedding_scale`]).
#[derive(Debug)]
pub struct EmbdBatch(pub(crate) RawBatch);

impl EmbdBatch {
    /// A batch of up to `capacity` rows of `n_embd` floats, each in up to `n_seq_max`
    /// sequences.
    ///
    /// # Errors
    /// [`LlamaError::InvalidParam`] for a zero or oversized capacity, width or `n_seq_max`.
    pub fn new(capacity: usize, n_embd: usize, n_seq_max: usize) -> Result<Self, LlamaError> {
        if n_embd == 0 {
            return Err(LlamaError::InvalidParam {
                name: "n_embd",
                value: "0".into(),
                reason: "an embedding batch needs rows of at least one value".into(),
            });
        }
        RawBatch::new(capacity, n_embd, n_seq_max).map(Self)
    }

    /// Append one row at `pos` in the sequences `seq_ids`; `logits` requests its output row.
    /// Returns the entry's batch index.
    ///
    /// # Errors
    /// [`LlamaError::NEmbdMismatch`] when `row.len() != n_embd`, plus those of
    /// [`TokenBatch::push`].
    pub fn push(
        &mut self,
        row: &[f32],
        pos: Pos,
        seq_ids: &[SeqId],
        logits: bool,
    ) -> Result<usize, LlamaError> {
        if row.len() != self.0.n_embd {
            return Err(LlamaError::NEmbdMismatch {
                what: "an embedding batch row".into(),
                expected: self.0.n_embd,
                got: row.len(),
            });
        }
        let i = self.0.push_meta(pos, seq_ids, logits)?;
        // SAFETY: `embd` holds `capacity * n_embd` floats and `i < capacity`.
        unsafe {
            let dst = self.0.raw.embd.add(i * self.0.n_embd);
            std::ptr::copy_nonoverlapping(row.as_ptr(), dst, row.len());
        }
        self.0.raw.n_tokens += 1;
        Ok(i)
    }

    /// Append the rows of `rows` (concatenated, `k * n_embd` values) at positions
    /// `start_pos..`, all in `seq_ids`; with `logits_last`, the last one requests logits.
    /// Returns the batch index of the last entry.
    ///
    /// # Errors
    /// [`LlamaError::NEmbdMismatch`] when `rows.len()` is not a multiple of `n_embd`, plus
    /// those of [`Self::push`]; on error the rows pushed so far stay in the batch.
    pub fn push_seq(
        &mut self,
        rows: &[f32],
        start_pos: Pos,
        seq_ids: &[SeqId],
        logits_last: bool,
    ) -> Result<Option<usize>, LlamaError> {
        let n = self.0.n_embd;
        if !rows.len().is_multiple_of(n) {
            return Err(LlamaError::NEmbdMismatch {
                what: format!("a block of {} values (not a whole number of rows)", rows.len()),
                expected: n,
                got: rows.len() % n,
            });
        }
        let count = rows.len() / n;
        let mut last = None;
        for (k, row) in rows.chunks_exact(n).enumerate() {
            last = Some(self.push(row, start_pos + k as Pos, seq_ids, logits_last && k + 1 == count)?);
        }
        Ok(last)
    }

    /// Remove all entries.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the batch has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.0.capacity
    }

    /// Values per row.
    pub fn n_embd(&self) -> usize {
        self.0.n_embd
    }
}
