//! CultureSPA-style self-generated data (`deopt selfgen`): the model writes new survey questions
//! per WVS-7 topic, answers each one culture-unaware and culture-aware (P1) per country, and the
//! (question, culture-aware answer) pairs where the answer shifts are kept for training soft
//! prompts ([`data`]).
//!
//! A data directory holds:
//! - `selfgen.json`: the settings, the model's sha256, the deopt version;
//! - `generations.jsonl`: every generation, raw text, the examples it was shown, how it was read
//!   and why it was dropped (rewritten atomically after each round: the resume point);
//! - `questions.jsonl`, `survey.csv`: the accepted questions (the CSV in deopt's survey format,
//!   usable with `--survey-file`);
//! - `answers.jsonl`: per country and question, both answers and whether the pair is kept
//!   (rewritten atomically after each country);
//! - `summary.json`, `report.md`: counts per topic, per rejection reason, kept share per country,
//!   ten random kept examples.
//!
//! Every random draw (examples, sampling) comes from `--seed` and the (topic, index) of the
//! generation, so a resumed run writes the same files as an uninterrupted one.

pub mod data;
pub mod parse;
pub mod prompt;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _, Result};
use rand::seq::SliceRandom as _;
use rand::SeedableRng as _;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::data::country::Country;
use crate::data::survey::{Item, Survey, SurveyKind};
use crate::engine::sampler::{sample_many, Request, SampleConfig};
use crate::engine::{Engine, Plan};
use crate::fsutil::write_atomic;
use crate::llama::Model;
use crate::progress::StepLog;
use crate::prompt::baseline::{p1_system, unaware_system};
use crate::prompt::render::{ItemStyle, Layout, SoftPosition, TemplateKind};
use crate::prompt::softprompt::SoftPrompt;
use crate::run::seeds::splitmix64;
use crate::run::spec::ModelSpec;
use parse::{Parsed, Reject};

/// Settings file of a data directory.
pub const SETTINGS: &str = "selfgen.json";
/// Every generation, one JSON object per line.
pub const GENERATIONS: &str = "generations.jsonl";
/// Accepted questions.
pub const QUESTIONS: &str = "questions.jsonl";
/// Accepted questions in deopt's survey format.
pub const SURVEY: &str = "survey.csv";
/// Answers per country.
pub const ANSWERS: &str = "answers.jsonl";
/// Counts.
pub const SUMMARY: &str = "summary.json";
/// The short report.
pub const REPORT: &str = "report.md";
/// Every file deopt writes in a data directory (`--force` removes these and nothing else).
pub const FILES: [&str; 7] = [SETTINGS, GENERATIONS, QUESTIONS, SURVEY, ANSWERS, SUMMARY, REPORT];

/// How the questions are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AnswerKind {
    /// Option probabilities from the engine (argmax = the answer).
    #[default]
    Probs,
    /// Greedy generation after the cue, first integer parsed (CultureSPA's way).
    Generate,
}

/// Everything that defines a selfgen run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfgenSpec {
    /// Countries (ISO3).
    pub countries: Vec<String>,
    /// Questions generated per topic.
    pub per_topic: usize,
    /// Questions generated per topic in each round (later rounds see earlier rounds' questions
    /// as examples).
    pub per_round: usize,
    /// The seed.
    pub seed: u64,
    /// Sampling temperature.
    pub temperature: f64,
    /// Nucleus mass.
    pub top_p: f64,
    /// Most new tokens per question.
    pub max_tokens: usize,
    /// Longest question (characters) kept.
    pub max_chars: usize,
    /// How answers are read.
    pub answers: AnswerKind,
    /// Keep a pair when the expected answer moves by at least this much (instead of: when the
    /// most probable answer differs).
    pub min_shift: Option<f64>,
    /// Conversation layout.
    pub template: TemplateKind,
    /// The model.
    pub model: ModelSpec,
}

