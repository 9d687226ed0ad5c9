//! Metrics that turn survey answers into a fitness: VSM13 dimension indices and their loss
//! against Hofstede targets, and the cultural alignment score (CAS) for WVS answers.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Serialize;

use crate::data::dimension::{DimVec, Dimension};
use crate::data::survey::Survey;
use crate::data::targets::Distribution;

/// Default index constant C for every dimension.
///
/// The VSM 2013 manual leaves C to the user ("to shift scores into a range"). deopt uses 50 for
/// all six: each index is a sum of differences between item means, so a respondent who answers
/// the middle option everywhere scores exactly C, and 50 puts that neutral respondent in the
/// middle of Hofstede's 0-100 country scale. Printed in every report; change with `--constants`.
pub const DEFAULT_CONSTANT: f64 = 50.0;

/// The constants C(pd), C(ic), C(mf), C(ua), C(ls), C(ir), in canonical dimension order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Constants(pub [f64; 6]);

impl Default for Constants {
    fn default() -> Self {
        Constants([DEFAULT_CONSTANT; 6])
    }
}

impl FromStr for Constants {
    type Err = String;

    /// `50` (all six), or `PDI=20,IDV=50,...` (unnamed dimensions keep the default).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use crate::data::input_error::clip;
        let parse_num = |v: &str| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.abs() <= MAX_CONSTANT)
                .ok_or_else(|| format!("'{}': expected a number within +-{MAX_CONSTANT}", clip(v)))
        };
        if !s.contains('=') {
            return Ok(Constants([parse_num(s)?; 6]));
        }
        let mut c = Constants::default();
        let mut given = [false; 6];
        for part in s.split(',') {
            let (d, v) = part
                .split_once('=')
                .ok_or_else(|| format!("'{}': expected DIM=NUMBER, e.g. PDI=50", clip(part)))?;
            let i = Dimension::from_str(d)?.index();
            if std::mem::replace(&mut given[i], true) {
                return Err(format!("{}: given twice: expected each dimension once", Dimension::ALL[i]));
            }
            c.0[i] = parse_num(v)?;
        }
        Ok(c)
    }
}

/// Largest index constant (absolute) `--constants` accepts; Hofstede's scale is 0-100.
pub const MAX_CONSTANT: f64 = 1e6;

impl std::fmt::Display for Constants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> =
            Dimension::ALL.iter().map(|d| format!("{}={}", d, self.0[d.index()])).collect();
        f.write_str(&parts.join(","))
    }
}

/// VSM13 indices from per-item mean answers (`means[i]` for `survey.items[i]`, None if the item
/// was not answered). A dimension is None when any of its items is missing, or when the survey
/// has no items for it. Index = C + sum over its items of coefficient x mean.
pub fn vsm_indices(survey: &Survey, means: &[Option<f64>], constants: &Constants) -> DimVec {
    let mut sums = [Some(0.0); 6];
    let mut seen = [false; 6];
    for (item, m) in survey.items.iter().zip(means) {
        if let Some((d, coef)) = item.term {
            let i = d.index();
            seen[i] = true;
            sums[i] = match (sums[i], m) {
                (Some(s), Some(m)) => Some(s + coef * m),
                _ => None,
            };
        }
    }
    let mut out = [None; 6];
    for d in Dimension::ALL {
        let i = d.index();
        if seen[i] {
            out[i] = sums[i].map(|s| s + constants.0[i]);
        }
    }
    out
}

/// Item means (1-5) that reproduce the given indices exactly: the inverse of [`vsm_indices`].
///
/// For each dimension the answer to each of its items is `mid + lambda * coefficient`, the
/// smallest change from the middle answer that hits the target. Items without a term, and
/// dimensions without a target, get the middle answer. Errors if a target needs an answer
/// outside the scale.
pub fn vsm_inverse(survey: &Survey, targets: &DimVec, constants: &Constants) -> Result<Vec<f64>, String> {
    let mut out: Vec<f64> =
        survey.items.iter().map(|it| f64::from(it.first_code + it.last_code()) / 2.0).collect();
    for d in Dimension::ALL {
        let Some(target) = targets[d.index()] else {
            continue;
        };
        let terms: Vec<(usize, f64)> = survey
            .items
            .iter()
            .enumerate()
            .filter_map(|(i, it)| it.term.filter(|(dim, _)| *dim == d).map(|(_, c)| (i, c)))
            .collect();
        if terms.is_empty() {
            continue;
        }
        let at_mid: f64 = terms.iter().map(|&(i, c)| c * out[i]).sum::<f64>() + constants.0[d.index()];
        let norm2: f64 = terms.iter().map(|(_, c)| c * c).sum();
        let lambda = (target - at_mid) / norm2;
        for &(i, c) in &terms {
            let v = out[i] + lambda * c;
            let item = &survey.items[i];
            if !item.in_range(v) {
                return Err(format!(
                    "{d} target {target} needs item {} = {v:.3}, outside {}..{}",
                    item.id,
                    item.first_code,
                    item.last_code()
                ));
            }
            out[i] = v;
        }
    }
    Ok(out)
}

