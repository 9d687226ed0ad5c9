//! Exporting a run's best soft prompt for other tools, and reading every exported form back.
//!
//! Three formats, all holding the same f32 values bit for bit:
//!
//! * `safetensors`: deopt's own file (tensor `prompt`, string metadata), see [`SoftPrompt`].
//! * `peft`: a PEFT prompt-tuning adapter directory, `adapter_config.json` plus
//!   `adapter_model.safetensors` with the single tensor `prompt_embeddings` [T, n_embd]. PEFT's
//!   `get_peft_model_state_dict` stores prompt-learning adapters under exactly that key, and
//!   `set_peft_model_state_dict` loads it into the prompt encoder's embedding weight.
//! * `npy`: `prompt.npy` (NumPy v1 format, `<f4`, C order, shape (T, n_embd)) plus a JSON
//!   sidecar `prompt.json` with the metadata.
//!
//! [`load_any`] detects which of these a path holds, so `deopt eval --prompt` and
//! `deopt generate --prompt` accept all of them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;

use crate::prompt::softprompt::SoftPrompt;
use crate::run::directory;

/// File name of the deopt safetensors export.
pub const SAFETENSORS_FILE: &str = "prompt.safetensors";
/// File name of the PEFT adapter config.
pub const PEFT_CONFIG: &str = "adapter_config.json";
/// File name of the PEFT adapter weights.
pub const PEFT_WEIGHTS: &str = "adapter_model.safetensors";
/// Tensor name PEFT uses for prompt-tuning embeddings.
pub const PEFT_TENSOR: &str = "prompt_embeddings";
/// File name of the NumPy export.
pub const NPY_FILE: &str = "prompt.npy";
/// File name of the NumPy export's metadata sidecar.
pub const NPY_SIDECAR: &str = "prompt.json";

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// deopt's safetensors file with metadata
    Safetensors,
    /// PEFT prompt-tuning adapter directory (adapter_config.json + adapter_model.safetensors)
    Peft,
    /// NumPy .npy (float32, shape [T, n_embd]) plus a JSON metadata sidecar
    Npy,
}

/// What the exporter knows about the base model (from its GGUF, when it can be read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelInfo {
    /// `general.name` or `general.basename`.
    pub name: Option<String>,
    /// Number of transformer layers.
    pub n_layer: Option<usize>,
    /// Number of attention heads.
    pub n_head: Option<usize>,
}

/// A run's best prompt and metadata.
#[derive(Debug, Clone)]
pub struct RunPrompt {
    /// The prompt.
    pub prompt: SoftPrompt,
    /// Metadata of best_prompt.safetensors plus provenance from config.json.
    pub metadata: BTreeMap<String, String>,
    /// The run's config.json.
    pub config: serde_json::Value,
}

/// Read a run directory's best prompt and config.
///
/// # Errors
/// A directory without config.json or best_prompt.safetensors, or unreadable files.
pub fn read_run(dir: &Path) -> Result<RunPrompt> {
    let shown = dir.display();
    if !dir.is_dir() {
        bail!("{shown}: not a directory (expected a run directory from `deopt run`)");
    }
    let cfg_path = dir.join(directory::CONFIG);
    let best = dir.join(directory::BEST_PROMPT);
    if !cfg_path.is_file() || !best.is_file() {
        bail!("{shown}: not a deopt run (needs {} and {})", directory::CONFIG, directory::BEST_PROMPT);
    }
    let bytes = std::fs::read(&cfg_path).with_context(|| format!("{}: cannot read", cfg_path.display()))?;
    let config: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow!("{}: not a deopt run config ({e})", cfg_path.display()))?;
    let (prompt, meta) = SoftPrompt::load(&best)?;
    for (key, have) in [("rows", prompt.rows()), ("n_embd", prompt.n_embd())] {
        let want =
            config.get(key).or_else(|| config.pointer(&format!("/model/{key}"))).and_then(|v| v.as_u64());
        if let Some(w) = want.filter(|&w| w != have as u64) {
            bail!("{}: {key} {have}: expected {w}, as {} says", best.display(), cfg_path.display());
        }
    }
    let mut metadata: BTreeMap<String, String> = meta.into_iter().collect();
    metadata.insert("run_dir".into(), dir.display().to_string());
    if let Some(name) = config.pointer("/model/name").and_then(|v| v.as_str()) {
        metadata.insert("model_name".into(), name.to_string());
    }
    metadata.insert(
        "input_space".into(),
        "rows fed to the first layer as input embeddings (for Gemma: token embeddings x sqrt(n_embd))".into(),
    );
    Ok(RunPrompt { prompt, metadata, config })
}

