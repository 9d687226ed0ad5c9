//! Optimizer tests on cheap test functions: trial mechanics, convergence figures, the
//! high-dimensional comparison, determinism, checkpoints and settings errors.

use deopt::optim::stats::{mann_whitney_u, median, Alternative};
use deopt::optim::testfn::{Function, TestFunction};
use deopt::optim::{
    population, BatchObjective, Bounds, Config, ConfigError, Counting, FnObjective, GenerationReport,
    Optimizer, Parameters, RandomSubspace, StepError, StopReason, StopRule, Strategy,
};

/// Scores with a test function and keeps the last batch it was given.
struct Recorder {
    f: TestFunction,
    last: Vec<Vec<f32>>,
}

impl Recorder {
    fn new(f: TestFunction) -> Self {
        Recorder { f, last: Vec::new() }
    }
}

impl BatchObjective for Recorder {
    fn evaluate(&mut self, xs: &[Vec<f32>]) -> anyhow::Result<Vec<f64>> {
        self.last = xs.to_vec();
        self.f.evaluate(xs)
    }
}

fn config(strategy: Strategy) -> Config {
    Config { max_evaluations: Some(20_000), ..Config::new(strategy) }
}

fn optimizer(strategy: Strategy, f: &TestFunction, n: usize, seed: u64) -> Optimizer {
    let init = f.initial_population(n, seed + 1000);
    Optimizer::new(config(strategy), init, seed).unwrap()
}

/// Bitwise comparison of report sequences (Debug prints floats exactly).
fn same_reports(a: &[GenerationReport], b: &[GenerationReport]) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

#[test]
fn selection_never_worsens_any_individual() {
    let f = TestFunction::new(Function::Rastrigin, 10);
    for strategy in Strategy::ALL {
        let mut obj = f.clone();
        let mut opt = optimizer(strategy, &f, 30, 3);
        opt.init(&mut obj).unwrap();
        for _ in 0..40 {
            let before = opt.fitness().to_vec();
            let rep = opt.step(&mut obj).unwrap();
            let after = opt.fitness();
            if strategy == Strategy::Cmaes {
                // No parents: the population is the last sample, only the best so far holds.
                assert!(rep.best_so_far <= before.iter().copied().fold(f64::INFINITY, f64::min));
            } else if matches!(strategy, Strategy::Lshade | Strategy::Random) {
                // Population is reordered or shrunk: the k-th best never gets worse.
                let (b, a) = (sorted(&before), sorted(after));
                assert!(a.iter().zip(&b).all(|(x, y)| x <= y), "{strategy}");
            } else {
                assert!(
                    after.iter().zip(&before).all(|(x, y)| x <= y),
                    "{strategy}: an individual got worse"
                );
                let replaced = after.iter().zip(&before).filter(|(x, y)| x != y).count();
                assert!(rep.replacements >= replaced, "{strategy}");
            }
            assert_eq!(rep.best_fitness, sorted(after)[0]);
            assert_eq!(rep.best_so_far, opt.best().1);
            assert_eq!(f.value(opt.best().0), opt.best().1);
        }
    }
}

/// Coordinates in which each trial differs from its parent.
fn changed_coordinates(parents: &[Vec<f32>], trials: &[Vec<f32>]) -> Vec<usize> {
    parents.iter().zip(trials).map(|(p, u)| p.iter().zip(u).filter(|(a, b)| a != b).count()).collect()
}

#[test]
fn j_rand_guarantees_one_mutated_coordinate() {
    let f = TestFunction::new(Function::Sphere, 12);
    for strategy in [Strategy::Rand1Bin, Strategy::Best1Bin, Strategy::CurrentToBest1Bin, Strategy::Rand2Bin]
    {
        // CR = 0: exactly the j_rand coordinate comes from the mutant.
        let cfg = Config { recombination: 0.0, ..Config::new(strategy) };
        let mut opt = Optimizer::new(cfg, f.initial_population(20, 1), 5).unwrap();
        let mut obj = Recorder::new(f.clone());
        opt.init(&mut obj).unwrap();
        for _ in 0..5 {
            let parents = opt.population().to_vec();
            let rep = opt.step(&mut obj).unwrap();
            let changed = changed_coordinates(&parents, &obj.last);
            // best1bin can leave the best's own trial unchanged only if the mutant equals it,
            // which a continuous difference vector never does.
            assert!(changed.iter().all(|&c| c == 1), "{strategy}: {changed:?}");
            assert_eq!(rep.cr.unwrap().mean, 0.0);
            assert_eq!(rep.f.unwrap().mean, 0.5);
            assert_eq!(rep.f.unwrap().sd, 0.0);
        }
        // CR = 1: every coordinate comes from the mutant.
        let cfg = Config { recombination: 1.0, ..Config::new(strategy) };
        let mut opt = Optimizer::new(cfg, f.initial_population(20, 1), 5).unwrap();
        let mut obj = Recorder::new(f.clone());
        opt.init(&mut obj).unwrap();
        let parents = opt.population().to_vec();
        opt.step(&mut obj).unwrap();
        let changed = changed_coordinates(&parents, &obj.last);
        assert!(changed.iter().all(|&c| c == 12), "{strategy}: {changed:?}");
    }
    for strategy in [Strategy::Jade, Strategy::Shade, Strategy::Lshade] {
        let mut opt = optimizer(strategy, &f, 20, 2);
        let mut obj = Recorder::new(f.clone());
        opt.init(&mut obj).unwrap();
        for _ in 0..20 {
            let parents = opt.population().to_vec();
            opt.step(&mut obj).unwrap();
            let changed = changed_coordinates(&parents, &obj.last);
            assert!(changed.iter().all(|&c| c >= 1), "{strategy}: {changed:?}");
        }
    }
}

