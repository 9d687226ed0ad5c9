//! Reports of run and sweep directories: report.md plus charts as PNG and SVG.
//!
//! This module owns the charts and the Markdown; it never loads a model. What needs the
//! engine (the answers with and without the best prompt) is computed by `deopt report` and
//! passed in as an [`EngineView`], so a report can also be written from the files alone.
//!
//! Text is drawn with the DejaVu Sans file embedded from `assets/fonts` (plotters' `ab_glyph`
//! feature), so PNGs get labels without fontconfig or freetype on the machine.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context as _, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use crate::data::dimension::Dimension;
use crate::run::directory::{self, Checkpoint, HistoryRow, RunConfig};

/// Report file written into a run or sweep directory.
pub const REPORT: &str = "report.md";

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Register the embedded font once (plotters looks fonts up by family name).
fn font() -> Result<()> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| "the embedded chart font is not a valid font".to_string())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

fn de<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a chart: {e:?}")
}

/// Colours of successive series: the colour-blind-safe Okabe-Ito palette, then six of Paul
/// Tol's muted and dark colours, so a comparison's 13 methods get 13 colours.
const PALETTE: [RGBColor; 14] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
    RGBColor(136, 34, 85),
    RGBColor(51, 34, 136),
    RGBColor(17, 119, 51),
    RGBColor(153, 153, 51),
    RGBColor(140, 140, 140),
    RGBColor(204, 102, 119),
];

/// Series beyond which a bar chart's legend goes in a panel beside the plot, not over it.
const LEGEND_INSIDE_MAX: usize = 8;

fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// One line of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// (x, y) points in order.
    pub points: Vec<(f64, f64)>,
    /// Dashed line (reference values such as the baseline).
    pub dashed: bool,
}

/// Render `$body(root)` once on a bitmap and once on an SVG backend.
macro_rules! png_and_svg {
    ($stem:expr, $size:expr, $body:expr) => {{
        font()?;
        let png = $stem.with_extension("png");
        let svg = $stem.with_extension("svg");
        {
            let root = BitMapBackend::new(&png, $size).into_drawing_area();
            $body(&root)?;
            root.present().map_err(de).with_context(|| format!("{}: cannot write", png.display()))?;
        }
        {
            let root = SVGBackend::new(&svg, $size).into_drawing_area();
            $body(&root)?;
            root.present().map_err(de).with_context(|| format!("{}: cannot write", svg.display()))?;
        }
        Ok::<Vec<PathBuf>, anyhow::Error>(vec![png, svg])
    }};
}

/// The range of `values` with 5% padding (a unit range around a single value).
fn padded(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { lo.abs().max(1.0) * 0.5 };
    (lo - pad)..(hi + pad)
}

/// Extend a y range upwards so a legend of `entries` lines in the upper right corner does not
/// cover the data (about 5% of the plot height per entry).
fn headroom(r: Range<f64>, entries: usize) -> Range<f64> {
    let share = (0.05 * entries as f64 + 0.05).min(0.5);
    let span = r.end - r.start;
    r.start..r.end + span * share / (1.0 - share)
}

