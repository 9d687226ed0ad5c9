//! Baselines to compare an optimised soft prompt with: no prompt, CultureSPA's text prompts
//! P1-P3 (targets/culturespa/ and README), and a random soft prompt.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::data::country::{Countries, Country};
use crate::data::dimension::Dimension;
use crate::data::embedded;
use crate::data::survey::SurveyKind;
use crate::data::targets::Hofstede;
use crate::prompt::render::{options_line, Layout};
use crate::score::fitness::{Target, Task};
use crate::score::metrics;

/// A baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Baseline {
    /// No soft prompt, no culture.
    None,
    /// Culture-aware instruction: "You are a real person with a/an {culture} cultural background..."
    P1,
    /// P1 plus cross-culture thinking: the three most and least similar cultures.
    P2,
    /// Self-alignment: five similar questions answered as the country answers them.
    P3,
    /// A random soft prompt, drawn like the optimizer's initial population.
    RandomSoft,
}

fn survey_name(kind: SurveyKind) -> &'static str {
    match kind {
        SurveyKind::Wvs => "World Values Survey",
        SurveyKind::Vsm13 => "Values Survey Module",
    }
}

/// CultureSPA's culture-unaware system message (used with P3's examples, as CultureSPA does).
pub fn unaware_system(kind: SurveyKind) -> String {
    format!(
        "You are a real person with your own set of values. Please fill out the {} and answer the questions honestly according to your own value system.",
        survey_name(kind)
    )
}

/// CultureSPA's P1 system message, with the survey's name.
pub fn p1_system(country: &Country, kind: SurveyKind) -> String {
    let survey = survey_name(kind);
    format!(
        "You are a real person with {} cultural background. Please fill out the {survey} and answer the questions honestly according to your own value system.",
        country.with_article()
    )
}

/// The three most similar and three least similar cultures' adjectives (most/least first).
///
/// From CultureSPA's country_similarity.json when it covers the country; otherwise by distance
/// between Hofstede dimension vectors (over the dimensions both countries have, among
/// countries with all six), which extends P2 to every country with Hofstede scores.
pub fn similar_cultures(country: &Country) -> Result<(Vec<String>, Vec<String>)> {
    let countries = Countries::builtin()?;
    let file = embedded::file("targets/culturespa/country_similarity.json");
    let table: BTreeMap<String, BTreeMap<String, f64>> =
        serde_json::from_str(file.text).with_context(|| file.path.to_string())?;
    let mut ranked: Vec<(String, f64)> = match table.get(&country.iso3) {
        Some(row) => row.iter().map(|(c, v)| (c.clone(), *v)).collect(),
        None => {
            let hof = Hofstede::builtin()?;
            let me = hof.get(&country.iso3).ok_or_else(|| {
                anyhow!(
                    "baseline p2: {} is neither in CultureSPA's similarity table nor in the Hofstede table",
                    country.iso3
                )
            })?;
            hof.rows()
                .iter()
                .filter(|r| r.iso3 != country.iso3 && r.cells.iter().all(Option::is_some))
                .filter_map(|r| {
                    let d: Vec<f64> = Dimension::ALL
                        .iter()
                        .filter_map(|d| Some(me.cell(*d)?.value - r.cell(*d)?.value))
                        .collect();
                    (!d.is_empty()).then(|| {
                        (r.iso3.clone(), -(d.iter().map(|x| x * x).sum::<f64>() / d.len() as f64).sqrt())
                    })
                })
                .collect()
        }
    };
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let adj = |iso: &str| countries.by_iso3(iso).map_or_else(|| iso.to_string(), |c| c.adjective.clone());
    let most: Vec<String> = ranked.iter().take(3).map(|(c, _)| adj(c)).collect();
    let least: Vec<String> = ranked.iter().rev().take(3).map(|(c, _)| adj(c)).collect();
    if most.len() < 3 || least.len() < 3 {
        return Err(anyhow!("baseline p2: too few other countries to compare {} with", country.iso3));
    }
    Ok((most, least))
}

