//! Where deopt keeps its cache: `$DEOPT_HOME` if set, else `$XDG_CACHE_HOME/deopt`, else
//! `~/.cache/deopt`. Downloaded models live under `<cache>/models/`, cached file hashes under
//! `<cache>/hashes/`.

use std::ffi::OsString;
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
    let var = |name: &str| std::env::var_os(name);
    cache_dir_from(var("DEOPT_HOME"), var("XDG_CACHE_HOME"), var("HOME")).ok_or(NoCacheDir)
}

/// The rule of [`cache_dir`] applied to given values of `DEOPT_HOME`, `XDG_CACHE_HOME` and
/// `HOME` (`None` = unset).
pub fn cache_dir_from(
    deopt_home: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(deopt_home) {
        return Some(dir);
    }
    if let Some(xdg) = set(xdg_cache_home).filter(|p| p.is_absolute()) {
        return Some(xdg.join("deopt"));
    }
    set(home).map(|h| h.join(".cache").join("deopt"))
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
