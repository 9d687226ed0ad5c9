//! The error for bad input data: it names where (file, line, value) and what was expected.

use std::fmt;

/// Bad input, located. Displays as `FILE:LINE: message` (or `FILE: message` without a line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// File (or other source) the bad input came from.
    pub source: String,
    /// 1-based line number, when known.
    pub line: Option<usize>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl InputError {
    /// An error at a given line of a file.
    pub fn at(source: impl Into<String>, line: usize, message: impl Into<String>) -> Self {
        Self { source: source.into(), line: Some(line), message: message.into() }
    }

    /// An error about a whole file (or a value from a flag).
    pub fn file(source: impl Into<String>, message: impl Into<String>) -> Self {
        Self { source: source.into(), line: None, message: message.into() }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.source, line, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

impl std::error::Error for InputError {}

/// Line number (1-based) of a csv record, for messages.
pub fn csv_line(record: &csv::StringRecord) -> usize {
    record.position().map_or(0, |p| p.line() as usize)
}
