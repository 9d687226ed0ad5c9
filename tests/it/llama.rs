//! Tests of the llama.cpp layer against the real default model (fetched on first use).

use crate::common::{model_at, serial, tmpdir};

use std::path::Path;
use std::time::Instant;

use deopt::llama::{
    Context, ContextParams, DecodeError, EmbdBatch, GgufFile, LlamaError, Model, ModelParams, Token,
    TokenBatch,
};
use deopt::provision::model_store::{resolve_model, Precision};

fn ctx(model: &Model, n_ctx: u32, n_seq_max: u32) -> Context<'_> {
    let params = ContextParams { n_ctx, n_seq_max, ..ContextParams::default() };
    Context::new(model, &params).expect("context")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap()
}

const SENTENCE: &str = "The capital of France is";

/// Last-position logits of `tokens` decoded as tokens and as scaled embedding rows.
fn token_vs_embedding_logits(model: &Model) -> (Vec<f32>, Vec<f32>) {
    let tokens = model.tokenize(SENTENCE, true, false).unwrap();
    let mut c = ctx(model, 512, 1);

    let mut tb = TokenBatch::new(tokens.len(), 1).unwrap();
    let last = tb.push_seq(&tokens, 0, &[0], true).unwrap().unwrap();
    c.decode_tokens(&tb).unwrap();
    let via_tokens = c.logits(last).unwrap().to_vec();

    c.clear();
    let rows = model.token_embeddings().scaled_rows(&tokens).unwrap();
    let mut eb = EmbdBatch::new(tokens.len(), model.n_embd_inp(), 1).unwrap();
    let last = eb.push_seq(&rows, 0, &[0], true).unwrap().unwrap();
    c.decode_embd(&eb).unwrap();
    let via_embd = c.logits(last).unwrap().to_vec();
    (via_tokens, via_embd)
}

#[test]
fn scaled_embedding_rows_reproduce_token_logits_f16() {
    let _serial = serial(); // uses both cores
    let model = model_at(Precision::F16);
    let (a, b) = token_vs_embedding_logits(model);
    let d = max_abs_diff(&a, &b);
    let top = argmax(&a);
    eprintln!(
        "F16: token vs embedding input, max |diff| = {d:e}; top token {top} {:?}",
        model.token_to_piece(top as Token, true).unwrap()
    );
    assert!(d < 1e-3, "max abs diff {d}");
    assert_eq!(argmax(&b), top);
}

#[test]
fn scaled_embedding_rows_reproduce_token_logits_q4() {
    let _serial = serial(); // uses both cores
    let model = model_at(Precision::Original);
    let (a, b) = token_vs_embedding_logits(model);
    let d = max_abs_diff(&a, &b);
    eprintln!("Q4_K_M: token vs embedding input, max |diff| = {d:e}");
    assert!(d < 1e-3, "max abs diff {d}");
}

#[test]
fn unscaled_rows_do_not_reproduce_tokens() {
    let _serial = serial(); // uses both cores
                            // Guards the scaling convention: llama.cpp does not scale embedding input for gemma3.
    let model = model_at(Precision::F16);
    assert_eq!(model.architecture(), "gemma3");
    assert!((model.embedding_scale() - 640f32.sqrt()).abs() < 1e-6);
    let tokens = model.tokenize(SENTENCE, true, false).unwrap();
    let mut c = ctx(model, 512, 1);
    let mut tb = TokenBatch::new(tokens.len(), 1).unwrap();
    let last = tb.push_seq(&tokens, 0, &[0], true).unwrap().unwrap();
    c.decode_tokens(&tb).unwrap();
    let a = c.logits(last).unwrap().to_vec();
    c.clear();
    let rows = model.token_embeddings().rows(&tokens).unwrap();
    let mut eb = EmbdBatch::new(tokens.len(), model.n_embd_inp(), 1).unwrap();
    let last = eb.push_seq(&rows, 0, &[0], true).unwrap().unwrap();
    c.decode_embd(&eb).unwrap();
    let d = max_abs_diff(&a, c.logits(last).unwrap());
    assert!(d > 1.0, "unscaled rows should differ clearly, max diff {d}");
}