/// How to measure the distance between model and target dimension vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Euclidean distance (the seed paper's loss).
    #[default]
    L2,
    /// Squared Euclidean distance.
    SquaredL2,
    /// Sum of absolute differences.
    L1,
}

impl std::fmt::Display for LossKind {
    /// The name the command line and config.json use (`l2`, `squared-l2`, `l1`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LossKind::L2 => "l2",
            LossKind::SquaredL2 => "squared-l2",
            LossKind::L1 => "l1",
        })
    }
}

/// A dimension that was left out of the loss, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// The dimension.
    pub dimension: Dimension,
    /// Why it was skipped.
    pub reason: String,
}

/// Loss between model and target dimensions over the dimensions both have.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DimensionLoss {
    /// The loss value.
    pub loss: f64,
    /// Loss kind.
    pub kind: LossKind,
    /// Dimensions that entered the loss.
    pub used: Vec<Dimension>,
    /// Dimensions left out, with reasons.
    pub skipped: Vec<Skipped>,
}

/// Loss over the dimensions with both a model index and a target. Errors if there are none.
pub fn dimension_loss(model: &DimVec, target: &DimVec, kind: LossKind) -> Result<DimensionLoss, String> {
    let mut used = Vec::new();
    let mut skipped = Vec::new();
    let mut acc = 0.0;
    for d in Dimension::ALL {
        let i = d.index();
        match (model[i], target[i]) {
            (Some(m), Some(t)) => {
                used.push(d);
                let e = m - t;
                acc += match kind {
                    LossKind::L2 | LossKind::SquaredL2 => e * e,
                    LossKind::L1 => e.abs(),
                };
            }
            (_, None) => skipped.push(Skipped { dimension: d, reason: "no target score".into() }),
            (None, Some(_)) => skipped.push(Skipped { dimension: d, reason: "survey gives no index".into() }),
        }
    }
    if used.is_empty() {
        return Err("no dimension has both a model index and a target score".into());
    }
    let loss = if kind == LossKind::L2 { acc.sqrt() } else { acc };
    if !loss.is_finite() {
        // Only reachable through extreme coefficients or constants; never report it as a score.
        return Err(format!(
            "loss {loss}: expected a finite number (check the survey's coefficients and --constants)"
        ));
    }
    Ok(DimensionLoss { loss, kind, used, skipped })
}

/// The model's answer to one WVS item: a code value (possibly fractional, e.g. an expected
/// value) and, when known, its probability over the item's options in code order.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelAnswer {
    /// Answer code (e.g. 3, or 2.4 for an expected answer).
    pub value: f64,
    /// Probabilities of the options, in code order, if the model's distribution is known.
    pub probs: Option<Vec<f64>>,
}

/// Cultural alignment scores of a set of WVS answers against a country's distributions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CasReport {
    /// CultureSPA eq. (1), x100: 1 - ||a - r||_2 / ||(n_q - 1)||_2 over the scored questions.
    pub cas: f64,
    /// Per-question normalised variant, x100: 1 - sqrt(mean_q ((a_q - r_q) / (n_q - 1))^2),
    /// so every question weighs the same whatever its number of options.
    pub cas_per_question: f64,
    /// Distribution-aware, x100: 1 - mean_q EMD_q / (n_q - 1) between the model's answer (its
    /// distribution when known, else a point mass) and the country's answer distribution, on
    /// ordinal items; nominal items use total variation distance instead of EMD / (n_q - 1).
    pub distribution_score: f64,
    /// Expected-answer score, x100: 1 - mean_q |a_q - mean_q(country)| / (n_q - 1), ordinal items.
    pub expected_answer_score: f64,
    /// Questions scored (answered, with a reference answer).
    pub scored: usize,
    /// Answered questions skipped because the country has no reference answer.
    pub no_reference: usize,
    /// Scored answers outside the item's code range (kept, as CultureSPA does).
    pub out_of_range: usize,
}

