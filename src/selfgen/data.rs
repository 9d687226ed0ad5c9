//! Reading a data directory for training: the questions kept for a country and their
//! culture-aware answers, as a survey and a [`Target::Selfgen`].

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};

use super::{load_settings, read_jsonl, AnswerRecord, Question, ANSWERS, QUESTIONS};
use crate::data::country::Country;
use crate::data::survey::Survey;
use crate::score::fitness::Target;

/// The kept questions for `country` as a survey (ids `G0001`, ...) and the target: one-hot at
/// the culture-aware answer.
///
/// # Errors
/// Not a data directory, no answers for the country, nothing kept.
pub fn load_task(dir: &Path, country: &Country) -> Result<(Survey, Target)> {
    let settings = load_settings(dir)?;
    let shown = dir.display();
    for f in [QUESTIONS, ANSWERS] {
        if !dir.join(f).is_file() {
            bail!("{shown}: no {f}: expected a finished deopt selfgen directory (continue it with deopt selfgen --resume {shown})");
        }
    }
    let questions: Vec<Question> = read_jsonl(&dir.join(QUESTIONS))?;
    let answers: Vec<AnswerRecord> = read_jsonl(&dir.join(ANSWERS))?;
    let mine: Vec<&AnswerRecord> = answers.iter().filter(|a| a.country == country.iso3).collect();
    if mine.is_empty() {
        let mut have: Vec<&str> = answers.iter().map(|a| a.country.as_str()).collect();
        have.dedup();
        bail!(
            "{shown}: no answers for {}: the data covers {} (deopt selfgen --countries {} makes data for it)",
            country.iso3,
            if have.is_empty() { "no country".to_string() } else { have.join(", ") },
            country.iso3
        );
    }
    let kept: BTreeMap<&str, &AnswerRecord> =
        mine.iter().filter(|a| a.kept).map(|a| (a.id.as_str(), *a)).collect();
    if kept.is_empty() {
        bail!(
            "{shown}: nothing kept for {}: none of its {} answered questions changed answer with the culture-aware prompt{}; expected at least one kept pair (generate more questions with --per-topic)",
            country.iso3,
            mine.len(),
            settings.spec.min_shift.map_or(String::new(), |m| format!(" by --min-shift {m}"))
        );
    }
    let mut items = Vec::new();
    let mut targets = BTreeMap::new();
    for q in &questions {
        let Some(a) = kept.get(q.id.as_str()) else { continue };
        let Some(code) = a.aware.answer else { continue };
        let item = q.item();
        let k = usize::try_from(code - item.first_code).ok().filter(|k| *k < item.n_options());
        let Some(k) = k else {
            bail!(
                "{shown}/{ANSWERS}: question {} has answer {code}, outside its {} options",
                q.id,
                item.n_options()
            );
        };
        let mut t = vec![0.0; item.n_options()];
        t[k] = 1.0;
        targets.insert(q.id.clone(), t);
        items.push(item);
    }
    let text = super::survey_csv(
        &questions.iter().filter(|q| targets.contains_key(&q.id)).cloned().collect::<Vec<_>>(),
    )?;
    let survey = Survey::parse(&format!("{shown}/{}", super::SURVEY), &text)?;
    debug_assert_eq!(survey.items, items);
    Ok((survey, Target::Selfgen { targets, data: dir.to_path_buf() }))
}

/// The model sha256 a data directory was generated with.
///
/// # Errors
/// Not a data directory.
pub fn model_sha256(dir: &Path) -> Result<String> {
    Ok(load_settings(dir)?.model_sha256)
}
