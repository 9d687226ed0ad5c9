//! Prompt rendering: where the soft prompt, the instruction, the item and the answer cue go.
//!
//! A rendered item is two strings, the text before the soft prompt and the text after it (up to
//! and including the answer cue). The engine tokenizes both and puts the soft prompt's rows in
//! between. The user message follows CultureSPA's template (../PROMPTS in targets/culturespa),
//! so the baselines P1-P3 are faithful.

use serde::{Deserialize, Serialize};

use crate::data::survey::Item;

/// Marker standing for the soft prompt inside a chat message before the template is applied.
/// A private-use character, so no real text contains it.
pub const SOFT_MARKER: &str = "\u{E000}";

/// How the conversation is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TemplateKind {
    /// The model's chat template if its GGUF has one, else plain.
    #[default]
    Auto,
    /// The model's chat template (error if it has none).
    Chat,
    /// Plain text: system, user message, answer cue.
    Plain,
}

/// Where the soft prompt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SoftPosition {
    /// Before the instruction and the item (the seed paper: soft prompt + instruction + item).
    #[default]
    Start,
    /// After the instruction, before the item.
    AfterInstruction,
    /// After the item, just before the answer cue.
    BeforeAnswer,
}

/// The instruction that opens every user message (CultureSPA's wording).
pub const INSTRUCTION: &str = "Given a #Question and #Options, choose the option that best aligns with your own value system to answer the question.";
/// The request that closes every user message (CultureSPA's wording).
pub const CLOSING: &str = "Please return the number of the selected option only.";
/// The answer cue: ends in a space so that the answer digits are the next tokens.
pub const CUE: &str = "Answer: ";

/// Everything that decides how an item becomes text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// Chat template or plain.
    pub template: TemplateKind,
    /// Where the soft prompt goes.
    pub soft_position: SoftPosition,
    /// Whether there is a soft prompt at all (false for the text-only baselines).
    pub with_soft: bool,
    /// How items are worded.
    pub style: ItemStyle,
    /// Optional system message (the baselines put their culture prompt here).
    pub system: Option<String>,
    /// Optional in-context examples per item id, placed between the instruction and the item
    /// (baseline P3).
    pub examples: Option<std::collections::BTreeMap<String, String>>,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            template: TemplateKind::Auto,
            soft_position: SoftPosition::Start,
            with_soft: true,
            style: ItemStyle::Compact,
            system: None,
            examples: None,
        }
    }
}

/// Options on one line as CultureSPA writes them: `1.Very important 2.Rather important`.
pub fn options_line(item: &Item) -> String {
    item.options
        .iter()
        .enumerate()
        .map(|(k, o)| format!("{}.{}", item.code(k), o))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How an item is worded in the user message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ItemStyle {
    /// Instruction, options, then the question: items with the same options (most of VSM13's)
    /// share everything up to their question, so the engine computes that once.
    #[default]
    Compact,
    /// CultureSPA's wording: instruction, question, options, closing request.
    Culturespa,
}

/// The instruction of the compact style.
pub const COMPACT_INSTRUCTION: &str =
    "Choose the option that best aligns with your own value system. Reply with the number of the option only.";

/// The system and user messages for an item, with [`SOFT_MARKER`] where the soft prompt goes.
pub fn messages(layout: &Layout, item: &Item) -> (Option<String>, String) {
    let soft = |p: SoftPosition| if layout.with_soft && layout.soft_position == p { SOFT_MARKER } else { "" };
    let mut user = String::new();
    user.push_str(soft(SoftPosition::Start));
    match layout.style {
        ItemStyle::Compact => {
            user.push_str(COMPACT_INSTRUCTION);
            user.push('\n');
            if let Some(ex) = layout.examples.as_ref().and_then(|m| m.get(&item.id)) {
                user.push_str("Here are some answered questions, which can reflect your value system:\n");
                user.push_str(ex);
                user.push('\n');
            }
            user.push_str(soft(SoftPosition::AfterInstruction));
            user.push_str("Options: ");
            user.push_str(&options_line(item));
            user.push_str("\nQuestion: ");
            user.push_str(&item.text);
        }
        ItemStyle::Culturespa => {
            user.push_str(INSTRUCTION);
            user.push('\n');
            let ex = layout.examples.as_ref().and_then(|m| m.get(&item.id));
            if let Some(ex) = ex {
                user.push_str("Here are some answered questions, which can reflect your value system:\n");
                user.push_str(ex);
                user.push_str("\nBelow are the #Question and #Options. ");
                user.push_str(CLOSING);
                user.push('\n');
            }
            user.push_str(soft(SoftPosition::AfterInstruction));
            user.push_str("#Question: ");
            user.push_str(&item.text);
            user.push_str("\n#Options: ");
            user.push_str(&options_line(item));
            if ex.is_none() {
                user.push('\n');
                user.push_str(CLOSING);
            } else {
                user.push_str("\n#Answer:");
            }
        }
    }
    user.push_str(soft(SoftPosition::BeforeAnswer));
    // With a system message, a soft prompt at the start goes before it, so that it leads.
    match &layout.system {
        Some(sys) if layout.with_soft && layout.soft_position == SoftPosition::Start => {
            (Some(format!("{SOFT_MARKER}{sys}")), user.replacen(SOFT_MARKER, "", 1))
        }
        Some(sys) => (Some(sys.clone()), user),
        None => (None, user),
    }
}

/// Whether a layout uses the model's chat template: `auto` when the GGUF has one.
///
/// # Errors
/// `chat` asked for a model without a template.
pub fn use_chat(model: &crate::llama::Model, template: TemplateKind) -> anyhow::Result<bool> {
    match template {
        TemplateKind::Plain => Ok(false),
        TemplateKind::Auto => Ok(model.chat_template().is_some()),
        TemplateKind::Chat if model.chat_template().is_none() => {
            anyhow::bail!("template 'chat': the model has no chat template (use the plain layout)")
        }
        TemplateKind::Chat => Ok(true),
    }
}

/// The whole conversation as text, ending with the answer cue: the model's chat template
/// (with the cue opening the model's turn) or the plain layout.
///
/// # Errors
/// The chat template cannot be applied.
pub fn conversation(
    model: &crate::llama::Model,
    chat: bool,
    system: Option<&str>,
    user: &str,
) -> anyhow::Result<String> {
    if !chat {
        return Ok(plain_text(system, user));
    }
    let mut msgs: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = system {
        msgs.push(("system", s));
    }
    msgs.push(("user", user));
    let mut t =
        anyhow::Context::context(model.apply_chat_template(&msgs, true), "applying the chat template")?;
    t.push_str(CUE);
    Ok(t)
}

/// Plain layout: system message, blank line, user message, newline, cue.
pub fn plain_text(system: Option<&str>, user: &str) -> String {
    let mut s = String::new();
    if let Some(sys) = system {
        s.push_str(sys);
        s.push_str("\n\n");
    }
    s.push_str(user);
    s.push('\n');
    s.push_str(CUE);
    s
}

/// Split a rendered text at the soft-prompt marker: (before, after). Without a marker (no soft
/// prompt in this layout), everything is "before".
pub fn split_at_marker(text: &str) -> (String, String) {
    match text.split_once(SOFT_MARKER) {
        Some((a, b)) => (a.to_string(), b.to_string()),
        None => (text.to_string(), String::new()),
    }
}