impl SelfgenSpec {
    /// Refuse settings that cannot work, naming the flag.
    ///
    /// # Errors
    /// The first bad setting.
    pub fn validate(&self) -> Result<()> {
        if self.countries.is_empty() {
            bail!("--countries: expected at least one country");
        }
        if self.per_topic == 0 {
            bail!("--per-topic 0: expected at least one question per topic");
        }
        if self.per_round == 0 {
            bail!("--per-round 0: expected at least one question per topic and round");
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            bail!("--temperature {}: expected a finite number >= 0", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("--top-p {}: expected a number in (0, 1]", self.top_p);
        }
        if self.max_tokens == 0 {
            bail!("--max-tokens 0: expected at least one token");
        }
        if let Some(s) = self.min_shift.filter(|s| !(*s > 0.0 && s.is_finite())) {
            bail!("--min-shift {s}: expected a positive number");
        }
        if self.min_shift.is_some() && self.answers == AnswerKind::Generate {
            bail!("--min-shift: needs option probabilities; not with --answers generate");
        }
        Ok(())
    }
}

/// `selfgen.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// deopt's version.
    pub deopt_version: String,
    /// The spec.
    pub spec: SelfgenSpec,
    /// The model file used.
    pub model_path: String,
    /// Its sha256.
    pub model_sha256: String,
}

/// One generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenRecord {
    /// Round (0-based).
    pub round: usize,
    /// Topic.
    pub topic: String,
    /// Index within the topic.
    pub index: usize,
    /// Ids of the examples shown (WVS ids and generated ids).
    pub examples: Vec<String>,
    /// The generated text (with the plain layout's primer in front).
    pub text: String,
    /// Tokens sampled.
    pub n_tokens: usize,
    /// What was read, if anything.
    pub parsed: Option<Parsed>,
    /// Why it was dropped.
    pub reject: Option<Reject>,
    /// Its id when accepted (`G0001`, ...).
    pub id: Option<String>,
}

/// An accepted question, as `questions.jsonl` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// Id.
    pub id: String,
    /// Topic.
    pub topic: String,
    /// The question.
    pub question: String,
    /// Options.
    pub options: Vec<String>,
    /// Example ids it was generated from.
    pub examples: Vec<String>,
    /// `json` or `tolerant`.
    pub via: String,
    /// Model.
    pub model_sha256: String,
    /// Seed.
    pub seed: u64,
}

impl Question {
    /// The question as a survey item (codes from 1).
    pub fn item(&self) -> Item {
        Item {
            id: self.id.clone(),
            text: self.question.clone(),
            options: self.options.clone(),
            first_code: 1,
            term: None,
            topic: self.topic.clone(),
            ordinal: true,
        }
    }
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// Option probabilities (`--answers probs`).
    pub probs: Option<Vec<f64>>,
    /// The answer's code (argmax, or the parsed integer); None when unparsable.
    pub answer: Option<i32>,
    /// Probability-weighted answer.
    pub expected: Option<f64>,
    /// Generated text (`--answers generate`).
    pub text: Option<String>,
}

/// A question answered for a country.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerRecord {
    /// Question id.
    pub id: String,
    /// Country (ISO3).
    pub country: String,
    /// Culture-unaware answer.
    pub unaware: Answer,
    /// Culture-aware (P1) answer.
    pub aware: Answer,
    /// Whether the pair is kept.
    pub kept: bool,
}

/// Counts for the summary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Model file name and sha256.
    pub model: String,
    /// Its sha256.
    pub model_sha256: String,
    /// Seed.
    pub seed: u64,
    /// Questions generated.
    pub generated: usize,
    /// Read as a question (JSON or tolerant).
    pub parsed: usize,
    /// Read as strict JSON.
    pub parsed_json: usize,
    /// Accepted after the filters.
    pub accepted: usize,
    /// Dropped, per reason.
    pub rejected: BTreeMap<String, usize>,
    /// Per topic: generated, accepted.
    pub topics: BTreeMap<String, (usize, usize)>,
    /// Per country: answered, kept, kept share.
    pub countries: BTreeMap<String, CountrySummary>,
    /// Tokens sampled in all.
    pub tokens_sampled: usize,
}

/// A country's selection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CountrySummary {
    /// Questions answered both ways.
    pub answered: usize,
    /// Pairs kept.
    pub kept: usize,
    /// kept / answered.
    pub share: f64,
}

fn seed_of(seed: u64, topic: usize, index: usize, what: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(seed ^ what) ^ topic as u64) ^ index as u64)
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(|e| {
                anyhow!("{}:{}: {e}: expected a line written by deopt selfgen", path.display(), n + 1)
            })
        })
        .collect()
}

fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut s = String::new();
    for r in rows {
        s.push_str(&serde_json::to_string(r)?);
        s.push('\n');
    }
    write_atomic(path, s.as_bytes())
}