fn draw_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<()> {
    root.fill(&WHITE).map_err(de)?;
    let xr = padded(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)));
    let yr = headroom(padded(series.iter().flat_map(|s| s.points.iter().map(|p| p.1))), series.len());
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(xr, yr)
        .map_err(de)?;
    let x_integral = series.iter().all(|s| s.points.iter().all(|p| p.0.fract() == 0.0));
    let x_span = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(0.0_f64, f64::max);
    let fmt_x = |x: &f64| {
        if !x_integral {
            format!("{x}")
        } else if x.fract() == 0.0 {
            format!("{x:.0}")
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_labels(if x_integral { (x_span as usize + 1).clamp(2, 11) } else { 10 })
        .x_label_formatter(&fmt_x)
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(de)?;
    for (i, s) in series.iter().enumerate() {
        let c = colour(i);
        let style = c.stroke_width(if s.dashed { 2 } else { 3 });
        if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(s.points.iter().copied(), 10, 6, style))
                .map_err(de)?
                .label(&s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(2)));
        } else {
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style))
                .map_err(de)?
                .label(&s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
            if s.points.len() <= 60 {
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(de)?;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(de)?;
    Ok(())
}

/// A line chart as `stem.png` and `stem.svg`.
///
/// # Errors
/// Drawing or I/O failure.
pub fn line_chart(
    stem: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<Vec<PathBuf>> {
    png_and_svg!(stem, (1000, 600), |root| draw_lines(root, title, x_desc, y_desc, series))
}

/// Category axis: category `i` spans `[i, i + 1)` with its tick at `i + 0.5`.
/// (Tick labels are drawn by [`x_categories`] and [`y_categories`], since plotters' own ticks
/// fall on round numbers, not on category centres.)
fn category_axis(n: usize) -> Range<f64> {
    0.0..n.max(1) as f64
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Category names under the x axis, centred on their columns.
fn x_categories<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart<'_, DB>,
    labels: &[String],
    y_bottom: f64,
    rotate: bool,
) -> Result<()> {
    for (i, l) in labels.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(i as f64 + 0.5, y_bottom));
        let style = if rotate {
            TextStyle::from((FAMILY, 13).into_font())
                .transform(FontTransform::Rotate90)
                .pos(Pos::new(HPos::Left, VPos::Center))
        } else {
            TextStyle::from((FAMILY, 15).into_font()).pos(Pos::new(HPos::Center, VPos::Top))
        };
        root.draw(&Text::new(l.clone(), (px, py + 6), style)).map_err(de)?;
    }
    Ok(())
}

/// Category names left of the y axis, centred on their rows.
fn y_categories<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart<'_, DB>,
    labels: &[String],
    x_left: f64,
) -> Result<()> {
    for (j, l) in labels.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(x_left, j as f64 + 0.5));
        let style = TextStyle::from((FAMILY, 16).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(l.clone(), (px - 8, py), style)).map_err(de)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    categories: &[String],
    groups: &[(String, Vec<Option<f64>>)],
    errors: &[Vec<Option<f64>>],
) -> Result<()> {
    root.fill(&WHITE).map_err(de)?;
    // Many series: the legend gets its own panel on the right (drawn by hand: plotters'
    // series labels stay inside the plot, where a long legend hides the bars).
    let outside = groups.len() > LEGEND_INSIDE_MAX;
    let (root, panel) = if outside {
        let (w, _) = root.dim_in_pixel();
        let (a, b) = root.split_horizontally(w.saturating_sub(170));
        (a, Some(b))
    } else {
        (root.clone(), None)
    };
    let root = &root;
    if let Some(panel) = &panel {
        for (g, (name, _)) in groups.iter().enumerate() {
            let y = 70 + 22 * g as i32;
            let c = colour(g);
            panel.draw(&Rectangle::new([(6, y - 7), (20, y + 7)], c.filled())).map_err(de)?;
            let style = TextStyle::from((FAMILY, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
            panel.draw(&Text::new(name.clone(), (28, y), style)).map_err(de)?;
        }
    }
    let err = |g: usize, i: usize| {
        errors.get(g).and_then(|e| e.get(i).copied().flatten()).filter(|e| e.is_finite())
    };
    let tops = groups.iter().enumerate().flat_map(|(g, (_, vs))| {
        vs.iter().enumerate().filter_map(move |(i, v)| v.map(|v| v + err(g, i).unwrap_or(0.0).abs()))
    });
    let vals = groups.iter().flat_map(|g| g.1.iter().flatten().copied()).chain(tops).chain([0.0]);
    let yr = headroom(padded(vals), if outside { 0 } else { groups.len() });
    let yr_start = yr.start;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 24))
        .margin(15)
        .x_label_area_size(if categories.iter().any(|c| c.chars().count() > 4) && categories.len() > 12 {
            90
        } else {
            50
        })
        .y_label_area_size(70)
        .build_cartesian_2d(category_axis(categories.len()), yr)
        .map_err(de)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(0)
        .y_label_style((FAMILY, 15))
        .axis_desc_style((FAMILY, 17))
        .draw()
        .map_err(de)?;
    let rotate = categories.len() > 12 && categories.iter().any(|c| c.chars().count() > 4);
    x_categories(root, &chart, categories, yr_start, rotate)?;
    let k = groups.len().max(1) as f64;
    let width = 0.8 / k;
    for (g, (name, values)) in groups.iter().enumerate() {
        let c = colour(g);
        let bars = values.iter().enumerate().filter_map(|(i, v)| {
            let v = (*v)?;
            let x0 = i as f64 + 0.1 + g as f64 * width;
            Some(Rectangle::new([(x0, 0.0), (x0 + width * 0.92, v)], c.filled()))
        });
        chart
            .draw_series(bars)
            .map_err(de)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled()));
        // Error bars: a vertical line of +-e with caps, centred on the bar.
        let whiskers = values.iter().enumerate().filter_map(|(i, v)| {
            let (v, e) = ((*v)?, err(g, i)?);
            let xc = i as f64 + 0.1 + g as f64 * width + width * 0.46;
            let cap = width * 0.25;
            Some(vec![
                PathElement::new(vec![(xc, v - e), (xc, v + e)], BLACK.stroke_width(1)),
                PathElement::new(vec![(xc - cap, v - e), (xc + cap, v - e)], BLACK.stroke_width(1)),
                PathElement::new(vec![(xc - cap, v + e), (xc + cap, v + e)], BLACK.stroke_width(1)),
            ])
        });
        chart.draw_series(whiskers.flatten()).map_err(de)?;
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 0.0), (categories.len().max(1) as f64, 0.0)],
            BLACK.stroke_width(1),
        )))
        .map_err(de)?;
    if !outside {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(de)?;
    }
    Ok(())
}

