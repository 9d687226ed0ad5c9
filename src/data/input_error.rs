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

/// A value as it may appear in a one-line message: control characters escaped, and at most
/// 60 characters of it (a 50 MB field is not echoed back whole).
pub fn clip(value: &str) -> String {
    const MAX: usize = 60;
    let mut out = String::new();
    for (n, c) in value.chars().enumerate() {
        if n == MAX {
            out.push_str(&format!("... ({} bytes in all)", value.len()));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn clip_bounds_and_escapes() {
        assert_eq!(super::clip("a\nb"), "a\\nb");
        let long = "x".repeat(50_000_000);
        let c = super::clip(&long);
        assert!(c.len() < 100 && c.ends_with("(50000000 bytes in all)"), "{c}");
    }
}