/// Check an output directory before anything loads: a data directory without `--resume`, or a
/// directory with other files, is refused; `--force` removes deopt's own files.
///
/// # Errors
/// The directory is in use.
pub fn claim_dir(dir: &Path, force: bool) -> Result<()> {
    let shown = dir.display();
    if dir.is_file() {
        bail!("--out {shown}: is a file: expected a directory");
    }
    if !dir.exists() {
        return Ok(());
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {shown}"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    if entries.is_empty() {
        return Ok(());
    }
    let ours = |p: &PathBuf| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| FILES.contains(&n));
    if !force {
        if dir.join(SETTINGS).is_file() {
            bail!("--out {shown}: holds a selfgen run: continue it with --resume {shown}, or replace it with --force");
        }
        bail!("--out {shown}: is not empty: expected a new or empty directory (--force removes deopt's files only)");
    }
    for p in entries.iter().filter(|p| ours(p)) {
        std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// Read a data directory's settings.
///
/// # Errors
/// No or unreadable `selfgen.json`.
pub fn load_settings(dir: &Path) -> Result<Settings> {
    let path = dir.join(SETTINGS);
    if !path.is_file() {
        bail!("{}: no {SETTINGS}: expected a directory written by deopt selfgen", dir.display());
    }
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow!("{}: {e}: expected deopt selfgen's settings", path.display()))
}

/// Resolve the countries of `--countries`, refusing any without a culture name (P1 needs one).
///
/// # Errors
/// An unknown country or one without an adjective.
pub fn resolve_countries(names: &[String]) -> Result<Vec<Country>> {
    let mut out: Vec<Country> = Vec::new();
    for n in names {
        // The culture-aware prompt names the culture: a country deopt has no adjective for
        // cannot be asked about.
        let c = crate::data::load::resolve_country(n.trim()).map_err(|e| {
            anyhow!("--countries {}: no culture name to put in the culture-aware prompt: {e}", n.trim())
        })?;
        if c.adjective.trim().is_empty() {
            bail!(
                "--countries {}: {} has no culture name (adjective) in targets/countries.csv: the culture-aware prompt needs one",
                n.trim(),
                c.iso3
            );
        }
        if !out.iter().any(|o| o.iso3 == c.iso3) {
            out.push(c);
        }
    }
    Ok(out)
}

/// Run (or resume) selfgen in `dir`.
///
/// # Errors
/// Bad settings, model or engine failures, unwritable files.
pub fn run(spec: &SelfgenSpec, dir: &Path, resume: bool) -> Result<Summary> {
    spec.validate()?;
    let countries = resolve_countries(&spec.countries)?;
    let resolved = spec.model.resolve()?;
    if resume {
        let s = load_settings(dir)?;
        if s.model_sha256 != resolved.sha256 {
            bail!(
                "{}: the data was generated with model sha256 {} but {} has sha256 {}",
                dir.display(),
                s.model_sha256,
                resolved.path.display(),
                resolved.sha256
            );
        }
    } else {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let settings = Settings {
            deopt_version: env!("CARGO_PKG_VERSION").to_string(),
            spec: spec.clone(),
            model_path: resolved.path.display().to_string(),
            model_sha256: resolved.sha256.clone(),
        };
        write_atomic(&dir.join(SETTINGS), &serde_json::to_vec_pretty(&settings)?)?;
    }
    let model = spec.model.load_resolved(&resolved)?;
    let chat = crate::prompt::render::use_chat(&model, spec.template)?;
    let started = Instant::now();

    let wvs = Survey::builtin(SurveyKind::Wvs)?;
    let records = generate(spec, &model, chat, &wvs, dir)?;
    let questions = accepted(&records, spec, &resolved.sha256);
    write_jsonl(&dir.join(QUESTIONS), &questions)?;
    write_atomic(&dir.join(SURVEY), survey_csv(&questions)?.as_bytes())?;
    let answers = answer(spec, &model, &countries, &questions, dir)?;
    let summary = summarise(spec, &resolved, &records, &answers);
    write_atomic(&dir.join(SUMMARY), &serde_json::to_vec_pretty(&summary)?)?;
    write_atomic(&dir.join(REPORT), report(&summary, &questions, &answers, spec.seed).as_bytes())?;
    eprintln!("deopt: selfgen done in {:.0} s: {}", started.elapsed().as_secs_f64(), dir.display());
    Ok(summary)
}