/// Grouped bars: one group of bars per category, one colour per series.
///
/// # Errors
/// Drawing or I/O failure.
pub fn bar_chart(
    stem: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    categories: &[String],
    groups: &[(String, Vec<Option<f64>>)],
) -> Result<Vec<PathBuf>> {
    bar_chart_with_errors(stem, title, x_desc, y_desc, categories, groups, &[])
}

/// Grouped bars with error bars: `errors[g][i]` is the half-length of bar `i` of group `g`
/// (missing or empty: none).
///
/// # Errors
/// Drawing or I/O failure.
pub fn bar_chart_with_errors(
    stem: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    categories: &[String],
    groups: &[(String, Vec<Option<f64>>)],
    errors: &[Vec<Option<f64>>],
) -> Result<Vec<PathBuf>> {
    let width = (240 + 24 * categories.len() as u32 * groups.len().max(1) as u32).clamp(900, 1600);
    png_and_svg!(stem, (width, 600), |root| draw_bars(
        root, title, x_desc, y_desc, categories, groups, errors
    ))
}

/// Colour of a heatmap cell: `t` in [0, 1] from dark blue (low, good) to light yellow.
fn heat(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(33.0, 253.0), lerp(102.0, 231.0), lerp(172.0, 37.0))
}

#[allow(clippy::too_many_arguments)]
fn draw_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    xs: &[String],
    ys: &[String],
    values: &[Vec<Option<f64>>],
    marked: Option<(usize, usize)>,
) -> Result<()> {
    root.fill(&WHITE).map_err(de)?;
    let all: Vec<f64> = values.iter().flatten().flatten().copied().collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(category_axis(xs.len()), category_axis(ys.len()))
        .map_err(de)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(0)
        .y_labels(0)
        .axis_desc_style((FAMILY, 17))
        .draw()
        .map_err(de)?;
    x_categories(root, &chart, xs, 0.0, false)?;
    y_categories(root, &chart, ys, 0.0)?;
    for (i, row) in values.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let (x, y) = (i as f64, j as f64);
            let (fill, text) = match v {
                Some(v) => {
                    let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
                    (heat(t), format!("{v:.3}"))
                }
                None => (RGBColor(220, 220, 220), "no runs".to_string()),
            };
            chart
                .draw_series(std::iter::once(Rectangle::new([(x, y), (x + 1.0, y + 1.0)], fill.filled())))
                .map_err(de)?;
            let dark = matches!(v, Some(v) if hi > lo && (v - lo) / (hi - lo) < 0.5);
            let tc = if dark { WHITE } else { BLACK };
            let mut label = text;
            if marked == Some((i, j)) {
                label.push_str(" (best)");
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x + 0.02, y + 0.02), (x + 0.98, y + 0.98)],
                        RED.stroke_width(4),
                    )))
                    .map_err(de)?;
            }
            let style = TextStyle::from((FAMILY, 18).into_font())
                .color(&tc)
                .pos(Pos::new(HPos::Center, VPos::Center));
            chart.draw_series(std::iter::once(Text::new(label, (x + 0.5, y + 0.5), style))).map_err(de)?;
        }
    }
    Ok(())
}

