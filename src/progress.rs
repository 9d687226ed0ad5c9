//! Progress on stderr, the one place that decides how it looks.
//!
//! On a terminal: indicatif spinners and bars. Without one (a log file, CI, a batch job) bars
//! are hidden, because their redraws would fill the log; long loops print one plain line per
//! step instead ([`StepLog`]).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether stderr is a terminal (bars are drawn only then).
pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// A spinner with a message, ticking in the background; hidden when `quiet` or when stderr is
/// not a terminal.
pub fn spinner(message: &str, quiet: bool) -> ProgressBar {
    if quiet || !stderr_is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("valid template"));
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A bar of `len` steps drawn with `template` (indicatif's syntax; `=> ` as progress chars);
/// hidden when stderr is not a terminal.
pub fn bar(len: u64, template: &str) -> ProgressBar {
    if !stderr_is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A byte-count bar (downloads, hashing) with a message; hidden without a terminal.
pub fn bytes_bar(len: u64, message: &str) -> ProgressBar {
    let b = bar(len, "{spinner} {msg:40} [{bar:30}] {bytes}/{total_bytes}");
    b.set_message(message.to_string());
    b
}

/// One line per step on stderr when there is no terminal to draw a bar on, and the bar when
/// there is: what a run or a sweep uses to show that it is alive.
pub struct StepLog {
    bar: ProgressBar,
    lines: bool,
    started: Instant,
}

impl StepLog {
    /// `len` steps; `unit` names them in the bar ("gen", "run").
    pub fn new(len: u64, unit: &str) -> Self {
        let lines = !stderr_is_terminal();
        let bar = if lines {
            ProgressBar::hidden()
        } else {
            bar(len, &format!("{unit} {{pos}}/{{len}} {{wide_bar}} {{msg}} eta {{eta}}"))
        };
        StepLog { bar, lines, started: Instant::now() }
    }

    /// Step `pos` is done; `line` is what a log gets (a bar shows `message` next to it).
    pub fn step(&self, pos: u64, message: &str, line: impl FnOnce() -> String) {
        if self.lines {
            eprintln!("{}", line());
        } else {
            self.bar.set_position(pos);
            self.bar.set_message(message.to_string());
        }
    }

    /// Seconds since the log was made.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Print `text` without tearing the bar.
    pub fn println(&self, text: &str) {
        if self.lines {
            eprintln!("{text}");
        } else {
            self.bar.suspend(|| eprintln!("{text}"));
        }
    }

    /// Remove the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