#[test]
fn one_evaluate_call_per_generation_with_the_whole_population() {
    let f = TestFunction::new(Function::Ackley, 8);
    for strategy in Strategy::ALL {
        let mut opt = optimizer(strategy, &f, 25, 4);
        let mut obj = Counting::new(f.clone());
        let mut sizes = vec![opt.population_size()];
        opt.init(&mut obj).unwrap();
        for _ in 0..30 {
            sizes.push(opt.population_size());
            let rep = opt.step(&mut obj).unwrap();
            assert_eq!(rep.trials, *sizes.last().unwrap());
        }
        assert_eq!(obj.calls, 31, "{strategy}");
        assert_eq!(obj.batch_sizes, sizes, "{strategy}");
        assert_eq!(obj.evaluations, opt.evaluations(), "{strategy}");
        assert_eq!(opt.generation(), 30);
    }
}

#[test]
fn lshade_population_shrinks_on_schedule() {
    let f = TestFunction::new(Function::Sphere, 5);
    let n_init = 40usize;
    let max = 6_000u64;
    let cfg = Config { max_evaluations: Some(max), ..Config::new(Strategy::Lshade) };
    let mut opt = Optimizer::new(cfg, f.initial_population(n_init, 1), 9).unwrap();
    let mut obj = f.clone();
    let mut stop = StopRule::new().max_evaluations(max);
    let mut sizes = Vec::new();
    let out = opt
        .run(&mut obj, &mut stop, |r| {
            // N_{G+1} = round((N_min - N_init) / MAX_NFE * NFE + N_init), never below N_min.
            let planned = ((4.0 - n_init as f64) / max as f64 * r.evaluations as f64 + n_init as f64).round();
            let expected = if r.generation == 0 { n_init } else { (planned as usize).max(4) };
            assert_eq!(r.population_size, expected, "generation {}", r.generation);
            assert!(r.archive_size <= (2.6 * r.population_size as f64).round() as usize);
            sizes.push(r.population_size);
        })
        .unwrap();
    assert_eq!(out.reason, StopReason::MaxEvaluations);
    assert!(sizes.windows(2).all(|w| w[1] <= w[0]));
    assert_eq!(*sizes.last().unwrap(), 4, "ends at N_min");
    assert!(out.last.evaluations <= max);
    assert!(max - out.last.evaluations < 4, "uses the budget: {}", out.last.evaluations);
    match opt.parameters() {
        Parameters::Shade { m_f, m_cr, .. } => {
            assert_eq!(m_f.len(), 6, "L-SHADE's H = 6");
            assert_eq!(m_cr.len(), 6);
        }
        p => panic!("unexpected parameters {p:?}"),
    }
}

#[test]
fn archives_stay_within_capacity() {
    let f = TestFunction::new(Function::Rastrigin, 10);
    for (strategy, archive) in [(Strategy::Jade, true), (Strategy::Jade, false), (Strategy::Shade, true)] {
        let cfg = Config { archive, ..Config::new(strategy) };
        let mut opt = Optimizer::new(cfg, f.initial_population(20, 1), 1).unwrap();
        let mut obj = f.clone();
        opt.init(&mut obj).unwrap();
        let mut max_seen = 0;
        for _ in 0..50 {
            let rep = opt.step(&mut obj).unwrap();
            assert_eq!(rep.archive_size, opt.archive().len());
            assert!(rep.archive_size <= 20);
            // Archive only holds replaced parents: f never beats the best.
            max_seen = max_seen.max(rep.archive_size);
        }
        if archive {
            assert_eq!(max_seen, 20, "{strategy}: archive should fill up");
        } else {
            assert_eq!(max_seen, 0);
        }
    }
}