/// The JSON object is complete: braces balanced after the first one (strings respected).
fn json_closed(text: &str) -> bool {
    let mut depth = 0i32;
    let mut opened = false;
    let mut in_str = false;
    let mut esc = false;
    for c in text.chars() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' if opened => in_str = true,
            '{' => {
                depth += 1;
                opened = true;
            }
            '}' if opened => {
                depth -= 1;
                if depth == 0 {
                    return true;
                }
            }
            _ => {}
        }
    }
    false
}

fn generate(
    spec: &SelfgenSpec,
    model: &Model,
    chat: bool,
    wvs: &Survey,
    dir: &Path,
) -> Result<Vec<GenRecord>> {
    let topics = prompt::topics(wvs);
    let path = dir.join(GENERATIONS);
    let mut records: Vec<GenRecord> = if path.is_file() { read_jsonl(&path)? } else { Vec::new() };
    let n_rounds = spec.per_topic.div_ceil(spec.per_round);
    let done_rounds = records.iter().map(|r| r.round + 1).max().unwrap_or(0);
    if done_rounds >= n_rounds {
        return Ok(records);
    }
    if done_rounds > 0 {
        eprintln!("deopt: resuming selfgen at round {} of {n_rounds}", done_rounds + 1);
    }
    let cfg = SampleConfig {
        max_tokens: spec.max_tokens,
        temperature: spec.temperature,
        top_p: spec.top_p,
        threads: spec.model.engine_config().threads,
        parallel: 64,
    };
    let log = StepLog::new(n_rounds as u64, "round");
    let real_texts: Vec<&str> = wvs.items.iter().map(|i| i.text.as_str()).collect();
    let primer = if chat { "" } else { prompt::PLAIN_PRIMER };
    for round in done_rounds..n_rounds {
        let t0 = Instant::now();
        let mut requests = Vec::new();
        let mut meta: Vec<(usize, usize, Vec<String>, Vec<String>)> = Vec::new();
        for (ti, (topic, items)) in topics.iter().enumerate() {
            let pool: Vec<&GenRecord> =
                records.iter().filter(|r| r.topic == *topic && r.id.is_some()).collect();
            for k in 0..spec.per_round {
                let index = round * spec.per_round + k;
                if index >= spec.per_topic {
                    break;
                }
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed_of(spec.seed, ti, index, 1));
                let gen: Vec<&&GenRecord> = pool
                    .choose_multiple(&mut rng, pool.len().min(prompt::N_EXAMPLES - prompt::N_REAL))
                    .collect();
                let real: Vec<&&Item> = items
                    .choose_multiple(&mut rng, items.len().min(prompt::N_EXAMPLES - gen.len()))
                    .collect();
                let mut examples: Vec<prompt::Example> =
                    real.iter().map(|i| prompt::Example::of_item(i)).collect();
                let mut ids: Vec<String> = real.iter().map(|i| i.id.clone()).collect();
                let mut texts: Vec<String> = real.iter().map(|i| i.text.clone()).collect();
                for g in &gen {
                    let p = g.parsed.as_ref().expect("accepted records are parsed");
                    examples
                        .push(prompt::Example { question: p.question.clone(), options: p.options.clone() });
                    ids.push(g.id.clone().expect("accepted"));
                    texts.push(p.question.clone());
                }
                let user = prompt::user_message(topic, &examples);
                let text = prompt::conversation(model, chat, &user)?;
                requests.push(Request {
                    tokens: prompt::tokens(model, &text)?,
                    seed: seed_of(spec.seed, ti, index, 2),
                });
                meta.push((ti, index, ids, texts));
            }
        }
        let stop = |t: &str| json_closed(&format!("{primer}{t}"));
        let (outs, stats) = sample_many(model, &requests, &cfg, &stop, &mut |_| {})?;
        let mut n_acc = records.iter().filter(|r| r.id.is_some()).count();
        let mut seen: BTreeSet<String> = records
            .iter()
            .filter(|r| r.id.is_some())
            .filter_map(|r| r.parsed.as_ref().map(|p| parse::words(&p.question).join(" ")))
            .collect();
        for ((ti, index, ids, shown), out) in meta.into_iter().zip(outs) {
            let text = format!("{primer}{}", out.text);
            let raw = parse::parse(&text);
            let checked = match &raw {
                None => Err(Reject::Unparsable),
                Some(p) => parse::check(p, spec.max_chars),
            };
            let verdict = checked.and_then(|p| {
                let key = parse::words(&p.question).join(" ");
                if seen.contains(&key) {
                    return Err(Reject::Duplicate);
                }
                let near = shown
                    .iter()
                    .map(String::as_str)
                    .chain(real_texts.iter().copied())
                    .any(|t| parse::similarity(&p.question, t) >= parse::NEAR_COPY);
                if near {
                    return Err(Reject::NearCopy);
                }
                seen.insert(key);
                Ok(p)
            });
            let (parsed, reject, id) = match verdict {
                Ok(p) => {
                    n_acc += 1;
                    (Some(p), None, Some(format!("G{n_acc:04}")))
                }
                Err(r) => (raw, Some(r), None),
            };
            records.push(GenRecord {
                round,
                topic: topics[ti].0.clone(),
                index,
                examples: ids,
                text,
                n_tokens: out.n_tokens,
                parsed,
                reject,
                id,
            });
        }
        write_jsonl(&path, &records)?;
        // Test hook: `DEOPT_TEST_STALL_SELFGEN=<round>` waits once that round (1-based) is
        // written, so a test can SIGKILL the run between rounds.
        if std::env::var("DEOPT_TEST_STALL_SELFGEN").ok() == Some((round + 1).to_string()) {
            eprintln!("deopt: test hook: stalled after round {}", round + 1);
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        let this: Vec<&GenRecord> = records.iter().filter(|r| r.round == round).collect();
        let acc = this.iter().filter(|r| r.id.is_some()).count();
        let secs = t0.elapsed().as_secs_f64();
        let msg = format!(
            "{} generated, {} accepted ({} accepted in all); {} tokens, {:.1} tok/s",
            this.len(),
            acc,
            n_acc,
            stats.sampled,
            stats.sampled as f64 / secs.max(1e-9)
        );
        log.step((round + 1) as u64, &msg, || {
            format!("selfgen round {}/{n_rounds}: {msg}, {secs:.0} s", round + 1)
        });
    }
    log.finish();
    Ok(records)
}

