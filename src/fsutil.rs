//! File helpers shared by every writer of results.

use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, Result};

/// Write a file atomically: write a temporary file beside it, flush it to disk, then rename it
/// over the target, so a crash never leaves a half-written result or checkpoint.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
    let name = path.file_name().map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("{}: cannot write", path.display())).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