/// Score answers (item id, answer) against a country's distributions.
///
/// Items the survey does not have must have been rejected before; questions without a
/// reference answer are skipped and counted, as in CultureSPA's scorer. Errors if nothing is
/// left to score.
pub fn cas(
    survey: &Survey,
    reference: &BTreeMap<String, Distribution>,
    answers: &[(String, ModelAnswer)],
) -> Result<CasReport, String> {
    let (mut sq, mut max_sq, mut perq, mut scored, mut no_ref, mut oor) = (0.0, 0.0, 0.0, 0, 0, 0);
    let (mut dist_sum, mut dist_n, mut ead_sum, mut ead_n) = (0.0, 0usize, 0.0, 0usize);
    for (id, ans) in answers {
        let item = survey.item(id).ok_or_else(|| format!("item '{id}' is not in survey {}", survey.name))?;
        let Some(dist) = reference.get(&item.id.to_ascii_uppercase()) else {
            no_ref += 1;
            continue;
        };
        scored += 1;
        if !item.in_range(ans.value) {
            oor += 1;
        }
        let span = (item.n_options() - 1) as f64;
        let e = ans.value - f64::from(dist.majority);
        sq += e * e;
        max_sq += span * span;
        perq += (e / span).powi(2);

        let d = if item.ordinal {
            let emd = match &ans.probs {
                Some(p) => emd_ordinal(item.first_code, p, dist),
                None => dist.shares.iter().map(|(c, s)| s * (f64::from(*c) - ans.value).abs()).sum(),
            };
            ead_sum += (ans.value - dist.mean()).abs() / span;
            ead_n += 1;
            emd / span
        } else {
            // Total variation between the model's distribution and the country's.
            match &ans.probs {
                Some(p) => {
                    let mut tv = 0.0;
                    for (k, pk) in p.iter().enumerate() {
                        tv += (pk - dist.share(item.code(k))).abs();
                    }
                    // Country mass on codes outside the options (none in practice).
                    tv += dist
                        .shares
                        .iter()
                        .filter(|(c, _)| !item.in_range(f64::from(*c)))
                        .map(|p| p.1)
                        .sum::<f64>();
                    tv / 2.0
                }
                None => 1.0 - dist.share(ans.value.round() as i32),
            }
        };
        dist_sum += d;
        dist_n += 1;
    }
    if scored == 0 {
        return Err("no answered question has a reference answer for this country".into());
    }
    let pct = |x: f64| 100.0 * x;
    Ok(CasReport {
        cas: pct(1.0 - sq.sqrt() / max_sq.sqrt()),
        cas_per_question: pct(1.0 - (perq / scored as f64).sqrt()),
        distribution_score: pct(1.0 - dist_sum / dist_n as f64),
        expected_answer_score: if ead_n > 0 { pct(1.0 - ead_sum / ead_n as f64) } else { f64::NAN },
        scored,
        no_reference: no_ref,
        out_of_range: oor,
    })
}

/// Earth mover's distance between a distribution over codes first_code.. (unit spacing) and a
/// country distribution: the L1 distance between the two cumulative distributions.
fn emd_ordinal(first_code: i32, probs: &[f64], dist: &Distribution) -> f64 {
    let lo = first_code.min(dist.shares.iter().map(|p| p.0).min().unwrap_or(first_code));
    let hi = (first_code + probs.len() as i32 - 1).max(dist.shares.iter().map(|p| p.0).max().unwrap_or(lo));
    let (mut fm, mut fc, mut total) = (0.0, 0.0, 0.0);
    for code in lo..hi {
        let k = code - first_code;
        if k >= 0 && (k as usize) < probs.len() {
            fm += probs[k as usize];
        }
        fc += dist.share(code);
        total += (fm - fc).abs();
    }
    total
}

/// CultureSPA's answer parsing: the first run of digits in the text, kept if it is 0..=10,
/// otherwise the answer is unparsable (None).
pub fn parse_culturespa_answer(text: &str) -> Option<i32> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let digits: String = text[start..].chars().take_while(char::is_ascii_digit).collect();
    // A long digit run cannot be <= 10; avoid overflow by checking its length first.
    if digits.trim_start_matches('0').len() > 2 {
        return None;
    }
    let n: i32 = digits.parse().ok()?;
    (0..=10).contains(&n).then_some(n)
}
