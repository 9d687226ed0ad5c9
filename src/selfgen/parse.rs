//! Reading a generated question: strict JSON first, then a tolerant reader for what small models
//! actually write (the template's own `"Question:" "..."` slip, Python-style option lists with
//! single quotes, the `Question: ... Options: ...` form), then the paper's filters. Every
//! rejection has a reason, counted in the summary.

use serde::{Deserialize, Serialize};

/// A parsed question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parsed {
    /// The question.
    pub question: String,
    /// The options, numbering removed.
    pub options: Vec<String>,
    /// How it was read: `json` or `tolerant`.
    pub via: String,
}

/// Why a generated question was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reject {
    /// Neither JSON nor the `Question: ... Options: ...` form.
    Unparsable,
    /// Fewer than 2 or more than 10 options.
    OptionCount,
    /// Longer than the limit.
    TooLong,
    /// Options numbered in some places and not in others, empty, repeated, or holding `|`.
    InconsistentOptions,
    /// The same text (normalised) as an earlier generated question.
    Duplicate,
    /// Nearly the same words as an example it was shown or a real WVS item.
    NearCopy,
}

impl Reject {
    /// Every reason, in summary order.
    pub const ALL: [Reject; 6] = [
        Reject::Unparsable,
        Reject::OptionCount,
        Reject::TooLong,
        Reject::InconsistentOptions,
        Reject::Duplicate,
        Reject::NearCopy,
    ];

    /// The reason's name as written in the files.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Unparsable => "unparsable",
            Reject::OptionCount => "option-count",
            Reject::TooLong => "too-long",
            Reject::InconsistentOptions => "inconsistent-options",
            Reject::Duplicate => "duplicate",
            Reject::NearCopy => "near-copy",
        }
    }
}

/// Read a question and its options from generated text.
pub fn parse(text: &str) -> Option<Parsed> {
    strict(text).or_else(|| tolerant(text))
}

fn norm_key(k: &str) -> String {
    k.trim().trim_end_matches(':').trim().to_ascii_lowercase()
}

/// The first JSON object (outer ones first, then nested ones) with a question string and options.
fn strict(text: &str) -> Option<Parsed> {
    text.match_indices('{').find_map(|(i, _)| {
        let mut it = serde_json::Deserializer::from_str(&text[i..]).into_iter::<serde_json::Value>();
        match it.next() {
            Some(Ok(serde_json::Value::Object(map))) => from_object(&map),
            _ => None,
        }
    })
}

fn from_object(map: &serde_json::Map<String, serde_json::Value>) -> Option<Parsed> {
    let get = |name: &str| map.iter().find(|(k, _)| norm_key(k) == name).map(|(_, v)| v);
    let question = get("question")?.as_str()?.trim().to_string();
    let options = match get("options")? {
        serde_json::Value::Array(a) => a
            .iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?,
        serde_json::Value::String(s) => split_options(s),
        _ => return None,
    };
    Some(Parsed { question, options, via: "json".into() })
}

/// Find `key` (case-insensitive) as a word, with an optional quote and colon after it; returns
/// the byte offset after them.
fn find_key(text: &str, key: &str) -> Option<usize> {
    let lower = text.to_ascii_lowercase();
    let mut from = 0;
    while let Some(p) = lower[from..].find(key) {
        let at = from + p;
        let mut end = at + key.len();
        let before_ok = at == 0 || !lower.as_bytes()[at - 1].is_ascii_alphanumeric();
        let rest = &text[end..];
        let trimmed = rest.trim_start_matches(['"', '\'']);
        let t2 = trimmed.trim_start();
        if before_ok && t2.starts_with(':') {
            end += rest.len() - t2.len() + 1;
            // `"Question:" "..."`: the colon inside the key's quotes, then the closing quote.
            let after = &text[end..];
            let skip = after.len() - after.trim_start_matches(['"', '\'']).len();
            if after.starts_with(['"', '\'']) && after[skip..].trim_start().starts_with(['"', '\'']) {
                end += skip;
            }
            return Some(end);
        }
        from = at + key.len();
    }
    None
}

