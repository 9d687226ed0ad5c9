//! Countries: ISO3 code, English name, aliases, and the culture adjective used in prompts.

use crate::data::embedded;
use crate::data::input_error::{csv_error_line, csv_error_message, csv_line, InputError};

/// A country as deopt knows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Country {
    /// ISO 3166-1 alpha-3 code, upper case.
    pub iso3: String,
    /// English name.
    pub name: String,
    /// Other names it is known by.
    pub aliases: Vec<String>,
    /// Culture adjective / demonym, e.g. "Saudi", "American".
    pub adjective: String,
    /// Indefinite article for the adjective: "a" or "an".
    pub article: String,
}

impl Country {
    /// "an American", "a Saudi".
    pub fn with_article(&self) -> String {
        format!("{} {}", self.article, self.adjective)
    }
}

/// The table of known countries (targets/countries.csv).
#[derive(Debug, Clone)]
pub struct Countries {
    list: Vec<Country>,
}

impl Countries {
    /// The built-in table.
    pub fn builtin() -> Result<Countries, InputError> {
        let f = embedded::file("targets/countries.csv");
        Countries::parse(f.path, f.text)
    }

    /// Parse a countries CSV (iso3,name,aliases,adjective,article).
    pub fn parse(source: &str, text: &str) -> Result<Countries, InputError> {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let mut list = Vec::new();
        for record in reader.records() {
            let r = record
                .map_err(|e| InputError::at(source, csv_error_line(text, &e), csv_error_message(&e)))?;
            let line = csv_line(text, &r);
            let field = |i: usize| r.get(i).unwrap_or("").trim().to_string();
            let iso3 = field(0).to_ascii_uppercase();
            if iso3.len() != 3 || !iso3.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(InputError::at(source, line, format!("'{iso3}' is not an ISO3 code")));
            }
            list.push(Country {
                iso3,
                name: field(1),
                aliases: field(2)
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                adjective: field(3),
                article: field(4),
            });
        }
        Ok(Countries { list })
    }

    /// All countries, in file order (ISO3 order for the built-in table).
    pub fn all(&self) -> &[Country] {
        &self.list
    }

    /// The country with this ISO3 code.
    pub fn by_iso3(&self, iso3: &str) -> Option<&Country> {
        self.list.iter().find(|c| c.iso3.eq_ignore_ascii_case(iso3))
    }

    /// Resolve a user's name for a country: ISO3 code, English name, alias or adjective,
    /// case-insensitive. An unknown name gives an error suggesting the closest names.
    pub fn resolve(&self, query: &str) -> Result<&Country, InputError> {
        let q = normalize(query);
        let hit = self.list.iter().find(|c| {
            c.iso3.eq_ignore_ascii_case(&q)
                || normalize(&c.name) == q
                || normalize(&c.adjective) == q
                || c.aliases.iter().any(|a| normalize(a) == q)
        });
        hit.ok_or_else(|| {
            let mut scored: Vec<(usize, &Country)> = self
                .list
                .iter()
                .map(|c| {
                    let names = std::iter::once(&c.iso3)
                        .chain(std::iter::once(&c.name))
                        .chain(std::iter::once(&c.adjective))
                        .chain(c.aliases.iter());
                    let d = names.map(|n| levenshtein(&q, &normalize(n))).min().unwrap_or(usize::MAX);
                    (d, c)
                })
                .collect();
            scored.sort_by_key(|(d, c)| (*d, c.iso3.clone()));
            let close: Vec<String> =
                scored.iter().take(3).map(|(_, c)| format!("{} ({})", c.iso3, c.name)).collect();
            InputError::file(
                format!("country '{query}'"),
                format!("unknown country; closest: {} (see `deopt countries`)", close.join(", ")),
            )
        })
    }
}

fn normalize(s: &str) -> String {
    s.trim().to_lowercase().replace(['.', '\''], "")
}

/// Edit distance between two strings, by characters.
fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_codes_names_aliases_adjectives() {
        let c = Countries::builtin().unwrap();
        for q in ["SAU", "sau", "Saudi Arabia", "saudi arabia", "KSA", "Saudi"] {
            assert_eq!(c.resolve(q).unwrap().iso3, "SAU", "{q}");
        }
        assert_eq!(c.resolve("u.s.a.").unwrap().iso3, "USA");
        assert_eq!(c.resolve("american").unwrap().iso3, "USA");
        assert_eq!(c.resolve("Holland").unwrap().iso3, "NLD");
        assert_eq!(c.by_iso3("USA").unwrap().with_article(), "an American");
        assert_eq!(c.by_iso3("NZL").unwrap().with_article(), "a New Zealand");
    }

    #[test]
    fn unknown_country_suggests_closest() {
        let c = Countries::builtin().unwrap();
        let err = c.resolve("Saudi Arbia").unwrap_err().to_string();
        assert!(err.contains("unknown country") && err.contains("SAU (Saudi Arabia)"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn levenshtein_basics() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }
}
