//! `deopt report` with the real default model on a tiny run (population 4, T = 2 rows, one
//! generation, one dimension held out), which `deopt run` reports on by itself.

use crate::common::{deopt, fails_with, serial, tmpdir};

use std::path::Path;

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

/// A PNG with its signature, an IHDR of the expected width and height, and enough bytes
/// to hold more than a blank canvas.
fn assert_png(p: &Path, min_width: u32) {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(b[..8], PNG_SIGNATURE, "{} is not a PNG", p.display());
    assert_eq!(&b[12..16], b"IHDR", "{}: no IHDR chunk", p.display());
    let w = u32::from_be_bytes(b[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(b[20..24].try_into().unwrap());
    assert!(w >= min_width && h >= 400, "{}: {w}x{h}", p.display());
    assert!(b.len() > 10_000, "{}: only {} bytes", p.display(), b.len());
    assert!(b.windows(4).any(|x| x == b"IEND"), "{}: truncated", p.display());
}

fn assert_svg(p: &Path, needles: &[&str]) {
    let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(s.starts_with("<svg") || s.contains("<svg"), "{} is not an SVG", p.display());
    for n in needles {
        assert!(s.contains(n), "{}: no '{n}'", p.display());
    }
}

#[test]
fn run_writes_report_and_charts() {
    let _serial = serial(); // uses both cores
    let dir = tmpdir("run");
    let d = dir.to_str().unwrap();
    let o = deopt(&[
        "run",
        "--country",
        "SAU",
        "--pop",
        "4",
        "--tokens",
        "2",
        "--gens",
        "1",
        "--seed",
        "3",
        "--holdout",
        "0.2",
        "--out",
        d,
    ]);
    assert!(o.status.success(), "deopt run failed: {}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("report: "), "no report line");

    let md = std::fs::read_to_string(dir.join("report.md")).expect("report.md");
    for needle in [
        "![convergence](convergence.png)",
        "![dimensions](dimensions.png)",
        "![item shift](item_shift.png)",
        "| PDI |",
        "held-out loss",
    ] {
        assert!(md.contains(needle), "report.md lacks '{needle}':\n{md}");
    }
    // One row per VSM13 item (24) in the per-item table.
    let rows = md
        .lines()
        .skip_while(|l| !l.starts_with("| item |"))
        .skip(2)
        .take_while(|l| l.starts_with("| "))
        .count();
    assert_eq!(rows, 24, "{md}");
    assert_png(&dir.join("convergence.png"), 900);
    assert_png(&dir.join("dimensions.png"), 900);
    assert_png(&dir.join("item_shift.png"), 900);
    assert_svg(&dir.join("convergence.svg"), &["generation", "best so far", "held-out loss of best"]);
    assert_svg(&dir.join("dimensions.svg"), &["PDI", "IVR", "target (SAU)", "no soft prompt"]);
    assert_svg(&dir.join("item_shift.svg"), &["expected answer", "optimised prompt"]);

    // One dimension held out (its 4 items): its column is empty, the held-out loss is filled in.
    let h = std::fs::read_to_string(dir.join("history.csv")).unwrap();
    let header: Vec<&str> = h.lines().next().unwrap().split(',').collect();
    let holdout_col = header.iter().position(|c| *c == "holdout").unwrap();
    assert_eq!(h.lines().count(), 3, "header + generations 0, 1:\n{h}");
    for line in h.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[6..12].iter().filter(|c| c.is_empty()).count(), 1, "{line}");
        assert!(cells[holdout_col].parse::<f64>().unwrap() > 0.0, "{line}");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["holdout_items"].as_array().unwrap().len(), 4);
    assert_eq!(cfg["train_items"].as_array().unwrap().len(), 20);
    let (p, meta) =
        deopt::prompt::softprompt::SoftPrompt::load(&dir.join("best_prompt.safetensors")).unwrap();
    assert_eq!(p.rows(), 2);
    assert_eq!(meta.get("country").map(String::as_str), Some("SAU"));
    let last = h.lines().last().unwrap().split(',').nth(5).unwrap().to_string();
    assert_eq!(meta.get("fitness").unwrap(), &last, "the best prompt's fitness is the last best-so-far");

    // Again from the files alone: no model, so no per-item chart in the new report.md.
    std::fs::remove_file(dir.join("report.md")).unwrap();
    let o = deopt(&["report", d, "--no-model"]);
    assert!(o.status.success(), "deopt report failed: {}", String::from_utf8_lossy(&o.stderr));
    let md = std::fs::read_to_string(dir.join("report.md")).expect("report.md");
    assert!(md.contains("without the model") && !md.contains("item_shift.png"), "{md}");

    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn report_on_something_else_is_one_line() {
    let _serial = serial(); // uses both cores
    let dir = tmpdir("empty");
    fails_with(&["report", dir.to_str().unwrap(), "--no-model"], "neither a deopt run nor a sweep directory");
    let _ = std::fs::remove_dir_all(&dir);
}
