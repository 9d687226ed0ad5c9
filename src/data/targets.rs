//! Country targets: Hofstede's six dimension scores and WVS-7 answer distributions.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::data::dimension::{DimVec, Dimension};
use crate::data::embedded;
use crate::data::input_error::{csv_error_line, csv_error_message, csv_line, InputError};

/// Where a Hofstede cell comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CellSource {
    /// Hofstede's official 2015 dimension data matrix.
    Official,
    /// Hofstede Insights website (2021 snapshot), not marked as an estimate.
    Website,
    /// Hofstede Insights website, country marked as estimated.
    Estimate,
}

/// One Hofstede score with its source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cell {
    /// Score (roughly 0-100; a few exceed 100).
    pub value: f64,
    /// Where it comes from.
    pub source: CellSource,
}

/// A country's Hofstede row; missing cells stay missing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HofstedeRow {
    /// ISO3 code.
    pub iso3: String,
    /// Country name as the source spells it.
    pub name: String,
    /// Cells in canonical dimension order.
    pub cells: [Option<Cell>; 6],
}

impl HofstedeRow {
    /// Scores as a vector (None where missing).
    pub fn values(&self) -> DimVec {
        self.cells.map(|c| c.map(|c| c.value))
    }

    /// The cell for one dimension.
    pub fn cell(&self, d: Dimension) -> Option<Cell> {
        self.cells[d.index()]
    }
}

/// Hofstede six-dimension targets (targets/hofstede_6d.csv).
#[derive(Debug, Clone)]
pub struct Hofstede {
    rows: Vec<HofstedeRow>,
}

impl Hofstede {
    /// The built-in table.
    pub fn builtin() -> Result<Hofstede, InputError> {
        let f = embedded::file("targets/hofstede_6d.csv");
        Hofstede::parse(f.path, f.text)
    }

    /// Parse the merged ISO3 table format.
    pub fn parse(source: &str, text: &str) -> Result<Hofstede, InputError> {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().map_err(|e| InputError::at(source, 1, e.to_string()))?.clone();
        let col = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .ok_or_else(|| InputError::at(source, 1, format!("missing column '{name}'")))
        };
        let c_iso = col("iso3")?;
        let c_name = col("country")?;
        let c_flag = col("hi_estimated_flag")?;
        let mut value_cols = Vec::new();
        for d in Dimension::ALL {
            let lower = d.code().to_ascii_lowercase();
            value_cols.push((col(&lower)?, col(&format!("src_{lower}"))?));
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            let r = record
                .map_err(|e| InputError::at(source, csv_error_line(text, &e), csv_error_message(&e)))?;
            let line = csv_line(text, &r);
            let estimated = r.get(c_flag) == Some("1");
            let mut cells = [None; 6];
            for (i, (cv, cs)) in value_cols.iter().enumerate() {
                let v = r.get(*cv).unwrap_or("").trim();
                if v.is_empty() {
                    continue;
                }
                let value: f64 = v.parse().map_err(|_| {
                    InputError::at(source, line, format!("{} value '{v}' is not a number", Dimension::ALL[i]))
                })?;
                let source_kind = match r.get(*cs).unwrap_or("") {
                    "official2015" => CellSource::Official,
                    _ if estimated => CellSource::Estimate,
                    _ => CellSource::Website,
                };
                cells[i] = Some(Cell { value, source: source_kind });
            }
            rows.push(HofstedeRow {
                iso3: r.get(c_iso).unwrap_or("").to_string(),
                name: r.get(c_name).unwrap_or("").to_string(),
                cells,
            });
        }
        Ok(Hofstede { rows })
    }

    /// The row for a country, if any.
    pub fn get(&self, iso3: &str) -> Option<&HofstedeRow> {
        self.rows.iter().find(|r| r.iso3.eq_ignore_ascii_case(iso3))
    }

    /// All rows.
    pub fn rows(&self) -> &[HofstedeRow] {
        &self.rows
    }
}