/// A quoted string at the start of `s` (after whitespace): its content and the rest.
fn quoted(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    let q = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let mut out = String::new();
    let mut esc = false;
    for (i, c) in s.char_indices().skip(1) {
        if esc {
            out.push(match c {
                'n' => '\n',
                't' => '\t',
                other => other,
            });
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == q {
            return Some((out, &s[i + 1..]));
        } else {
            out.push(c);
        }
    }
    None
}

/// A Python or JSON list of strings or numbers at the start of `s`.
fn list(s: &str) -> Option<Vec<String>> {
    let mut rest = s.trim_start().strip_prefix('[')?;
    let mut out = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(']') {
            let _ = r;
            return Some(out);
        }
        if rest.starts_with(['"', '\'']) {
            let (v, r) = quoted(rest)?;
            out.push(v);
            rest = r;
        } else {
            let end = rest.find([',', ']'])?;
            let v = rest[..end].trim();
            if v.is_empty() {
                return None;
            }
            out.push(v.to_string());
            rest = &rest[end..];
        }
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with(']') {
            return None;
        }
    }
}

/// Options written as text: one per line, or separated by `|` or `;`, or numbered on one line.
fn split_options(s: &str) -> Vec<String> {
    let s = s.trim();
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.len() > 1 {
        return lines.iter().map(|l| l.to_string()).collect();
    }
    for sep in ['|', ';'] {
        if s.contains(sep) {
            return s.split(sep).map(|x| x.trim().to_string()).collect();
        }
    }
    // "1. Yes 2. No" / "1.Yes 2.No": split before each next number in sequence.
    let mut out = Vec::new();
    let mut rest = s;
    let mut k = 1;
    if rest.starts_with("1.") || rest.starts_with("1)") {
        loop {
            let next = format!(" {}", k + 1);
            let cut = rest
                .match_indices(&next)
                .map(|(i, _)| i)
                .find(|&i| rest[i + next.len()..].starts_with(['.', ')']));
            match cut {
                Some(i) => {
                    out.push(rest[..i].trim().to_string());
                    rest = &rest[i..];
                    k += 1;
                }
                None => {
                    out.push(rest.trim().to_string());
                    break;
                }
            }
        }
        return out;
    }
    vec![s.to_string()]
}

/// Quoted strings separated by commas, up to a closing brace, a line break or the end:
/// `"Yes", "No"}` (options written without brackets).
fn bare_list(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let (v, r) = quoted(rest)?;
        out.push(v);
        let r2 = r.trim_start_matches([' ', '\t']);
        if let Some(next) = r2.strip_prefix(',') {
            rest = next;
            continue;
        }
        return (r2.is_empty() || r2.starts_with(['}', '\n', ']'])).then_some(out);
    }
}

fn tolerant(text: &str) -> Option<Parsed> {
    let q_at = find_key(text, "question")?;
    let after_q = &text[q_at..];
    // Seen from small models: the options right after the question, with no key:
    // `"Question": "...?": ["Yes", "No"]` or `"Question": "...?": "Yes", "No"}`.
    if let Some((q, rest)) = quoted(after_q) {
        if let Some(r) = rest.trim_start().strip_prefix(':') {
            if let Some(options) = list(r).or_else(|| bare_list(r)) {
                let question = q.trim().to_string();
                return (!question.is_empty()).then(|| Parsed { question, options, via: "tolerant".into() });
            }
        }
    }
    let o_rel = find_key(after_q, "options")?;
    let q_region = &after_q[..o_rel];
    // The question: a quoted string, or the text up to the options key.
    let question = match quoted(q_region) {
        Some((q, _)) => q,
        None => {
            let cut = q_region.to_ascii_lowercase().rfind("options").unwrap_or(q_region.len());
            q_region[..cut].trim().trim_end_matches([',', '"', '\'']).trim().to_string()
        }
    };
    let o_region = &after_q[o_rel..];
    let options = match list(o_region) {
        Some(l) => l,
        None => {
            let body = o_region.split("\n\n").next().unwrap_or("");
            let body = body.trim().trim_end_matches('}').trim();
            split_options(body)
        }
    };
    let question = question.trim().to_string();
    (!question.is_empty()).then(|| Parsed { question, options, via: "tolerant".into() })
}