/// The model file a run used, from its config.json.
pub fn run_model_path(config: &serde_json::Value) -> Option<PathBuf> {
    config.pointer("/model/path").and_then(|v| v.as_str()).map(PathBuf::from)
}

/// Refuse to replace the files an export in `format` would write into `out`, unless `force`.
///
/// # Errors
/// One of them exists and `force` is not set.
pub fn refuse_existing(format: Format, out: &Path, force: bool) -> Result<()> {
    let names: &[&str] = match format {
        Format::Safetensors => &[SAFETENSORS_FILE],
        Format::Peft => &[PEFT_CONFIG, PEFT_WEIGHTS],
        Format::Npy => &[NPY_FILE, NPY_SIDECAR],
    };
    match names.iter().map(|n| out.join(n)).find(|p| p.exists()) {
        Some(p) if !force => {
            bail!("{}: exists already: expected a new file (give --force to replace it)", p.display())
        }
        _ => Ok(()),
    }
}

/// Write `run` in `format` into directory `out` (created if missing); returns the files written.
/// Existing files are replaced only with `force`.
///
/// # Errors
/// A directory that cannot be created or written.
pub fn export(
    run: &RunPrompt,
    format: Format,
    out: &Path,
    info: &ModelInfo,
    force: bool,
) -> Result<Vec<PathBuf>> {
    refuse_existing(format, out, force)?;
    std::fs::create_dir_all(out)
        .with_context(|| format!("{}: cannot create the output directory", out.display()))?;
    let p = &run.prompt;
    let mut meta = run.metadata.clone();
    if let Some(n) = &info.name {
        meta.insert("base_model".into(), n.clone());
    }
    let write = |name: &str, bytes: &[u8]| -> Result<PathBuf> {
        let path = out.join(name);
        crate::fsutil::write_atomic(&path, bytes)
            .with_context(|| format!("{}: cannot write", path.display()))?;
        Ok(path)
    };
    match format {
        Format::Safetensors => {
            let path = out.join(SAFETENSORS_FILE);
            let m: HashMap<String, String> = meta.into_iter().collect();
            p.save(&path, &m).with_context(|| format!("{}: cannot write", path.display()))?;
            Ok(vec![path])
        }
        Format::Peft => {
            let mut cfg = json!({
                "peft_type": "PROMPT_TUNING",
                "task_type": "CAUSAL_LM",
                "num_virtual_tokens": p.rows(),
                "token_dim": p.n_embd(),
                "num_transformer_submodules": 1,
                "prompt_tuning_init": "RANDOM",
                "prompt_tuning_init_text": null,
                "tokenizer_name_or_path": null,
                "inference_mode": true,
                "base_model_name_or_path": info.name,
                "revision": null,
                "modules_to_save": null,
            });
            if let Some(h) = info.n_head {
                cfg["num_attention_heads"] = json!(h);
            }
            if let Some(l) = info.n_layer {
                cfg["num_layers"] = json!(l);
            }
            let st = safetensors_bytes(PEFT_TENSOR, p, HashMap::from([("format".into(), "pt".into())]))?;
            let a = write(PEFT_CONFIG, serde_json::to_string_pretty(&cfg)?.as_bytes())?;
            let b = write(PEFT_WEIGHTS, &st)?;
            Ok(vec![a, b])
        }
        Format::Npy => {
            let mut side = serde_json::Map::new();
            side.insert("format".into(), json!("deopt-softprompt-npy"));
            side.insert("rows".into(), json!(p.rows()));
            side.insert("n_embd".into(), json!(p.n_embd()));
            side.insert("dtype".into(), json!("float32"));
            side.insert("metadata".into(), json!(meta));
            let a = write(NPY_FILE, &npy_bytes(p))?;
            let b = write(NPY_SIDECAR, serde_json::to_string_pretty(&side)?.as_bytes())?;
            Ok(vec![a, b])
        }
    }
}