#[test]
fn adaptive_parameters_stay_in_range_and_move() {
    let f = TestFunction::new(Function::Rastrigin, 10);
    for strategy in [Strategy::Jade, Strategy::Shade, Strategy::Lshade] {
        let mut opt = optimizer(strategy, &f, 30, 8);
        let mut obj = f.clone();
        opt.init(&mut obj).unwrap();
        for _ in 0..60 {
            let rep = opt.step(&mut obj).unwrap();
            let (fs, crs) = (rep.f.unwrap(), rep.cr.unwrap());
            assert!(fs.mean > 0.0 && fs.mean <= 1.0 && fs.sd > 0.0, "{strategy} {fs:?}");
            assert!((0.0..=1.0).contains(&crs.mean), "{strategy} {crs:?}");
        }
        match opt.parameters() {
            Parameters::Jade { mu_f, mu_cr } => {
                assert!(mu_f != 0.5 && mu_cr != 0.5);
                assert!(mu_f > 0.0 && mu_f <= 1.0 && (0.0..=1.0).contains(&mu_cr));
            }
            Parameters::Shade { m_f, m_cr, .. } => {
                assert!(m_f.iter().any(|&m| m != 0.5));
                assert!(m_f.iter().all(|&m| m > 0.0 && m <= 1.0));
                assert!(m_cr.iter().flatten().all(|m| (0.0..=1.0).contains(m)));
            }
            p => panic!("{strategy}: unexpected {p:?}"),
        }
    }
}

