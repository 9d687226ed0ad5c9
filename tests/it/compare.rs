//! `deopt compare`: the table's statistics on a synthetic compare.csv (against statrs
//! directly), a tiny comparison on the real model (interrupted and rerun, shards merged equal
//! the unsharded table), and bad input refused before any work.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use deopt::compare::table::{self, Metric};
use deopt::compare::{CompareSettings, Method, Row};
use deopt::data::survey::SurveyKind;
use deopt::run::spec::ModelSpec;
use statrs::distribution::{ContinuousCDF, Normal};
use statrs::statistics::Statistics;

use crate::common::{deopt, deopt_cmd, fails_with, serial, tmpdir};

fn settings(methods: Vec<Method>, countries: &[&str], seeds: usize) -> CompareSettings {
    CompareSettings {
        countries: countries.iter().map(|c| c.to_string()).collect(),
        methods,
        seeds,
        seed: 0,
        survey: SurveyKind::Vsm13,
        budget: 100,
        pop: 4,
        tokens: 2,
        lr: 0.01,
        subspace: 8,
        holdout: 0.25,
        data: None,
        model: ModelSpec::default(),
    }
}

fn row(method: Method, country: &str, k: usize, vsm13: f64, wvs: Option<f64>) -> Row {
    Row {
        method,
        country: country.into(),
        seed_index: k,
        seed: k as u64,
        budget: 100,
        used: if method.is_text() { 0 } else { 96 },
        wall_s: 1.5,
        train: vsm13 * 0.9,
        heldout: Some(vsm13 * 1.1),
        vsm13: Some(vsm13),
        wvs,
        dims: vec![Some(50.0), None, Some(1.0), Some(2.0), Some(3.0), Some(4.0)],
        curve: Vec::new(),
    }
}

/// Two-sided Mann-Whitney p by the normal approximation with tie and continuity corrections,
/// written out with statrs' normal distribution.
fn mw_two_sided(a: &[f64], b: &[f64]) -> f64 {
    let mut all: Vec<(f64, bool)> =
        a.iter().map(|&x| (x, true)).chain(b.iter().map(|&x| (x, false))).collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let n = all.len();
    let (mut ra, mut ties, mut i) = (0.0, 0.0, 0);
    while i < n {
        let mut j = i;
        while j < n && all[j].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i) as f64;
        ties += t * t * t - t;
        ra += (i + 1 + j) as f64 / 2.0 * all[i..j].iter().filter(|e| e.1).count() as f64;
        i = j;
    }
    let (na, nb, nf) = (a.len() as f64, b.len() as f64, n as f64);
    let u = ra - na * (na + 1.0) / 2.0;
    let var = na * nb / 12.0 * ((nf + 1.0) - ties / (nf * (nf - 1.0)));
    let z = ((u - na * nb / 2.0).abs() - 0.5).max(0.0) / var.sqrt();
    (2.0 * (1.0 - Normal::new(0.0, 1.0).unwrap().cdf(z))).min(1.0)
}