/// Which data set a WVS distribution comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WvsSource {
    /// CultureSPA's released proportions (19 countries, all 259 items).
    CultureSpa,
    /// Counted from CultureLLM's per-respondent rows (12 countries, 50 items).
    CultureLlm,
}

/// Which WVS data set(s) to take a country's distributions from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WvsChoice {
    /// CultureSPA's where it covers the country (so CAS matches CultureSPA's scorer), else CultureLLM's.
    #[default]
    Auto,
    /// CultureSPA's distributions only.
    Culturespa,
    /// CultureLLM's counts only.
    Culturellm,
    /// CultureSPA's items plus CultureLLM's counts for items CultureSPA lacks.
    Merged,
}

/// A country's answer distribution on one item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    /// (code, share) pairs, in the source's order, shares normalised to sum to 1.
    pub shares: Vec<(i32, f64)>,
    /// The majority (most frequent) answer code.
    pub majority: i32,
    /// Respondents counted, when known (CultureLLM).
    pub respondents: Option<u64>,
    /// Data set it comes from.
    pub source: WvsSource,
}

impl Distribution {
    /// Build from (code, weight) pairs in source order. The majority is the first code with the
    /// largest weight, which matches CultureSPA (its lists are sorted by share, and its scorer
    /// takes the first). None if there is no weight at all.
    fn new(pairs: Vec<(i32, f64)>, respondents: Option<u64>, source: WvsSource) -> Option<Self> {
        let total: f64 = pairs.iter().map(|p| p.1).sum();
        if pairs.is_empty() || total <= 0.0 {
            return None;
        }
        let mut majority = pairs[0];
        for p in &pairs {
            if p.1 > majority.1 {
                majority = *p;
            }
        }
        let shares = pairs.into_iter().map(|(c, w)| (c, w / total)).collect();
        Some(Distribution { shares, majority: majority.0, respondents, source })
    }

    /// Mean answer code.
    pub fn mean(&self) -> f64 {
        self.shares.iter().map(|(c, p)| f64::from(*c) * p).sum()
    }

    /// Share of a code (0 if absent).
    pub fn share(&self, code: i32) -> f64 {
        self.shares.iter().find(|(c, _)| *c == code).map_or(0.0, |p| p.1)
    }
}

/// WVS-7 answer distributions per country and item, from both data sets.
#[derive(Debug, Clone, Default)]
pub struct Wvs {
    /// (source, ISO3) -> item id (upper case) -> distribution.
    tables: BTreeMap<(WvsSource, String), BTreeMap<String, Distribution>>,
}

impl Wvs {
    /// Load both built-in data sets.
    pub fn builtin() -> Result<Wvs, InputError> {
        let mut wvs = Wvs::default();
        let f = embedded::file("targets/culturespa/wvs7_proportions.csv");
        wvs.add_culturespa(f.path, f.text)?;
        for f in embedded::files_under("targets/culturellm/").filter(|f| f.path.ends_with(".csv")) {
            wvs.add_culturellm(f.path, f.text)?;
        }
        Ok(wvs)
    }

    fn add_culturespa(&mut self, source: &str, text: &str) -> Result<(), InputError> {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        // (country, item) -> pairs in file order
        let mut pairs: BTreeMap<(String, String), Vec<(i32, f64)>> = BTreeMap::new();
        for record in reader.records() {
            let r = record
                .map_err(|e| InputError::at(source, csv_error_line(text, &e), csv_error_message(&e)))?;
            let line = csv_line(text, &r);
            let bad = |what: &str| InputError::at(source, line, format!("bad {what}"));
            let country = r.get(0).ok_or_else(|| bad("country"))?.to_string();
            let item = r.get(1).ok_or_else(|| bad("item"))?.to_ascii_uppercase();
            let code: i32 = r.get(2).and_then(|s| s.parse().ok()).ok_or_else(|| bad("option code"))?;
            let share: f64 = r.get(3).and_then(|s| s.parse().ok()).ok_or_else(|| bad("proportion"))?;
            pairs.entry((country, item)).or_default().push((code, share));
        }
        for ((country, item), p) in pairs {
            if let Some(d) = Distribution::new(p, None, WvsSource::CultureSpa) {
                self.tables.entry((WvsSource::CultureSpa, country)).or_default().insert(item, d);
            }
        }
        Ok(())
    }

