//! `deopt score`: score a file of answers against a country's targets (no model involved).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use crate::data::answers;
use crate::data::dimension::Dimension;
use crate::data::load;
use crate::data::survey::SurveyKind;
use crate::data::targets::WvsChoice;
use crate::score::metrics::{self, Constants, LossKind, ModelAnswer};

/// Score survey answers from a file.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    #[command(subcommand)]
    pub survey: ScoreSurvey,
}

#[derive(Debug, clap::Subcommand)]
pub enum ScoreSurvey {
    /// Hofstede indices from VSM13 answers, against the country's Hofstede scores
    Vsm13(ScoreVsmArgs),
    /// Cultural alignment (CAS and variants) of WVS-7 answers against the country's answers
    Wvs(ScoreWvsArgs),
}

#[derive(Debug, clap::Args)]
pub struct ScoreVsmArgs {
    /// Country: ISO3 code, English name or alias (see `deopt countries`)
    #[arg(long)]
    pub country: String,
    /// CSV of `item,answer` rows; answers 1-5, fractional allowed (e.g. a mean or expected value)
    #[arg(long, value_name = "FILE")]
    pub answers: PathBuf,
    /// Use this instrument file instead of the built-in VSM13 (same format, e.g. a translation)
    #[arg(long, value_name = "FILE")]
    pub survey_file: Option<PathBuf>,
    /// Index constants C: one number for all six, or e.g. PDI=20,IDV=50
    #[arg(long, default_value_t = Constants::default())]
    pub constants: Constants,
    /// Loss between model and target dimensions
    #[arg(long, value_enum, default_value_t = LossKind::L2)]
    pub loss: LossKind,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ScoreWvsArgs {
    /// Country: ISO3 code, English name or alias (see `deopt countries --survey wvs`)
    #[arg(long)]
    pub country: String,
    /// CSV of `item,answer` rows, or CultureSPA's result JSON ([{"Q_id":..,"answer":".."}])
    #[arg(long, value_name = "FILE")]
    pub responses: PathBuf,
    /// Use this instrument file instead of the built-in WVS-7 items
    #[arg(long, value_name = "FILE")]
    pub survey_file: Option<PathBuf>,
    /// Which WVS data set gives the country's answers
    #[arg(long, value_enum, default_value_t = WvsChoice::Auto)]
    pub wvs_source: WvsChoice,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: ScoreArgs) -> Result<()> {
    match args.survey {
        ScoreSurvey::Vsm13(a) => run_vsm(a),
        ScoreSurvey::Wvs(a) => run_wvs(a),
    }
}

fn run_vsm(args: ScoreVsmArgs) -> Result<()> {
    let survey = load::load_survey(SurveyKind::Vsm13, args.survey_file.as_deref())?;
    let country = load::resolve_country(&args.country)?;
    let target_row = load::hofstede_target(&country)?;
    let file = answers::read_csv(&args.answers, &survey)?;
    let mut means = vec![None; survey.items.len()];
    for (id, v) in &file.answers {
        if let Some(i) = survey.position(id) {
            means[i] = Some(*v);
        }
    }
    let model = metrics::vsm_indices(&survey, &means, &args.constants);
    let target = target_row.values();
    let loss = metrics::dimension_loss(&model, &target, args.loss)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.answers.display()))?;
    // Items a dimension needs but the file lacks, to explain a missing index.
    let missing_for = |d: Dimension| -> Vec<String> {
        survey
            .items
            .iter()
            .zip(&means)
            .filter(|(it, m)| m.is_none() && it.term.is_some_and(|(x, _)| x == d))
            .map(|(it, _)| it.id.clone())
            .collect()
    };
    let skipped: Vec<(Dimension, String)> = loss
        .skipped
        .iter()
        .map(|s| {
            let missing = missing_for(s.dimension);
            let reason = if missing.is_empty() {
                format!("{} for {}", s.reason, country.iso3)
            } else {
                format!("answers file lacks item(s) {}", missing.join(", "))
            };
            (s.dimension, reason)
        })
        .collect();

    let mut out = std::io::stdout().lock();
    if args.json {
        let dims: Vec<_> = Dimension::ALL
            .iter()
            .map(|d| {
                let i = d.index();
                json!({
                    "dimension": d.code(),
                    "model": model[i],
                    "target": target[i],
                    "target_source": target_row.cell(*d).map(|c| c.source),
                    "error": model[i].zip(target[i]).map(|(m, t)| m - t),
                })
            })
            .collect();
        let obj = json!({
            "survey": survey.name,
            "survey_source": survey.source,
            "country": country.iso3,
            "country_name": country.name,
            "answers_file": args.answers.display().to_string(),
            "items_answered": file.answers.len(),
            "constants": Dimension::ALL.iter().map(|d| (d.code().to_string(), json!(args.constants.0[d.index()]))).collect::<serde_json::Map<_, _>>(),
            "loss_kind": args.loss,
            "loss": loss.loss,
            "dimensions_used": loss.used,
            "dimensions": dims,
            "skipped": skipped.iter().map(|(d, r)| json!({"dimension": d.code(), "reason": r})).collect::<Vec<_>>(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&obj)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{} answers from {} ({} of {} items) vs {} ({})",
        survey.name,
        args.answers.display(),
        file.answers.len(),
        survey.items.len(),
        country.iso3,
        country.name
    )?;
    writeln!(out, "index constants C: {}", args.constants)?;
    writeln!(out, "{:<5} {:>8} {:>8} {:>8}  target source", "dim", "model", "target", "error")?;
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    for d in Dimension::ALL {
        let i = d.index();
        let src = target_row.cell(d).map_or("missing", |c| match c.source {
            crate::data::targets::CellSource::Official => "official 2015",
            crate::data::targets::CellSource::Website => "website",
            crate::data::targets::CellSource::Estimate => "website estimate",
        });
        writeln!(
            out,
            "{:<5} {:>8} {:>8} {:>8}  {}",
            d.code(),
            fmt(model[i]),
            fmt(target[i]),
            fmt(model[i].zip(target[i]).map(|(m, t)| m - t)),
            src
        )?;
    }
    let used: Vec<&str> = loss.used.iter().map(|d| d.code()).collect();
    writeln!(out, "loss ({} over {}): {:.4}", args.loss, used.join(" "), loss.loss)?;
    for (d, reason) in &skipped {
        writeln!(out, "skipped {d}: {reason}")?;
    }
    Ok(())
}

fn run_wvs(args: ScoreWvsArgs) -> Result<()> {
    let survey = load::load_survey(SurveyKind::Wvs, args.survey_file.as_deref())?;
    let country = load::resolve_country(&args.country)?;
    let reference = load::wvs_target(&country, args.wvs_source)?;
    load::check_reference(&survey, &reference)?;
    let file = answers::read_responses(&args.responses, &survey)?;
    let model: Vec<(String, ModelAnswer)> =
        file.answers.iter().map(|(id, v)| (id.clone(), ModelAnswer { value: *v, probs: None })).collect();
    let report = metrics::cas(&survey, &reference, &model)
        .map_err(|e| anyhow::anyhow!("{}: {e} {}", args.responses.display(), country.iso3))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let obj = json!({
            "survey": survey.name,
            "country": country.iso3,
            "country_name": country.name,
            "responses_file": args.responses.display().to_string(),
            "cas": report.cas,
            "cas_per_question": report.cas_per_question,
            "distribution_score": report.distribution_score,
            "expected_answer_score": report.expected_answer_score,
            "scored": report.scored,
            "no_reference": report.no_reference,
            "unparsable": file.unparsable,
            "out_of_range": report.out_of_range,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&obj)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{} responses from {} vs {} ({})",
        survey.name,
        args.responses.display(),
        country.iso3,
        country.name
    )?;
    writeln!(out, "CAS (CultureSPA eq. 1)      {:>7.2}", report.cas)?;
    writeln!(out, "CAS, per-question normalised {:>6.2}", report.cas_per_question)?;
    writeln!(out, "distribution score (EMD)    {:>7.2}", report.distribution_score)?;
    writeln!(out, "expected-answer score       {:>7.2}", report.expected_answer_score)?;
    writeln!(
        out,
        "questions scored {}, no reference answer {}, unparsable {}, out of range {}",
        report.scored, report.no_reference, file.unparsable, report.out_of_range
    )?;
    Ok(())
}