fn safetensors_bytes(name: &str, p: &SoftPrompt, meta: HashMap<String, String>) -> Result<Vec<u8>> {
    let bytes: Vec<u8> = p.data().iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, vec![p.rows(), p.n_embd()], &bytes)
        .map_err(|e| anyhow!("building tensor: {e:?}"))?;
    safetensors::serialize([(name, view)], &Some(meta)).map_err(|e| anyhow!("serialising {name}: {e:?}"))
}

/// A 2-D f32 array as NumPy's .npy v1 format (little-endian, C order).
pub fn npy_bytes(p: &SoftPrompt) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}", p.rows(), p.n_embd());
    // Magic (6) + version (2) + length (2) + header, padded with spaces and a newline to 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(p.data().iter().flat_map(|v| v.to_le_bytes()));
    out
}

/// Parse a .npy file holding a 2-D little-endian f32 C-order array.
///
/// # Errors
/// Any other dtype, order, rank, version, a shape whose size overflows or does not match the
/// data, zero rows, a truncated file, a non-finite value.
pub fn parse_npy(bytes: &[u8], shown: &str) -> Result<SoftPrompt> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("{shown}: not a .npy file (no \\x93NUMPY magic)");
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => {
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => bail!("{shown}: .npy version {v}: expected 1, 2 or 3"),
    };
    let header = start.checked_add(hlen).and_then(|end| bytes.get(start..end)).ok_or_else(|| {
        anyhow!("{shown}: .npy header of {hlen} bytes: expected it within the file's {} bytes", bytes.len())
    })?;
    let header = std::str::from_utf8(header).map_err(|_| anyhow!("{shown}: .npy header: not text"))?;
    let h = NpyHeader::parse(header).map_err(|e| anyhow!("{shown}: .npy header: {e}"))?;
    if h.descr != "<f4" {
        bail!(
            "{shown}: .npy dtype '{}': expected little-endian float32 ('<f4')",
            crate::data::input_error::clip(&h.descr)
        );
    }
    if h.fortran_order {
        bail!("{shown}: .npy fortran_order True: expected C order (False)");
    }
    let [rows, n_embd] = h.shape[..] else {
        bail!("{shown}: .npy shape {:?}: expected two dimensions (T, n_embd)", h.shape);
    };
    if rows == 0 || n_embd == 0 {
        bail!("{shown}: .npy shape ({rows}, {n_embd}): expected at least one row of at least one value");
    }
    let data = &bytes[start + hlen..];
    let want = rows.checked_mul(n_embd).and_then(|n| n.checked_mul(4));
    if want != Some(data.len()) {
        bail!(
            "{shown}: .npy data of {} bytes: expected {} for shape ({rows}, {n_embd}) as float32",
            data.len(),
            want.map_or_else(|| "more than can be addressed".to_string(), |w| w.to_string())
        );
    }
    let vals = data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    SoftPrompt::new(rows, n_embd, vals).with_context(|| shown.to_string())
}

/// The dictionary of a .npy header, parsed exactly: `{'descr': STR, 'fortran_order': BOOL,
/// 'shape': (INT, ...), }`, each key once, nothing else.
#[derive(Debug, PartialEq)]
struct NpyHeader {
    descr: String,
    fortran_order: bool,
    shape: Vec<usize>,
}

impl NpyHeader {
    fn parse(text: &str) -> std::result::Result<NpyHeader, String> {
        let mut p = Cursor { s: text.trim_end_matches(['\n', ' ']).as_bytes(), i: 0 };
        p.expect(b'{')?;
        let (mut descr, mut order, mut shape) = (None, None, None);
        loop {
            p.skip_ws();
            if p.eat(b'}') {
                break;
            }
            let key = p.string()?;
            p.skip_ws();
            p.expect(b':')?;
            p.skip_ws();
            match key.as_str() {
                "descr" if descr.is_none() => descr = Some(p.string()?),
                "fortran_order" if order.is_none() => order = Some(p.boolean()?),
                "shape" if shape.is_none() => shape = Some(p.tuple()?),
                k => {
                    return Err(format!(
                        "key '{}': expected each of descr, fortran_order, shape once",
                        crate::data::input_error::clip(k)
                    ))
                }
            }
            p.skip_ws();
            if !p.eat(b',') {
                p.skip_ws();
                p.expect(b'}')?;
                break;
            }
        }
        p.skip_ws();
        if p.i != p.s.len() {
            return Err(format!("text after the dictionary at byte {}", p.i));
        }
        Ok(NpyHeader {
            descr: descr.ok_or("no 'descr'")?,
            fortran_order: order.ok_or("no 'fortran_order'")?,
            shape: shape.ok_or("no 'shape'")?,
        })
    }
}