/// A heatmap with `values[i][j]` at column `xs[i]`, row `ys[j]`, each cell labelled with
/// its value; `marked` gets a red frame.
///
/// # Errors
/// Drawing or I/O failure.
#[allow(clippy::too_many_arguments)]
pub fn heatmap(
    stem: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    xs: &[String],
    ys: &[String],
    values: &[Vec<Option<f64>>],
    marked: Option<(usize, usize)>,
) -> Result<Vec<PathBuf>> {
    png_and_svg!(stem, (900, 700), |root| draw_heatmap(root, title, x_desc, y_desc, xs, ys, values, marked))
}

/// What the engine says about a run's best prompt, computed by `deopt report`.
#[derive(Debug, Clone)]
pub struct EngineView {
    /// Item ids, in survey order.
    pub items: Vec<String>,
    /// Each item's answer without a soft prompt.
    pub baseline: Vec<f64>,
    /// Each item's answer with the best prompt.
    pub optimised: Vec<f64>,
    /// VSM13: the six indices without a soft prompt.
    pub baseline_dims: Option<[Option<f64>; 6]>,
    /// VSM13: the six indices with the best prompt (all items, held-out ones included).
    pub optimised_dims: Option<[Option<f64>; 6]>,
    /// VSM13: the country's six target indices.
    pub target_dims: Option<[Option<f64>; 6]>,
    /// Fitness over all items without and with the best prompt.
    pub fitness: (f64, f64),
}

/// The spec as `(name, value)` rows, nested names joined with dots, nulls left out.
fn settings_rows(v: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&name, x, out);
                }
            }
            Value::Null => {}
            other => out.push((prefix.to_string(), other.to_string().trim_matches('"').to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}

/// A table cell of an optional number: `-` when missing, else `decimals` places.
pub fn fixed_or_dash(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.decimals$}"))
}

fn f4(v: Option<f64>) -> String {
    fixed_or_dash(v, 4)
}

