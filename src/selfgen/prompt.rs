//! CultureSPA's question generator prompt: the system message, the per-topic user message with
//! five example questions, and how the conversation is laid out for a model with or without a
//! chat template. The wording is the CultureSPA repository's, quoted in
//! targets/culturespa/PROMPTS.md; a test checks the rendering against that quote.

use anyhow::Result;

use crate::data::survey::{Item, Survey};
use crate::llama::{Model, Token};

/// The generator's system message.
pub const SYSTEM: &str = "You are a social scientist on the World Values Survey team, dedicated to studying and understanding shifts in human values across nearly 100 countries. Your work involves rigorous research designs and aims to capture a comprehensive view of human beliefs through nationally representative surveys.";

/// Examples per prompt, and how many of them are real survey items when enough generated
/// questions exist (CultureSPA: three seed items, two generated ones).
pub const N_EXAMPLES: usize = 5;
/// Real items among the examples when the topic has two generated questions to show.
pub const N_REAL: usize = 3;

/// Without a chat template the conversation is plain text that a base model continues; it ends
/// with the opening of the JSON answer, which is put back in front of the generated text.
pub const PLAIN_PRIMER: &str = "{\"Question\": \"";

/// One example question shown to the generator.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The question.
    pub question: String,
    /// Its options, in order.
    pub options: Vec<String>,
}

impl Example {
    /// A survey item as an example.
    pub fn of_item(item: &Item) -> Example {
        Example { question: item.text.clone(), options: item.options.clone() }
    }
}

/// Python's `str()` of a list of strings, as CultureSPA formats the options:
/// `['Yes', 'No']`, double quotes for a string holding a single quote.
pub fn py_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| {
            if s.contains('\'') && !s.contains('"') {
                format!("\"{}\"", s.replace('\\', "\\\\"))
            } else {
                format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
            }
        })
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// The user message for `topic` with `examples`.
pub fn user_message(topic: &str, examples: &[Example]) -> String {
    let shown: Vec<String> = examples
        .iter()
        .enumerate()
        .map(|(k, e)| {
            format!("#Example {}:\nQuestion: {}\nOptions: {}\n", k + 1, e.question, py_list(&e.options))
        })
        .collect();
    format!(
        "Please come up with one new survey question.\nMake sure your question addresses the topic of {topic}.\nFor reference, here are some example questions:\n{}\nNote that your question should be clearly different from the example questions provided and must pertain to the topic of {topic}.\nPlease return your question in JSON format, for example:{{\"Question:\" ..., \"Options\": [..., ..., ...]}}.\nReturn the JSON data only and do not include any additional text or information.\n",
        shown.join("\n")
    )
}

/// The generator's conversation as text: the model's chat template with the assistant turn
/// opened, or (`chat` false) system message, user message and [`PLAIN_PRIMER`].
///
/// # Errors
/// The chat template cannot be applied.
pub fn conversation(model: &Model, chat: bool, user: &str) -> Result<String> {
    if chat {
        let t = model.apply_chat_template(&[("system", SYSTEM), ("user", user)], true)?;
        Ok(t)
    } else {
        Ok(format!("{SYSTEM}\n\n{user}\n{PLAIN_PRIMER}"))
    }
}

/// Tokens of a conversation (with BOS where the model wants one).
///
/// # Errors
/// Tokenization failures.
pub fn tokens(model: &Model, text: &str) -> Result<Vec<Token>> {
    let mut t = model.tokenize(text, false, true)?;
    if model.add_bos() {
        if let Some(bos) = model.bos() {
            if t.first() != Some(&bos) {
                t.insert(0, bos);
            }
        }
    }
    Ok(t)
}

/// The WVS-7 topics in questionnaire order, each with its items.
pub fn topics(survey: &Survey) -> Vec<(String, Vec<&Item>)> {
    let mut out: Vec<(String, Vec<&Item>)> = Vec::new();
    for it in &survey.items {
        match out.iter_mut().find(|(t, _)| *t == it.topic) {
            Some((_, v)) => v.push(it),
            None => out.push((it.topic.clone(), vec![it])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_list_repr() {
        let s = |v: &[&str]| py_list(&v.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!(s(&["Yes", "No"]), "['Yes', 'No']");
        assert_eq!(s(&["Don't know"]), "[\"Don't know\"]");
        assert_eq!(s(&["a'b\"c"]), "['a\\'b\"c']");
        assert_eq!(s(&[]), "[]");
    }

    #[test]
    fn matches_the_quoted_template() {
        // The template as quoted in targets/culturespa/PROMPTS.md, slots filled by hand.
        let doc = include_str!("../../targets/culturespa/PROMPTS.md");
        let start = doc.find("task_prompt_topic = \"\"\"").expect("quoted template") + 23;
        let end = start + doc[start..].find("\"\"\"").expect("end of template");
        // The quote is an indented Markdown block.
        let template: String = doc[start..end]
            .split('\n')
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let ex = |k: usize, q: &str, o: &str| format!("#Example {k}:\nQuestion: {q}\nOptions: {o}\n");
        let shown = [ex(1, "Q one?", "['A', 'B']"), ex(2, "Q two?", "['C', 'D', 'E']")].join("\n");
        let expected = template
            .replacen("{}", "Migration", 1)
            .replacen("{}", &shown, 1)
            .replacen("{}", "Migration", 1)
            .replace("{{", "{")
            .replace("}}", "}");
        let examples = [
            Example { question: "Q one?".into(), options: vec!["A".into(), "B".into()] },
            Example { question: "Q two?".into(), options: vec!["C".into(), "D".into(), "E".into()] },
        ];
        assert_eq!(user_message("Migration", &examples), expected);
        assert!(doc.contains(SYSTEM));
    }

    #[test]
    fn thirteen_topics() {
        let s = Survey::builtin(crate::data::survey::SurveyKind::Wvs).unwrap();
        let t = topics(&s);
        assert_eq!(t.len(), 13);
        assert_eq!(t[0].0, "Social Values, Attitudes & Stereotypes");
        assert!(t.iter().all(|(_, v)| v.len() >= N_REAL));
    }
}