#[test]
fn table_statistics_match_statrs_on_a_synthetic_compare_csv() {
    let methods = vec![Method::None, Method::P1, Method::De, Method::Shade];
    let s = settings(methods, &["SAU", "USA"], 4);
    let de_sau = [40.0, 35.5, 52.25, 44.0];
    let shade_sau = [30.0, 31.0, 29.5, 45.0];
    let de_usa = [20.0, 22.0, 21.0, 23.0];
    let shade_usa = [25.0, 26.0, 27.0, 24.5];
    let mut rows = Vec::new();
    for k in 0..4 {
        rows.push(row(Method::None, "SAU", k, 64.72, None));
        rows.push(row(Method::P1, "SAU", k, 62.13, None));
        rows.push(row(Method::De, "SAU", k, de_sau[k], None));
        rows.push(row(Method::Shade, "SAU", k, shade_sau[k], None));
        rows.push(row(Method::None, "USA", k, 19.0, Some(60.0)));
        rows.push(row(Method::P1, "USA", k, 30.0, Some(61.0)));
        rows.push(row(Method::De, "USA", k, de_usa[k], Some(59.0 + k as f64)));
        rows.push(row(Method::Shade, "USA", k, shade_usa[k], Some(58.0)));
    }
    // Through the file: what is written reads back.
    let csv = table::compare_csv(&rows);
    let back = table::read_csv(&csv).unwrap();
    assert_eq!(back, rows);
    let cells = table::cells(&s, &back, Metric::Vsm13);
    let mi = |m: Method| s.methods.iter().position(|x| *x == m).unwrap();
    for (ci, (de, shade, best_text)) in
        [(&de_sau, &shade_sau, vec![62.13; 4]), (&de_usa, &shade_usa, vec![19.0; 4])].into_iter().enumerate()
    {
        let d = cells[mi(Method::De)][ci].as_ref().unwrap();
        assert!((d.mean - de.to_vec().mean()).abs() < 1e-12);
        assert!((d.sd.unwrap() - de.to_vec().std_dev()).abs() < 1e-12);
        assert!((d.p_text.unwrap() - mw_two_sided(de, &best_text)).abs() < 1e-12);
        assert_eq!(d.p_de, None);
        let sh = cells[mi(Method::Shade)][ci].as_ref().unwrap();
        assert!((sh.mean - shade.to_vec().mean()).abs() < 1e-12);
        assert!((sh.sd.unwrap() - shade.to_vec().std_dev()).abs() < 1e-12);
        assert!((sh.p_text.unwrap() - mw_two_sided(shade, &best_text)).abs() < 1e-12);
        assert!((sh.p_de.unwrap() - mw_two_sided(shade, de)).abs() < 1e-12);
        assert_eq!(cells[mi(Method::P1)][ci].as_ref().unwrap().p_text, None);
    }
    // Best per column: SHADE in SAU (lowest mean loss), the text prompt none in USA.
    assert_eq!(
        table::best_per_column(&s, &cells, Metric::Vsm13),
        vec![Some(mi(Method::Shade)), Some(mi(Method::None))]
    );
    let md = table::table_md(&s, &back, 16);
    let shade = shade_sau.to_vec();
    assert!(md.contains(&format!("**{:.2} ± {:.2}**", shade.clone().mean(), shade.std_dev())), "{md}");
    assert!(md.contains("| none |") && md.contains("**19.00 ± 0.00**"), "{md}");
    // WVS is higher-is-better: p1 (61) beats every seed of SHADE (58) in USA.
    let w = table::cells(&s, &back, Metric::Wvs);
    assert_eq!(table::best_per_column(&s, &w, Metric::Wvs)[1], Some(mi(Method::P1)));
    assert!(w[mi(Method::None)][0].is_none(), "SAU has no WVS values");
    // The findings say who wins, with p, and say where a text prompt wins.
    let f = table::findings(&s, &back);
    assert!(f.contains("SAU, VSM13 loss") && f.contains("best mean shade"), "{f}");
    assert!(f.contains("USA") && f.contains("a text prompt: no trained method beat it"), "{f}");
    // A bad file is one line naming the line and column.
    let bad = csv.replacen("64.72", "sixty", 1);
    let e = table::read_csv(&bad).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("'sixty'") && e.contains("vsm13_loss"), "{e}");
}

const JOBS: usize = 6;

fn tiny(out: &Path, shard: Option<&str>) -> Vec<String> {
    tiny_with(out, shard, "SAU", "none,p1,random-soft,de,bbt,tune-fitness")
}

