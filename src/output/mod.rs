//! What leaves deopt: report.md with charts ([`report_files`]) and soft prompts exported for
//! other tools ([`prompt_export`]).

pub mod prompt_export;
pub mod report_files;
pub mod run_summary;
pub mod run_view;
