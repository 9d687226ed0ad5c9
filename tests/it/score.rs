//! Surveys, targets and metrics (no model): CAS against CultureSPA's scorer, VSM13 formulas,
//! inverse modelling, data-set agreement, and `deopt score` / `deopt countries` on bad input.

use crate::common::{deopt, fails, tmpdir};

use std::path::{Path, PathBuf};

use deopt::data::answers;
use deopt::data::country::Countries;
use deopt::data::dimension::Dimension;
use deopt::data::survey::{Survey, SurveyKind};
use deopt::data::targets::{Hofstede, Wvs, WvsChoice, WvsSource};
use deopt::score::metrics::{self, Constants, LossKind, ModelAnswer};

const CULTURESPA_COUNTRIES: [&str; 18] = [
    "USA", "CAN", "BOL", "BRA", "GBR", "NLD", "DEU", "UKR", "CHN", "RUS", "IND", "THA", "KEN", "NGA", "ETH",
    "ZWE", "AUS", "NZL",
];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn cas_of(file: &Path, iso3: &str, survey: &Survey, wvs: &Wvs) -> f64 {
    let reference = wvs.for_country(iso3, WvsChoice::Auto).unwrap();
    let parsed = answers::read_culturespa_json(file, survey).unwrap();
    let model: Vec<_> =
        parsed.answers.iter().map(|(id, v)| (id.clone(), ModelAnswer { value: *v, probs: None })).collect();
    metrics::cas(survey, &reference, &model).unwrap().cas
}

#[test]
fn cas_reproduces_culturespa_scorer_on_released_llama3_outputs() {
    let survey = Survey::builtin(SurveyKind::Wvs).unwrap();
    let wvs = Wvs::builtin().unwrap();
    let unaware = fixture("culturespa_llama3/wvs_result_culture_unaware_0.json");
    let avg_unaware: f64 =
        CULTURESPA_COUNTRIES.iter().map(|c| cas_of(&unaware, c, &survey, &wvs)).sum::<f64>() / 18.0;
    let avg_aware: f64 = CULTURESPA_COUNTRIES
        .iter()
        .map(|c| {
            let f = fixture(&format!("culturespa_llama3/wvs_result_culture_aware_{c}_0.json"));
            cas_of(&f, c, &survey, &wvs)
        })
        .sum::<f64>()
        / 18.0;
    assert!((avg_unaware - 62.36).abs() < 0.01, "culture-unaware average {avg_unaware}");
    assert!((avg_aware - 66.61).abs() < 0.01, "culture-aware average {avg_aware}");
}

