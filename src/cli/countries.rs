//! `deopt countries`: which countries have which targets.

use std::io::Write;

use serde_json::json;

use crate::data::country::Countries;
use crate::data::dimension::Dimension;
use crate::data::survey::SurveyKind;
use crate::data::targets::{CellSource, Hofstede, Wvs, WvsChoice, WvsSource};

/// List countries with their Hofstede scores and WVS-7 coverage.
#[derive(Debug, clap::Args)]
pub struct CountriesArgs {
    /// Only countries with targets for this survey
    #[arg(long, value_enum)]
    pub survey: Option<SurveyKind>,
    /// Print one JSON object instead of a table
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CountriesArgs) -> anyhow::Result<()> {
    let countries = Countries::builtin()?;
    let hofstede = Hofstede::builtin()?;
    let wvs = Wvs::builtin()?;
    let mut rows = Vec::new();
    for c in countries.all() {
        let h = hofstede.get(&c.iso3);
        let spa = wvs.table(WvsSource::CultureSpa, &c.iso3).map_or(0, |t| t.len());
        let llm = wvs.table(WvsSource::CultureLlm, &c.iso3).map_or(0, |t| t.len());
        let wvs_items = wvs.for_country(&c.iso3, WvsChoice::Merged).map_or(0, |t| t.len());
        let keep = match args.survey {
            None => true,
            Some(SurveyKind::Vsm13) => h.is_some_and(|h| h.cells.iter().any(Option::is_some)),
            Some(SurveyKind::Wvs) => wvs_items > 0,
        };
        if keep {
            rows.push((c, h, spa, llm, wvs_items));
        }
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(c, h, spa, llm, n)| {
                let dims: serde_json::Map<String, serde_json::Value> = Dimension::ALL
                    .iter()
                    .map(|d| {
                        let v = h.and_then(|h| h.cell(*d)).map_or(
                            serde_json::Value::Null,
                            |cell| json!({"value": cell.value, "source": cell.source}),
                        );
                        (d.code().to_string(), v)
                    })
                    .collect();
                json!({
                    "iso3": c.iso3, "name": c.name, "adjective": c.adjective, "article": c.article,
                    "aliases": c.aliases, "hofstede": dims,
                    "wvs": {"items": n, "culturespa_items": spa, "culturellm_items": llm},
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&json!({ "countries": list }))?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<4} {:<24} {:<16} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}  {:>9}",
        "ISO3", "name", "adjective", "PDI", "IDV", "MAS", "UAI", "LTO", "IVR", "WVS items"
    )?;
    for (c, h, spa, llm, n) in &rows {
        let cells: Vec<String> = Dimension::ALL
            .iter()
            .map(|d| match h.and_then(|h| h.cell(*d)) {
                None => "-".to_string(),
                Some(cell) => format!(
                    "{}{}",
                    cell.value,
                    match cell.source {
                        CellSource::Official => "",
                        CellSource::Website => "~",
                        CellSource::Estimate => "*",
                    }
                ),
            })
            .collect();
        let wvs_col = match (spa, llm) {
            (0, 0) => "-".to_string(),
            (_, 0) => format!("{n} S"),
            (0, _) => format!("{n} L"),
            _ => format!("{n} SL"),
        };
        writeln!(
            out,
            "{:<4} {:<24} {:<16} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}  {:>9}",
            c.iso3,
            truncate(&c.name, 24),
            truncate(&c.adjective, 16),
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            wvs_col
        )?;
    }
    writeln!(
        out,
        "\n{} countries. Hofstede: plain = official 2015 matrix, ~ = Hofstede Insights website, \
         * = website estimate, - = missing.\nWVS items: S = CultureSPA distributions, L = counted from \
         CultureLLM respondents.",
        rows.len()
    )?;
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}
