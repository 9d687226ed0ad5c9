//! `deopt report` with the real default model on a tiny run (population 4, T = 2 rows, one
//! generation, one dimension held out), which `deopt run` reports on by itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn deopt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deopt")).args(args).output().expect("running deopt")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("deopt-test-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

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
    let dir = tmp("run");
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
    let dir = tmp("empty");
    std::fs::create_dir_all(&dir).unwrap();
    let o = deopt(&["report", dir.to_str().unwrap(), "--no-model"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("neither a deopt run nor a sweep directory"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
