//! Reading answer files: CSV `item,answer` and CultureSPA's result JSON.

use std::collections::HashSet;
use std::path::Path;

use crate::data::input_error::{clip, csv_error_line, csv_error_message, csv_line, InputError};
use crate::data::survey::Survey;
use crate::score::metrics::parse_culturespa_answer;

/// Answers read from a file, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct AnswerFile {
    /// (item id as in the survey, answer value).
    pub answers: Vec<(String, f64)>,
    /// Entries whose text had no usable number (CultureSPA JSON only); they are dropped.
    pub unparsable: usize,
}

/// The file's text, without a UTF-8 byte-order mark.
fn read(path: &Path) -> Result<String, InputError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| InputError::file(path.display().to_string(), format!("cannot read: {e}")))?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// Read a CSV of `item,answer` rows (a header row `item,answer` is optional). Every answer must
/// be a number within the item's code range; every item must be in the survey, once.
pub fn read_csv(path: &Path, survey: &Survey) -> Result<AnswerFile, InputError> {
    let shown = path.display().to_string();
    parse_csv(&shown, &read(path)?, survey)
}

/// [`read_csv`] on text; `source` names it in errors.
pub fn parse_csv(source: &str, text: &str, survey: &Survey) -> Result<AnswerFile, InputError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut seen = HashSet::new();
    let mut answers = Vec::new();
    let mut first = true;
    for record in reader.records() {
        let r =
            record.map_err(|e| InputError::at(source, csv_error_line(text, &e), csv_error_message(&e)))?;
        let line = csv_line(text, &r);
        if r.len() == 1 && r.get(0) == Some("") {
            continue; // blank line
        }
        let is_first = std::mem::take(&mut first);
        if r.len() != 2 {
            return Err(InputError::at(
                source,
                line,
                format!("expected 2 fields 'item,answer', found {}", r.len()),
            ));
        }
        let (id, value) = (&r[0], &r[1]);
        if is_first && value.eq_ignore_ascii_case("answer") {
            continue; // header
        }
        let id_shown = clip(id);
        let item = survey.item(id).ok_or_else(|| {
            InputError::at(
                source,
                line,
                format!(
                    "item '{id_shown}': expected an item of survey {} ({} items)",
                    survey.name,
                    survey.items.len()
                ),
            )
        })?;
        let v: f64 = value.parse().ok().filter(|v: &f64| v.is_finite()).ok_or_else(|| {
            InputError::at(
                source,
                line,
                format!("item {id_shown}: answer '{}': expected a number", clip(value)),
            )
        })?;
        if !item.in_range(v) {
            return Err(InputError::at(
                source,
                line,
                format!(
                    "item {id_shown}: answer {}: expected {}..{}",
                    clip(value),
                    item.first_code,
                    item.last_code()
                ),
            ));
        }
        if !seen.insert(item.id.clone()) {
            return Err(InputError::at(
                source,
                line,
                format!("item {id_shown}: answered twice: expected one answer per item"),
            ));
        }
        answers.push((item.id.clone(), v));
    }
    if answers.is_empty() {
        return Err(InputError::file(source, "no answers: expected CSV rows 'item,answer'"));
    }
    Ok(AnswerFile { answers, unparsable: 0 })
}

/// Read CultureSPA's result JSON: `[{"Q_id": .., "answer": "<model text>", ..}, ..]`. Answers
/// are parsed as CultureSPA does (first integer 0-10); unparsable ones are dropped and counted.
pub fn read_culturespa_json(path: &Path, survey: &Survey) -> Result<AnswerFile, InputError> {
    let shown = path.display().to_string();
    parse_culturespa_json(&shown, &read(path)?, survey)
}

/// [`read_culturespa_json`] on text.
pub fn parse_culturespa_json(source: &str, text: &str, survey: &Survey) -> Result<AnswerFile, InputError> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| InputError::at(source, e.line(), format!("malformed JSON: {e}")))?;
    let entries = value.as_array().ok_or_else(|| {
        InputError::file(
            source,
            format!(
                "JSON {}: expected an array of {{\"Q_id\", \"answer\"}} objects",
                clip(&value.to_string())
            ),
        )
    })?;
    let mut seen = HashSet::new();
    let mut answers = Vec::new();
    let mut unparsable = 0;
    for (i, e) in entries.iter().enumerate() {
        let at = |msg: String| InputError::file(source, format!("entry {}: {msg}", i + 1));
        let id = e
            .get("Q_id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| at("missing string field \"Q_id\"".into()))?;
        let id_shown = clip(id);
        let item = survey
            .item(id)
            .ok_or_else(|| at(format!("item '{id_shown}': expected an item of survey {}", survey.name)))?;
        if !seen.insert(item.id.clone()) {
            return Err(at(format!("item {id_shown}: answered twice: expected one answer per item")));
        }
        let answer = match e.get("answer") {
            Some(serde_json::Value::String(s)) => parse_culturespa_answer(s),
            // A number counts when it is a whole number 0-10, written 3 or 3.0 alike.
            Some(serde_json::Value::Number(n)) => {
                n.as_f64().filter(|v| v.fract() == 0.0 && (0.0..=10.0).contains(v)).map(|v| v as i32)
            }
            _ => return Err(at("missing field \"answer\"".into())),
        };
        match answer {
            Some(v) => answers.push((item.id.clone(), f64::from(v))),
            None => unparsable += 1,
        }
    }
    if entries.is_empty() {
        return Err(InputError::file(source, "empty JSON array"));
    }
    Ok(AnswerFile { answers, unparsable })
}

/// Read answers for a WVS scoring: JSON if the file starts with `[`, else CSV.
pub fn read_responses(path: &Path, survey: &Survey) -> Result<AnswerFile, InputError> {
    let text = read(path)?;
    let shown = path.display().to_string();
    // JSON: an array, object or literal (refused with a JSON message, not as bad CSV).
    let t = text.trim();
    if t.starts_with(['[', '{', '"']) || ["null", "true", "false"].contains(&t) {
        parse_culturespa_json(&shown, &text, survey)
    } else {
        parse_csv(&shown, &text, survey)
    }
}
