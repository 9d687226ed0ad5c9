//! From the engine's answer distributions to a fitness (lower is better): VSM13 indices and
//! their loss against Hofstede targets, or minus a cultural alignment score for WVS.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

use crate::data::country::Country;
use crate::data::dimension::DimVec;
use crate::data::survey::Survey;
use crate::data::targets::{Distribution, HofstedeRow};
use crate::score::item_score::ItemScore;
use crate::score::metrics::{self, CasReport, Constants, DimensionLoss, LossKind, ModelAnswer};

/// How an item's answer distribution becomes one answer value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    /// Probability-weighted answer: smooth in the prompt, the default for optimisation.
    #[default]
    Expected,
    /// The most probable option.
    Argmax,
    /// Greedy generation after the cue, then the first integer in the text (CultureSPA's
    /// parsing), for faithful comparison with generation-based evaluations. `deopt eval` only.
    Generate,
}

/// Which WVS score is the fitness (as minus the score).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CasMetric {
    /// CultureSPA's eq. (1).
    #[default]
    Cas,
    /// Per-question normalised CAS.
    PerQuestion,
    /// Earth mover's distance to the country's answer distribution (uses the model's distribution).
    Distribution,
    /// Distance of the expected answer to the country's mean answer.
    ExpectedAnswer,
}

/// What answers are scored against.
#[derive(Debug, Clone)]
pub enum Target {
    /// Hofstede's six dimensions (VSM13).
    Hofstede {
        /// The country's scores.
        row: HofstedeRow,
        /// Index constants.
        constants: Constants,
        /// Loss kind.
        loss: LossKind,
    },
    /// WVS-7 answer distributions.
    Wvs {
        /// Item id (upper case) -> the country's distribution.
        reference: BTreeMap<String, Distribution>,
        /// Which score is the fitness.
        metric: CasMetric,
    },
    /// Self-generated questions and the culture-aware answers kept for the country
    /// (`deopt selfgen`): the fitness is the mean cross-entropy of the model's option
    /// distributions to these targets.
    Selfgen {
        /// Item id -> target distribution over its options (one-hot at the kept answer).
        targets: BTreeMap<String, Vec<f64>>,
        /// The data directory, for messages.
        data: std::path::PathBuf,
    },
}

/// A survey, a country and its target: everything needed to turn answers into a fitness.
#[derive(Debug, Clone)]
pub struct Task {
    /// The instrument.
    pub survey: Survey,
    /// The country.
    pub country: Country,
    /// The target.
    pub target: Target,
    /// How distributions become answers.
    pub mode: AnswerMode,
}

/// The score of one set of answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Lower is better: the loss (VSM13) or minus the chosen score (WVS).
    pub fitness: f64,
    /// Answer value per scored item, in the order given.
    pub answers: Vec<f64>,
    /// VSM13: the model's six indices.
    pub dimensions: Option<DimVec>,
    /// VSM13: the loss and which dimensions it used.
    pub loss: Option<DimensionLoss>,
    /// WVS: all alignment scores.
    pub cas: Option<CasReport>,
}

impl Task {
    /// Score answer distributions for the survey items at `items` (indices into
    /// `survey.items`; `scores[k]` belongs to `items[k]`).
    ///
    /// # Errors
    /// If nothing can be scored (no dimension with a target, no item with a reference).
    pub fn evaluate(&self, items: &[usize], scores: &[ItemScore]) -> Result<Evaluation> {
        let answers: Vec<Option<f64>> = items
            .iter()
            .zip(scores)
            .map(|(&i, s)| {
                let first = self.survey.items[i].first_code;
                match self.mode {
                    AnswerMode::Expected => Ok(Some(s.expected(first))),
                    AnswerMode::Argmax => Ok(Some(f64::from(s.argmax(first)))),
                    AnswerMode::Generate => {
                        Err(anyhow!("answer mode 'generate' needs generated texts (Task::evaluate_texts)"))
                    }
                }
            })
            .collect::<Result<_>>()?;
        self.evaluate_answers(items, &answers, Some(scores))
    }

    /// Score generated texts: each parsed as CultureSPA does (first integer 0-10); unparsable
    /// answers count as unanswered (VSM13: their dimensions are skipped; WVS: dropped).
    pub fn evaluate_texts(&self, items: &[usize], texts: &[String]) -> Result<Evaluation> {
        let answers: Vec<Option<f64>> =
            texts.iter().map(|t| metrics::parse_culturespa_answer(t).map(f64::from)).collect();
        self.evaluate_answers(items, &answers, None)
    }

    /// Score answer values (None = unanswered), with the option distributions when known.
    pub fn evaluate_answers(
        &self,
        items: &[usize],
        answers: &[Option<f64>],
        scores: Option<&[ItemScore]>,
    ) -> Result<Evaluation> {
        match &self.target {
            Target::Hofstede { row, constants, loss } => {
                let mut means = vec![None; self.survey.items.len()];
                for (&i, a) in items.iter().zip(answers) {
                    means[i] = *a;
                }
                let dims = metrics::vsm_indices(&self.survey, &means, constants);
                let l = metrics::dimension_loss(&dims, &row.values(), *loss).map_err(|e| anyhow!("{e}"))?;
                let answers = answers.iter().map(|a| a.unwrap_or(f64::NAN)).collect();
                Ok(Evaluation { fitness: l.loss, answers, dimensions: Some(dims), loss: Some(l), cas: None })
            }
            Target::Wvs { reference, metric } => {
                let model: Vec<(String, ModelAnswer)> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(k, &i)| {
                        let value = answers[k]?;
                        let probs = match (self.mode, scores) {
                            (AnswerMode::Expected, Some(s)) => Some(s[k].probs.clone()),
                            _ => None,
                        };
                        Some((self.survey.items[i].id.clone(), ModelAnswer { value, probs }))
                    })
                    .collect();
                let r = metrics::cas(&self.survey, reference, &model).map_err(|e| anyhow!("{e}"))?;
                let score = match metric {
                    CasMetric::Cas => r.cas,
                    CasMetric::PerQuestion => r.cas_per_question,
                    CasMetric::Distribution => r.distribution_score,
                    CasMetric::ExpectedAnswer => r.expected_answer_score,
                };
                let answers = answers.iter().map(|a| a.unwrap_or(f64::NAN)).collect();
                Ok(Evaluation { fitness: -score, answers, dimensions: None, loss: None, cas: Some(r) })
            }
            Target::Selfgen { targets, data } => {
                let scores = scores.filter(|_| self.mode != AnswerMode::Generate).ok_or_else(|| {
                    anyhow!(
                        "answers {:?}: the self-generated-data loss needs option probabilities",
                        self.mode
                    )
                })?;
                let mut ts: Vec<&[f64]> = Vec::with_capacity(items.len());
                for &i in items {
                    let id = &self.survey.items[i].id;
                    let t = targets
                        .get(id)
                        .ok_or_else(|| anyhow!("{}: no kept answer for question {id}", data.display()))?;
                    ts.push(t);
                }
                let ce = crate::score::gradient::cross_entropy(&ts, scores);
                let answers = answers.iter().map(|a| a.unwrap_or(f64::NAN)).collect();
                Ok(Evaluation { fitness: ce.value, answers, dimensions: None, loss: None, cas: None })
            }
        }
    }
}
