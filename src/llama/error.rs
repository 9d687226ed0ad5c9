//! Typed errors of the llama.cpp layer. Messages are lowercase and name the bad value.

use std::path::PathBuf;

/// Everything that can go wrong in [`crate::llama`].
#[derive(Debug, thiserror::Error)]
pub enum LlamaError {
    /// The model file does not exist.
    #[error("model file {} does not exist", path.display())]
    FileMissing {
        /// The path that was given.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done ("cannot read", "cannot write", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with the GGUF magic.
    #[error("{} is not a GGUF file (it starts with {magic}, not \"GGUF\")", path.display())]
    NotGguf {
        /// The file.
        path: PathBuf,
        /// Its first bytes, escaped.
        magic: String,
    },
    /// The file starts like a GGUF but cannot be parsed or is shorter than its header says.
    #[error("{} is a truncated or corrupt GGUF file: {reason}", path.display())]
    CorruptGguf {
        /// The file.
        path: PathBuf,
        /// What was found wrong.
        reason: String,
    },
    /// llama.cpp refused to load a GGUF that passed deopt's own checks.
    #[error(
        "llama.cpp could not load the model {} (unsupported architecture, or corrupt tensor data; \
         set DEOPT_LLAMA_LOG=1 for llama.cpp's own messages)",
        path.display()
    )]
    ModelLoad {
        /// The file.
        path: PathBuf,
    },
    /// llama.cpp could not create a context with these parameters.
    #[error("llama.cpp could not create a context ({params}); out of memory or invalid parameters")]
    ContextCreate {
        /// The parameters, as text.
        params: String,
    },
    /// A parameter is outside its valid range.
    #[error("invalid {name} {value}: {reason}")]
    InvalidParam {
        /// The parameter.
        name: &'static str,
        /// Its value, as text.
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// A required tensor is missing from a GGUF file.
    #[error("{} has no tensor {name:?}", path.display())]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor name looked for.
        name: String,
    },
    /// A tensor has a type this code cannot convert to f32.
    #[error("tensor {tensor:?} has type {type_name}, which cannot be converted to f32")]
    UnsupportedTensorType {
        /// The tensor.
        tensor: String,
        /// The ggml type name.
        type_name: String,
    },
    /// Rows of the wrong width were given where the model expects `n_embd` values per row.
    #[error("n_embd mismatch: {what} has {got} values per row, the model expects {expected}")]
    NEmbdMismatch {
        /// What had the wrong width.
        what: String,
        /// The model's width.
        expected: usize,
        /// The width found.
        got: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {token} is out of range for a vocabulary of {n_vocab} tokens")]
    TokenOutOfRange {
        /// The token id.
        token: i32,
        /// The vocabulary size.
        n_vocab: usize,
    },
    /// Text given to llama.cpp contains a NUL byte.
    #[error("{what} contains a NUL byte at offset {offset}")]
    InteriorNul {
        /// Which text.
        what: &'static str,
        /// Byte offset of the NUL.
        offset: usize,
    },
    /// Tokenization failed.
    #[error("tokenizing {len} bytes of text failed (llama_tokenize returned {code})")]
    Tokenize {
        /// Length of the text.
        len: usize,
        /// The return code.
        code: i32,
    },
    /// The model has no chat template.
    #[error("the model {} has no chat template", path.display())]
    NoChatTemplate {
        /// The model file.
        path: PathBuf,
    },
    /// llama.cpp does not recognise the chat template.
    #[error("llama.cpp does not support this model's chat template (it starts with {start:?})")]
    ChatTemplate {
        /// First characters of the template.
        start: String,
    },
    /// A batch is full.
    #[error("batch is full: it holds at most {capacity} entries")]
    BatchFull {
        /// The batch capacity.
        capacity: usize,
    },
    /// An entry names more sequences than the batch was built for, or none.
    #[error("a batch entry must list 1 to {max} sequence ids, got {got}")]
    SeqIdCount {
        /// The batch's `n_seq_max`.
        max: usize,
        /// The number given.
        got: usize,
    },
    /// A sequence id outside `0..n_seq_max`.
    #[error("sequence id {seq} is out of range: the context has n_seq_max {n_seq_max}")]
    SeqIdOutOfRange {
        /// The sequence id.
        seq: i32,
        /// The context's `n_seq_max`.
        n_seq_max: u32,
    },
    /// A negative position in a batch entry.
    #[error("position {pos} is negative")]
    NegativePos {
        /// The position.
        pos: i32,
    },
    /// `decode` was given an empty batch.
    #[error("cannot decode an empty batch")]
    EmptyBatch,
    /// `decode` was given more entries than the context's `n_batch`.
    #[error("batch of {n_tokens} entries exceeds the context's n_batch of {n_batch}")]
    BatchTooLarge {
        /// Entries in the batch.
        n_tokens: usize,
        /// The context's `n_batch`.
        n_batch: u32,
    },
    /// A batch entry does not continue its sequence's KV memory.
    #[error(
        "sequence {seq} starts at position {got} in this batch, but its KV memory ends at \
         position {last}; it must continue at {expected}"
    )]
    PositionGap {
        /// The sequence.
        seq: i32,
        /// The first position of the sequence in the batch.
        got: i32,
        /// The last position in memory.
        last: i32,
        /// The position that was expected.
        expected: i32,
    },
    /// `llama_decode` failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Logits were asked for a batch entry that has none.
    #[error("no logits for batch entry {index}: {reason}")]
    NoLogits {
        /// The batch index asked for.
        index: usize,
        /// Why there are none.
        reason: String,
    },
    /// `seq_cp` of part of a sequence between separate KV streams.
    #[error(
        "seq_cp({src}, {dst}, {p0}, {p1}): with kv_unified = false only whole sequences can be \
         copied (use p0 = -1, p1 = -1)"
    )]
    PartialSeqCopy {
        /// Source sequence.
        src: i32,
        /// Destination sequence.
        dst: i32,
        /// Start position.
        p0: i32,
        /// End position.
        p1: i32,
    },
    /// `seq_rm` could not remove part of a sequence.
    #[error("seq_rm({seq}, {p0}, {p1}): this model's memory cannot remove part of a sequence")]
    SeqRm {
        /// The sequence.
        seq: i32,
        /// Start position.
        p0: i32,
        /// End position.
        p1: i32,
    },
    /// Writing a GGUF failed.
    #[error("cannot write GGUF {}: {reason}", path.display())]
    GgufWrite {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A failed `llama_decode`, by return code.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Return code 1: no free KV-cache slot for the batch.
    #[error(
        "context too small: no KV slot for a batch of {n_tokens} entries in a context of \
         {n_ctx_seq} tokens per sequence ({n_ctx} in all); use a larger n_ctx, fewer tokens per \
         sequence, or clear finished sequences"
    )]
    NoKvSlot {
        /// Entries in the batch.
        n_tokens: usize,
        /// Total context size.
        n_ctx: u32,
        /// Context size per sequence.
        n_ctx_seq: u32,
    },
    /// Return code 2: aborted by the abort callback.
    #[error("decode aborted")]
    Aborted,
    /// Return code -1: llama.cpp rejected the batch.
    #[error(
        "llama.cpp rejected the batch as invalid (positions must be consecutive within a \
         sequence; set DEOPT_LLAMA_LOG=1 for details)"
    )]
    InvalidBatch,
    /// Any other code: fatal compute error.
    #[error("llama_decode failed with code {code}")]
    Fatal {
        /// The return code.
        code: i32,
    },
}

pub(crate) fn io_err(action: &'static str, path: &std::path::Path, source: std::io::Error) -> LlamaError {
    LlamaError::Io { action, path: path.to_path_buf(), source }
}
