//! The comparison's tables (compare.csv, table.md with statistics and findings) and charts.
//!
//! Statistics per (method, country): mean and sample standard deviation over seeds (statrs),
//! and two-sided Mann-Whitney p-values ([`crate::optim::stats::mann_whitney_u`], the normal
//! approximation scipy's `method="asymptotic"` uses) against the best text prompt of the
//! column and against DE. The findings only say what those figures say.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use statrs::statistics::Statistics;

use super::{CompareSettings, Method, Row};
use crate::data::dimension::Dimension;
use crate::data::survey::SurveyKind;
use crate::optim::stats::{mann_whitney_u, Alternative};
use crate::output::report_files::{self, Series};
use crate::run::spec::TaskSpec;
use crate::score::fitness::Target;

/// A scored quantity of the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// VSM13 loss over all items (lower is better).
    Vsm13,
    /// WVS-7 CAS over all items (higher is better).
    Wvs,
    /// The fitness on the held-out items (lower is better).
    Heldout,
}

impl Metric {
    /// The value of a row.
    pub fn of(self, r: &Row) -> Option<f64> {
        match self {
            Metric::Vsm13 => r.vsm13,
            Metric::Wvs => r.wvs,
            Metric::Heldout => r.heldout,
        }
        .filter(|v| v.is_finite())
    }

    /// Higher values are better.
    pub fn higher_is_better(self) -> bool {
        self == Metric::Wvs
    }

    fn title(self) -> &'static str {
        match self {
            Metric::Vsm13 => "VSM13 loss, all items (lower is better)",
            Metric::Wvs => "WVS-7 CAS, all items (higher is better)",
            Metric::Heldout => "held-out items of the fitness survey, fitness (lower is better)",
        }
    }
}

/// The metric of the fitness survey and of the other survey.
pub fn metrics_of(s: &CompareSettings) -> (Metric, Metric) {
    match s.survey {
        SurveyKind::Vsm13 => (Metric::Vsm13, Metric::Wvs),
        SurveyKind::Wvs => (Metric::Wvs, Metric::Vsm13),
    }
}

/// Summary of one (method, country) cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Values over seeds.
    pub values: Vec<f64>,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (None with one value).
    pub sd: Option<f64>,
    /// Two-sided Mann-Whitney p against the column's best text prompt (None for text prompts).
    pub p_text: Option<f64>,
    /// The same against DE (None for DE itself or without DE).
    pub p_de: Option<f64>,
}

/// The cells of `metric` per method (rows, settings order) and country (columns); None
/// where a cell has no values.
pub fn cells(s: &CompareSettings, rows: &[Row], metric: Metric) -> Vec<Vec<Option<Cell>>> {
    let values = |m: Method, c: &str| -> Vec<f64> {
        rows.iter().filter(|r| r.method == m && r.country == c).filter_map(|r| metric.of(r)).collect()
    };
    let better = |a: f64, b: f64| if metric.higher_is_better() { a > b } else { a < b };
    let mut out: Vec<Vec<Option<Cell>>> = vec![Vec::new(); s.methods.len()];
    for c in &s.countries {
        // The best text prompt of the column, by mean.
        let mut best_text: Option<(f64, Vec<f64>)> = None;
        for &m in s.methods.iter().filter(|m| m.is_text()) {
            let v = values(m, c);
            if v.is_empty() {
                continue;
            }
            let mean = v.clone().mean();
            if best_text.as_ref().is_none_or(|(b, _)| better(mean, *b)) {
                best_text = Some((mean, v));
            }
        }
        let de = values(Method::De, c);
        for (mi, &m) in s.methods.iter().enumerate() {
            let v = values(m, c);
            if v.is_empty() {
                out[mi].push(None);
                continue;
            }
            let p = |other: &[f64]| {
                (!other.is_empty()).then(|| mann_whitney_u(&v, other, Alternative::TwoSided).p_value)
            };
            out[mi].push(Some(Cell {
                mean: v.clone().mean(),
                sd: (v.len() > 1).then(|| v.clone().std_dev()),
                p_text: if m.is_text() { None } else { best_text.as_ref().and_then(|(_, t)| p(t)) },
                p_de: if m == Method::De { None } else { p(&de) },
                values: v,
            }));
        }
    }
    out
}