#[test]
fn score_wvs_json_on_culturespa_file() {
    let f = fixture("culturespa_llama3/wvs_result_culture_aware_USA_0.json");
    let out = deopt(&["score", "wvs", "--country", "usa", "--responses", f.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["country"], "USA");
    let cas = v["cas"].as_f64().unwrap();
    assert!(cas > 0.0 && cas < 100.0);
    for key in ["cas_per_question", "distribution_score", "expected_answer_score", "scored", "unparsable"] {
        assert!(!v[key].is_null(), "missing {key}");
    }
}

#[test]
fn culturespa_parsing_rules() {
    assert_eq!(metrics::parse_culturespa_answer("3"), Some(3));
    assert_eq!(metrics::parse_culturespa_answer("Answer: 10. Strongly"), Some(10));
    assert_eq!(metrics::parse_culturespa_answer("I pick 11"), None);
    assert_eq!(metrics::parse_culturespa_answer("0"), Some(0));
    assert_eq!(metrics::parse_culturespa_answer("99999999999999999999 then 2"), None);
    assert_eq!(metrics::parse_culturespa_answer("no number"), None);
}

#[test]
fn cas_variants_on_hand_cases() {
    let survey =
        Survey::parse("mem.csv", "id,text,options,ordinal\nA,a?,x | y | z | w | v,1\nB,b?,p | q,0\n")
            .unwrap();
    // Reference: A majority 2 with shares 2:0.5, 3:0.5 (mean 2.5); B majority 1 (share 0.75).
    let mut reference = std::collections::BTreeMap::new();
    reference.insert("A".to_string(), dist(&[(2, 0.5), (3, 0.5)]));
    reference.insert("B".to_string(), dist(&[(1, 0.75), (2, 0.25)]));
    let answers = vec![
        ("A".to_string(), ModelAnswer { value: 4.0, probs: None }),
        ("B".to_string(), ModelAnswer { value: 2.0, probs: None }),
    ];
    let r = metrics::cas(&survey, &reference, &answers).unwrap();
    // eq. (1): errors (4-2, 2-1) = (2, 1); max (4, 1): 1 - sqrt(5)/sqrt(17)
    assert!((r.cas - 100.0 * (1.0 - 5f64.sqrt() / 17f64.sqrt())).abs() < 1e-9);
    // per question: sqrt(mean((2/4)^2, (1/1)^2)) = sqrt(0.625)
    assert!((r.cas_per_question - 100.0 * (1.0 - 0.625f64.sqrt())).abs() < 1e-9);
    // distribution: A ordinal EMD = 0.5*|2-4| + 0.5*|3-4| = 1.5, /4 = 0.375; B nominal 1 - 0.25 = 0.75
    assert!((r.distribution_score - 100.0 * (1.0 - (0.375 + 0.75) / 2.0)).abs() < 1e-9);
    // expected answer (ordinal A only): |4 - 2.5| / 4
    assert!((r.expected_answer_score - 100.0 * (1.0 - 1.5 / 4.0)).abs() < 1e-9);
    // With the model's own distribution on A: probs over codes 1..5 = point mass at 2 and 3 halves -> EMD 0.
    let answers2 =
        vec![("A".to_string(), ModelAnswer { value: 2.5, probs: Some(vec![0.0, 0.5, 0.5, 0.0, 0.0]) })];
    let r2 = metrics::cas(&survey, &reference, &answers2).unwrap();
    assert!((r2.distribution_score - 100.0).abs() < 1e-9, "{}", r2.distribution_score);
}

fn dist(pairs: &[(i32, f64)]) -> deopt::data::targets::Distribution {
    let majority = pairs.iter().fold(pairs[0], |m, p| if p.1 > m.1 { *p } else { m }).0;
    deopt::data::targets::Distribution {
        shares: pairs.to_vec(),
        majority,
        respondents: None,
        source: WvsSource::CultureSpa,
    }
}

#[test]
fn builtin_surveys_have_expected_shape() {
    let vsm = Survey::builtin(SurveyKind::Vsm13).unwrap();
    assert_eq!(vsm.items.len(), 24);
    assert!(vsm.scores_dimensions());
    assert!(vsm.items.iter().all(|it| it.n_options() == 5 && it.first_code == 1));
    // MAS uses 35 on both terms (manual), not 25.
    assert_eq!(vsm.item("8").unwrap().term, Some((Dimension::Mas, 35.0)));
    assert_eq!(vsm.item("10").unwrap().term, Some((Dimension::Mas, -35.0)));
    let wvs = Survey::builtin(SurveyKind::Wvs).unwrap();
    assert_eq!(wvs.items.len(), 259);
    assert!(wvs.item("Q223").is_none() && wvs.item("Q260").is_none() && wvs.item("Q259").is_some());
    assert_eq!(wvs.item("Q94").unwrap().first_code, 0);
    assert_eq!(wvs.item("Q1").unwrap().first_code, 1);
    assert!(wvs.items.iter().all(|it| !it.topic.is_empty()));
}

/// Means for the 24 VSM items (index = item number - 1), all 3 except those given.
fn means(set: &[(usize, f64)]) -> Vec<Option<f64>> {
    let mut m = vec![Some(3.0); 24];
    for &(item, v) in set {
        m[item - 1] = Some(v);
    }
    m
}

#[test]
fn vsm13_formulas_by_hand() {
    let vsm = Survey::builtin(SurveyKind::Vsm13).unwrap();
    let c = Constants([10.0, 20.0, 30.0, 40.0, 50.0, 60.0]);
    // PDI = 35(m07 - m02) + 25(m20 - m23) + C(pd)
    let x = metrics::vsm_indices(&vsm, &means(&[(7, 4.0), (2, 2.0), (20, 3.5), (23, 1.5)]), &c);
    assert!((x[0].unwrap() - (35.0 * 2.0 + 25.0 * 2.0 + 10.0)).abs() < 1e-9);
    // IDV = 35(m04 - m01) + 35(m09 - m06) + C(ic)
    let x = metrics::vsm_indices(&vsm, &means(&[(4, 5.0), (1, 1.0), (9, 2.0), (6, 4.0)]), &c);
    assert!((x[1].unwrap() - (35.0 * 4.0 + 35.0 * -2.0 + 20.0)).abs() < 1e-9);
    // MAS = 35(m05 - m03) + 35(m08 - m10) + C(mf)
    let x = metrics::vsm_indices(&vsm, &means(&[(5, 2.5), (3, 2.0), (8, 1.0), (10, 4.0)]), &c);
    assert!((x[2].unwrap() - (35.0 * 0.5 + 35.0 * -3.0 + 30.0)).abs() < 1e-9);
    // UAI = 40(m18 - m15) + 25(m21 - m24) + C(ua)
    let x = metrics::vsm_indices(&vsm, &means(&[(18, 4.0), (15, 1.0), (21, 2.0), (24, 5.0)]), &c);
    assert!((x[3].unwrap() - (40.0 * 3.0 + 25.0 * -3.0 + 40.0)).abs() < 1e-9);
    // LTO = 40(m13 - m14) + 25(m19 - m22) + C(ls)
    let x = metrics::vsm_indices(&vsm, &means(&[(13, 1.5), (14, 3.5), (19, 5.0), (22, 1.0)]), &c);
    assert!((x[4].unwrap() - (40.0 * -2.0 + 25.0 * 4.0 + 50.0)).abs() < 1e-9);
    // IVR = 35(m12 - m11) + 40(m17 - m16) + C(ir)
    let x = metrics::vsm_indices(&vsm, &means(&[(12, 4.0), (11, 2.0), (17, 1.0), (16, 2.0)]), &c);
    assert!((x[5].unwrap() - (35.0 * 2.0 - 40.0 * 1.0 + 60.0)).abs() < 1e-9);
    // Neutral answers give the constants; a missing item blanks only its dimension.
    let mut m = means(&[]);
    let x = metrics::vsm_indices(&vsm, &m, &c);
    assert_eq!(x, [Some(10.0), Some(20.0), Some(30.0), Some(40.0), Some(50.0), Some(60.0)]);
    m[6] = None;
    let x = metrics::vsm_indices(&vsm, &m, &c);
    assert!(x[0].is_none() && x[1].is_some());
}

#[test]
fn losses_by_hand_and_skipped_dimensions() {
    let model = [Some(1.0), Some(2.0), Some(3.0), None, Some(0.0), Some(0.0)];
    let target = [Some(4.0), Some(6.0), Some(3.0), Some(1.0), None, Some(0.0)];
    let l2 = metrics::dimension_loss(&model, &target, LossKind::L2).unwrap();
    assert!((l2.loss - 5.0).abs() < 1e-12);
    assert_eq!(l2.used, vec![Dimension::Pdi, Dimension::Idv, Dimension::Mas, Dimension::Ivr]);
    assert_eq!(l2.skipped.len(), 2);
    let sq = metrics::dimension_loss(&model, &target, LossKind::SquaredL2).unwrap();
    assert!((sq.loss - 25.0).abs() < 1e-12);
    let l1 = metrics::dimension_loss(&model, &target, LossKind::L1).unwrap();
    assert!((l1.loss - 7.0).abs() < 1e-12);
    assert!(metrics::dimension_loss(&[None; 6], &target, LossKind::L2).is_err());
}

#[test]
fn inverse_modelling_hits_every_country_exactly() {
    let vsm = Survey::builtin(SurveyKind::Vsm13).unwrap();
    let hof = Hofstede::builtin().unwrap();
    for constants in [Constants::default(), Constants([0.0; 6]), "PDI=20,UAI=80".parse().unwrap()] {
        let mut checked = 0;
        for row in hof.rows() {
            let target = row.values();
            let Ok(m) = metrics::vsm_inverse(&vsm, &target, &constants) else {
                continue;
            };
            assert!(m.iter().all(|v| (1.0..=5.0).contains(v)));
            let model =
                metrics::vsm_indices(&vsm, &m.iter().copied().map(Some).collect::<Vec<_>>(), &constants);
            let loss = metrics::dimension_loss(&model, &target, LossKind::L2).unwrap();
            assert!(loss.loss < 1e-9, "{}: loss {}", row.iso3, loss.loss);
            checked += 1;
        }
        assert_eq!(checked, hof.rows().len(), "every country's targets are reachable on the 1-5 scale");
    }
}

#[test]
fn score_vsm13_cli_on_synthesised_answers_gives_zero_loss() {
    let vsm = Survey::builtin(SurveyKind::Vsm13).unwrap();
    let sau = Hofstede::builtin().unwrap().get("SAU").unwrap().values();
    let m = metrics::vsm_inverse(&vsm, &sau, &Constants::default()).unwrap();
    let dir = tmpdir("inverse");
    let path = dir.join("sau.csv");
    let mut text = String::from("item,answer\n");
    for (it, v) in vsm.items.iter().zip(&m) {
        text.push_str(&format!("{},{v}\n", it.id));
    }
    std::fs::write(&path, text).unwrap();
    let out = deopt(&[
        "score",
        "vsm13",
        "--country",
        "Saudi Arabia",
        "--answers",
        path.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["loss"].as_f64().unwrap() < 1e-9, "{v}");
    assert_eq!(v["dimensions"].as_array().unwrap().len(), 6);
    assert_eq!(v["constants"]["PDI"], 50.0);
    // Plain-text report shows constants and the loss.
    let out = deopt(&["score", "vsm13", "--country", "SAU", "--answers", path.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("index constants C: PDI=50") && text.contains("loss (l2"), "{text}");
}

#[test]
fn shipped_example_scores_and_reports_skipped_dimensions() {
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("surveys/examples/vsm13_neutral.csv");
    let out = deopt(&["score", "vsm13", "--country", "ZWE", "--answers", ex.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("skipped PDI: no target score for ZWE"), "{text}");
    assert!(text.contains("loss (l2 over LTO IVR)"), "{text}");
}

#[test]
fn culturespa_and_culturellm_agree_where_both_cover() {
    let wvs = Wvs::builtin().unwrap();
    let spa = wvs.countries(WvsSource::CultureSpa);
    let llm = wvs.countries(WvsSource::CultureLlm);
    assert_eq!(spa.len(), 19);
    assert_eq!(llm.len(), 12);
    let both: Vec<&String> = llm.iter().filter(|c| spa.contains(c)).collect();
    assert_eq!(both, ["BRA", "CHN", "DEU", "MEX", "USA"]);
    let mut compared = 0;
    let mut max_diff: f64 = 0.0;
    for c in both {
        let a = wvs.table(WvsSource::CultureSpa, c).unwrap();
        let b = wvs.table(WvsSource::CultureLlm, c).unwrap();
        for (item, db) in b {
            let Some(da) = a.get(item) else { continue };
            assert_eq!(da.majority, db.majority, "{c} {item}: majority answers differ");
            for (code, share) in &db.shares {
                max_diff = max_diff.max((share - da.share(*code)).abs());
            }
            compared += 1;
        }
    }
    assert!(compared > 200, "compared {compared}");
    // Proportions differ a little (weighting / denominators), never by more than 0.1.
    assert!(max_diff < 0.1, "max share difference {max_diff}");
}

#[test]
fn culturellm_counts_drop_missing_codes_and_summary_rows() {
    let wvs = Wvs::builtin().unwrap();
    let usa = wvs.table(WvsSource::CultureLlm, "USA").unwrap();
    let q27 = &usa["Q27"];
    assert!(q27.shares.iter().all(|(c, _)| *c >= 1 && *c <= 4));
    assert!((q27.shares.iter().map(|s| s.1).sum::<f64>() - 1.0).abs() < 1e-9);
    assert!(q27.respondents.unwrap() <= 2596 && q27.respondents.unwrap() > 2400);
}

#[test]
fn countries_lists_targets() {
    let out = deopt(&["countries", "--survey", "wvs", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v["countries"].as_array().unwrap();
    assert_eq!(list.len(), 26);
    let zwe = list.iter().find(|c| c["iso3"] == "ZWE").unwrap();
    assert!(zwe["hofstede"]["PDI"].is_null() && zwe["hofstede"]["LTO"]["value"] == 15.0);
    let sau = deopt(&["countries", "--survey", "vsm13"]);
    let text = String::from_utf8(sau.stdout).unwrap();
    assert!(text.lines().any(|l| l.starts_with("SAU") && l.contains("95*")), "estimates are marked");
    assert_eq!(Countries::builtin().unwrap().all().len(), 125);
}

#[test]
fn bad_input_gives_one_clear_line() {
    let dir = tmpdir("bad");
    let w = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = w("good.csv", "item,answer\n1,3\n");
    let err = fails(&["score", "vsm13", "--country", "Saudi Arbia", "--answers", &good]);
    assert!(err.contains("unknown country") && err.contains("SAU (Saudi Arabia)"), "{err}");
    let json = fixture("culturespa_llama3/wvs_result_culture_unaware_0.json");
    let err = fails(&["score", "wvs", "--country", "SAU", "--responses", json.to_str().unwrap()]);
    assert!(err.contains("no WVS-7 answer distributions"), "{err}");

    let f = w("range.csv", "item,answer\n1,3\n2,6\n");
    let err = fails(&["score", "vsm13", "--country", "SAU", "--answers", &f]);
    assert!(err.contains("range.csv:3:") && err.contains("expected 1..5"), "{err}");
    let f = w("unknown.csv", "1,3\n99,2\n");
    let err = fails(&["score", "vsm13", "--country", "SAU", "--answers", &f]);
    assert!(err.contains("unknown.csv:2:") && err.contains("item '99': expected an item of survey"), "{err}");
    let f = w("nan.csv", "1,three\n");
    let err = fails(&["score", "vsm13", "--country", "SAU", "--answers", &f]);
    assert!(err.contains("nan.csv:1:") && err.contains("expected a number"), "{err}");
    let f = w("fields.csv", "1,3,4\n");
    let err = fails(&["score", "vsm13", "--country", "SAU", "--answers", &f]);
    assert!(err.contains("fields.csv:1:") && err.contains("expected 2 fields"), "{err}");
    let f = w("quote.csv", "1,\"3\n");
    let err = fails(&["score", "vsm13", "--country", "SAU", "--answers", &f]);
    assert!(err.contains("quote.csv"), "{err}");
    let f = w("dup.csv", "1,3\n1,4\n");
    let err = fails(&["score", "vsm13", "--country", "SAU", "--answers", &f]);
    assert!(err.contains("dup.csv:2:") && err.contains("twice"), "{err}");
    let err = fails(&["score", "vsm13", "--country", "SAU", "--answers", "/nonexistent/a.csv"]);
    assert!(err.contains("/nonexistent/a.csv") && err.contains("cannot read"), "{err}");

    let f = w("bad.json", "[{\"Q_id\": \"Q1\", \"answer\": \"1\"},\n{\"Q_id\": ");
    let err = fails(&["score", "wvs", "--country", "USA", "--responses", &f]);
    assert!(err.contains("bad.json:2:") && err.contains("malformed JSON"), "{err}");
    let f =
        w("item.json", "[{\"Q_id\": \"Q1\", \"answer\": \"1\"}, {\"Q_id\": \"Q999\", \"answer\": \"2\"}]");
    let err = fails(&["score", "wvs", "--country", "USA", "--responses", &f]);
    assert!(err.contains("entry 2") && err.contains("Q999"), "{err}");
    let f = w("wvsrange.csv", "Q1,5\n");
    let err = fails(&["score", "wvs", "--country", "USA", "--responses", &f]);
    assert!(err.contains("expected 1..4"), "{err}");
    let f = w("noref.csv", "Q1,1\n");
    let ok = deopt(&["score", "wvs", "--country", "USA", "--responses", &f]);
    assert!(ok.status.success(), "a single answer scores");

    let s = w("survey.csv", "id,text\n1,a\n");
    let err = fails(&["score", "vsm13", "--country", "SAU", "--answers", &good, "--survey-file", &s]);
    assert!(err.contains("survey.csv:1:") && err.contains("missing column 'options'"), "{err}");
    let s = w("survey2.csv", "id,text,options,dimension,coefficient\n1,a,x | y,PDX,3\n");
    let err = fails(&["score", "vsm13", "--country", "SAU", "--answers", &good, "--survey-file", &s]);
    assert!(err.contains("survey2.csv:2:") && err.contains("unknown dimension 'PDX'"), "{err}");
    let s = w("survey3.csv", "id,text,options,dimension,coefficient\n1,a,x | y,PDI,3\n");
    let err = fails(&["score", "vsm13", "--country", "SAU", "--answers", &good, "--survey-file", &s]);
    assert!(err.contains("needs items with dimension and coefficient for every dimension"), "{err}");
    // Flag values are rejected by the parser, whose message names the flag and the value.
    let out = deopt(&["score", "vsm13", "--country", "SAU", "--answers", &good, "--constants", "PDI=x"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        !out.status.success() && err.lines().next().unwrap().contains("'PDI=x' for '--constants"),
        "{err}"
    );
    assert!(err.contains("'x': expected a number"), "{err}");
}

#[test]
fn translated_survey_file_scores_like_the_builtin() {
    // A user instrument in the same format (here: the built-in one with different wording).
    let text = deopt::data::embedded::file("surveys/vsm13.csv").text.replace("ideal job", "ideal position");
    let dir = tmpdir("custom");
    let s = dir.join("vsm13_variant.csv");
    std::fs::write(&s, text).unwrap();
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("surveys/examples/vsm13_neutral.csv");
    let a = deopt(&["score", "vsm13", "--country", "USA", "--answers", ex.to_str().unwrap(), "--json"]);
    let b = deopt(&[
        "score",
        "vsm13",
        "--country",
        "USA",
        "--answers",
        ex.to_str().unwrap(),
        "--json",
        "--survey-file",
        s.to_str().unwrap(),
    ]);
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let va: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let vb: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    assert_eq!(va["loss"], vb["loss"]);
    assert_eq!(vb["survey"], "vsm13_variant");
}