fn accepted(records: &[GenRecord], spec: &SelfgenSpec, sha: &str) -> Vec<Question> {
    records
        .iter()
        .filter_map(|r| {
            let id = r.id.clone()?;
            let p = r.parsed.as_ref()?;
            Some(Question {
                id,
                topic: r.topic.clone(),
                question: p.question.clone(),
                options: p.options.clone(),
                examples: r.examples.clone(),
                via: p.via.clone(),
                model_sha256: sha.to_string(),
                seed: spec.seed,
            })
        })
        .collect()
}

/// Accepted questions in deopt's survey CSV format.
///
/// # Errors
/// CSV writing failures.
pub fn survey_csv(questions: &[Question]) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["id", "text", "options", "first_code", "dimension", "coefficient", "topic", "ordinal"])?;
    for q in questions {
        w.write_record([
            q.id.as_str(),
            q.question.as_str(),
            &q.options.join(" | "),
            "1",
            "",
            "",
            q.topic.as_str(),
            "1",
        ])?;
    }
    Ok(String::from_utf8(w.into_inner().map_err(|e| anyhow!("{e}"))?)?)
}

/// The layout questions are answered in: CultureSPA's wording, no soft prompt, `system`.
pub fn answer_layout(template: TemplateKind, system: String) -> Layout {
    Layout {
        template,
        soft_position: SoftPosition::Start,
        with_soft: false,
        style: ItemStyle::Culturespa,
        system: Some(system),
        examples: None,
    }
}

fn answers_of(
    spec: &SelfgenSpec,
    engine: &mut Engine<'_>,
    model: &Model,
    items: &[&Item],
    system: String,
) -> Result<Vec<Answer>> {
    let plan = Plan::new(model, items, &answer_layout(spec.template, system))?;
    let empty = SoftPrompt::empty(model.n_embd_inp());
    match spec.answers {
        AnswerKind::Probs => {
            let scores = engine.score(&plan, &[&empty])?.remove(0);
            Ok(scores
                .iter()
                .zip(items)
                .map(|(s, it)| Answer {
                    probs: Some(s.probs.clone()),
                    answer: Some(s.argmax(it.first_code)),
                    expected: Some(s.expected(it.first_code)),
                    text: None,
                })
                .collect())
        }
        AnswerKind::Generate => {
            let texts = engine.generate(&plan, &empty, 16)?;
            Ok(texts
                .into_iter()
                .zip(items)
                .map(|(t, it)| {
                    let a = crate::score::metrics::parse_culturespa_answer(&t)
                        .filter(|a| it.in_range(f64::from(*a)));
                    Answer { probs: None, answer: a, expected: a.map(f64::from), text: Some(t) }
                })
                .collect())
        }
    }
}

