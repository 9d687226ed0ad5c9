//! What a run is scored against: a survey instrument plus one country's targets.
//!
//! This is the one place that pairs instruments with target tables, so that `score`, `eval`
//! and `run` all fail the same way on a country without the needed targets.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Result};

use crate::data::country::{Countries, Country};
use crate::data::dimension::{DimVec, Dimension};
use crate::data::survey::{Survey, SurveyKind};
use crate::data::targets::{Distribution, Hofstede, HofstedeRow, Wvs, WvsChoice, WvsSource};

/// Load the survey: a user file if given, else the built-in instrument of that kind.
pub fn load_survey(kind: SurveyKind, file: Option<&Path>) -> Result<Survey> {
    let survey = match file {
        Some(p) => Survey::from_file(p)?,
        None => Survey::builtin(kind)?,
    };
    if kind == SurveyKind::Vsm13 && !survey.scores_dimensions() {
        let missing: Vec<&str> = Dimension::ALL
            .iter()
            .filter(|d| !survey.items.iter().any(|it| it.term.is_some_and(|(x, _)| x == **d)))
            .map(|d| d.code())
            .collect();
        bail!(
            "{}: a VSM survey needs items with dimension and coefficient for every dimension; none for {}",
            survey.source,
            missing.join(" ")
        );
    }
    Ok(survey)
}

/// A country resolved from a user's name.
pub fn resolve_country(name: &str) -> Result<Country> {
    Ok(Countries::builtin()?.resolve(name)?.clone())
}

/// The country's Hofstede row; an error if it has no score at all.
pub fn hofstede_target(country: &Country) -> Result<HofstedeRow> {
    let table = Hofstede::builtin()?;
    match table.get(&country.iso3) {
        Some(row) if row.cells.iter().any(Option::is_some) => Ok(row.clone()),
        _ => bail!(
            "country {} ({}) has no Hofstede scores (`deopt countries` lists those that have)",
            country.iso3,
            country.name
        ),
    }
}

/// Target values as a vector.
pub fn target_vector(row: &HofstedeRow) -> DimVec {
    row.values()
}

/// The country's WVS-7 answer distributions; an error if no data set covers it.
pub fn wvs_target(country: &Country, choice: WvsChoice) -> Result<BTreeMap<String, Distribution>> {
    let wvs = Wvs::builtin()?;
    match wvs.for_country(&country.iso3, choice) {
        Some(t) => Ok(t),
        None => {
            // Those the chosen data set covers.
            let mut have = Vec::new();
            if matches!(choice, WvsChoice::Auto | WvsChoice::Merged | WvsChoice::Culturespa) {
                have.extend(wvs.countries(WvsSource::CultureSpa));
            }
            if matches!(choice, WvsChoice::Auto | WvsChoice::Merged | WvsChoice::Culturellm) {
                have.extend(wvs.countries(WvsSource::CultureLlm));
            }
            have.sort();
            have.dedup();
            bail!(
                "country {} ({}) has no WVS-7 answer distributions from {}; countries with them: {}",
                country.iso3,
                country.name,
                serde_json::to_value(choice)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                have.join(" ")
            )
        }
    }
}

/// An instrument must fit the reference answers it is scored with: every code the country's
/// respondents gave to one of its items must be one of the item's option codes (a user
/// instrument with fewer options or other codes would otherwise be scored silently wrong).
///
/// # Errors
/// The first item whose reference codes fall outside its options, naming both.
pub fn check_reference(survey: &Survey, reference: &BTreeMap<String, Distribution>) -> Result<()> {
    for item in &survey.items {
        let Some(d) = reference.get(&item.id.to_ascii_uppercase()) else { continue };
        if let Some((code, _)) =
            d.shares.iter().find(|(c, _)| !(item.first_code..=item.last_code()).contains(c))
        {
            bail!(
                "{}: item {}: options code {}..{}: expected them to cover code {code}, which the reference answers use",
                survey.source,
                crate::data::input_error::clip(&item.id),
                item.first_code,
                item.last_code()
            );
        }
    }
    Ok(())
}