fn f2(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.2}"))
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Write `dir/report.md` and its charts for a run; returns the chart files.
///
/// # Errors
/// `dir` is not a run, or drawing or I/O fails.
pub fn write_run_report(dir: &Path, view: Option<&EngineView>) -> Result<Vec<PathBuf>> {
    if !directory::is_run(dir) {
        anyhow::bail!("{}", directory::not_a_run(dir));
    }
    let cfg = RunConfig::load_checked(dir)?;
    // The same checks as a resume: a report never draws an edited or foreign history.
    let loaded = Checkpoint::load_latest(dir)?;
    let ckpt = loaded.checkpoint;
    let source =
        dir.join(if loaded.fallback.is_some() { directory::PREV_CHECKPOINT } else { directory::CHECKPOINT });
    ckpt.validate(&cfg, &source)?;
    let h = &ckpt.history;
    let last = h.last().ok_or_else(|| anyhow!("{}: the run has no generation yet", dir.display()))?;
    let country = cfg.spec.task.country.as_str();
    let survey = cfg.spec.survey_name();
    let mut files = Vec::new();

    // Convergence. A tuning run is drawn over forward-pass equivalents, the unit its
    // `evaluations` column counts (a DE evaluation is one forward pass over the survey), so the
    // charts of both methods share an axis.
    let tune = cfg.spec.tune().is_some();
    let x_of = |r: &HistoryRow| if tune { r.evaluations as f64 } else { r.generation as f64 };
    let pts = |f: &dyn Fn(&HistoryRow) -> Option<f64>| -> Vec<(f64, f64)> {
        h.iter().filter_map(|r| f(r).map(|v| (x_of(r), v))).collect()
    };
    // Best so far last, on top: it often coincides with the population best.
    let mut series = if tune {
        vec![
            Series { name: "current prompt".into(), points: pts(&|r| Some(r.best)), dashed: true },
            Series { name: "best so far".into(), points: pts(&|r| Some(r.best_so_far)), dashed: false },
        ]
    } else {
        vec![
            Series { name: "population median".into(), points: pts(&|r| Some(r.median)), dashed: false },
            Series { name: "population best".into(), points: pts(&|r| Some(r.best)), dashed: true },
            Series { name: "best so far".into(), points: pts(&|r| Some(r.best_so_far)), dashed: false },
        ]
    };
    let holdout = pts(&|r| r.holdout);
    if !holdout.is_empty() {
        series.push(Series { name: "held-out loss of best".into(), points: holdout, dashed: false });
    }
    let g_end = x_of(last).max(1.0);
    {
        let b = cfg.baseline_loss;
        series.push(Series {
            name: "no soft prompt (train)".into(),
            points: vec![(0.0, b), (g_end, b)],
            dashed: true,
        });
    }
    if let Some(b) = cfg.baseline_holdout_loss {
        series.push(Series {
            name: "no soft prompt (held out)".into(),
            points: vec![(0.0, b), (g_end, b)],
            dashed: true,
        });
    }
    files.extend(line_chart(
        &dir.join("convergence"),
        &format!("Convergence: {country} {survey} (lower is better)"),
        if tune { "forward-pass equivalents (Adam steps)" } else { "generation" },
        "fitness (loss)",
        &series,
    )?);

    // Dimensions.
    let dims_opt: Option<[Option<f64>; 6]> = view
        .and_then(|v| v.optimised_dims)
        .or_else(|| (last.dimensions.len() == 6).then(|| std::array::from_fn(|i| last.dimensions[i])));
    if let Some(opt) = dims_opt {
        let cats: Vec<String> = Dimension::ALL.iter().map(|d| d.code().to_string()).collect();
        let mut groups = Vec::new();
        if let Some(b) = view.and_then(|v| v.baseline_dims) {
            groups.push(("no soft prompt".to_string(), b.to_vec()));
        }
        groups.push(("optimised prompt".to_string(), opt.to_vec()));
        if let Some(t) = view.and_then(|v| v.target_dims) {
            groups.push((format!("target ({country})"), t.to_vec()));
        }
        files.extend(bar_chart(
            &dir.join("dimensions"),
            &format!("Hofstede dimensions: {country}"),
            "dimension",
            "index value",
            &cats,
            &groups,
        )?);
    }

    // Per-item answers.
    let mut shifts: Vec<(String, f64, f64)> = Vec::new();
    if let Some(v) = view {
        shifts = v
            .items
            .iter()
            .zip(v.baseline.iter().zip(&v.optimised))
            .map(|(i, (b, o))| (i.clone(), *b, *o))
            .collect();
        let mut shown = shifts.clone();
        let mut title = format!("Answer per item: {country} {survey}");
        if shown.len() > 40 {
            shown.sort_by(|a, b| (b.2 - b.1).abs().total_cmp(&(a.2 - a.1).abs()));
            shown.truncate(40);
            title.push_str(" (40 largest shifts)");
        }
        let cats: Vec<String> = shown.iter().map(|s| s.0.clone()).collect();
        let groups = vec![
            ("no soft prompt".to_string(), shown.iter().map(|s| Some(s.1)).collect()),
            ("optimised prompt".to_string(), shown.iter().map(|s| Some(s.2)).collect()),
        ];
        files.extend(bar_chart(&dir.join("item_shift"), &title, "item", "expected answer", &cats, &groups)?);
    }

    // report.md
    let mut md = String::new();
    let _ = writeln!(md, "# deopt run: {country}, {survey}\n");
    let _ = writeln!(md, "Directory: `{}`\n", dir.display());
    let _ = writeln!(md, "| setting | value |\n|---|---|");
    for (k, v) in settings_rows(&serde_json::to_value(&cfg.spec)?) {
        let _ = writeln!(md, "| {k} | {v} |");
    }
    let _ = writeln!(md, "| model | {} |", cfg.model.name);
    let _ = writeln!(md, "\n## Result\n");
    let _ = writeln!(md, "| quantity | value |\n|---|---|");
    if tune {
        let _ = writeln!(md, "| Adam steps | {} |", last.generation);
        let _ = writeln!(md, "| forward-pass equivalents | {} |", last.evaluations);
    } else {
        let _ = writeln!(md, "| generations | {} |", last.generation);
        let _ = writeln!(md, "| evaluations | {} |", last.evaluations);
    }
    let _ = writeln!(md, "| fitness without soft prompt (train items) | {} |", f4(Some(cfg.baseline_loss)));
    let _ = writeln!(
        md,
        "| best fitness (train items) | {:.4} ({} {}) |",
        last.best_so_far,
        if tune { "step" } else { "generation" },
        ckpt.best_generation
    );
    if last.holdout.is_some() {
        let _ = writeln!(
            md,
            "| held-out loss: no prompt / best prompt | {} / {} |",
            f4(cfg.baseline_holdout_loss),
            f4(last.holdout)
        );
    }
    if let Some(v) = view {
        let _ = writeln!(
            md,
            "| fitness over all items: no prompt / best prompt | {:.4} / {:.4} |",
            v.fitness.0, v.fitness.1
        );
    }
    let _ = writeln!(md, "| wall time | {:.1} s |", ckpt.elapsed_s);
    if let Some(t) = crate::run::transfer::load(dir) {
        let _ = writeln!(md, "\n## Transfer to the real surveys\n");
        let _ = writeln!(md, "{}", crate::run::transfer::table(&t));
    }
    let _ = writeln!(md, "\n## Charts\n");
    if tune {
        let _ = writeln!(md, "Convergence: the fitness of the prompt after each Adam step (scored by the llama.cpp engine) and the best so far, over forward-pass equivalents (a backward pass counts as two), the held-out loss of the best prompt if any, and the loss without a soft prompt (dashed). Per-step objective and gradient norm: `tune.csv`.\n");
    } else {
        let _ = writeln!(md, "Convergence: best and median fitness of the population per generation, the best so far, the held-out loss of the best prompt if any, and the loss without a soft prompt (dashed).\n");
    }
    let _ = writeln!(md, "![convergence](convergence.png)\n");
    if let Some(opt) = dims_opt {
        let _ =
            writeln!(md, "Dimensions without a soft prompt, with the optimised prompt, and the target.\n");
        let _ = writeln!(md, "![dimensions](dimensions.png)\n");
        let _ = writeln!(md, "| dimension | no prompt | optimised | target |\n|---|---|---|---|");
        for d in Dimension::ALL {
            let i = d.index();
            let b = view.and_then(|v| v.baseline_dims).and_then(|b| b[i]);
            let t = view.and_then(|v| v.target_dims).and_then(|t| t[i]);
            let _ = writeln!(md, "| {} | {} | {} | {} |", d.code(), f2(b), f2(opt[i]), f2(t));
        }
        md.push('\n');
    }
    if !shifts.is_empty() {
        let _ = writeln!(
            md,
            "Answer per item (expected answer on the item's scale) without and with the optimised prompt.\n"
        );
        let _ = writeln!(md, "![item shift](item_shift.png)\n");
        let _ = writeln!(md, "| item | no prompt | optimised | shift |\n|---|---|---|---|");
        for (id, b, o) in &shifts {
            let _ = writeln!(md, "| {id} | {b:.3} | {o:.3} | {:+.3} |", o - b);
        }
    } else {
        let _ = writeln!(md, "(No per-item answers: the report was written without the model.)");
    }
    let _ = writeln!(
        md,
        "\nAll charts are also written as SVG: {}.",
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "svg"))
            .map(|p| format!("`{}`", file_name(p)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    crate::fsutil::write_atomic(&dir.join(REPORT), md.as_bytes())?;
    Ok(files)
}

/// Write `dir/report.md` and its charts for a sweep: a heatmap of the median final best loss
/// over (mutation, recombination) and the median convergence curve of each cell.
///
/// # Errors
/// `dir` is not a sweep, a run cannot be read, or drawing or I/O fails.
pub fn write_sweep_report(dir: &Path) -> Result<Vec<PathBuf>> {
    use crate::run::grid;
    let s = grid::read_settings(dir)?;
    let results = grid::collect(dir, &s)?;
    let cells = grid::summarize(&s, &results);
    let mut files = Vec::new();
    let xs: Vec<String> = s.mutation.iter().map(|m| format!("{m}")).collect();
    let ys: Vec<String> = s.recombination.iter().map(|r| format!("{r}")).collect();
    let nr = s.recombination.len();
    let values: Vec<Vec<Option<f64>>> = (0..s.mutation.len())
        .map(|mi| (0..nr).map(|ri| crate::optim::stats::median(&cells[mi * nr + ri].losses)).collect())
        .collect();
    let marked = cells.iter().position(|c| c.best_cell).map(|i| (i / nr, i % nr));
    files.extend(heatmap(
        &dir.join("heatmap"),
        &format!(
            "Median final best loss, {} {} ({} runs/cell, lower is better)",
            s.country, s.strategy, s.repeats
        ),
        "mutation factor F",
        "recombination rate CR",
        &xs,
        &ys,
        &values,
        marked,
    )?);

    // Median best-so-far per generation over each cell's finished runs.
    let mut series = Vec::new();
    for (mi, &m) in s.mutation.iter().enumerate() {
        for (ri, &r) in s.recombination.iter().enumerate() {
            let mut curves: Vec<Vec<f64>> = Vec::new();
            for x in results.iter().filter(|x| x.spec.mi == mi && x.spec.ri == ri) {
                let c = Checkpoint::load(&crate::run::grid::run_dir(dir, &x.spec))?;
                curves.push(c.history.iter().map(|h| h.best_so_far).collect());
            }
            let len = curves.iter().map(Vec::len).min().unwrap_or(0);
            let points: Vec<(f64, f64)> = (0..len)
                .filter_map(|g| {
                    let col: Vec<f64> = curves.iter().map(|c| c[g]).collect();
                    crate::optim::stats::median(&col).map(|v| (g as f64, v))
                })
                .collect();
            if !points.is_empty() {
                series.push(Series { name: format!("F={m} CR={r}"), points, dashed: false });
            }
        }
    }
    files.extend(line_chart(
        &dir.join("convergence"),
        &format!("Median best-so-far loss per cell, {} {}", s.country, s.strategy),
        "generation",
        "best fitness so far (loss)",
        &series,
    )?);

    let mut md = String::new();
    let _ = writeln!(md, "# deopt sweep: {}, {}\n", s.country, s.survey);
    let _ = writeln!(md, "Directory: `{}`\n", dir.display());
    let _ = writeln!(
        md,
        "Strategy {}, population {}, {} soft-prompt rows, {} generations, {} repeats per cell, seed {}, held-out fraction {}.\n",
        s.strategy, s.pop, s.tokens, s.gens, s.repeats, s.seed, s.holdout
    );
    let planned = grid::plan(&s).len();
    let _ = writeln!(md, "{} of {} runs finished.\n", results.len(), planned);
    let _ = writeln!(md, "| F | CR | n | median | best | p (best cell smaller) |\n|---|---|---|---|---|---|");
    for c in &cells {
        let mark = if c.best_cell { " **best cell**" } else { "" };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {}{mark} | {} | {} |",
            c.mutation,
            c.recombination,
            c.losses.len(),
            f4(crate::optim::stats::median(&c.losses)),
            f4(c.losses.iter().copied().min_by(f64::total_cmp)),
            f4(c.p_value)
        );
    }
    let _ = writeln!(md, "\np: one-sided Mann-Whitney U test (normal approximation) that the best cell's final losses are smaller than the cell's; with few repeats it cannot get small.\n");
    let _ = writeln!(
        md,
        "Median final best loss per cell (best cell framed in red):\n\n![heatmap](heatmap.png)\n"
    );
    let _ = writeln!(
        md,
        "Median best-so-far loss per generation, one line per cell:\n\n![convergence](convergence.png)\n"
    );
    let _ = writeln!(
        md,
        "Tables: `{}` (one row per run), `{}` (one row per cell). Charts also as SVG.",
        grid::SWEEP_CSV,
        grid::SUMMARY_CSV
    );
    crate::fsutil::write_atomic(&dir.join(REPORT), md.as_bytes())?;
    Ok(files)
}
