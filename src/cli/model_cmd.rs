//! `deopt model`: fetch the default model, show what a model is, print the default path.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::Serialize;

use crate::llama::{Model, ModelParams};
use crate::provision::model_store::{fetch_default, resolve_model, Precision, ResolvedModel};
use crate::provision::synth::{parameters as synth_parameters, synthesise, tokenizer_only, Shape, SynthType};

/// Download, verify and inspect models.
#[derive(Debug, clap::Args)]
pub struct ModelCmdArgs {
    #[command(subcommand)]
    pub command: ModelCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ModelCommand {
    /// Download and verify the default model (Gemma 3 270M, Q4_K_M) and write its F16 copy
    Fetch,
    /// Show a model's architecture, sizes, file size and sha256 (fetches the default if needed)
    Info {
        /// A GGUF file instead of the default model
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
        /// Which weights of the default model to describe
        #[arg(long, value_enum, default_value_t = Precision::F16)]
        precision: Precision,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Write a model with a real architecture and tokenizer but seeded random weights, to
    /// measure speed at that size (its answers mean nothing)
    Synth {
        /// Size to imitate
        #[arg(long, value_enum)]
        shape: Shape,
        /// Storage of the weight matrices
        #[arg(long = "type", value_name = "TYPE", value_enum, default_value_t = SynthType::Q4_0)]
        ty: SynthType,
        /// GGUF whose tokenizer to copy (a model, or a file from `deopt model tokenizer`);
        /// default: the default model's
        #[arg(long, value_name = "GGUF")]
        tokenizer: Option<PathBuf>,
        /// Seed of the weights
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// File to write
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing file
        #[arg(long)]
        force: bool,
    },
    /// Write a small GGUF holding only a model's tokenizer (for `model synth --tokenizer` where
    /// the model itself is too big to carry)
    Tokenizer {
        /// GGUF to take the tokenizer from (default: the default model)
        #[arg(long, value_name = "GGUF")]
        from: Option<PathBuf>,
        /// File to write
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace an existing file
        #[arg(long)]
        force: bool,
    },
    /// Print the path of the default model (fetches it if needed)
    Path {
        /// Which weights of the default model
        #[arg(long, value_enum, default_value_t = Precision::F16)]
        precision: Precision,
    },
}

pub fn run(args: ModelCmdArgs) -> anyhow::Result<()> {
    match args.command {
        ModelCommand::Fetch => fetch(),
        ModelCommand::Info { model, precision, json } => info(model, precision, json),
        ModelCommand::Synth { shape, ty, tokenizer, seed, out, force } => {
            synth(shape, ty, tokenizer, seed, &out, force)
        }
        ModelCommand::Tokenizer { from, out, force } => {
            check_out(&out, force)?;
            let from = tokenizer_source(from)?;
            let r = tokenizer_only(&from, &out)?;
            writeln!(
                std::io::stdout(),
                "{}: the tokenizer of {} ({} tokens), {} bytes",
                out.display(),
                from.display(),
                r.tokenizer_tokens,
                r.bytes_written
            )?;
            Ok(())
        }
        ModelCommand::Path { precision } => {
            let resolved = resolve_model(None, precision)?;
            writeln!(std::io::stdout(), "{}", resolved.path.display())?;
            Ok(())
        }
    }
}

/// Refuse to replace a file unless `force`, and a directory always.
fn check_out(out: &std::path::Path, force: bool) -> anyhow::Result<()> {
    if out.is_dir() {
        anyhow::bail!("--out {}: is a directory: expected a file name", out.display());
    }
    if out.exists() && !force {
        anyhow::bail!(
            "--out {}: exists already: expected a new file (give --force to replace it)",
            out.display()
        );
    }
    Ok(())
}

/// A tokenizer source: the given GGUF, or the default model's original file.
fn tokenizer_source(path: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match path {
        Some(p) => Ok(p),
        None => Ok(resolve_model(None, Precision::Original)?.path),
    }
}

fn synth(
    shape: Shape,
    ty: SynthType,
    tokenizer: Option<PathBuf>,
    seed: u64,
    out: &std::path::Path,
    force: bool,
) -> anyhow::Result<()> {
    check_out(out, force)?;
    let tokenizer = tokenizer_source(tokenizer)?;
    let bar = crate::progress::spinner("synthesising", false);
    bar.set_message(format!("{} ({:?}) with random weights", shape.name(), ty));
    let t = std::time::Instant::now();
    let (spec, report) = synthesise(shape, ty, &tokenizer, seed, out)?;
    bar.finish_and_clear();
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "{}: {} shape, {:.2} B parameters, {} tensors, {} bytes ({:.2} GB), written in {:.1} s",
        out.display(),
        shape.name(),
        synth_parameters(&spec) as f64 / 1e9,
        report.tensors,
        report.bytes_written,
        report.bytes_written as f64 / 1e9,
        t.elapsed().as_secs_f64()
    )?;
    let note = if report.tokenizer_tokens > shape.vocab() {
        format!(" (the tokenizer's, larger than the shape's {})", shape.vocab())
    } else if report.padded_tokens > 0 {
        format!(
            " ({} unused tokens appended to the tokenizer's {})",
            report.padded_tokens, report.tokenizer_tokens
        )
    } else {
        String::new()
    };
    writeln!(o, "tokenizer from {}; vocabulary {}{note}", tokenizer.display(), spec.vocab)?;
    writeln!(o, "random weights: speed measurements only, the answers mean nothing")?;
    Ok(())
}

fn fetch() -> anyhow::Result<()> {
    let fetched = fetch_default()?;
    let mut err = std::io::stderr().lock();
    match fetched.downloaded {
        Some(d) => writeln!(err, "downloaded and verified in {:.1} s", d.as_secs_f64())?,
        None => writeln!(err, "already present and verified")?,
    }
    if let Some(d) = fetched.converted {
        writeln!(err, "F16 copy written in {:.1} s", d.as_secs_f64())?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "original: {}", fetched.original.display())?;
    writeln!(out, "f16:      {}", fetched.f16.display())?;
    Ok(())
}

#[derive(Debug, Serialize)]
struct Info {
    name: String,
    path: PathBuf,
    file_size: u64,
    sha256: String,
    /// Which file `sha256` is of.
    sha256_of: &'static str,
    architecture: String,
    general_name: Option<String>,
    n_embd: usize,
    n_vocab: usize,
    n_layer: usize,
    n_ctx_train: usize,
    chat_template: bool,
    embedding_scale: f32,
    token_embd_type: String,
    bos: Option<i32>,
    add_bos: bool,
    eos: Option<i32>,
}

fn info(model: Option<PathBuf>, precision: Precision, json: bool) -> anyhow::Result<()> {
    let resolved: ResolvedModel = resolve_model(model.as_deref(), precision)?;
    let loaded = Model::load(&resolved.path, &ModelParams::default())
        .with_context(|| format!("cannot load {}", resolved.path.display()))?;
    let file_size = std::fs::metadata(&resolved.path)
        .with_context(|| format!("cannot stat {}", resolved.path.display()))?
        .len();
    let info = Info {
        name: resolved.display_name.clone(),
        path: resolved.path.clone(),
        file_size,
        sha256: resolved.sha256.clone(),
        sha256_of: match resolved.default_precision {
            Some(Precision::F16) => "the original Q4_K_M GGUF, of which this file is the F16 copy",
            _ => "this file",
        },
        architecture: loaded.architecture().to_string(),
        general_name: loaded.name(),
        n_embd: loaded.n_embd(),
        n_vocab: loaded.n_vocab(),
        n_layer: loaded.n_layer(),
        n_ctx_train: loaded.n_ctx_train(),
        chat_template: loaded.chat_template().is_some(),
        embedding_scale: loaded.embedding_scale(),
        token_embd_type: loaded.token_embeddings().type_name().to_string(),
        bos: loaded.bos(),
        add_bos: loaded.add_bos(),
        eos: loaded.eos(),
    };
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&info)?)?;
        return Ok(());
    }
    let opt = |v: Option<i32>| v.map_or_else(|| "none".to_string(), |t| t.to_string());
    writeln!(out, "model:            {}", info.name)?;
    writeln!(out, "path:             {}", info.path.display())?;
    writeln!(out, "file size:        {} bytes ({:.1} MB)", info.file_size, info.file_size as f64 / 1e6)?;
    writeln!(out, "sha256:           {} (of {})", info.sha256, info.sha256_of)?;
    writeln!(out, "architecture:     {}", info.architecture)?;
    writeln!(out, "general.name:     {}", info.general_name.as_deref().unwrap_or("(none)"))?;
    writeln!(out, "n_embd:           {}", info.n_embd)?;
    writeln!(out, "n_vocab:          {}", info.n_vocab)?;
    writeln!(out, "n_layer:          {}", info.n_layer)?;
    writeln!(out, "n_ctx_train:      {}", info.n_ctx_train)?;
    writeln!(out, "chat template:    {}", if info.chat_template { "yes" } else { "no" })?;
    writeln!(out, "embedding scale:  {}", info.embedding_scale)?;
    writeln!(out, "token_embd type:  {}", info.token_embd_type)?;
    writeln!(out, "bos / add_bos:    {} / {}", opt(info.bos), info.add_bos)?;
    writeln!(out, "eos:              {}", opt(info.eos))?;
    Ok(())
}