/// A byte cursor for [`NpyHeader::parse`].
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        let hit = self.s.get(self.i) == Some(&c);
        self.i += usize::from(hit);
        hit
    }
    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.i))
        }
    }
    fn string(&mut self) -> std::result::Result<String, String> {
        let q = *self.s.get(self.i).ok_or("unexpected end")?;
        if q != b'\'' && q != b'"' {
            return Err(format!("expected a quoted string at byte {}", self.i));
        }
        let start = self.i + 1;
        let len = self.s[start..].iter().position(|&c| c == q).ok_or("unterminated string")?;
        self.i = start + len + 1;
        String::from_utf8(self.s[start..start + len].to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
    fn boolean(&mut self) -> std::result::Result<bool, String> {
        for (word, v) in [(&b"True"[..], true), (&b"False"[..], false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(v);
            }
        }
        Err(format!("expected True or False at byte {}", self.i))
    }
    fn tuple(&mut self) -> std::result::Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b')') {
                return Ok(dims);
            }
            let start = self.i;
            while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
                self.i += 1;
            }
            let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
            let d = digits.parse::<usize>().map_err(|_| {
                if digits.is_empty() {
                    format!("expected a dimension at byte {start}")
                } else {
                    format!(
                        "dimension {}: expected at most {}",
                        crate::data::input_error::clip(digits),
                        usize::MAX
                    )
                }
            })?;
            dims.push(d);
            self.skip_ws();
            if !self.eat(b',') {
                self.skip_ws();
                self.expect(b')')?;
                return Ok(dims);
            }
        }
    }
}

/// Read a safetensors file whose only (or named) 2-D f32 tensor is `prompt` or
/// `prompt_embeddings`.
fn load_safetensors(path: &Path) -> Result<(SoftPrompt, HashMap<String, String>)> {
    SoftPrompt::load_tensor(path, &["prompt", PEFT_TENSOR])
}

/// A PEFT adapter_config.json must describe a prompt-tuning adapter whose tensor is the one
/// beside it: peft_type PROMPT_TUNING, num_virtual_tokens = rows, token_dim = width,
/// num_transformer_submodules 1 (when given).
fn check_peft_config(cfg_path: &Path, p: &SoftPrompt) -> Result<()> {
    let shown = cfg_path.display();
    let bytes = std::fs::read(cfg_path)
        .with_context(|| format!("{shown}: cannot read (a PEFT adapter needs its {PEFT_CONFIG})"))?;
    let cfg: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| anyhow!("{shown}: not JSON ({e})"))?;
    let Some(obj) = cfg.as_object() else {
        bail!("{shown}: {}: expected a JSON object", crate::data::input_error::clip(&cfg.to_string()));
    };
    match obj.get("peft_type") {
        Some(serde_json::Value::String(t)) if t == "PROMPT_TUNING" => {}
        other => bail!(
            "{shown}: peft_type {}: expected \"PROMPT_TUNING\"",
            crate::data::input_error::clip(&other.map_or_else(|| "missing".into(), |v| v.to_string()))
        ),
    }
    let count = |key: &str, want: usize, required: bool| -> Result<()> {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) if !required => Ok(()),
            Some(v) if v.as_u64() == Some(want as u64) => Ok(()),
            v => bail!(
                "{shown}: {key} {}: expected {want}, as the tensor in {PEFT_WEIGHTS} has",
                crate::data::input_error::clip(&v.map_or_else(|| "missing".into(), |v| v.to_string()))
            ),
        }
    };
    count("num_virtual_tokens", p.rows(), true)?;
    count("token_dim", p.n_embd(), true)?;
    count("num_transformer_submodules", 1, false)?;
    Ok(())
}

