//! Thin binary: parse flags, run the command, print errors as one line.
use std::process::ExitCode;

fn main() -> ExitCode {
    deopt::cli::main()
}