/// Index of the best method per column (by mean), None for an empty column.
pub fn best_per_column(
    s: &CompareSettings,
    cells: &[Vec<Option<Cell>>],
    metric: Metric,
) -> Vec<Option<usize>> {
    (0..s.countries.len())
        .map(|ci| {
            let mut best: Option<(usize, f64)> = None;
            for (mi, row) in cells.iter().enumerate() {
                if let Some(c) = &row[ci] {
                    let b = match best {
                        None => true,
                        Some((_, m)) if metric.higher_is_better() => c.mean > m,
                        Some((_, m)) => c.mean < m,
                    };
                    if b {
                        best = Some((mi, c.mean));
                    }
                }
            }
            best.map(|b| b.0)
        })
        .collect()
}

fn fmt_p(p: Option<f64>) -> String {
    match p {
        None => "-".into(),
        Some(p) if p < 0.001 => "<0.001".into(),
        Some(p) => format!("{p:.3}"),
    }
}

/// compare.csv: one row per finished job.
pub fn compare_csv(rows: &[Row]) -> String {
    let mut s =
        String::from("method,country,seed_index,seed,budget,used,wall_s,train,heldout,vsm13_loss,wvs_cas");
    for d in Dimension::ALL {
        let _ = write!(s, ",{}", d.code());
    }
    s.push('\n');
    let o = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for r in rows {
        let _ = write!(
            s,
            "{},{},{},{},{},{},{:.3},{},{},{},{}",
            r.method.name(),
            r.country,
            r.seed_index,
            r.seed,
            r.budget,
            r.used,
            r.wall_s,
            r.train,
            o(r.heldout),
            o(r.vsm13),
            o(r.wvs)
        );
        for d in &r.dims {
            let _ = write!(s, ",{}", o(*d));
        }
        s.push('\n');
    }
    s
}

/// Read compare.csv back into rows (the convergence curves are only in row.json).
///
/// # Errors
/// A header or cell that is not what [`compare_csv`] writes, with its line.
pub fn read_csv(text: &str) -> Result<Vec<Row>> {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let want = compare_csv(&[]);
    let head: Vec<String> = r.headers()?.iter().map(String::from).collect();
    if head.join(",") != want.trim_end() {
        anyhow::bail!("compare.csv: header '{}': expected '{}'", head.join(","), want.trim_end());
    }
    let mut out = Vec::new();
    for (k, rec) in r.records().enumerate() {
        let rec = rec?;
        let line = k + 2;
        let cell = |i: usize| rec.get(i).unwrap_or("");
        let num = |i: usize| -> Result<f64> {
            cell(i).parse().map_err(|_| {
                anyhow::anyhow!(
                    "compare.csv line {line}: '{}' in column {}: expected a number",
                    cell(i),
                    head[i]
                )
            })
        };
        let opt = |i: usize| -> Result<Option<f64>> {
            if cell(i).is_empty() {
                Ok(None)
            } else {
                num(i).map(Some)
            }
        };
        let int = |i: usize| -> Result<u64> {
            cell(i).parse().map_err(|_| {
                anyhow::anyhow!(
                    "compare.csv line {line}: '{}' in column {}: expected a whole number",
                    cell(i),
                    head[i]
                )
            })
        };
        out.push(Row {
            method: cell(0).parse().map_err(|e| anyhow::anyhow!("compare.csv line {line}: {e}"))?,
            country: cell(1).to_string(),
            seed_index: int(2)? as usize,
            seed: int(3)?,
            budget: int(4)?,
            used: int(5)?,
            wall_s: num(6)?,
            train: num(7)?,
            heldout: opt(8)?,
            vsm13: opt(9)?,
            wvs: opt(10)?,
            dims: (11..17).map(opt).collect::<Result<_>>()?,
            curve: Vec::new(),
        });
    }
    Ok(out)
}

