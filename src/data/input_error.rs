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

/// Line number (1-based) of a csv record in `text`, for messages. Counted from the record's
/// byte offset, so CRLF, lone CR, blank lines and quoted line breaks all count as they look in
/// an editor (the csv crate's own line counter does not).
pub fn csv_line(text: &str, record: &csv::StringRecord) -> usize {
    record.position().map_or(0, |p| record_line(text, p))
}

/// Line number (1-based) of the csv error `e` in `text` (0 when it has no position).
pub fn csv_error_line(text: &str, e: &csv::Error) -> usize {
    e.position().map_or(0, |p| record_line(text, p))
}

/// The csv crate records a record's start where the line ending (and any blank lines) before
/// it begins; a record never starts with a line break, so skip them.
fn record_line(text: &str, p: &csv::Position) -> usize {
    let start = p.byte() as usize;
    let skip = text
        .as_bytes()
        .get(start..)
        .map_or(0, |b| b.iter().take_while(|&&c| c == b'\r' || c == b'\n').count());
    line_at(text, start + skip)
}

/// A csv error's message without the csv crate's own position (its line counter is off for
/// CRLF and blank lines; [`csv_error_line`] gives the right one).
pub fn csv_error_message(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("malformed CSV: {len} fields: expected {expected_len}, as in the header")
        }
        csv::ErrorKind::Utf8 { .. } => "malformed CSV: not UTF-8 text".into(),
        _ => format!("malformed CSV: {}", clip(&e.to_string())),
    }
}

/// Line number (1-based) of byte `offset` in `text`: line breaks are LF, CRLF and lone CR.
pub fn line_at(text: &str, offset: usize) -> usize {
    let b = &text.as_bytes()[..offset.min(text.len())];
    let lf = b.iter().filter(|&&c| c == b'\n').count();
    let lone_cr = b.windows(2).filter(|w| w[0] == b'\r' && w[1] != b'\n').count()
        + usize::from(b.last() == Some(&b'\r') && text.as_bytes().get(b.len()) != Some(&b'\n'));
    1 + lf + lone_cr
}

/// A value as it may appear in a one-line message: control characters escaped, and at most
/// 80 characters of it (a 50 MB field is not echoed back whole).
pub fn clip(value: &str) -> String {
    const MAX: usize = 80;
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
    fn lines_count_every_ending() {
        for text in ["a\nb\n\nc\n", "a\r\nb\r\n\r\nc\r\n", "a\rb\r\rc\r"] {
            let at = text.find('c').unwrap();
            assert_eq!(super::line_at(text, at), 4, "{text:?}");
        }
        for text in ["id,x\r\n1,a\r\n\r\n2,\"q\r\nr\"\r\n3,z\r\n", "id,x\n1,a\n\n2,\"q\nr\"\n3,z\n"] {
            let mut rd = csv::ReaderBuilder::new().from_reader(text.as_bytes());
            let lines: Vec<usize> = rd.records().map(|r| super::csv_line(text, &r.unwrap())).collect();
            assert_eq!(lines, [2, 4, 6], "{text:?}");
        }
    }

    #[test]
    fn clip_bounds_and_escapes() {
        assert_eq!(super::clip("a\nb"), "a\\nb");
        let long = "x".repeat(50_000_000);
        let c = super::clip(&long);
        assert!(c.len() < 120 && c.ends_with("(50000000 bytes in all)"), "{c}");
    }
}