/// BOS as a token, a soft prompt of random rows, then text: the engine's prompt layout.
/// Decodes three continuations of one prefix shared via `seq_cp` in one batch, and each on its
/// own; returns the max |diff| of their last logits.
fn shared_prefix_vs_separate(model: &Model) -> Vec<f32> {
    let n_embd = model.n_embd_inp();
    let stats = model.token_embeddings().stats(Some(4096)).unwrap();
    // Deterministic pseudo-random soft prompt of 6 rows with the table's scale.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let soft: Vec<f32> = (0..6 * n_embd)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * stats.std as f32 * 1.7
        })
        .collect();
    let bos = model.bos().unwrap();
    let text = model.tokenize(" Question: how important is family in your life?", false, false).unwrap();
    let conts: Vec<Vec<Token>> = [" Answer: 1", " Answer (1-5): ", " Very important. Answer: 2"]
        .iter()
        .map(|s| model.tokenize(s, false, false).unwrap())
        .collect();
    let prefix_len = 1 + 6 + text.len();

    // Shared: prefix once in seq 0, copied to 1..=3, continuations in one batch.
    let mut c = ctx(model, 1024, 4);
    let mut tb = TokenBatch::new(64, 4).unwrap();
    let mut eb = EmbdBatch::new(6, n_embd, 4).unwrap();
    tb.push(bos, 0, &[0], false).unwrap();
    c.decode_tokens(&tb).unwrap();
    eb.push_seq(&soft, 1, &[0], false).unwrap();
    c.decode_embd(&eb).unwrap();
    tb.clear();
    tb.push_seq(&text, 7, &[0], false).unwrap();
    c.decode_tokens(&tb).unwrap();
    for s in 1..=3 {
        c.seq_cp(0, s, -1, -1).unwrap();
    }
    tb.clear();
    let mut idx = Vec::new();
    for (k, cont) in conts.iter().enumerate() {
        let last = tb.push_seq(cont, prefix_len as i32, &[k as i32 + 1], true).unwrap().unwrap();
        idx.push(last);
    }
    c.decode_tokens(&tb).unwrap();
    assert_eq!(c.output_indices(), idx.as_slice());
    let shared: Vec<Vec<f32>> = idx.iter().map(|&i| c.logits(i).unwrap().to_vec()).collect();
    assert_eq!(c.seq_pos_max(0), Some(prefix_len as i32 - 1));

    // Separate: each sequence on its own in a fresh single-sequence context.
    let mut diffs = Vec::new();
    for (k, cont) in conts.iter().enumerate() {
        let mut c1 = ctx(model, 512, 1);
        let mut tb = TokenBatch::new(64, 1).unwrap();
        let mut eb = EmbdBatch::new(6, n_embd, 1).unwrap();
        tb.push(bos, 0, &[0], false).unwrap();
        c1.decode_tokens(&tb).unwrap();
        eb.push_seq(&soft, 1, &[0], false).unwrap();
        c1.decode_embd(&eb).unwrap();
        tb.clear();
        tb.push_seq(&text, 7, &[0], false).unwrap();
        let last = tb.push_seq(cont, prefix_len as i32, &[0], true).unwrap().unwrap();
        c1.decode_tokens(&tb).unwrap();
        diffs.push(max_abs_diff(&shared[k], c1.logits(last).unwrap()));
    }
    diffs
}

#[test]
fn shared_prefix_via_seq_cp_matches_separate_decoding() {
    let _serial = serial(); // uses both cores
    let diffs = shared_prefix_vs_separate(model_at(Precision::F16));
    eprintln!("F16: shared prefix (3 sequences, one batch) vs separate: max |diff| = {diffs:?}");
    for d in diffs {
        assert!(d < 1e-3, "max abs diff {d}");
    }
}

/// The same comparison on the Q4_K_M weights, where batch layout moves logits more (reported,
/// only sanity-checked).
#[test]
fn shared_prefix_layout_noise_on_q4() {
    let _serial = serial(); // uses both cores
    let diffs = shared_prefix_vs_separate(model_at(Precision::Original));
    eprintln!("Q4_K_M: shared prefix (3 sequences, one batch) vs separate: max |diff| = {diffs:?}");
    assert!(diffs.iter().all(|d| d.is_finite() && *d < 5.0), "{diffs:?}");
}