/// One metric's table: methods x countries, mean +- sd, the best in bold, then the p-values.
fn metric_table(s: &CompareSettings, rows: &[Row], metric: Metric, md: &mut String) {
    let cells = cells(s, rows, metric);
    if cells.iter().all(|r| r.iter().all(Option::is_none)) {
        let _ = writeln!(
            md,
            "## {}\n\nNo values (no country of the comparison has this survey's data).\n",
            metric.title()
        );
        return;
    }
    let best = best_per_column(s, &cells, metric);
    let _ = writeln!(md, "## {}\n", metric.title());
    let _ = writeln!(md, "| method | {} |", s.countries.join(" | "));
    let _ = writeln!(md, "|---|{}", "---:|".repeat(s.countries.len()));
    for (mi, m) in s.methods.iter().enumerate() {
        let mut line = format!("| {m} |");
        for (ci, c) in cells[mi].iter().enumerate() {
            let text = match c {
                None => "-".to_string(),
                Some(c) => match c.sd {
                    Some(sd) => format!("{:.2} ± {:.2}", c.mean, sd),
                    None => format!("{:.2}", c.mean),
                },
            };
            if best[ci] == Some(mi) {
                let _ = write!(line, " **{text}** |");
            } else {
                let _ = write!(line, " {text} |");
            }
        }
        let _ = writeln!(md, "{line}");
    }
    let _ = writeln!(
        md,
        "\nTwo-sided Mann-Whitney p per country: against the best text prompt of the column / against DE.\n"
    );
    let _ = writeln!(md, "| method | {} |", s.countries.join(" | "));
    let _ = writeln!(md, "|---|{}", "---:|".repeat(s.countries.len()));
    for (mi, m) in s.methods.iter().enumerate().filter(|(_, m)| !m.is_text()) {
        let mut line = format!("| {m} |");
        for c in &cells[mi] {
            match c {
                None => line.push_str(" - |"),
                Some(c) => {
                    let _ = write!(line, " {} / {} |", fmt_p(c.p_text), fmt_p(c.p_de));
                }
            }
        }
        let _ = writeln!(md, "{line}");
    }
    md.push('\n');
}

/// The findings: what the tables say, per country, in sentences.
pub fn findings(s: &CompareSettings, rows: &[Row]) -> String {
    let (fit, other) = metrics_of(s);
    let mut out = String::new();
    let fit_cells = cells(s, rows, fit);
    let other_cells = cells(s, rows, other);
    let held_cells = cells(s, rows, Metric::Heldout);
    let best = best_per_column(s, &fit_cells, fit);
    let name = |mi: usize| s.methods[mi].name();
    let best_text = |cells: &[Vec<Option<Cell>>], ci: usize, metric: Metric| -> Option<usize> {
        let mut b: Option<(usize, f64)> = None;
        for (mi, m) in s.methods.iter().enumerate() {
            if let (true, Some(c)) = (m.is_text(), &cells[mi][ci]) {
                let better =
                    b.is_none_or(|(_, v)| if metric.higher_is_better() { c.mean > v } else { c.mean < v });
                if better {
                    b = Some((mi, c.mean));
                }
            }
        }
        b.map(|b| b.0)
    };
    let seeds = s.seeds;
    let _ = writeln!(out, "## Findings\n");
    // The smallest p possible: every seed of a method beats every seed of the other, with
    // both tied within themselves (ties shrink the variance, so this is the minimum).
    let min_p = mann_whitney_u(&vec![0.0; seeds], &vec![1.0; seeds], Alternative::TwoSided).p_value;
    if min_p >= 0.05 {
        let _ = writeln!(
            out,
            "- With {seeds} seed(s) per cell the smallest two-sided Mann-Whitney p a method can get \
             against a text prompt is {min_p:.3}: no difference below is significant at 0.05, they are \
             differences of means."
        );
    }
    let wins = |metric: Metric, a: f64, b: f64| if metric.higher_is_better() { a > b } else { a < b };
    for (ci, c) in s.countries.iter().enumerate() {
        let Some(bi) = best[ci] else {
            let _ = writeln!(out, "- {c}: no finished runs.");
            continue;
        };
        let bc = fit_cells[bi][ci].as_ref().expect("best cell has values");
        let ti = best_text(&fit_cells, ci, fit);
        // The best trained (non-text) method of the column.
        let trained = s
            .methods
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.is_text())
            .filter_map(|(mi, _)| fit_cells[mi][ci].as_ref().map(|c| (mi, c.mean)))
            .reduce(|a, b| if wins(fit, b.1, a.1) { b } else { a });
        let mut line = format!("- {c}, {}: best mean {} ({:.2})", fit.title(), name(bi), bc.mean);
        if let (Some(ti), Some((wi, _))) = (ti, trained) {
            let (t, w) =
                (fit_cells[ti][ci].as_ref().expect("text"), fit_cells[wi][ci].as_ref().expect("trained"));
            if s.methods[bi].is_text() {
                let _ = write!(
                    line,
                    ", a text prompt: no trained method beat it (the best, {}, reaches {:.2}, p = {})",
                    name(wi),
                    w.mean,
                    fmt_p(w.p_text)
                );
            } else {
                let _ = write!(
                    line,
                    ", against the best text prompt {} at {:.2} (p = {})",
                    name(ti),
                    t.mean,
                    fmt_p(w.p_text)
                );
            }
        }
        if let Some(di) = s.methods.iter().position(|m| *m == Method::De).filter(|&di| di != bi) {
            if let Some(dc) = &fit_cells[di][ci] {
                let verdict = if dc.mean == bc.mean { "equal to" } else { "worse than" };
                let _ = write!(
                    line,
                    "; DE reaches {:.2}, {verdict} {} (p = {})",
                    dc.mean,
                    name(bi),
                    fmt_p(bc.p_de)
                );
            }
        } else if s.methods.get(bi) == Some(&Method::De) {
            line.push_str("; DE is the best method here");
        }
        line.push('.');
        let _ = writeln!(out, "{line}");
        // Does the best trained method's standing carry over to held-out items and the other survey?
        let (Some((wi, _)), Some(ti)) = (trained, ti) else { continue };
        let beat = wins(
            fit,
            fit_cells[wi][ci].as_ref().expect("trained").mean,
            fit_cells[ti][ci].as_ref().expect("text").mean,
        );
        for (cells, metric, what) in
            [(&held_cells, Metric::Heldout, "held-out items"), (&other_cells, other, "the other survey")]
        {
            let (Some(w), Some(tj)) = (&cells[wi][ci], best_text(cells, ci, metric)) else { continue };
            let t = cells[tj][ci].as_ref().expect("text cell has values");
            let here = wins(metric, w.mean, t.mean);
            let verdict = match (beat, here) {
                (true, true) => format!("the gain carries over (p = {})", fmt_p(w.p_text)),
                (true, false) => "the gain does not carry over".to_string(),
                (false, true) => {
                    format!("better there although not on the fitness survey (p = {})", fmt_p(w.p_text))
                }
                (false, false) => "behind the text prompt there too".to_string(),
            };
            let _ = writeln!(
                out,
                "  - {} on {what} ({}): {:.2} against the best text prompt {} {:.2}: {verdict}",
                name(wi),
                metric.title(),
                w.mean,
                name(tj),
                t.mean
            );
        }
    }
    out
}