/// Whether a pair is kept: the answer differs (or moved by `min_shift`).
pub fn shifted(unaware: &Answer, aware: &Answer, min_shift: Option<f64>) -> bool {
    match min_shift {
        Some(m) => match (unaware.expected, aware.expected) {
            (Some(u), Some(a)) => (a - u).abs() >= m,
            _ => false,
        },
        None => match (unaware.answer, aware.answer) {
            (Some(u), Some(a)) => u != a,
            _ => false,
        },
    }
}

fn answer(
    spec: &SelfgenSpec,
    model: &Model,
    countries: &[Country],
    questions: &[Question],
    dir: &Path,
) -> Result<Vec<AnswerRecord>> {
    let path = dir.join(ANSWERS);
    let mut rows: Vec<AnswerRecord> = if path.is_file() { read_jsonl(&path)? } else { Vec::new() };
    let todo: Vec<&Country> =
        countries.iter().filter(|c| !rows.iter().any(|r| r.country == c.iso3)).collect();
    if todo.is_empty() || questions.is_empty() {
        return Ok(rows);
    }
    let items: Vec<Item> = questions.iter().map(Question::item).collect();
    let refs: Vec<&Item> = items.iter().collect();
    let mut engine = Engine::new(model, spec.model.engine_config())?;
    let log = StepLog::new(todo.len() as u64 + 1, "answers");
    let t0 = Instant::now();
    let unaware = answers_of(spec, &mut engine, model, &refs, unaware_system(SurveyKind::Wvs))?;
    log.step(1, "culture-unaware", || {
        format!(
            "selfgen answers: {} questions culture-unaware, {:.0} s",
            items.len(),
            t0.elapsed().as_secs_f64()
        )
    });
    for (k, c) in todo.iter().enumerate() {
        let t = Instant::now();
        let aware = answers_of(spec, &mut engine, model, &refs, p1_system(c, SurveyKind::Wvs))?;
        let mut kept = 0;
        for ((q, u), a) in questions.iter().zip(&unaware).zip(aware) {
            let keep = shifted(u, &a, spec.min_shift);
            kept += usize::from(keep);
            rows.push(AnswerRecord {
                id: q.id.clone(),
                country: c.iso3.clone(),
                unaware: u.clone(),
                aware: a,
                kept: keep,
            });
        }
        write_jsonl(&path, &rows)?;
        let msg = format!("{}: {kept} of {} kept", c.iso3, questions.len());
        log.step((k + 2) as u64, &msg, || {
            format!("selfgen answers {msg}, {:.0} s", t.elapsed().as_secs_f64())
        });
    }
    log.finish();
    Ok(rows)
}

fn summarise(
    spec: &SelfgenSpec,
    resolved: &crate::provision::model_store::ResolvedModel,
    records: &[GenRecord],
    answers: &[AnswerRecord],
) -> Summary {
    let mut s = Summary {
        model: resolved.display_name.clone(),
        model_sha256: resolved.sha256.clone(),
        seed: spec.seed,
        generated: records.len(),
        ..Summary::default()
    };
    for r in records {
        let parsed = r.parsed.is_some() && r.reject != Some(Reject::Unparsable);
        s.parsed += usize::from(parsed);
        s.parsed_json += usize::from(parsed && r.parsed.as_ref().is_some_and(|p| p.via == "json"));
        s.accepted += usize::from(r.id.is_some());
        s.tokens_sampled += r.n_tokens;
        let t = s.topics.entry(r.topic.clone()).or_default();
        t.0 += 1;
        t.1 += usize::from(r.id.is_some());
        if let Some(why) = r.reject {
            *s.rejected.entry(why.name().to_string()).or_default() += 1;
        }
    }
    for c in &spec.countries {
        let iso = crate::data::load::resolve_country(c).map(|c| c.iso3).unwrap_or_else(|_| c.clone());
        let mine: Vec<&AnswerRecord> = answers.iter().filter(|a| a.country == iso).collect();
        let kept = mine.iter().filter(|a| a.kept).count();
        let answered = mine.iter().filter(|a| a.unaware.answer.is_some() && a.aware.answer.is_some()).count();
        s.countries.insert(
            iso,
            CountrySummary {
                answered,
                kept,
                share: if answered > 0 { kept as f64 / answered as f64 } else { 0.0 },
            },
        );
    }
    s
}

