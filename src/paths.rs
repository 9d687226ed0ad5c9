//! Where deopt keeps its cache: `$DEOPT_HOME` if set, else `$XDG_CACHE_HOME/deopt`, else
//! `~/.cache/deopt`. Downloaded models live under `<cache>/models/`, cached file hashes under
//! `<cache>/hashes/`.

use std::path::PathBuf;

/// The cache directory could not be determined.
#[derive(Debug, thiserror::Error)]
#[error("cannot locate a cache directory: set DEOPT_HOME (neither XDG_CACHE_HOME nor HOME is set)")]
pub struct NoCacheDir;

/// The cache root (not created).
///
/// Empty variables count as unset, and a relative `XDG_CACHE_HOME` is ignored, as the XDG
/// specification asks.
///
/// # Errors
/// [`NoCacheDir`] when none of `DEOPT_HOME`, `XDG_CACHE_HOME`, `HOME` gives a directory.
pub fn cache_dir() -> Result<PathBuf, NoCacheDir> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(home) = var("DEOPT_HOME") {
        return Ok(home);
    }
    if let Some(xdg) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return Ok(xdg.join("deopt"));
    }
    var("HOME").map(|h| h.join(".cache").join("deopt")).ok_or(NoCacheDir)
}

/// `<cache>/models`: downloaded and converted models (not created).
///
/// # Errors
/// As [`cache_dir`].
pub fn models_dir() -> Result<PathBuf, NoCacheDir> {
    Ok(cache_dir()?.join("models"))
}

/// `<cache>/hashes`: sidecar records of file hashes keyed by size and mtime (not created).
///
/// # Errors
/// As [`cache_dir`].
pub fn hashes_dir() -> Result<PathBuf, NoCacheDir> {
    Ok(cache_dir()?.join("hashes"))
}