/// table.md: budgets and wall time, the three tables, the findings.
pub fn table_md(s: &CompareSettings, rows: &[Row], planned: usize) -> String {
    let (fit, other) = metrics_of(s);
    let mut md = String::new();
    let _ = writeln!(md, "# Comparison\n");
    let _ = writeln!(
        md,
        "Fitness survey {}, countries {}, {} seed(s), T = {} soft rows, held-out share {}; {} of {planned} jobs finished.\n",
        s.survey_name(),
        s.countries.join(", "),
        s.seeds,
        s.tokens,
        s.holdout,
        rows.len()
    );
    let _ = writeln!(
        md,
        "Budget: {} item forward passes per run (one prompt, one item; an Adam step costs 4 passes per \
         item with the fitness objective, 3 with cross-entropy, a backward pass counted as two forward \
         passes; the engine's scoring of every step for history.csv is not counted). Search methods: \
         population {}; BBT: CMA-ES in a {}-dimensional random subspace; Adam lr {}.\n",
        s.budget, s.pop, s.subspace, s.lr
    );
    let _ =
        writeln!(md, "| method | item passes used (mean) | wall time per run, s (mean) |\n|---|---:|---:|");
    for m in &s.methods {
        let r: Vec<&Row> = rows.iter().filter(|r| r.method == *m).collect();
        if r.is_empty() {
            let _ = writeln!(md, "| {m} | - | - |");
            continue;
        }
        let used = r.iter().map(|r| r.used as f64).sum::<f64>() / r.len() as f64;
        let wall = r.iter().map(|r| r.wall_s).sum::<f64>() / r.len() as f64;
        let _ = writeln!(md, "| {m} | {used:.0} | {wall:.1} |");
    }
    md.push('\n');
    metric_table(s, rows, fit, &mut md);
    if s.holdout > 0.0 {
        metric_table(s, rows, Metric::Heldout, &mut md);
    }
    metric_table(s, rows, other, &mut md);
    md.push_str(&findings(s, rows));
    md.push_str("\nCharts: bars.png (fitness survey per country, mean ± sd), convergence.png (best training fitness against item forward passes, first country, seed 0; text prompts dashed; selfgen methods left out, their curves are their own loss), dimensions-<ISO3>.png (VSM13 dimensions of the best method against the targets).\n");
    md
}