/// Load a soft prompt from any exported form: a deopt safetensors file, a PEFT adapter
/// directory (or its adapter_model.safetensors), or a .npy file (with its JSON sidecar, if any,
/// for metadata).
///
/// # Errors
/// A path that holds none of these, or a malformed file; one line naming the path.
pub fn load_any(path: &Path) -> Result<(SoftPrompt, HashMap<String, String>)> {
    let shown = path.display().to_string();
    if path.is_dir() {
        let w = path.join(PEFT_WEIGHTS);
        if !w.is_file() {
            bail!("{shown}: a directory without {PEFT_WEIGHTS} (expected a PEFT prompt-tuning adapter)");
        }
        let (p, meta) = SoftPrompt::load_tensor(&w, &[PEFT_TENSOR])?;
        check_peft_config(&path.join(PEFT_CONFIG), &p)?;
        return Ok((p, meta));
    }
    let mut head = [0u8; 6];
    let is_npy = {
        use std::io::Read as _;
        let mut f = std::fs::File::open(path).with_context(|| format!("{shown}: cannot read prompt file"))?;
        f.read(&mut head).map(|n| n == 6 && &head == b"\x93NUMPY").unwrap_or(false)
    };
    if is_npy {
        let bytes = std::fs::read(path).with_context(|| format!("{shown}: cannot read prompt file"))?;
        let p = parse_npy(&bytes, &shown)?;
        let mut meta = HashMap::new();
        if let Ok(side) = std::fs::read(path.with_extension("json")) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&side) {
                if let Some(m) = v.get("metadata").and_then(|m| m.as_object()) {
                    for (k, v) in m {
                        if let Some(s) = v.as_str() {
                            meta.insert(k.clone(), s.to_string());
                        }
                    }
                }
            }
        }
        return Ok((p, meta));
    }
    load_safetensors(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trips_and_header_is_aligned() {
        let p = SoftPrompt::new(2, 3, vec![1.0, -2.5, 3.25, f32::MIN_POSITIVE, 0.0, 1e30]).unwrap();
        let b = npy_bytes(&p);
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(b[10 + hlen - 1], b'\n');
        assert_eq!(parse_npy(&b, "x").unwrap(), p);
        let empty = SoftPrompt::new(0, 640, vec![]).unwrap();
        assert!(parse_npy(&npy_bytes(&empty), "x").unwrap_err().to_string().contains("at least one row"));
    }

    #[test]
    fn npy_rejects_other_dtypes() {
        let p = SoftPrompt::new(1, 2, vec![1.0, 2.0]).unwrap();
        let mut b = npy_bytes(&p);
        let at = b.windows(3).position(|w| w == b"<f4").unwrap();
        b[at + 2] = b'8';
        let err = parse_npy(&b, "x").unwrap_err().to_string();
        assert!(err.contains("float32"), "{err}");
    }

    /// Bytes of a .npy file with this header dictionary and `data_len` data bytes.
    fn npy_with(header: &str, data_len: usize) -> Vec<u8> {
        let mut h = header.to_string();
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend(std::iter::repeat_n(0u8, data_len));
        out
    }

    #[test]
    fn npy_header_is_parsed_exactly() {
        let ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        assert_eq!(parse_npy(&npy_with(ok, 24), "x").unwrap().rows(), 2);
        for (header, len, needle) in [
            ("{'descr': '<f4x', 'fortran_order': False, 'shape': (2, 3), }", 24, "dtype '<f4x'"),
            ("{'descr': 'xx<f4', 'fortran_order': False, 'shape': (2, 3), }", 24, "dtype 'xx<f4'"),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 640), }",
                0,
                "expected more than can be addressed",
            ),
            (
                "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 1), }",
                0,
                "dimension 99999999999999999999999",
            ),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 17), }", 0, "at least one row"),
            (
                "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                24,
                "key 'descr'",
            ),
            ("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24, "C order"),
            ("{'descr': '<f4', 'shape': (2, 3), }", 24, "no 'fortran_order'"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } x", 24, "text after"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 1), }", 24, "two dimensions"),
        ] {
            let err = format!("{:#}", parse_npy(&npy_with(header, len), "x").unwrap_err());
            assert!(err.contains(needle), "{header}: {err}");
        }
    }
}
