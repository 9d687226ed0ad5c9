//! Data files shipped in surveys/ and targets/, embedded in the binary so that an installed
//! `deopt` works without a checkout. Each file keeps its repository path as its display name,
//! so error messages point at the file a user can open.

/// One embedded data file.
pub struct DataFile {
    /// Path relative to the repository root, e.g. `surveys/vsm13.csv`.
    pub path: &'static str,
    /// File contents.
    pub text: &'static str,
}

macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        &[$(DataFile { path: $path, text: include_str!(concat!("../../", $path)) }),*]
    };
}

/// Every embedded data file.
pub static FILES: &[DataFile] = embed!(
    "surveys/vsm13.csv",
    "surveys/wvs7.csv",
    "targets/countries.csv",
    "targets/hofstede_6d.csv",
    "targets/culturespa/wvs7_proportions.csv",
    "targets/culturespa/country_similarity.json",
    "targets/culturespa/self_alignment_examples.json",
    "targets/culturellm/Argentina.csv",
    "targets/culturellm/Bangladesh.csv",
    "targets/culturellm/Brazil.csv",
    "targets/culturellm/China.csv",
    "targets/culturellm/Germany.csv",
    "targets/culturellm/Greece.csv",
    "targets/culturellm/Iraq.csv",
    "targets/culturellm/Jordan.csv",
    "targets/culturellm/Mexico.csv",
    "targets/culturellm/South_Korea.csv",
    "targets/culturellm/Turkey.csv",
    "targets/culturellm/United_States.csv",
);

/// The embedded file at `path`.
///
/// # Panics
/// If `path` is not embedded: paths are compile-time constants of this crate, so that is a bug.
pub fn file(path: &str) -> &'static DataFile {
    FILES.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("data file {path} is not embedded"))
}

/// Embedded files under a directory prefix (e.g. `targets/culturellm/`), in path order.
pub fn files_under(prefix: &str) -> impl Iterator<Item = &'static DataFile> + '_ {
    FILES.iter().filter(move |f| f.path.starts_with(prefix))
}