#[test]
fn random_search_samples_the_fitted_gaussian() {
    let dim = 4;
    // Initial population with known per-coordinate mean j and spread (j + 1).
    let init: Vec<Vec<f32>> = population::gaussian(&[0.0; 4], 200, 1.0, 3)
        .into_iter()
        .map(|x| x.iter().enumerate().map(|(j, v)| j as f32 + (j as f32 + 1.0) * v).collect())
        .collect();
    let mut opt = Optimizer::new(Config::new(Strategy::Random), init.clone(), 1).unwrap();
    let (fit_mean, fit_sd) = match opt.parameters() {
        Parameters::Random { mean, sd } => (mean.to_vec(), sd.to_vec()),
        p => panic!("{p:?}"),
    };
    let mut obj = Recorder::new(TestFunction::new(Function::Sphere, dim));
    opt.init(&mut obj).unwrap();
    let mut samples: Vec<Vec<f32>> = Vec::new();
    for _ in 0..20 {
        opt.step(&mut obj).unwrap();
        samples.extend(obj.last.iter().cloned());
    }
    let n = samples.len() as f64;
    for j in 0..dim {
        let m = samples.iter().map(|x| x[j] as f64).sum::<f64>() / n;
        let sd = (samples.iter().map(|x| (x[j] as f64 - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        assert!((m - fit_mean[j]).abs() < 0.1 * fit_sd[j], "coordinate {j}: mean {m} vs {}", fit_mean[j]);
        assert!((sd / fit_sd[j] - 1.0).abs() < 0.05, "coordinate {j}: sd {sd} vs {}", fit_sd[j]);
        // The fitted Gaussian is the initial population's mean and sample sd.
        let m0 = init.iter().map(|x| x[j] as f64).sum::<f64>() / 200.0;
        let sd0 = (init.iter().map(|x| (x[j] as f64 - m0).powi(2)).sum::<f64>() / 199.0).sqrt();
        assert!((fit_mean[j] - m0).abs() < 1e-9 && (fit_sd[j] - sd0).abs() < 1e-9);
    }
    // The population is the best N seen.
    let mut all: Vec<f64> = init.iter().chain(&samples).map(|x| obj.f.value(x)).collect();
    all.sort_by(f64::total_cmp);
    assert_eq!(sorted(opt.fitness()), all[..200].to_vec());
}

#[test]
fn bounds_and_repair_apply_to_every_trial() {
    struct Clip(TestFunction, Vec<Vec<f32>>);
    impl BatchObjective for Clip {
        fn evaluate(&mut self, xs: &[Vec<f32>]) -> anyhow::Result<Vec<f64>> {
            self.1.extend(xs.iter().cloned());
            self.0.evaluate(xs)
        }
        fn repair(&self, x: &mut [f32]) {
            // Cap the first coordinate at 1: a repair the optimizer cannot know about.
            x[0] = x[0].min(1.0);
        }
    }
    let f = TestFunction::shifted(Function::Sphere, 6, 2);
    for strategy in Strategy::ALL {
        let cfg = Config { bounds: Some(Bounds::new(-2.0, 3.0)), ..config(strategy) };
        let init = population::uniform(12, 6, -2.0, 3.0, 4);
        let mut opt = Optimizer::new(cfg, init, 4).unwrap();
        let mut obj = Clip(f.clone(), Vec::new());
        opt.init(&mut obj).unwrap();
        obj.1.clear();
        for _ in 0..30 {
            opt.step(&mut obj).unwrap();
        }
        assert!(obj.1.iter().flatten().all(|v| (-2.0..=3.0).contains(v)), "{strategy}: out of bounds");
        assert!(obj.1.iter().all(|x| x[0] <= 1.0), "{strategy}: repair not applied");
    }
}

/// Median final error of `strategy` over `seeds` on `f`, stopping before `budget` is exceeded.
fn median_error(
    strategy: Strategy,
    f: &TestFunction,
    pop: usize,
    budget: u64,
    seeds: u64,
) -> (f64, Vec<f64>) {
    let errors: Vec<f64> = (0..seeds)
        .map(|seed| {
            let (lo, hi) = f.function().domain();
            // With F = 0.5, best/1 and current-to-best/1 contract the population faster than
            // the best moves and stall (about 1 and 0.1 on this sphere); 0.8 keeps their spread.
            let mutation = match strategy {
                Strategy::Best1Bin | Strategy::CurrentToBest1Bin => 0.8,
                _ => 0.5,
            };
            let cfg = Config {
                mutation,
                max_evaluations: Some(budget),
                bounds: Some(Bounds::new(lo as f32, hi as f32)),
                ..Config::new(strategy)
            };
            let mut opt = Optimizer::new(cfg, f.initial_population(pop, seed + 77), seed).unwrap();
            let mut obj = f.clone();
            let out = opt.run(&mut obj, &mut StopRule::new().max_evaluations(budget), |_| {}).unwrap();
            assert!(out.last.evaluations <= budget);
            out.last.best_so_far - f.optimal_value()
        })
        .collect();
    (median(&errors).unwrap(), errors)
}

#[test]
fn jade_and_shade_solve_the_30d_sphere_within_150k_evaluations() {
    let f = TestFunction::new(Function::Sphere, 30);
    for strategy in [Strategy::Jade, Strategy::Shade] {
        let (med, errors) = median_error(strategy, &f, 100, 150_000, 5);
        eprintln!("sphere 30-D {strategy}: median error {med:.3e} over {errors:?}");
        assert!(med < 1e-8, "{strategy}: {errors:?}");
    }
}

#[test]
fn jade_and_shade_solve_the_30d_rastrigin_within_500k_evaluations() {
    let f = TestFunction::new(Function::Rastrigin, 30);
    for strategy in [Strategy::Jade, Strategy::Shade] {
        let (med, errors) = median_error(strategy, &f, 100, 500_000, 5);
        eprintln!("rastrigin 30-D {strategy}: median error {med:.3e} over {errors:?}");
        assert!(med < 1.0, "{strategy}: {errors:?}");
    }
}

#[test]
fn adaptive_de_beats_rand1bin_and_random_search_on_a_3200d_shifted_ellipsoid() {
    let f = TestFunction::shifted(Function::Ellipsoid, 3200, 11);
    let seeds = 7;
    let (_, rand1bin) = median_error(Strategy::Rand1Bin, &f, 50, 5_000, seeds);
    let (_, random) = median_error(Strategy::Random, &f, 50, 5_000, seeds);
    for strategy in [Strategy::Shade, Strategy::Jade] {
        let (med, errors) = median_error(strategy, &f, 50, 5_000, seeds);
        for (name, other) in [("rand1bin", &rand1bin), ("random", &random)] {
            let mw = mann_whitney_u(&errors, other, Alternative::Less);
            eprintln!(
                "ellipsoid 3200-D: {strategy} median {med:.4e} vs {name} median {:.4e}: U = {}, p = {:.4}",
                median(other).unwrap(),
                mw.u,
                mw.p_value
            );
            assert!(mw.p_value < 0.05, "{strategy} vs {name}: {errors:?} vs {other:?}, p = {}", mw.p_value);
        }
    }
}

#[test]
fn cmaes_solves_the_rotated_10d_ellipsoid_in_8000_and_rosenbrock_in_15000_evaluations() {
    // Rotation makes the ellipsoid non-separable: what the covariance is there to learn.
    let ellipsoid = TestFunction::with_transform(Function::Ellipsoid, 10, false, true, 5);
    let (med, errors) = median_error(Strategy::Cmaes, &ellipsoid, 10, 8_000, 5);
    eprintln!("rotated ellipsoid 10-D cmaes: median error {med:.3e} over {errors:?}");
    assert!(med < 1e-8, "cmaes on the ellipsoid: {errors:?}");
    let (jmed, jade) = median_error(Strategy::Jade, &ellipsoid, 10, 8_000, 5);
    let mw = mann_whitney_u(&errors, &jade, Alternative::Less);
    eprintln!("rotated ellipsoid 10-D: jade median {jmed:.3e}; cmaes < jade: p = {:.4}", mw.p_value);
    assert!(mw.p_value < 0.05, "cmaes {errors:?} vs jade {jade:?}");
    let rosenbrock = TestFunction::new(Function::Rosenbrock, 10);
    let (med, errors) = median_error(Strategy::Cmaes, &rosenbrock, 10, 15_000, 5);
    eprintln!("rosenbrock 10-D cmaes: median error {med:.3e} over {errors:?}");
    assert!(med < 1e-8, "cmaes on rosenbrock: {errors:?}");
}

#[test]
fn separable_cmaes_beats_random_search_on_a_3200d_shifted_ellipsoid() {
    let f = TestFunction::shifted(Function::Ellipsoid, 3200, 11);
    let seeds = 7;
    let (_, random) = median_error(Strategy::Random, &f, 50, 5_000, seeds);
    let (med, errors) = median_error(Strategy::Cmaes, &f, 50, 5_000, seeds);
    let mw = mann_whitney_u(&errors, &random, Alternative::Less);
    eprintln!(
        "ellipsoid 3200-D: cmaes (separable) median {med:.4e} vs random median {:.4e}: p = {:.4}",
        median(&random).unwrap(),
        mw.p_value
    );
    assert!(mw.p_value < 0.05, "{errors:?} vs {random:?}");
}

fn run_reports(strategy: Strategy, seed: u64, generations: usize) -> (Vec<GenerationReport>, Optimizer) {
    let f = TestFunction::with_transform(Function::Rastrigin, 9, true, true, 1);
    let mut opt = optimizer(strategy, &f, 16, seed);
    let mut obj = f.clone();
    let mut reports = vec![opt.init(&mut obj).unwrap()];
    for _ in 0..generations {
        reports.push(opt.step(&mut obj).unwrap());
    }
    (reports, opt)
}

#[test]
fn same_seed_gives_identical_reports_on_any_thread_count() {
    for strategy in Strategy::ALL {
        let (a, _) = run_reports(strategy, 42, 25);
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let (b, _) = pool.install(|| run_reports(strategy, 42, 25));
        assert!(same_reports(&a, &b), "{strategy}");
        let (c, _) = run_reports(strategy, 43, 25);
        assert!(!same_reports(&a, &c), "{strategy}: seed has no effect");
    }
}

#[test]
fn checkpoint_resumes_bit_for_bit() {
    let f = TestFunction::with_transform(Function::Rastrigin, 9, true, true, 1);
    for strategy in Strategy::ALL {
        let (full, full_opt) = run_reports(strategy, 7, 20);
        let mut opt = optimizer(strategy, &f, 16, 7);
        let mut obj = f.clone();
        let mut reports = vec![opt.init(&mut obj).unwrap()];
        for _ in 0..8 {
            reports.push(opt.step(&mut obj).unwrap());
        }
        let bytes = opt.to_checkpoint().unwrap();
        drop(opt);
        let mut resumed = Optimizer::from_checkpoint(&bytes).unwrap();
        assert_eq!(resumed.generation(), 8);
        // A second round trip through serde_json::Value changes nothing either.
        let value = serde_json::to_value(&resumed).unwrap();
        let again: Optimizer = serde_json::from_value(value).unwrap();
        assert_eq!(again.to_checkpoint().unwrap(), bytes);
        for _ in 8..20 {
            reports.push(resumed.step(&mut obj).unwrap());
        }
        assert!(same_reports(&full, &reports), "{strategy}: resumed run differs");
        assert_eq!(resumed.to_checkpoint().unwrap(), full_opt.to_checkpoint().unwrap(), "{strategy}");
    }
}

#[test]
fn failed_evaluation_leaves_the_optimizer_unchanged() {
    struct Flaky {
        f: TestFunction,
        calls: usize,
        fail_at: usize,
    }
    impl BatchObjective for Flaky {
        fn evaluate(&mut self, xs: &[Vec<f32>]) -> anyhow::Result<Vec<f64>> {
            self.calls += 1;
            if self.calls == self.fail_at {
                anyhow::bail!("model crashed");
            }
            self.f.evaluate(xs)
        }
    }
    let f = TestFunction::new(Function::Sphere, 6);
    let (full, _) = {
        let mut opt = optimizer(Strategy::Shade, &f, 12, 3);
        let mut obj = f.clone();
        let mut r = vec![opt.init(&mut obj).unwrap()];
        for _ in 0..6 {
            r.push(opt.step(&mut obj).unwrap());
        }
        (r, opt)
    };
    let mut opt = optimizer(Strategy::Shade, &f, 12, 3);
    let mut obj = Flaky { f: f.clone(), calls: 0, fail_at: 4 };
    let mut reports = vec![opt.init(&mut obj).unwrap()];
    while reports.len() < 7 {
        match opt.step(&mut obj) {
            Ok(r) => reports.push(r),
            Err(e) => {
                assert_eq!(format!("{e:#}"), "evaluating generation 3: model crashed");
                assert_eq!(opt.generation(), 2);
            }
        }
    }
    assert_eq!(obj.calls, 8);
    assert!(same_reports(&full, &reports));
}

#[test]
fn nan_fitness_ranks_last() {
    // NaN everywhere except near the origin: the optimizer must keep the finite ones.
    let mut obj = FnObjective(|x: &[f32]| {
        let s: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
        if s > 50.0 {
            f64::NAN
        } else {
            s
        }
    });
    for strategy in Strategy::ALL {
        let init = population::uniform(20, 4, -5.0, 5.0, 1);
        let mut opt = Optimizer::new(config(strategy), init, 2).unwrap();
        opt.init(&mut obj).unwrap();
        for _ in 0..30 {
            opt.step(&mut obj).unwrap();
        }
        assert!(opt.best().1.is_finite() && opt.best().1 < 50.0, "{strategy}");
        let rep = opt.snapshot();
        assert_eq!(rep.best_fitness, opt.best().1);
    }
}

#[test]
fn bad_settings_give_one_line_errors_naming_the_value() {
    let pop = |n: usize| population::uniform(n, 3, -1.0, 1.0, 0);
    let err = |cfg: Config, n: usize| Optimizer::new(cfg, pop(n), 0).unwrap_err().to_string();
    for (strategy, needed) in [
        (Strategy::Rand1Bin, 4),
        (Strategy::Best1Bin, 3),
        (Strategy::CurrentToBest1Bin, 3),
        (Strategy::Rand2Bin, 6),
        (Strategy::Jade, 4),
        (Strategy::Shade, 4),
        (Strategy::Lshade, 4),
        (Strategy::Random, 2),
    ] {
        let cfg = Config { max_evaluations: Some(100), ..Config::new(strategy) };
        assert_eq!(
            err(cfg.clone(), needed - 1),
            format!("population of {} is too small for {strategy} (needs at least {needed})", needed - 1)
        );
        Optimizer::new(cfg, pop(needed), 0).unwrap();
    }
    for bad in [0.0, -0.5, 2.5, f64::NAN] {
        assert_eq!(
            err(Config { mutation: bad, ..Config::default() }, 10),
            format!("mutation factor F = {bad} is outside (0, 2]")
        );
    }
    Optimizer::new(Config { mutation: 2.0, ..Config::default() }, pop(10), 0).unwrap();
    for bad in [-0.1, 1.5] {
        assert_eq!(
            err(Config { recombination: bad, ..Config::default() }, 10),
            format!("recombination rate CR = {bad} is outside [0, 1]")
        );
    }
    assert_eq!(
        "rand3".parse::<Strategy>().unwrap_err().to_string(),
        "unknown strategy 'rand3' (expected one of: rand1bin, best1bin, current-to-best1bin, rand2bin, jade, \
         shade, lshade, random, cmaes)"
    );
    assert_eq!(
        err(Config::new(Strategy::Lshade), 10),
        "lshade needs a maximum number of evaluations (its population shrinks over that budget)"
    );
    assert_eq!(
        err(Config { max_evaluations: Some(5), ..Config::new(Strategy::Lshade) }, 10),
        "maximum evaluations 5 is less than the initial population of 10"
    );
    assert_eq!(
        err(Config { bounds: Some(Bounds::new(1.0, -1.0)), ..Config::default() }, 10),
        "bounds [1, -1] are empty or not finite"
    );
    let ragged = vec![vec![0.0; 3], vec![0.0; 3], vec![0.0; 2], vec![0.0; 3]];
    assert_eq!(
        Optimizer::new(Config::default(), ragged, 0).unwrap_err(),
        ConfigError::RaggedPopulation { index: 2, expected: 3, got: 2 }
    );
    let mut nan = pop(5);
    nan[1][2] = f32::NAN;
    assert_eq!(
        Optimizer::new(Config::default(), nan, 0).unwrap_err().to_string(),
        "individual 1 has a non-finite value NaN at coordinate 2"
    );
    assert_eq!(
        Optimizer::new(Config::default(), vec![vec![]; 5], 0).unwrap_err(),
        ConfigError::ZeroDimension
    );
}

#[test]
fn misuse_is_reported() {
    let f = TestFunction::new(Function::Sphere, 3);
    let mut opt = optimizer(Strategy::Rand1Bin, &f, 5, 0);
    let mut obj = f.clone();
    let e = opt.step(&mut obj).unwrap_err();
    assert_eq!(e.downcast_ref::<StepError>(), Some(&StepError::NotInitialized));
    opt.init(&mut obj).unwrap();
    let e = opt.init(&mut obj).unwrap_err();
    assert_eq!(e.downcast_ref::<StepError>(), Some(&StepError::AlreadyInitialized));
    struct Short;
    impl BatchObjective for Short {
        fn evaluate(&mut self, xs: &[Vec<f32>]) -> anyhow::Result<Vec<f64>> {
            Ok(vec![0.0; xs.len() - 1])
        }
    }
    let e = opt.step(&mut Short).unwrap_err();
    assert_eq!(e.to_string(), "the objective returned 4 fitness values for 5 vectors");
    assert_eq!(opt.generation(), 0);
    // A checkpoint whose parts disagree is refused.
    let mut v = serde_json::to_value(&opt).unwrap();
    v["state"]["fitness"].as_array_mut().unwrap().pop();
    let e = serde_json::from_value::<Optimizer>(v).unwrap_err().to_string();
    assert!(e.contains("inconsistent optimizer checkpoint"), "{e}");
}

#[test]
fn every_strategy_makes_progress_on_a_10d_sphere() {
    let f = TestFunction::new(Function::Sphere, 10);
    for strategy in Strategy::ALL {
        let (med, errors) = median_error(strategy, &f, 40, 40_000, 3);
        // Random search only narrows by selection; every DE variant converges.
        let limit = if strategy == Strategy::Random { 1e4 } else { 1e-12 };
        eprintln!("sphere 10-D {strategy}: median error {med:.3e}");
        assert!(med < limit, "{strategy}: {errors:?}");
    }
}

#[test]
fn stop_rule_drives_run() {
    let f = TestFunction::new(Function::Sphere, 5);
    let mut opt = optimizer(Strategy::Jade, &f, 20, 1);
    let mut obj = f.clone();
    let mut seen = Vec::new();
    let out =
        opt.run(&mut obj, &mut StopRule::new().target_fitness(1e-3), |r| seen.push(r.generation)).unwrap();
    assert_eq!(out.reason, StopReason::TargetReached);
    assert!(out.last.best_so_far <= 1e-3);
    assert_eq!(seen, (0..=out.last.generation).collect::<Vec<_>>());
    // Resuming continues from the current generation.
    let out2 =
        opt.run(&mut obj, &mut StopRule::new().max_generations(out.last.generation + 3), |_| {}).unwrap();
    assert_eq!(out2.reason, StopReason::MaxGenerations);
    assert_eq!(opt.generation(), out.last.generation + 3);
}

#[test]
fn random_subspace_maps_deterministically_with_the_documented_scale() {
    let d = 3000;
    let k = 40;
    let origin: Vec<f32> = (0..d).map(|j| (j % 7) as f32 - 3.0).collect();
    let space = RandomSubspace::new(origin.clone(), k, 0.5, 99).unwrap();
    let streamed = space.clone().with_cache_limit(0);
    // z = 0 maps to the origin.
    assert_eq!(space.map(&vec![0.0; k]).unwrap(), origin);
    let zs = space.initial_population(64, 1.0, 5);
    let cached_x = space.map_batch(&zs).unwrap();
    let streamed_x = streamed.map_batch(&zs).unwrap();
    assert_eq!(cached_x, streamed_x, "cache and regeneration must agree bitwise");
    // Regenerated from the seed: a fresh instance (or a deserialised one) gives the same map.
    let json = serde_json::to_string(&space).unwrap();
    assert!(json.len() < 40_000, "A must not be serialised ({} bytes)", json.len());
    let loaded: RandomSubspace = serde_json::from_str(&json).unwrap();
    assert_eq!(loaded.map_batch(&zs).unwrap(), cached_x);
    let other = RandomSubspace::new(origin.clone(), k, 0.5, 100).unwrap();
    assert_ne!(other.map_batch(&zs).unwrap(), cached_x);
    // Linear in z: map(a + b) - p0 = (map(a) - p0) + (map(b) - p0), up to rounding.
    let sum: Vec<f32> = zs[0].iter().zip(&zs[1]).map(|(a, b)| a + b).collect();
    let xs = space.map(&sum).unwrap();
    for j in (0..d).step_by(97) {
        let lin = (cached_x[0][j] - origin[j]) + (cached_x[1][j] - origin[j]);
        assert!((xs[j] - origin[j] - lin).abs() < 1e-4, "coordinate {j}");
    }
    // Per-coordinate sd of A z for z ~ N(0, I) is `scale`: check over all coordinates.
    let mut ss = 0.0;
    for x in &cached_x {
        ss += x.iter().zip(&origin).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>();
    }
    let sd = (ss / (d * zs.len()) as f64).sqrt();
    assert!((sd - 0.5).abs() < 0.02, "sd {sd}");
    // Rows are what the map uses.
    let row = space.row(123);
    let x0: f64 =
        row.iter().zip(&zs[3]).map(|(a, z)| *a as f64 * *z as f64).sum::<f64>() + origin[123] as f64;
    assert!((cached_x[3][123] as f64 - x0).abs() < 1e-5);
    assert!(space.map(&[0.0; 3]).unwrap_err().to_string().contains("expected 40"));
    assert!(RandomSubspace::new(origin, 0, 1.0, 1).is_err());
}

#[test]
fn subspace_objective_searches_z_and_scores_x() {
    // Minimise a shifted sphere in D = 2000 through a k = 20 subspace around p0 = 0.
    let d = 2000;
    let k = 20;
    let target = TestFunction::shifted(Function::Sphere, d, 3);
    let space = RandomSubspace::new(vec![0.0; d], k, 1.0, 8).unwrap();
    struct Repaired(TestFunction, usize);
    impl BatchObjective for Repaired {
        fn evaluate(&mut self, xs: &[Vec<f32>]) -> anyhow::Result<Vec<f64>> {
            assert!(xs.iter().all(|x| x.len() == self.0.dim() && x[0] == 0.0));
            self.1 += xs.len();
            self.0.evaluate(xs)
        }
        fn repair(&self, x: &mut [f32]) {
            x[0] = 0.0;
        }
    }
    let mut obj = space.objective(Repaired(target.clone(), 0));
    let init = space.initial_population(20, 1.0, 1);
    let mut opt = Optimizer::new(Config::new(Strategy::Shade), init, 2).unwrap();
    let first = opt.init(&mut obj).unwrap();
    let last = opt.run(&mut obj, &mut StopRule::new().max_generations(200), |_| {}).unwrap().last;
    assert_eq!(obj.inner.1 as u64, opt.evaluations());
    assert_eq!(opt.best().0.len(), k);
    let mut x = space.map(opt.best().0).unwrap();
    x[0] = 0.0;
    assert_eq!(target.value(&x), last.best_so_far);
    // The best reachable value: o_0^2 + min_z sum_{j>=1} (A_j z - o_j)^2 (x_0 is repaired to 0),
    // by least squares on the normal equations.
    let o = target.optimum();
    let rows: Vec<Vec<f32>> = (0..d).map(|j| space.row(j)).collect();
    let mut m = vec![vec![0.0f64; k + 1]; k];
    for j in 1..d {
        for a in 0..k {
            for b in 0..k {
                m[a][b] += rows[j][a] as f64 * rows[j][b] as f64;
            }
            m[a][k] += rows[j][a] as f64 * o[j];
        }
    }
    for c in 0..k {
        let pivot = m[c].clone();
        for row in m.iter_mut().skip(c + 1) {
            let t = row[c] / pivot[c];
            row.iter_mut().zip(&pivot).skip(c).for_each(|(v, p)| *v -= t * p);
        }
    }
    let mut z = vec![0.0f64; k];
    for c in (0..k).rev() {
        let s: f64 = (c + 1..k).map(|q| m[c][q] * z[q]).sum();
        z[c] = (m[c][k] - s) / m[c][c];
    }
    let best_reachable: f64 = o[0] * o[0]
        + (1..d)
            .map(|j| (rows[j].iter().zip(&z).map(|(a, zc)| *a as f64 * zc).sum::<f64>() - o[j]).powi(2))
            .sum::<f64>();
    let gap_start = first.best_fitness - best_reachable;
    let gap_end = last.best_so_far - best_reachable;
    eprintln!("subspace: start gap {gap_start:.3e}, end gap {gap_end:.3e}");
    assert!(gap_end >= -1e-6 * best_reachable, "beat the subspace optimum: {gap_end}");
    assert!(gap_end < 1e-3 * gap_start, "start gap {gap_start}, end gap {gap_end}");
}