/// bars, convergence and dimensions charts.
///
/// # Errors
/// Drawing or I/O failure.
pub fn charts(dir: &Path, s: &CompareSettings, rows: &[Row]) -> Result<Vec<PathBuf>> {
    let (fit, _) = metrics_of(s);
    let cells = cells(s, rows, fit);
    let mut files = Vec::new();
    let groups: Vec<(String, Vec<Option<f64>>)> = s
        .methods
        .iter()
        .enumerate()
        .map(|(mi, m)| (m.name().to_string(), cells[mi].iter().map(|c| c.as_ref().map(|c| c.mean)).collect()))
        .collect();
    let errors: Vec<Vec<Option<f64>>> =
        cells.iter().map(|r| r.iter().map(|c| c.as_ref().and_then(|c| c.sd)).collect()).collect();
    files.extend(report_files::bar_chart_with_errors(
        &dir.join("bars"),
        &format!("{} per method", fit.title()),
        "country",
        fit.title(),
        &s.countries,
        &groups,
        &errors,
    )?);
    if let Some(first) = s.countries.first() {
        let mut series = Vec::new();
        // The selfgen methods' curves are their own loss on other questions: not this axis.
        for m in s.methods.iter().filter(|m| !m.needs_data()) {
            let Some(r) = rows.iter().find(|r| r.method == *m && &r.country == first && r.seed_index == 0)
            else {
                continue;
            };
            if r.curve.is_empty() {
                series.push(Series {
                    name: m.name().to_string(),
                    points: vec![(0.0, r.train), (s.budget as f64, r.train)],
                    dashed: true,
                });
            } else {
                series.push(Series {
                    name: m.name().to_string(),
                    points: r.curve.iter().map(|&(x, y)| (x as f64, y)).collect(),
                    dashed: false,
                });
            }
        }
        if !series.is_empty() {
            files.extend(report_files::line_chart(
                &dir.join("convergence"),
                &format!("{first}: best training fitness (lower is better), seed 0"),
                "item forward passes",
                "fitness on the training items",
                &series,
            )?);
        }
    }
    let vsm = cells_for_dims(s, rows);
    for (ci, c) in s.countries.iter().enumerate() {
        let Ok(task) = (TaskSpec { survey: SurveyKind::Vsm13, ..TaskSpec::new(c) }).load() else { continue };
        let Target::Hofstede { row, .. } = &task.target else { continue };
        let Some(bi) = vsm[ci] else { continue };
        let m = s.methods[bi];
        let mean_dims = |method: Method| -> Vec<Option<f64>> {
            let rs: Vec<&Row> = rows.iter().filter(|r| r.method == method && &r.country == c).collect();
            (0..6)
                .map(|d| {
                    let v: Vec<f64> = rs.iter().filter_map(|r| r.dims.get(d).copied().flatten()).collect();
                    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
                })
                .collect()
        };
        let mut groups =
            vec![("target".to_string(), row.values().to_vec()), (m.name().to_string(), mean_dims(m))];
        if m != Method::None && s.methods.contains(&Method::None) {
            groups.push(("none".to_string(), mean_dims(Method::None)));
        }
        let cats: Vec<String> = Dimension::ALL.iter().map(|d| d.code().to_string()).collect();
        files.extend(report_files::bar_chart(
            &dir.join(format!("dimensions-{c}")),
            &format!("{c}: VSM13 dimensions of {m} (best VSM13 loss) against the targets"),
            "dimension",
            "score",
            &cats,
            &groups,
        )?);
    }
    Ok(files)
}

/// The method with the lowest mean VSM13 loss per country.
fn cells_for_dims(s: &CompareSettings, rows: &[Row]) -> Vec<Option<usize>> {
    let c = cells(s, rows, Metric::Vsm13);
    best_per_column(s, &c, Metric::Vsm13)
}
