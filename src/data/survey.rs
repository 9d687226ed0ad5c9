//! Survey instruments: items, their answer options and how they are scored.
//!
//! An instrument is a CSV file with a header row and these columns (README.md, "Survey files"):
//! `id`, `text`, `options` (answer labels separated by ` | `), and optionally `first_code` (code
//! of the first option, default 1), `dimension` and `coefficient` (the item's term in a
//! Hofstede index formula), `topic`, `ordinal` (1 if the codes are an ordered scale, default 1).
//! The built-in instruments live in surveys/ and are embedded in the binary.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use crate::data::dimension::Dimension;
use crate::data::embedded;
use crate::data::input_error::{clip, csv_error_line, csv_error_message, csv_line, InputError};

/// Most answer options an item may have.
pub const MAX_OPTIONS: usize = 100;
/// Codes an item's first option may have (so every code and sum of codes stays in range).
pub const CODE_RANGE: std::ops::RangeInclusive<i32> = -1_000_000..=1_000_000;
/// Largest coefficient (absolute) of an item in an index formula; Hofstede's are 25 or less.
pub const MAX_COEFFICIENT: f64 = 1e6;

/// The instruments shipped with deopt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SurveyKind {
    /// Hofstede's Values Survey Module 2013: 24 items, scored as six dimension indices.
    Vsm13,
    /// World Values Survey wave 7: 259 items, scored by cultural alignment (CAS).
    Wvs,
}

impl SurveyKind {
    /// Path of the built-in instrument file.
    pub fn builtin_path(self) -> &'static str {
        match self {
            SurveyKind::Vsm13 => "surveys/vsm13.csv",
            SurveyKind::Wvs => "surveys/wvs7.csv",
        }
    }
}

/// One survey item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Identifier as written in the file (e.g. `7`, `Q131`).
    pub id: String,
    /// The question as shown to a respondent (may contain line breaks).
    pub text: String,
    /// Answer labels, in code order.
    pub options: Vec<String>,
    /// Code of the first option (0 or 1); option `i` has code `first_code + i`.
    pub first_code: i32,
    /// Hofstede dimension and signed coefficient of this item in the index formula, if any.
    pub term: Option<(Dimension, f64)>,
    /// Topic or block.
    pub topic: String,
    /// Whether codes form an ordered scale (distribution metrics treat others as nominal).
    pub ordinal: bool,
}

impl Item {
    /// Number of answer options.
    pub fn n_options(&self) -> usize {
        self.options.len()
    }

    /// Code of the last option.
    pub fn last_code(&self) -> i32 {
        self.first_code + self.options.len() as i32 - 1
    }

    /// Code of option `index` (0-based).
    pub fn code(&self, index: usize) -> i32 {
        self.first_code + index as i32
    }

    /// Whether `answer` lies within the code range (fractional answers allowed).
    pub fn in_range(&self, answer: f64) -> bool {
        answer >= f64::from(self.first_code) && answer <= f64::from(self.last_code())
    }
}

/// A survey instrument: an ordered list of items.
#[derive(Debug, Clone)]
pub struct Survey {
    /// Short name (file stem), e.g. `vsm13`.
    pub name: String,
    /// Where it was loaded from, for messages.
    pub source: String,
    /// Items in file order.
    pub items: Vec<Item>,
    index: HashMap<String, usize>,
}

impl Survey {
    /// A built-in instrument.
    pub fn builtin(kind: SurveyKind) -> Result<Survey, InputError> {
        let file = embedded::file(kind.builtin_path());
        Survey::parse(file.path, file.text)
    }