    /// Count one country's per-respondent rows: negative codes are missing answers and the
    /// trailing `Avg*` summary rows are not respondents.
    fn add_culturellm(&mut self, source: &str, text: &str) -> Result<(), InputError> {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().map_err(|e| InputError::at(source, 1, e.to_string()))?.clone();
        let c_iso = headers
            .iter()
            .position(|h| h == "B_COUNTRY_ALPHA")
            .ok_or_else(|| InputError::at(source, 1, "missing column 'B_COUNTRY_ALPHA'"))?;
        let items: Vec<(usize, String)> = headers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.starts_with('Q'))
            .map(|(i, h)| (i, h.to_ascii_uppercase()))
            .collect();
        let mut iso3 = None::<String>;
        let mut counts: Vec<BTreeMap<i32, u64>> = vec![BTreeMap::new(); items.len()];
        for record in reader.records() {
            let r = record
                .map_err(|e| InputError::at(source, csv_error_line(text, &e), csv_error_message(&e)))?;
            if r.get(0).is_some_and(|s| s.starts_with("Avg")) {
                continue;
            }
            let line = csv_line(text, &r);
            let code = r.get(c_iso).unwrap_or("").to_string();
            match &iso3 {
                None => iso3 = Some(code),
                Some(c) if *c != code => {
                    return Err(InputError::at(source, line, format!("country '{code}' differs from '{c}'")))
                }
                Some(_) => {}
            }
            for (k, (i, item)) in items.iter().enumerate() {
                let v = r.get(*i).unwrap_or("").trim();
                if v.is_empty() {
                    continue;
                }
                let answer: i32 = v.parse().map_err(|_| {
                    InputError::at(source, line, format!("{item}: answer '{v}' is not an integer"))
                })?;
                if answer >= 0 {
                    *counts[k].entry(answer).or_default() += 1;
                }
            }
        }
        let iso3 = iso3.ok_or_else(|| InputError::file(source, "no respondent rows"))?;
        let table = self.tables.entry((WvsSource::CultureLlm, iso3)).or_default();
        for ((_, item), c) in items.into_iter().zip(counts) {
            let n: u64 = c.values().sum();
            // Ties go to the lower code (BTreeMap order).
            let pairs = c.into_iter().map(|(code, k)| (code, k as f64)).collect();
            if let Some(d) = Distribution::new(pairs, Some(n), WvsSource::CultureLlm) {
                table.insert(item, d);
            }
        }
        Ok(())
    }

    /// Countries covered by a data set, in ISO3 order.
    pub fn countries(&self, source: WvsSource) -> Vec<String> {
        self.tables.keys().filter(|(s, _)| *s == source).map(|(_, c)| c.clone()).collect()
    }

    /// One data set's distributions for a country.
    pub fn table(&self, source: WvsSource, iso3: &str) -> Option<&BTreeMap<String, Distribution>> {
        self.tables.get(&(source, iso3.to_ascii_uppercase()))
    }

    /// A country's distributions from the chosen data set(s). None if nothing covers it.
    pub fn for_country(&self, iso3: &str, choice: WvsChoice) -> Option<BTreeMap<String, Distribution>> {
        let spa = self.table(WvsSource::CultureSpa, iso3);
        let llm = self.table(WvsSource::CultureLlm, iso3);
        match choice {
            WvsChoice::Auto => spa.or(llm).cloned(),
            WvsChoice::Culturespa => spa.cloned(),
            WvsChoice::Culturellm => llm.cloned(),
            WvsChoice::Merged => {
                if spa.is_none() && llm.is_none() {
                    return None;
                }
                let mut merged = llm.cloned().unwrap_or_default();
                if let Some(spa) = spa {
                    merged.extend(spa.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                Some(merged)
            }
        }
    }
}