#[test]
fn model_is_shared_across_threads_with_one_context_each() {
    let _serial = serial(); // uses both cores
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Model>();
    send::<Context<'static>>();
    send::<TokenBatch>();
    send::<EmbdBatch>();
    let model = model_at(Precision::F16);
    let tokens = model.tokenize(SENTENCE, true, false).unwrap();
    let run = || {
        let mut c = ctx(model, 256, 1);
        let mut tb = TokenBatch::new(tokens.len(), 1).unwrap();
        let last = tb.push_seq(&tokens, 0, &[0], true).unwrap().unwrap();
        c.decode_tokens(&tb).unwrap();
        c.logits(last).unwrap().to_vec()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(run);
        let b = s.spawn(run);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

#[test]
fn missing_file_is_a_clear_error() {
    let _serial = serial(); // uses both cores
    let path = Path::new("/nonexistent/deopt/model.gguf");
    let err = Model::load(path, &ModelParams::default()).unwrap_err();
    assert!(matches!(err, LlamaError::FileMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/deopt/model.gguf"), "{err}");
    assert!(matches!(GgufFile::open(path).unwrap_err(), LlamaError::FileMissing { .. }));
}

#[test]
fn text_file_is_not_a_gguf() {
    let _serial = serial(); // uses both cores
    let path = tmpdir("text").join("notes.txt");
    std::fs::write(&path, "hello, this is not a model\n").unwrap();
    let err = Model::load(&path, &ModelParams::default()).unwrap_err();
    assert!(matches!(err, LlamaError::NotGguf { .. }), "{err:?}");
    eprintln!("{err}");
    assert!(err.to_string().contains("\"hell\""), "{err}");
    // Shorter than the magic, and empty.
    std::fs::write(&path, "GG").unwrap();
    assert!(matches!(Model::load(&path, &ModelParams::default()), Err(LlamaError::NotGguf { .. })));
    std::fs::write(&path, "").unwrap();
    assert!(matches!(Model::load(&path, &ModelParams::default()), Err(LlamaError::NotGguf { .. })));
    // A directory.
    let dir = tmpdir("text");
    assert!(Model::load(&dir, &ModelParams::default()).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn truncated_gguf_is_a_clear_error() {
    let _serial = serial(); // uses both cores
    let src = resolve_model(None, Precision::Original).unwrap().path;
    let dir = tmpdir("truncated");
    let bytes = std::fs::read(&src).unwrap();
    for (name, len) in
        [("1mb", 1 << 20), ("8mb", 8 << 20), ("half", bytes.len() / 2), ("minus1", bytes.len() - 1)]
    {
        let path = dir.join(format!("{name}.gguf"));
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = Model::load(&path, &ModelParams::default()).unwrap_err();
        eprintln!("{name}: {err}");
        assert!(matches!(err, LlamaError::CorruptGguf { .. }), "{name}: {err:?}");
        let err = deopt::llama::dequantize_to_f16(&path, &dir.join("out.gguf")).unwrap_err();
        assert!(matches!(err, LlamaError::CorruptGguf { .. }), "{name}: {err:?}");
        assert!(!dir.join("out.gguf").exists());
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn decode_errors_are_typed() {
    let _serial = serial(); // uses both cores
    let model = model_at(Precision::F16);
    let mut c = ctx(model, 256, 1);
    let mut tb = TokenBatch::new(600, 2).unwrap();

    assert!(matches!(c.decode_tokens(&tb), Err(LlamaError::EmptyBatch)));

    // More entries than n_batch (llama.cpp caps n_batch at n_ctx = 256).
    assert_eq!(c.n_batch(), 256);
    for p in 0..257 {
        tb.push(2, p, &[0], false).unwrap();
    }
    assert!(matches!(c.decode_tokens(&tb), Err(LlamaError::BatchTooLarge { n_tokens: 257, n_batch: 256 })));

    // More tokens than the context holds: 200 fit, 200 more do not.
    tb.clear();
    tb.push_seq(&[2; 200], 0, &[0], false).unwrap();
    c.decode_tokens(&tb).unwrap();
    tb.clear();
    tb.push_seq(&[2; 200], 200, &[0], true).unwrap();
    let err = c.decode_tokens(&tb).unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, LlamaError::Decode(DecodeError::NoKvSlot { n_tokens: 200, .. })), "{err:?}");
    assert!(err.to_string().contains("context too small"), "{err}");
    assert!(matches!(c.logits(199), Err(LlamaError::NoLogits { .. })));
    // The failed batch left the memory as it was.
    assert_eq!(c.seq_pos_max(0), Some(199));
    c.clear();

    // Sequence id beyond n_seq_max, token beyond the vocabulary.
    tb.clear();
    tb.push(2, 0, &[1], true).unwrap();
    assert!(matches!(c.decode_tokens(&tb), Err(LlamaError::SeqIdOutOfRange { seq: 1, n_seq_max: 1 })));
    tb.clear();
    tb.push(262_144, 0, &[0], true).unwrap();
    assert!(matches!(c.decode_tokens(&tb), Err(LlamaError::TokenOutOfRange { token: 262_144, .. })));

    // A gap in positions.
    tb.clear();
    tb.push_seq(&[2, 100, 200], 0, &[0], true).unwrap();
    c.decode_tokens(&tb).unwrap();
    assert!(c.logits(2).is_ok());
    assert!(matches!(c.logits(1), Err(LlamaError::NoLogits { index: 1, .. })));
    assert!(matches!(c.logits(3), Err(LlamaError::NoLogits { index: 3, .. })));
    tb.clear();
    tb.push(300, 10, &[0], true).unwrap();
    let err = c.decode_tokens(&tb).unwrap_err();
    eprintln!("{err}");
    assert!(matches!(err, LlamaError::PositionGap { seq: 0, got: 10, last: 2, expected: 3 }), "{err:?}");
    // The context is still usable after the rejection.
    tb.clear();
    tb.push(300, 3, &[0], true).unwrap();
    c.decode_tokens(&tb).unwrap();
    assert_eq!(c.seq_pos_max(0), Some(3));
    c.seq_rm(0, 2, -1).unwrap();
    assert_eq!(c.seq_pos_max(0), Some(1));

    // Embedding rows of the wrong width.
    let mut eb = EmbdBatch::new(4, 10, 1).unwrap();
    assert!(matches!(
        eb.push(&[0.0; 9], 0, &[0], true),
        Err(LlamaError::NEmbdMismatch { expected: 10, got: 9, .. })
    ));
    eb.push(&[0.0; 10], 2, &[0], true).unwrap();
    assert!(matches!(c.decode_embd(&eb), Err(LlamaError::NEmbdMismatch { expected: 640, got: 10, .. })));

    // Batch bookkeeping.
    let mut small = TokenBatch::new(1, 1).unwrap();
    small.push(2, 0, &[0], false).unwrap();
    assert!(matches!(small.push(2, 1, &[0], false), Err(LlamaError::BatchFull { capacity: 1 })));
    assert!(matches!(tb.push(2, 0, &[0, 1, 2], false), Err(LlamaError::SeqIdCount { max: 2, got: 3 })));
    assert!(matches!(tb.push(2, -1, &[0], false), Err(LlamaError::NegativePos { pos: -1 })));
    assert!(TokenBatch::new(0, 1).is_err());
}

#[test]
fn kv_memory_ops_validate_their_arguments() {
    let _serial = serial(); // uses both cores
    let model = model_at(Precision::F16);
    let mut c = ctx(model, 512, 2);
    assert!(matches!(c.seq_cp(0, 2, -1, -1), Err(LlamaError::SeqIdOutOfRange { seq: 2, n_seq_max: 2 })));
    assert!(matches!(c.seq_cp(0, 1, 0, 5), Err(LlamaError::PartialSeqCopy { .. })));
    assert!(matches!(c.seq_rm(-1, -1, -1), Err(LlamaError::SeqIdOutOfRange { .. })));
    let mut tb = TokenBatch::new(8, 2).unwrap();
    tb.push_seq(&[2, 100, 200], 0, &[0], true).unwrap();
    c.decode_tokens(&tb).unwrap();
    c.seq_cp(0, 1, -1, -1).unwrap();
    assert_eq!(c.seq_pos_max(1), Some(2));
    c.seq_rm(1, -1, -1).unwrap();
    assert_eq!(c.seq_pos_max(1), None);
    c.clear();
    assert_eq!(c.seq_pos_max(0), None);
    assert!(matches!(
        Context::new(model, &ContextParams { n_seq_max: 0, ..ContextParams::default() }),
        Err(LlamaError::InvalidParam { name: "n_seq_max", .. })
    ));
    assert!(matches!(
        Context::new(model, &ContextParams { n_seq_max: 257, ..ContextParams::default() }),
        Err(LlamaError::InvalidParam { name: "n_seq_max", .. })
    ));
}

#[test]
fn model_accessors_and_tokenizer() {
    let _serial = serial(); // uses both cores
    let model = model_at(Precision::F16);
    assert_eq!(model.n_embd(), 640);
    assert_eq!(model.n_embd_inp(), 640);
    assert_eq!(model.n_vocab(), 262_144);
    assert_eq!(model.n_layer(), 18);
    assert_eq!(model.n_ctx_train(), 32_768);
    assert_eq!(model.bos(), Some(2));
    assert!(model.add_bos());
    assert!(model.eos().is_some());
    assert_eq!(model.meta_str("general.architecture").as_deref(), Some("gemma3"));
    assert_eq!(model.meta_str("gemma3.block_count").as_deref(), Some("18"));
    assert!(model.name().is_some());
    assert_eq!(model.meta_str("no.such.key"), None);

    let toks = model.tokenize("Answer: 1", true, false).unwrap();
    assert_eq!(toks[0], 2);
    assert_eq!(*toks.last().unwrap(), 236770, "{toks:?}");
    let text: String = toks[1..].iter().map(|&t| model.token_to_piece(t, false).unwrap()).collect();
    assert_eq!(text, "Answer: 1");
    for (digit, id) in [("1", 236770), ("2", 236778), ("3", 236800), ("4", 236812), ("5", 236810)] {
        assert_eq!(model.tokenize(digit, false, false).unwrap(), vec![id]);
    }
    assert_eq!(model.tokenize("", false, false).unwrap(), Vec::<Token>::new());
    let long = "word ".repeat(5000);
    assert!(model.tokenize(&long, false, false).unwrap().len() >= 5000);
    assert_eq!(model.token_to_piece(2, true).unwrap(), "<bos>");
    assert!(matches!(model.token_to_piece(-1, true), Err(LlamaError::TokenOutOfRange { token: -1, .. })));
    assert!(matches!(model.token_to_piece(262_144, true), Err(LlamaError::TokenOutOfRange { .. })));
    // The special-token text is parsed only when asked.
    assert_eq!(model.tokenize("<start_of_turn>", false, true).unwrap().len(), 1);
    assert!(model.tokenize("<start_of_turn>", false, false).unwrap().len() > 1);

    let gemma = deopt::llama::format_chat("gemma", &[("user", "Hello")], true).unwrap();
    assert_eq!(gemma, "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n");
    let err = deopt::llama::format_chat("no-such-template", &[("user", "Hello")], true).unwrap_err();
    assert!(matches!(err, LlamaError::ChatTemplate { .. }), "{err:?}");
    match model.chat_template() {
        Some(_) => {
            let s = model.apply_chat_template(&[("user", "Hello")], true).unwrap();
            assert!(s.contains("Hello"));
        }
        None => {
            let err = model.apply_chat_template(&[("user", "Hello")], true).unwrap_err();
            assert!(matches!(err, LlamaError::NoChatTemplate { .. }));
        }
    }
}

#[test]
fn embedding_rows_and_statistics() {
    let _serial = serial(); // uses both cores
    let model = model_at(Precision::F16);
    let table = model.token_embeddings();
    assert_eq!(table.n_embd(), 640);
    assert_eq!(table.n_vocab(), 262_144);
    assert_eq!(table.type_name(), "f16");
    let raw = table.rows(&[2, 236770]).unwrap();
    let scaled = table.scaled_rows(&[2, 236770]).unwrap();
    assert_eq!(raw.len(), 2 * 640);
    for (r, s) in raw.iter().zip(&scaled) {
        assert_eq!(r * table.scale(), *s);
    }
    let mut one = vec![0f32; 640];
    table.row_into(236770, &mut one).unwrap();
    assert_eq!(one, raw[640..]);
    assert!(matches!(table.row_into(0, &mut [0f32; 3]), Err(LlamaError::NEmbdMismatch { .. })));
    assert!(matches!(table.rows(&[262_144]), Err(LlamaError::TokenOutOfRange { .. })));

    // The Q4 original stores token_embd as Q8_0; the F16 copy holds the same values.
    let q4 = model_q4_rows(&[2, 236770, 1000, 262_143]);
    let f16 = table.rows(&[2, 236770, 1000, 262_143]).unwrap();
    let d = max_abs_diff(&q4, &f16);
    assert!(d < 1e-3, "q8_0 vs its f16 copy: {d}");

    let t = Instant::now();
    let all = table.stats(None).unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "stats over {} rows in {secs:.2} s: mean {:.4} std {:.4}; row norm min {:.2} p5 {:.2} p50 {:.2} p95 {:.2} max {:.2}",
        all.rows,
        all.mean,
        all.std,
        all.norm_min,
        all.norm_percentile(5.0),
        all.norm_percentile(50.0),
        all.norm_percentile(95.0),
        all.norm_max
    );
    assert_eq!(all.rows, 262_144);
    assert!(all.std > 0.0 && all.mean.is_finite());
    assert!(all.norm_min <= all.norm_percentile(50.0) && all.norm_percentile(50.0) <= all.norm_max);
    assert_eq!(all.norm_percentile(0.0), all.norm_min);
    assert_eq!(all.norm_percentile(100.0), all.norm_max);
    let sample = table.stats(Some(10_000)).unwrap();
    assert_eq!(sample.rows, 10_000);
    assert!((sample.std - all.std).abs() / all.std < 0.05, "{} vs {}", sample.std, all.std);
}

fn model_q4_rows(tokens: &[Token]) -> Vec<f32> {
    let m = model_at(Precision::Original);
    assert_eq!(m.token_embeddings().type_name(), "q8_0");
    m.token_embeddings().rows(tokens).unwrap()
}

#[test]
fn f16_copy_keeps_metadata_and_converts_quantized_weights() {
    let _serial = serial(); // uses both cores
    let f16 = GgufFile::open(&resolve_model(None, Precision::F16).unwrap().path).unwrap();
    let q4 = GgufFile::open(&resolve_model(None, Precision::Original).unwrap().path).unwrap();
    assert_eq!(f16.meta_keys(), q4.meta_keys());
    for key in q4.meta_keys() {
        if key != "general.file_type" {
            assert_eq!(f16.meta_str(&key), q4.meta_str(&key), "{key}");
        }
    }
    assert_eq!(f16.meta_str("general.file_type").as_deref(), Some("1"));
    let (tq, tf) = (q4.tensors(), f16.tensors());
    assert_eq!(tq.len(), tf.len());
    for (a, b) in tq.iter().zip(&tf) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.ne, b.ne);
        if a.is_quantized && a.n_dims >= 2 {
            assert_eq!(b.type_name, "f16", "{}", a.name);
        } else {
            assert_eq!(a.type_name, b.type_name, "{}", a.name);
        }
    }
    assert_eq!(f16.tensor("token_embd.weight").unwrap().type_name, "f16");
}

#[test]
fn dequantize_writes_atomically_and_reproducibly() {
    let _serial = serial(); // uses both cores
    let src = resolve_model(None, Precision::Original).unwrap().path;
    let dir = tmpdir("dequant");
    let dst = dir.join("copy.gguf");
    let t = Instant::now();
    let report = deopt::llama::dequantize_to_f16(&src, &dst).unwrap();
    eprintln!("dequantize_to_f16: {report:?} in {:.2} s", t.elapsed().as_secs_f64());
    assert_eq!(report.bytes_written, std::fs::metadata(&dst).unwrap().len());
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "temporary files left behind: {names:?}");
    let reference = resolve_model(None, Precision::F16).unwrap().path;
    assert!(
        std::fs::read(&dst).unwrap() == std::fs::read(&reference).unwrap(),
        "conversion is deterministic"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Raw prompt-processing speed. Timings are only meaningful when run alone:
/// `cargo test --release --test llama decode_throughput -- --nocapture --test-threads 1`.
#[test]
fn decode_throughput_512_tokens() {
    let _serial = serial(); // uses both cores
    for precision in [Precision::F16, Precision::Original] {
        let model = model_at(precision);
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(60);
        let mut tokens = model.tokenize(&text, true, false).unwrap();
        tokens.truncate(512);
        assert_eq!(tokens.len(), 512);
        let mut c = ctx(model, 1024, 1);
        let mut tb = TokenBatch::new(512, 1).unwrap();
        let last = tb.push_seq(&tokens, 0, &[0], true).unwrap().unwrap();
        // Warm-up, then timed runs.
        c.decode_tokens(&tb).unwrap();
        let mut best = f64::MAX;
        for _ in 0..2 {
            c.clear();
            let t = Instant::now();
            c.decode_tokens(&tb).unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        assert!(c.logits(last).unwrap().iter().all(|v| v.is_finite()));
        eprintln!(
            "decode of a 512-token batch ({precision:?}, {} threads, n_ubatch {}): {best:.2} s = {:.0} tokens/s",
            ContextParams::default().n_threads,
            c.n_ubatch(),
            512.0 / best
        );
    }
}