/// A numbering prefix (`1.`, `2)`, `a)`, `B.`, `-`) at the start of an option, if any: the
/// text without it.
fn strip_numbering(o: &str) -> Option<&str> {
    let o = o.trim_start();
    if let Some(r) = o.strip_prefix("- ") {
        return Some(r);
    }
    let digits = o.chars().take_while(char::is_ascii_digit).count();
    let head = if digits > 0 {
        digits
    } else if o.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && o[1..].starts_with([')', '.'])
        && o[2..].starts_with(' ')
    {
        1
    } else {
        return None;
    };
    let r = &o[head..];
    let r = r.strip_prefix(['.', ')', ':'])?;
    // "10 years" is not numbering; "1.Yes", "1. Yes" and "1) Yes" are.
    Some(r.trim_start())
}

/// The paper's per-question checks: option count, length, consistent options. Returns the
/// cleaned question.
pub fn check(p: &Parsed, max_chars: usize) -> Result<Parsed, Reject> {
    let question = p.question.split_whitespace().collect::<Vec<_>>().join(" ");
    // A question is text: not empty, not the start of a nested object or list.
    if question.is_empty() || question.starts_with(['{', '[']) || !question.chars().any(char::is_alphabetic) {
        return Err(Reject::Unparsable);
    }
    if question.chars().count() > max_chars {
        return Err(Reject::TooLong);
    }
    if p.options.len() < 2 || p.options.len() > 10 {
        return Err(Reject::OptionCount);
    }
    let stripped: Vec<Option<&str>> = p.options.iter().map(|o| strip_numbering(o)).collect();
    let numbered = stripped.iter().filter(|s| s.is_some()).count();
    if numbered != 0 && numbered != stripped.len() {
        return Err(Reject::InconsistentOptions);
    }
    let options: Vec<String> = p
        .options
        .iter()
        .zip(&stripped)
        .map(|(o, s)| s.unwrap_or(o).split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for o in &options {
        // Brackets and braces in an option are JSON debris of a broken object, not an answer.
        let debris = o.contains(['{', '}', '[', ']']);
        if o.is_empty()
            || o.contains('|')
            || debris
            || o.chars().count() > max_chars
            || !seen.insert(o.to_lowercase())
        {
            return Err(Reject::InconsistentOptions);
        }
    }
    Ok(Parsed { question, options, via: p.via.clone() })
}

/// Lower-case words, for duplicate and near-copy checks.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// Jaccard similarity of two texts' word sets.
pub fn similarity(a: &str, b: &str) -> f64 {
    let a: std::collections::BTreeSet<String> = words(a).into_iter().collect();
    let b: std::collections::BTreeSet<String> = words(b).into_iter().collect();
    let union = a.union(&b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// Word-set similarity at or above which a question is a near-copy.
pub const NEAR_COPY: f64 = 0.8;

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(p: &Parsed) -> Vec<&str> {
        p.options.iter().map(String::as_str).collect()
    }

    #[test]
    fn strict_json_and_the_templates_slip() {
        let p = parse("{\"Question\": \"Do you trust banks?\", \"Options\": [\"Yes\", \"No\"]}").unwrap();
        assert_eq!(
            (p.question.as_str(), opts(&p), p.via.as_str()),
            ("Do you trust banks?", vec!["Yes", "No"], "json")
        );
        // The template's example writes the key as "Question:" with no colon after it.
        let p = parse(
            "```json\n{\"Question:\" \"Is hard work rewarded?\", \"Options\": [\"Always\", \"Never\"]}\n```",
        )
        .unwrap();
        assert_eq!(
            (p.question.as_str(), opts(&p), p.via.as_str()),
            ("Is hard work rewarded?", vec!["Always", "Never"], "tolerant")
        );
        let p = parse("{\"Question:\": \"X?\", \"Options\": \"1. Yes 2. No 3. Maybe\"}").unwrap();
        assert_eq!(opts(&p), vec!["1. Yes", "2. No", "3. Maybe"]);
    }

    #[test]
    fn python_lists_and_plain_form() {
        let p = parse(
            "{\"Question\": \"Should women work?\", \"Options\": ['Agree', \"Don't know\", 'Disagree']}",
        )
        .unwrap();
        assert_eq!(opts(&p), vec!["Agree", "Don't know", "Disagree"]);
        let p = parse("Question: How often do you pray?\nOptions:\n1. Daily\n2. Weekly\n3. Never\n\nThanks")
            .unwrap();
        assert_eq!(p.question, "How often do you pray?");
        assert_eq!(opts(&p), vec!["1. Daily", "2. Weekly", "3. Never"]);
        assert!(parse("I am sorry, I cannot help with that.").is_none());
        // Cut off inside the option list: read, then dropped by the checks.
        let cut = parse("{\"Question\": \"Unfinished?\", \"Options\": [\"A\", ").unwrap();
        assert!(check(&cut, 300).is_err());
        // Options straight after the question, without a key (seen from Gemma 3 270M).
        let p =
            parse("{\"Question\": \"Do you consider obedience important?\": [\"Yes\", \"No\"]},").unwrap();
        assert_eq!(opts(&p), vec!["Yes", "No"]);
        let p = parse("{\"Question\": \"Which point of view?\": \"1\", \"2\", \"3\"}").unwrap();
        assert_eq!(opts(&p), vec!["1", "2", "3"]);
    }

    #[test]
    fn checks() {
        let p = |q: &str, o: &[&str]| Parsed {
            question: q.into(),
            options: o.iter().map(|s| s.to_string()).collect(),
            via: "json".into(),
        };
        assert_eq!(check(&p("Q?", &["Yes"]), 300), Err(Reject::OptionCount));
        assert_eq!(check(&p("Q?", &["a"; 11]), 300), Err(Reject::OptionCount));
        assert_eq!(check(&p(&"long ".repeat(100), &["a", "b"]), 300), Err(Reject::TooLong));
        assert_eq!(check(&p("Q?", &["1. Yes", "No"]), 300), Err(Reject::InconsistentOptions));
        assert_eq!(check(&p("Q?", &["Yes", "yes"]), 300), Err(Reject::InconsistentOptions));
        assert_eq!(check(&p("Q?", &["Yes", ""]), 300), Err(Reject::InconsistentOptions));
        assert_eq!(check(&p("Q?", &["[1, \"2\"}", "No"]), 300), Err(Reject::InconsistentOptions));
        let ok = check(&p("  Do   you agree? ", &["1. Agree", "2) Disagree"]), 300).unwrap();
        assert_eq!(ok.question, "Do you agree?");
        assert_eq!(ok.options, vec!["Agree", "Disagree"]);
        // Numbers that are content, not numbering, stay.
        let ok = check(&p("Hours?", &["10 hours", "20 hours"]), 300).unwrap();
        assert_eq!(ok.options, vec!["10 hours", "20 hours"]);
        assert!(
            similarity("How important is family in your life?", "How important is family in your life")
                >= NEAR_COPY
        );
        assert!(similarity("How important is family?", "Do you trust your neighbours?") < NEAR_COPY);
    }

    /// Real outputs of Gemma 3 270M and SmolLM2-135M-Instruct from `deopt selfgen --per-topic 8
    /// --seed 1`, each with what reading and checking it must give (`ok:N`: accepted with N
    /// options).
    #[test]
    fn real_model_outputs() {
        let text = include_str!("../../tests/fixtures/selfgen_outputs.jsonl");
        for (n, line) in text.lines().enumerate() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let out = v["text"].as_str().unwrap();
            let got = match parse(out).ok_or(Reject::Unparsable).and_then(|p| check(&p, 300)) {
                Ok(p) => format!("ok:{}", p.options.len()),
                Err(r) => r.name().to_string(),
            };
            assert_eq!(got, v["expect"].as_str().unwrap(), "fixture line {}: {out}", n + 1);
        }
    }
}
