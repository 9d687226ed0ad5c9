//! `deopt sweep` end to end with the real default model: a 2 x 2 grid, 2 repeats, 1
//! generation, population 4, T = 2 rows (8 runs).
//!
//! The interruption is simulated by running shard 1/2 only; the unsharded sweep then has to
//! skip those 4 runs (their files are untouched) and run the other 4. Shard 2/2 in a third
//! directory, merged with shard 1/2, must give the unsharded sweep's summary.csv byte for
//! byte (summary.csv holds no wall-clock figures).

use crate::common::{assert_one_line_error, deopt, deopt_cmd, serial, tmpdir};

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::SystemTime;

const GRID: [&str; 18] = [
    "sweep",
    "--country",
    "SAU",
    "--mutation",
    "0.5,0.8",
    "--recombination",
    "0.3,0.9",
    "--pop",
    "4",
    "--tokens",
    "2",
    "--gens",
    "1",
    "--repeats",
    "2",
    "--seed",
    "11",
    "--threads",
];

fn sweep(dir: &Path, shard: Option<&str>) -> Output {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).to_string();
    let mut a: Vec<&str> = GRID.to_vec();
    a.extend([threads.as_str(), "--out", dir.to_str().unwrap()]);
    if let Some(s) = shard {
        a.extend(["--shard", s]);
    }
    let o = deopt(&a);
    assert!(o.status.success(), "deopt sweep failed: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn run_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dst = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).unwrap();
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn sweep_shards_resume_and_merge() {
    let _serial = serial(); // uses both cores
    let shard1 = tmpdir("shard1");
    let full = tmpdir("full");
    let shard2 = tmpdir("shard2");
    let merged = tmpdir("merged");

    // "Interrupted" sweep: shard 1/2 runs runs 0, 2, 4, 6.
    sweep(&shard1, Some("1/2"));
    let done = run_dirs(&shard1);
    assert_eq!(done.len(), 4, "{done:?}");
    let summary1 = read(&shard1.join("summary.csv"));
    assert_eq!(summary1.lines().count(), 5, "{summary1}");
    assert_eq!(read(&shard1.join("sweep.csv")).lines().count(), 5);

    // Resume unsharded from a copy: the 4 finished runs are skipped, the other 4 run.
    copy_tree(&shard1, &full);
    let before: Vec<(PathBuf, SystemTime)> = run_dirs(&full)
        .into_iter()
        .map(|d| {
            let c = d.join("checkpoint.json");
            let t = mtime(&c);
            (c, t)
        })
        .collect();
    let o = sweep(&full, None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("finished already, skipped").count(), 4, "{err}");
    for (c, t) in &before {
        assert_eq!(mtime(c), *t, "{} was rewritten", c.display());
    }
    assert_eq!(run_dirs(&full).len(), 8);
    let sweep_csv = read(&full.join("sweep.csv"));
    assert_eq!(sweep_csv.lines().count(), 9, "{sweep_csv}");
    let summary = read(&full.join("summary.csv"));
    assert_eq!(summary.lines().filter(|l| l.contains(",yes,")).count(), 1, "{summary}");
    for l in summary.lines().skip(1) {
        assert!(l.split(',').nth(2) == Some("2"), "every cell has 2 runs: {l}");
    }
    for f in ["report.md", "heatmap.png", "heatmap.svg", "convergence.png", "convergence.svg"] {
        assert!(full.join(f).is_file(), "{f} missing");
    }

    // Shard 2/2 elsewhere, merged with shard 1/2: the same summary as the unsharded sweep.
    sweep(&shard2, Some("2/2"));
    let o = deopt(&[
        "sweep",
        "merge",
        shard1.to_str().unwrap(),
        shard2.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "merge failed: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(read(&merged.join("summary.csv")), summary);
    let strip_wall = |s: &str| -> Vec<String> {
        s.lines().map(|l| l.rsplit_once(',').map_or(l, |x| x.0).to_string()).collect()
    };
    assert_eq!(strip_wall(&read(&merged.join("sweep.csv"))), strip_wall(&sweep_csv));

    // A sweep with other settings is refused, in merge and in the directory.
    let other = tmpdir("other");
    std::fs::create_dir_all(&other).unwrap();
    let json = read(&shard1.join("sweep.json")).replace("\"pop\": 4", "\"pop\": 5");
    std::fs::write(other.join("sweep.json"), json).unwrap();
    let o = deopt(&[
        "sweep",
        "merge",
        shard1.to_str().unwrap(),
        other.to_str().unwrap(),
        "--out",
        tmpdir("m2").to_str().unwrap(),
    ]);
    assert_one_line_error(&o, "other settings");
    let o = deopt(&["sweep", "--country", "SAU", "--pop", "5", "--out", shard1.to_str().unwrap()]);
    assert_one_line_error(&o, "other settings");

    for d in [shard1, full, shard2, merged, other] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn bad_input_is_one_line() {
    let _serial = serial(); // uses both cores
    let d = tmpdir("bad");
    let out = d.to_str().unwrap();
    let cases: [(&[&str], &str); 8] = [
        (&["sweep", "--country", "SAU", "--mutation", "", "--out", out], "--mutation"),
        (&["sweep", "--country", "SAU", "--mutation", "0.3,,0.5", "--out", out], "value 2 is empty"),
        (&["sweep", "--country", "SAU", "--recombination", "abc", "--out", out], "not a number"),
        (&["sweep", "--country", "SAU", "--recombination", "0.5,1.5", "--out", out], "outside"),
        (&["sweep", "--country", "SAU", "--mutation", "0", "--out", out], "outside"),
        (&["sweep", "--country", "SAU", "--shard", "3/2", "--out", out], "--shard"),
        (&["sweep", "--country", "SAU", "--shard", "0/2", "--out", out], "--shard"),
        (&["sweep", "merge", out, "--out", out], "not a deopt sweep directory"),
    ];
    for (args, needle) in cases {
        let o = deopt(args);
        assert_one_line_error(&o, needle);
    }
    assert!(!d.join("sweep.json").exists(), "bad flags must not create a sweep");

    // Slurm: --shard auto outside an array job, --submit without sbatch, a merge of shards
    // whose runs are not finished.
    let small =
        ["sweep", "--country", "SAU", "--mutation", "0.5", "--recombination", "0.9", "--repeats", "2"];
    fn with<'a>(small: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        small.iter().chain(extra).copied().collect()
    }
    let o = deopt_cmd()
        .args(with(&small, &["--shard", "auto", "--out", out]))
        .env_remove("SLURM_ARRAY_TASK_ID")
        .output()
        .unwrap();
    assert_one_line_error(&o, "--shard auto: not inside a Slurm array job");
    let o = deopt_cmd()
        .args(with(&small, &["--slurm", "--submit", "--out", out]))
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_one_line_error(&o, "--submit: sbatch is not on PATH");
    let scripts = d.join("scripts");
    let o = deopt(&with(&small, &["--slurm", "--slurm-cpus", "1", "--out", scripts.to_str().unwrap()]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let array = std::fs::read_to_string(scripts.join("slurm/array.sbatch")).unwrap();
    assert!(array.contains("#SBATCH --array=1-2\n") && array.contains("--threads 1"), "{array}");
    let shards: Vec<String> =
        (1..=2).map(|i| scripts.join("shards").join(i.to_string()).display().to_string()).collect();
    let merged = d.join("merged");
    let o = deopt(&["sweep", "merge", &shards[0], &shards[1], "--out", merged.to_str().unwrap()]);
    assert_one_line_error(&o, "not a deopt sweep directory");
    let o = deopt(&["sweep", "merge", scripts.to_str().unwrap(), "--out", merged.to_str().unwrap()]);
    assert_one_line_error(&o, "2 of 2 runs are not finished");
}
