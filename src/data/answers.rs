//! Reading answer files: CSV `item,answer` and CultureSPA's result JSON.

use std::collections::HashSet;
use std::path::Path;

use crate::data::input_error::InputError;
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

fn read(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path)
        .map_err(|e| InputError::file(path.display().to_string(), format!("cannot read: {e}")))
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
    for (n, record) in reader.records().enumerate() {
        let r = record.map_err(|e| {
            InputError::at(
                source,
                e.position().map_or(0, |p| p.line() as usize),
                format!("malformed CSV: {e}"),
            )
        })?;
        let line = r.position().map_or(n + 1, |p| p.line() as usize);
        if r.len() == 1 && r.get(0) == Some("") {
            continue; // blank line
        }
        if r.len() != 2 {
            return Err(InputError::at(
                source,
                line,
                format!("expected 2 fields 'item,answer', found {}", r.len()),
            ));
        }
        let (id, value) = (&r[0], &r[1]);
        if n == 0 && value.eq_ignore_ascii_case("answer") {
            continue; // header
        }
        let item = survey.item(id).ok_or_else(|| {
            InputError::at(
                source,
                line,
                format!("item '{id}' is not in survey {} ({} items)", survey.name, survey.items.len()),
            )
        })?;
        let v: f64 = value.parse().ok().filter(|v: &f64| v.is_finite()).ok_or_else(|| {
            InputError::at(source, line, format!("item {id}: answer '{value}' is not a number"))
        })?;
        if !item.in_range(v) {
            return Err(InputError::at(
                source,
                line,
                format!("item {id}: answer {value} is outside {}..{}", item.first_code, item.last_code()),
            ));
        }
        if !seen.insert(item.id.clone()) {
            return Err(InputError::at(source, line, format!("item {id} is answered twice")));
        }
        answers.push((item.id.clone(), v));
    }
    if answers.is_empty() {
        return Err(InputError::file(source, "no answers (expected CSV rows 'item,answer')"));
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
    let entries = value
        .as_array()
        .ok_or_else(|| InputError::file(source, "expected a JSON array of {\"Q_id\", \"answer\"} objects"))?;
    let mut seen = HashSet::new();
    let mut answers = Vec::new();
    let mut unparsable = 0;
    for (i, e) in entries.iter().enumerate() {
        let at = |msg: String| InputError::file(source, format!("entry {}: {msg}", i + 1));
        let id = e
            .get("Q_id")
            .and_then(|v| v.as_str())
            .ok_or_else(|| at("missing string field \"Q_id\"".into()))?;
        let item =
            survey.item(id).ok_or_else(|| at(format!("item '{id}' is not in survey {}", survey.name)))?;
        if !seen.insert(item.id.clone()) {
            return Err(at(format!("item {id} is answered twice")));
        }
        let answer = match e.get("answer") {
            Some(serde_json::Value::String(s)) => parse_culturespa_answer(s),
            Some(serde_json::Value::Number(n)) => {
                n.as_i64().and_then(|v| i32::try_from(v).ok()).filter(|v| (0..=10).contains(v))
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
    if text.trim_start().starts_with('[') {
        parse_culturespa_json(&shown, &text, survey)
    } else {
        parse_csv(&shown, &text, survey)
    }
}