    /// Load an instrument file (same format as the built-in ones).
    pub fn from_file(path: &Path) -> Result<Survey, InputError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::file(&shown, format!("cannot read survey file: {e}")))?;
        Survey::parse(&shown, &text)
    }

    /// Parse instrument CSV text; `source` names it in errors.
    pub fn parse(source: &str, text: &str) -> Result<Survey, InputError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(text.as_bytes());
        let headers = reader
            .headers()
            .map_err(|e| InputError::at(source, 1, format!("unreadable header: {e}")))?
            .clone();
        let col = |name: &str| headers.iter().position(|h| h.trim() == name);
        let need = |name: &str| {
            col(name).ok_or_else(|| {
                InputError::at(
                    source,
                    1,
                    format!("missing column '{name}' (a survey file needs id,text,options)"),
                )
            })
        };
        let (c_id, c_text, c_opts) = (need("id")?, need("text")?, need("options")?);
        let (c_first, c_dim, c_coef, c_topic, c_ord) =
            (col("first_code"), col("dimension"), col("coefficient"), col("topic"), col("ordinal"));

        let mut items = Vec::new();
        let mut index = HashMap::new();
        for record in reader.records() {
            let record = record
                .map_err(|e| InputError::at(source, csv_error_line(text, &e), csv_error_message(&e)))?;
            let line = csv_line(text, &record);
            let get = |c: Option<usize>| c.and_then(|c| record.get(c)).map(str::trim).unwrap_or("");
            let id = get(Some(c_id)).to_string();
            if id.is_empty() {
                return Err(InputError::at(source, line, "empty item id"));
            }
            let id_shown = clip(&id);
            let options: Vec<String> = get(Some(c_opts)).split('|').map(|o| o.trim().to_string()).collect();
            if options.len() < 2 || options.len() > MAX_OPTIONS || options.iter().any(String::is_empty) {
                return Err(InputError::at(
                    source,
                    line,
                    format!(
                        "item {id_shown}: options: {} labels: expected 2 to {MAX_OPTIONS} non-empty labels separated by ' | '",
                        options.iter().filter(|o| !o.is_empty()).count()
                    ),
                ));
            }
            let first_code = match get(c_first) {
                "" => 1,
                s => s.parse::<i32>().ok().filter(|c| CODE_RANGE.contains(c)).ok_or_else(|| {
                    InputError::at(
                        source,
                        line,
                        format!(
                            "item {id_shown}: first_code '{}': expected an integer in {}..={}",
                            clip(s),
                            CODE_RANGE.start(),
                            CODE_RANGE.end()
                        ),
                    )
                })?,
            };
            let term = match (get(c_dim), get(c_coef)) {
                ("", "") => None,
                (d, c) if !d.is_empty() && !c.is_empty() => {
                    let dim = Dimension::from_str(d).map_err(|e| {
                        InputError::at(source, line, format!("item {id_shown}: {}", clip(&e)))
                    })?;
                    let coef = c.parse::<f64>().ok().filter(|v| v.abs() <= MAX_COEFFICIENT).ok_or_else(|| {
                        InputError::at(
                            source,
                            line,
                            format!("item {id_shown}: coefficient '{}': expected a number within +-{MAX_COEFFICIENT}", clip(c)),
                        )
                    })?;
                    Some((dim, coef))
                }
                _ => {
                    return Err(InputError::at(
                        source,
                        line,
                        format!("item {id_shown}: dimension and coefficient must be given together"),
                    ))
                }
            };
            let ordinal = match get(c_ord) {
                "" | "1" => true,
                "0" => false,
                s => {
                    return Err(InputError::at(
                        source,
                        line,
                        format!("item {id_shown}: ordinal '{}': expected 0 or 1", clip(s)),
                    ))
                }
            };
            let key = id.to_ascii_uppercase();
            if index.insert(key, items.len()).is_some() {
                return Err(InputError::at(
                    source,
                    line,
                    format!("item id '{id_shown}': expected each id once"),
                ));
            }
            items.push(Item {
                id,
                text: get(Some(c_text)).to_string(),
                options,
                first_code,
                term,
                topic: get(c_topic).to_string(),
                ordinal,
            });
        }
        if items.is_empty() {
            return Err(InputError::file(source, "survey file has no items"));
        }
        let name = Path::new(source)
            .file_stem()
            .map_or_else(|| source.to_string(), |s| s.to_string_lossy().into_owned());
        Ok(Survey { name, source: source.to_string(), items, index })
    }

    /// The item with this id (case-insensitive).
    pub fn item(&self, id: &str) -> Option<&Item> {
        self.index.get(&id.trim().to_ascii_uppercase()).map(|&i| &self.items[i])
    }

    /// Position of the item with this id.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.get(&id.trim().to_ascii_uppercase()).copied()
    }

    /// Whether every dimension has at least one scored item (the survey can give Hofstede indices).
    pub fn scores_dimensions(&self) -> bool {
        Dimension::ALL.iter().all(|d| self.items.iter().any(|it| it.term.is_some_and(|(dim, _)| dim == *d)))
    }
}