/// CultureSPA's P2 system message.
pub fn p2_system(country: &Country, kind: SurveyKind) -> Result<String> {
    let (s, d) = similar_cultures(country)?;
    Ok(format!(
        "{} Before you respond, take a moment to think about how {c} culture is similar to {}, {}, and {} cultures, and how {c} culture is different from {}, {}, and {} cultures.",
        p1_system(country, kind),
        s[0], s[1], s[2], d[0], d[1], d[2],
        c = country.adjective
    ))
}

/// P3's in-context examples per item: five similar questions answered as the country does.
///
/// WVS: the first five ids in CultureSPA's self_alignment_examples.json for the item that
/// have a reference answer, answered with the country's majority answer. VSM13 (no such
/// table): five other VSM13 items, same block first then nearest in the questionnaire,
/// answered with the rounded answers that reproduce the country's Hofstede scores exactly
/// (inverse modelling) — the VSM analogue of "how the country answers".
pub fn p3_examples(task: &Task) -> Result<BTreeMap<String, String>> {
    let survey = &task.survey;
    let line = |id: &str, code: i32| -> Option<String> {
        let it = survey.item(id)?;
        let k = usize::try_from(code - it.first_code).ok().filter(|k| *k < it.n_options())?;
        Some(format!(
            "Question: {} Options: {} Answer: {}.{}",
            it.text,
            options_line(it),
            code,
            it.options[k]
        ))
    };
    let mut out = BTreeMap::new();
    match &task.target {
        Target::Selfgen { data, .. } => {
            return Err(anyhow!(
                "baseline p3: needs a real survey's answers; {} holds self-generated questions",
                data.display()
            ))
        }
        Target::Wvs { reference, .. } => {
            let file = embedded::file("targets/culturespa/self_alignment_examples.json");
            let table: BTreeMap<String, Vec<String>> =
                serde_json::from_str(file.text).with_context(|| file.path.to_string())?;
            for it in &survey.items {
                let similar = table.get(&it.id).map(Vec::as_slice).unwrap_or(&[]);
                let lines: Vec<String> = similar
                    .iter()
                    .filter_map(|q| line(q, reference.get(&q.to_ascii_uppercase())?.majority))
                    .take(5)
                    .collect();
                out.insert(it.id.clone(), lines.join("\n"));
            }
        }
        Target::Hofstede { row, constants, .. } => {
            let answers = metrics::vsm_inverse(survey, &row.values(), constants)
                .map_err(|e| anyhow!("baseline p3: {e}"))?;
            for (i, it) in survey.items.iter().enumerate() {
                let mut others: Vec<usize> = (0..survey.items.len()).filter(|&j| j != i).collect();
                others.sort_by_key(|&j| (survey.items[j].topic != it.topic, j.abs_diff(i), j));
                let lines: Vec<String> = others
                    .iter()
                    .take(5)
                    .filter_map(|&j| line(&survey.items[j].id, answers[j].round() as i32))
                    .collect();
                out.insert(it.id.clone(), lines.join("\n"));
            }
        }
    }
    Ok(out)
}

/// The layout of a text baseline (None, P1-P3): no soft prompt, the baseline's system message
/// and examples on top of `base`.
pub fn text_layout(b: Baseline, base: &Layout, task: &Task, kind: SurveyKind) -> Result<Layout> {
    let mut l = Layout { with_soft: false, system: None, examples: None, ..base.clone() };
    match b {
        Baseline::None | Baseline::RandomSoft => {}
        Baseline::P1 => l.system = Some(p1_system(&task.country, kind)),
        Baseline::P2 => l.system = Some(p2_system(&task.country, kind)?),
        Baseline::P3 => {
            l.system = Some(unaware_system(kind));
            l.examples = Some(p3_examples(task)?);
        }
    }
    Ok(l)
}