fn tiny_with(out: &Path, shard: Option<&str>, countries: &str, methods: &str) -> Vec<String> {
    let mut a: Vec<String> = [
        "compare",
        "--countries",
        countries,
        "--methods",
        methods,
        "--seeds",
        "1",
        "--budget",
        "128",
        "--pop",
        "4",
        "--tokens",
        "2",
        "--subspace",
        "8",
        "--threads",
        "2",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(out.display().to_string());
    if let Some(s) = shard {
        a.extend(["--shard".to_string(), s.to_string()]);
    }
    a
}

fn run_ok(args: &[String]) -> String {
    let o = deopt(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout)
}

/// compare.csv without the wall time column (the only one that depends on the machine).
fn without_wall(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("compare.csv")).unwrap();
    text.lines()
        .map(|l| {
            l.split(',').enumerate().filter(|(i, _)| *i != 6).map(|(_, c)| c).collect::<Vec<_>>().join(",")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn tables(dir: &Path) -> String {
    let md = std::fs::read_to_string(dir.join("table.md")).unwrap();
    md[md.find("## VSM13").expect("a VSM13 table")..].to_string()
}

#[test]
fn tiny_compare_on_the_real_model_resumes_and_its_shards_merge_to_the_same_table() {
    let _serial = serial();
    let base = tmpdir("compare");
    // Interrupted (SIGKILL once a job is done), then rerun: finished jobs are not redone.
    let a = base.join("whole");
    let mut child =
        deopt_cmd().args(tiny(&a, None)).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    let done = |d: &Path| {
        std::fs::read_dir(d.join("runs")).map_or(0, |r| {
            r.filter(|e| e.as_ref().is_ok_and(|e| e.path().join("row.json").is_file())).count()
        })
    };
    while done(&a) == 0 {
        assert!(child.try_wait().unwrap().is_none(), "compare ended before it could be killed");
        assert!(t0.elapsed() < Duration::from_secs(600), "no job done after 10 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = done(&a);
    assert!(killed_at < JOBS);
    let log = run_ok(&tiny(&a, None));
    assert!(log.contains(&format!("{killed_at} of {JOBS} jobs finished already, skipped")), "{log}");
    assert!(log.contains(&format!("{JOBS} of {JOBS} jobs finished")), "{log}");
    // Every method scored on VSM13 (all, held out); SAU has no WVS data; budgets kept.
    let rows = table::read_csv(&std::fs::read_to_string(a.join("compare.csv")).unwrap()).unwrap();
    assert_eq!(rows.len(), JOBS);
    for r in &rows {
        assert!(r.vsm13.is_some_and(|v| v > 0.0) && r.heldout.is_some() && r.wvs.is_none(), "{r:?}");
        assert!(r.used <= r.budget, "{r:?}");
        assert!(r.dims.iter().all(Option::is_some), "{r:?}");
    }
    // The scorer agrees with the runs' own fitness of their best prompt on the training items.
    for m in [Method::De, Method::Bbt, Method::TuneFitness] {
        let rd = a.join("runs").join(format!("{m}-SAU-s0"));
        let r: Row = serde_json::from_str(&std::fs::read_to_string(rd.join("row.json")).unwrap()).unwrap();
        let last = r.curve.last().unwrap().1;
        assert!(
            (r.train - last).abs() < 1e-6 * last.abs().max(1.0),
            "{m}: scored {} but the run reports {last}",
            r.train
        );
    }
    let used = |m: Method| rows.iter().find(|r| r.method == m).unwrap().used;
    // 16 training items (two of six dimensions held out): DE 8 evaluations, Adam 2 steps of 4.
    assert_eq!(used(Method::De), 128);
    assert_eq!(used(Method::TuneFitness), 128);
    assert_eq!(used(Method::None), 0);
    let md = std::fs::read_to_string(a.join("table.md")).unwrap();
    for part in ["## VSM13 loss", "## held-out items", "## WVS-7 CAS", "No values", "## Findings", "**"] {
        assert!(md.contains(part), "{part} missing from table.md:\n{md}");
    }
    for f in ["bars.png", "bars.svg", "convergence.png", "dimensions-SAU.png"] {
        assert!(a.join(f).is_file(), "{f} missing");
    }
    // Shards, merged: the same table.
    let (s1, s2, m) = (base.join("shard1"), base.join("shard2"), base.join("merged"));
    run_ok(&tiny(&s1, Some("1/2")));
    run_ok(&tiny(&s2, Some("2/2")));
    run_ok(&[
        "compare".into(),
        "merge".into(),
        s1.display().to_string(),
        s2.display().to_string(),
        "--out".into(),
        m.display().to_string(),
    ]);
    assert_eq!(without_wall(&a), without_wall(&m));
    assert_eq!(tables(&a), tables(&m));
    // A country with WVS data: prompts trained on VSM13 are also scored on WVS-7.
    let u = base.join("usa");
    run_ok(&tiny_with(&u, None, "USA", "none,de"));
    let rows = table::read_csv(&std::fs::read_to_string(u.join("compare.csv")).unwrap()).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.wvs.is_some_and(|v| v > 0.0 && v <= 100.0)), "{rows:?}");
    assert!(std::fs::read_to_string(u.join("table.md")).unwrap().contains("| de |"));
    // Another comparison's flags on the same directory are refused.
    let mut other = tiny(&a, None);
    let k = other.iter().position(|x| x == "--budget").unwrap();
    other[k + 1] = "256".into();
    fails_with(&other.iter().map(String::as_str).collect::<Vec<_>>(), "other settings");
}

#[test]
fn bad_compare_input_is_one_line_before_any_work() {
    let base = tmpdir("compare-bad");
    let out = base.join("never");
    let o = out.to_str().unwrap();
    fails_with(&["compare", "--methods", "de,dee", "--out", o], "unknown method 'dee'");
    fails_with(&["compare", "--methods", "de,selfgen-tune", "--out", o], "needs --data DIR");
    fails_with(&["compare", "--survey", "wvs", "--countries", "SAU,USA", "--out", o], "--countries SAU");
    fails_with(&["compare", "--countries", "Atlantis", "--out", o], "--countries Atlantis");
    fails_with(&["compare", "--budget", "10", "--out", o], "--budget 10");
    fails_with(&["compare", "--methods", "de,de", "--out", o], "de is given twice");
    fails_with(
        &["compare", "--data", base.to_str().unwrap(), "--methods", "de", "--out", o],
        "no method uses it",
    );
    assert!(!out.exists(), "bad input created the compare directory");
}
