//! `deopt report`: report.md and charts (PNG and SVG) for a run or a sweep directory.
//!
//! For a run, the model answers the whole survey twice under the run's own spec (see
//! [`crate::output::run_view`]); a sweep report needs no model.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::output::report_files;
use crate::output::run_view::engine_view;
use crate::run::directory::{self, RunConfig};
use crate::run::grid;

/// Flags of `deopt report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Run directory (from `deopt run`) or sweep directory (from `deopt sweep`)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Do not load the model: no per-item answers and no baseline dimensions in a run report
    #[arg(long)]
    pub no_model: bool,
    /// Another GGUF file than the run's (its answers are compared with the run's prompt)
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// CPU threads (default: the run's setting)
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Write a run's report with the model's answers; returns the path of report.md.
///
/// # Errors
/// As [`engine_view`] and [`report_files::write_run_report`].
pub fn report_run(dir: &Path, model: Option<&crate::run::spec::ModelSpec>) -> Result<PathBuf> {
    let view = engine_view(dir, model)?;
    report_files::write_run_report(dir, Some(&view))?;
    Ok(dir.join(report_files::REPORT))
}

/// Run `deopt report`.
///
/// # Errors
/// `DIR` is neither a run nor a sweep, or writing the report fails.
pub fn run(args: ReportArgs) -> Result<()> {
    let dir = &args.dir;
    let files = if grid::is_sweep(dir) {
        report_files::write_sweep_report(dir)?
    } else if directory::is_run(dir) {
        let view = if args.no_model {
            None
        } else {
            let mut model = RunConfig::load(dir)?.spec.model;
            if let Some(p) = &args.model {
                model.path = Some(p.clone());
            }
            if args.threads.is_some() {
                model.threads = args.threads;
            }
            Some(engine_view(dir, Some(&model))?)
        };
        report_files::write_run_report(dir, view.as_ref())?
    } else {
        bail!("{}: neither a deopt run nor a sweep directory", dir.display());
    };
    println!("{}", dir.join(report_files::REPORT).display());
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}