fn report(s: &Summary, questions: &[Question], answers: &[AnswerRecord], seed: u64) -> String {
    use std::fmt::Write as _;
    let mut r = String::new();
    let _ = writeln!(r, "# Self-generated data\n");
    let _ = writeln!(
        r,
        "Model {} (sha256 {}), seed {}.\n",
        s.model,
        &s.model_sha256[..12.min(s.model_sha256.len())],
        s.seed
    );
    let _ = writeln!(
        r,
        "{} questions generated, {} read ({} as strict JSON), {} accepted.\n",
        s.generated, s.parsed, s.parsed_json, s.accepted
    );
    let _ = writeln!(r, "| rejected because | count |\n|---|---:|");
    for why in Reject::ALL {
        let _ = writeln!(r, "| {} | {} |", why.name(), s.rejected.get(why.name()).copied().unwrap_or(0));
    }
    let _ = writeln!(r, "\n| topic | generated | accepted |\n|---|---:|---:|");
    for (t, (g, a)) in &s.topics {
        let _ = writeln!(r, "| {t} | {g} | {a} |");
    }
    let _ = writeln!(r, "\n| country | answered | kept | kept share |\n|---|---:|---:|---:|");
    for (c, x) in &s.countries {
        let _ = writeln!(r, "| {c} | {} | {} | {:.1}% |", x.answered, x.kept, 100.0 * x.share);
    }
    let kept: Vec<&AnswerRecord> = answers.iter().filter(|a| a.kept).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed_of(seed, 0, 0, 3));
    let shown: Vec<&&AnswerRecord> = kept.choose_multiple(&mut rng, kept.len().min(10)).collect();
    let _ = writeln!(r, "\n## Ten random kept pairs\n");
    if shown.is_empty() {
        let _ = writeln!(r, "None kept.");
    }
    for a in shown {
        let Some(q) = questions.iter().find(|q| q.id == a.id) else { continue };
        let opt = |x: Option<i32>| {
            x.and_then(|k| q.options.get((k - 1) as usize).map(|o| format!("{k}.{o}")))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(
            r,
            "- **{}** ({}, {}): {}\n  Options: {}\n  unaware: {}; aware: {}",
            a.id,
            a.country,
            q.topic,
            q.question,
            q.options.iter().enumerate().map(|(k, o)| format!("{}.{o}", k + 1)).collect::<Vec<_>>().join(" "),
            opt(a.unaware.answer),
            opt(a.aware.answer)
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_object_closes() {
        assert!(!json_closed("{\"Question\": \"a {b\""));
        assert!(json_closed("{\"Question\": \"a {b}\", \"Options\": [\"x\"]} trailing"));
        assert!(!json_closed("no braces"));
        assert!(json_closed("```json\n{\"a\": {\"b\": 1}}"));
    }

    #[test]
    fn selection_keeps_exactly_the_shifted_pairs() {
        let a = |answer: i32, expected: f64| Answer {
            probs: None,
            answer: Some(answer),
            expected: Some(expected),
            text: None,
        };
        assert!(shifted(&a(1, 1.4), &a(2, 1.6), None));
        assert!(!shifted(&a(2, 2.0), &a(2, 2.4), None));
        assert!(shifted(&a(2, 2.0), &a(2, 2.4), Some(0.3)));
        assert!(!shifted(&a(1, 1.4), &a(2, 1.6), Some(0.3)));
        let none = Answer { probs: None, answer: None, expected: None, text: Some("?".into()) };
        assert!(!shifted(&none, &a(2, 2.0), None));
    }

    #[test]
    fn survey_csv_reads_back() {
        let q = Question {
            id: "G0001".into(),
            topic: "Migration".into(),
            question: "Should \"guests\", workers stay?".into(),
            options: vec!["Yes".into(), "No".into(), "Don't know".into()],
            examples: vec![],
            via: "json".into(),
            model_sha256: "x".into(),
            seed: 1,
        };
        let text = survey_csv(std::slice::from_ref(&q)).unwrap();
        let s = Survey::parse("survey.csv", &text).unwrap();
        assert_eq!(s.items[0], q.item());
    }
}
