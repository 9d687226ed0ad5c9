//! Command-line interface: one file per subcommand, each with a clap `Args` struct and a `run`.
//!
//! Flags are parsed here and validated cheaply; expensive objects (models, surveys) are built
//! inside each command's `run`.

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

pub mod bench;
pub mod compare;
pub mod countries;
pub mod eval;
pub mod export;
pub mod generate;
pub mod model_cmd;
pub mod report;
pub mod run;
pub mod score;
pub mod selfgen;
pub mod shared_flags;
pub mod sweep;
pub mod tune;

/// Evolve soft prompts that align a frozen LLM with a country's survey answers.
#[derive(Debug, Parser)]
#[command(name = "deopt", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Show llama.cpp's own log messages on stderr (otherwise an error of llama.cpp is quoted in
    /// deopt's one-line error)
    #[arg(long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List countries and which targets they have (Hofstede dimensions, WVS-7 answers)
    Countries(countries::CountriesArgs),
    /// Score the model's survey answers with a soft prompt or a baseline
    Eval(eval::EvalArgs),
    /// Score a file of survey answers against a country's targets
    Score(score::ScoreArgs),
    /// Evolve a soft prompt for a country (differential evolution)
    Run(run::RunArgs),
    /// Tune a soft prompt for a country with gradients (Adam; same prompts, model and scorer)
    Tune(tune::TuneArgs),
    /// Write report.md and charts (PNG, SVG) for a run or sweep directory
    Report(report::ReportArgs),
    /// Run a grid of mutation x recombination settings, repeated; merge shard directories
    Sweep(sweep::SweepArgs),
    /// Compare every method (text prompts, DE, SHADE, BBT, gradient tuning, self-generated
    /// data) on the same budget: compare.csv, table.md with p-values and findings, charts
    Compare(compare::CompareArgs),
    /// Export a run's best soft prompt (deopt safetensors, PEFT adapter, or .npy)
    Export(export::ExportArgs),
    /// Generate an open-ended answer with a soft prompt (--compare: also without)
    Generate(generate::GenerateArgs),
    /// Self-generated data (CultureSPA): new survey questions, answered without and with a
    /// culture prompt; the shifted pairs train `run`/`tune --objective selfgen`
    Selfgen(selfgen::SelfgenArgs),
    /// Download, verify and inspect the model (default: Gemma 3 270M)
    Model(model_cmd::ModelCmdArgs),
    /// Benchmarks
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The scoring engine vs naive scoring and raw llama.cpp speed (VSM13 workload)
    Engine(bench::BenchEngineArgs),
    /// Run an optimizer on standard test functions and print the final error
    Optimizer(bench::BenchOptimizerArgs),
    /// One prompt-tuning step (candle, forward + backward) next to the engine's scoring
    Tune(bench::BenchTuneArgs),
}

/// Parse the command line, run it, and turn an error into one line on stderr.
pub fn main() -> ExitCode {
    let matches = match command().try_get_matches() {
        Ok(m) => m,
        Err(e) => return clap_error(&e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => return clap_error(&e),
    };
    let given = explicit_flags(&matches);
    match run(cli, &given) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // A closed pipe (`deopt ... | head`) is not a failure.
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            let quoted = crate::llama::last_error().map(|m| format!(" (llama.cpp: {m})")).unwrap_or_default();
            eprintln!("deopt: {}", one_line(&format!("{err:#}{quoted}")));
            ExitCode::from(1)
        }
    }
}

/// The command line's grammar: every flag that takes a value accepts a negative number
/// (`--seed -1` is then refused by the flag's own check, naming it, instead of clap reading
/// `-1` as an unknown flag).
pub fn command() -> clap::Command {
    fn negatives(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| if a.get_action().takes_values() { a.allow_negative_numbers(true) } else { a })
            .mut_subcommands(negatives)
    }
    negatives(Cli::command())
}

/// A clap error as deopt's one line (help and version print as usual).
fn clap_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    {
        e.exit();
    }
    // clap's message, its possible values and tips, without the usage block.
    let text = e.render().to_string();
    let msg: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let msg = msg.join(" ");
    let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
    eprintln!("deopt: {} (see --help)", one_line(msg));
    ExitCode::from(2)
}

/// An error message as one line of bounded length: line breaks become "; ", and anything
/// past 600 characters is cut (a message never echoes a huge input back whole).
pub fn one_line(msg: &str) -> String {
    const MAX: usize = 600;
    let joined = msg.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    if joined.chars().count() <= MAX {
        return joined;
    }
    let cut: String = joined.chars().take(MAX).collect();
    format!("{cut}... (message cut at {MAX} characters)")
}

/// The clap ids of the flags given on the command line for the innermost subcommand (a
/// resumed run refuses all but its stop conditions).
fn explicit_flags(m: &ArgMatches) -> Vec<String> {
    let mut m = m;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    m.ids()
        .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
        .collect()
}

/// Run a parsed command line; `given` as [`explicit_flags`].
///
/// # Errors
/// The command's error.
pub fn run(cli: Cli, given: &[String]) -> anyhow::Result<()> {
    if cli.verbose {
        crate::llama::set_log_verbose(true);
    }
    match cli.command {
        Command::Countries(args) => countries::run(args),
        Command::Score(args) => score::run(args),
        Command::Eval(args) => eval::run(args, given),
        Command::Run(args) => run::run(args, given),
        Command::Tune(args) => tune::run(args, given),
        Command::Report(args) => report::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Export(args) => export::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Selfgen(args) => selfgen::run(args),
        Command::Model(args) => model_cmd::run(args),
        Command::Bench(BenchCommand::Optimizer(args)) => bench::optimizer(args),
        Command::Bench(BenchCommand::Engine(args)) => bench::engine(args),
        Command::Bench(BenchCommand::Tune(args)) => bench::tune(args),
    }
}
