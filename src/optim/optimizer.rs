//! The optimizer: its serialisable state and one generation per [`Optimizer::step`].
//!
//! Like argmin's solvers, a generation builds all trials, scores them with one
//! [`BatchObjective::evaluate`] call, selects, and returns a [`GenerationReport`]. Stopping,
//! logging and plotting are the caller's (see [`StopRule`] and [`Optimizer::run`]).
//!
//! All randomness comes from one `Xoshiro256PlusPlus` seeded with the run's `u64` seed and
//! stored in the state, and all arithmetic is sequential per value, so a run is a pure
//! function of (config, initial population, seed, objective) and a deserialised state
//! continues bit for bit.

use std::cmp::Ordering;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::adapt;
use super::cmaes::{CmaState, Factor};
use super::config::{Bounds, Config, ConfigError, Strategy};
use super::exact;
use super::generation_report::{GenerationReport, MeanSd};
use super::objective::BatchObjective;
use super::stop::{StopReason, StopRule};

/// A call made at the wrong time, or an objective that broke its contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// `step` before `init`.
    #[error("the optimizer is not initialised (call init first)")]
    NotInitialized,
    /// `init` twice.
    #[error("the optimizer is already initialised")]
    AlreadyInitialized,
    /// The objective returned the wrong number of values.
    #[error("the objective returned {got} fitness values for {expected} vectors")]
    FitnessCount {
        /// Vectors passed.
        expected: usize,
        /// Values returned.
        got: usize,
    },
}

/// The adapted parameters, for logging.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Parameters<'a> {
    /// Classic DE: fixed `F` and `CR`.
    Fixed {
        /// `F`.
        f: f64,
        /// `CR`.
        cr: f64,
    },
    /// JADE's location parameters.
    Jade {
        /// `mu_F`.
        mu_f: f64,
        /// `mu_CR`.
        mu_cr: f64,
    },
    /// SHADE / L-SHADE success-history memories.
    Shade {
        /// `M_F`.
        m_f: &'a [f64],
        /// `M_CR`; `None` is L-SHADE's terminal value.
        m_cr: &'a [Option<f64>],
        /// Slot updated next.
        next: usize,
    },
    /// Random search: the per-coordinate Gaussian.
    Random {
        /// Means.
        mean: &'a [f64],
        /// Standard deviations.
        sd: &'a [f64],
    },
    /// CMA-ES: the distribution's mean and step size.
    Cmaes {
        /// Mean.
        mean: &'a [f64],
        /// Step size sigma.
        sigma: f64,
        /// Diagonal covariance (dimension above 500).
        separable: bool,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Adaptation {
    Fixed,
    Jade {
        #[serde(with = "exact::scalar")]
        mu_f: f64,
        #[serde(with = "exact::scalar")]
        mu_cr: f64,
    },
    Shade {
        #[serde(with = "exact::seq")]
        m_f: Vec<f64>,
        #[serde(with = "exact::option_seq")]
        m_cr: Vec<Option<f64>>,
        next: usize,
    },
    Random {
        #[serde(with = "exact::seq")]
        mean: Vec<f64>,
        #[serde(with = "exact::seq")]
        sd: Vec<f64>,
    },
    Cmaes(Box<CmaState>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    rng: Xoshiro256PlusPlus,
    initialized: bool,
    generation: u64,
    evaluations: u64,
    dim: usize,
    initial_population_size: usize,
    #[serde(with = "exact::f32_vecs")]
    population: Vec<Vec<f32>>,
    #[serde(with = "exact::seq")]
    fitness: Vec<f64>,
    #[serde(with = "exact::f32_vec")]
    best: Vec<f32>,
    #[serde(with = "exact::scalar")]
    best_fitness: f64,
    #[serde(with = "exact::f32_vecs")]
    archive: Vec<Vec<f32>>,
    adaptation: Adaptation,
}

/// Differential evolution (and its baselines) over `f32` vectors.
///
/// The whole optimizer, settings included, is `Serialize + Deserialize`: save it after any
/// generation and a loaded copy continues exactly as the original would (floats are written
/// exactly, see [`to_checkpoint`](Optimizer::to_checkpoint)).
///
/// ```
/// use deopt::optim::{Config, FnObjective, Optimizer, StopRule, Strategy, population};
/// let mut sphere = FnObjective(|x: &[f32]| x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>());
/// let init = population::uniform(20, 5, -5.0, 5.0, 1);
/// let mut opt = Optimizer::new(Config::new(Strategy::Jade), init, 7).unwrap();
/// let mut stop = StopRule::new().max_generations(200);
/// let outcome = opt.run(&mut sphere, &mut stop, |_| {}).unwrap();
/// assert!(outcome.last.best_so_far < 1e-6);
/// assert_eq!(opt.best().1, outcome.last.best_so_far);
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "Repr")]
pub struct Optimizer {
    config: Config,
    state: State,
}

#[derive(Deserialize)]
struct Repr {
    config: Config,
    state: State,
}

impl TryFrom<Repr> for Optimizer {
    type Error = ConfigError;

    fn try_from(r: Repr) -> Result<Self, ConfigError> {
        let opt = Optimizer { config: r.config, state: r.state };
        opt.check_consistent()?;
        Ok(opt)
    }
}

/// How [`Optimizer::run`] ended.
#[derive(Debug, Clone, PartialEq)]
pub struct MinimizeOutcome {
    /// The condition that fired.
    pub reason: StopReason,
    /// The last report.
    pub last: GenerationReport,
}

/// Trials of one generation with the parameters that made them.
struct Trials {
    xs: Vec<Vec<f32>>,
    f: Vec<f64>,
    cr: Vec<f64>,
}

/// Fitness order: lower first, NaN after everything (also after `+inf`).
fn cmp_fitness(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// Indices sorted by fitness, best first; ties keep index order.
fn ranking(fitness: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..fitness.len()).collect();
    idx.sort_by(|&a, &b| cmp_fitness(fitness[a], fitness[b]));
    idx
}

/// A uniform index in `0..n` not in `exclude` (rejection sampling; `n > exclude.len()`).
fn pick<R: Rng>(rng: &mut R, n: usize, exclude: &[usize]) -> usize {
    loop {
        let r = rng.gen_range(0..n);
        if !exclude.contains(&r) {
            return r;
        }
    }
}

/// Binomial crossover of `parent` with the mutant given coordinate-wise by `mutant`.
///
/// Coordinate `j` comes from the mutant when `j == j_rand` (drawn first, so at least one
/// does) or a uniform draw is `< cr`; a mutated coordinate outside `bounds` is moved half
/// way from the bound to the parent's value.
fn binomial<R: Rng>(
    rng: &mut R,
    parent: &[f32],
    cr: f64,
    bounds: Option<Bounds>,
    mutant: impl Fn(usize) -> f64,
) -> Vec<f32> {
    let d = parent.len();
    let j_rand = rng.gen_range(0..d);
    let mut u = parent.to_vec();
    for (j, uj) in u.iter_mut().enumerate() {
        if j == j_rand || rng.gen::<f64>() < cr {
            let mut v = mutant(j) as f32;
            if let Some(b) = bounds {
                if v < b.lower {
                    v = (b.lower + parent[j]) / 2.0;
                } else if v > b.upper {
                    v = (b.upper + parent[j]) / 2.0;
                }
                v = v.clamp(b.lower, b.upper);
            }
            *uj = v;
        }
    }
    u
}

/// Mean Euclidean distance of the individuals to their centroid.
fn diversity(pop: &[Vec<f32>]) -> f64 {
    let n = pop.len() as f64;
    let mut c = vec![0.0f64; pop[0].len()];
    for x in pop {
        for (cj, &xj) in c.iter_mut().zip(x) {
            *cj += xj as f64;
        }
    }
    c.iter_mut().for_each(|cj| *cj /= n);
    let dists: Vec<f64> = pop
        .par_iter()
        .map(|x| x.iter().zip(&c).map(|(&xj, &cj)| (xj as f64 - cj).powi(2)).sum::<f64>().sqrt())
        .collect();
    dists.iter().sum::<f64>() / n
}

/// Drop random archive members until at most `cap` remain.
fn truncate_archive<R: Rng>(rng: &mut R, archive: &mut Vec<Vec<f32>>, cap: usize) {
    while archive.len() > cap {
        let k = rng.gen_range(0..archive.len());
        archive.swap_remove(k);
    }
}

fn evaluate<O: BatchObjective + ?Sized>(obj: &mut O, xs: &[Vec<f32>], generation: u64) -> Result<Vec<f64>> {
    let fit = obj.evaluate(xs).with_context(|| format!("evaluating generation {generation}"))?;
    if fit.len() != xs.len() {
        return Err(StepError::FitnessCount { expected: xs.len(), got: fit.len() }.into());
    }
    Ok(fit)
}

impl Optimizer {
    /// A new optimizer over `initial_population`, all randomness drawn from `seed`.
    ///
    /// # Errors
    /// A [`ConfigError`] for invalid settings, an empty, ragged or non-finite population, or
    /// one too small for the strategy.
    pub fn new(config: Config, initial_population: Vec<Vec<f32>>, seed: u64) -> Result<Self, ConfigError> {
        let n = initial_population.len();
        let dim = initial_population.first().map_or(0, Vec::len);
        for (index, x) in initial_population.iter().enumerate() {
            if x.len() != dim {
                return Err(ConfigError::RaggedPopulation { index, expected: dim, got: x.len() });
            }
            if let Some((coordinate, &value)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(ConfigError::NonFinite { index, coordinate, value });
            }
        }
        config.validate(n, dim)?;
        let adaptation = match config.strategy {
            Strategy::Rand1Bin | Strategy::Best1Bin | Strategy::CurrentToBest1Bin | Strategy::Rand2Bin => {
                Adaptation::Fixed
            }
            Strategy::Jade => Adaptation::Jade { mu_f: 0.5, mu_cr: 0.5 },
            Strategy::Shade | Strategy::Lshade => {
                let h = config.memory_size_for(n);
                Adaptation::Shade { m_f: vec![0.5; h], m_cr: vec![Some(0.5); h], next: 0 }
            }
            Strategy::Random => {
                let nf = n as f64;
                let mean: Vec<f64> = (0..dim)
                    .map(|j| initial_population.iter().map(|x| x[j] as f64).sum::<f64>() / nf)
                    .collect();
                let sd = (0..dim)
                    .map(|j| {
                        let ss: f64 =
                            initial_population.iter().map(|x| (x[j] as f64 - mean[j]).powi(2)).sum();
                        (ss / (nf - 1.0)).sqrt()
                    })
                    .collect();
                Adaptation::Random { mean, sd }
            }
            Strategy::Cmaes => {
                // Mean: the centroid until `init` has scores (then the best individual);
                // step size: the population's root-mean-square per-coordinate spread.
                let nf = n as f64;
                let mean: Vec<f64> = (0..dim)
                    .map(|j| initial_population.iter().map(|x| x[j] as f64).sum::<f64>() / nf)
                    .collect();
                let var: f64 = (0..dim)
                    .map(|j| {
                        initial_population.iter().map(|x| (x[j] as f64 - mean[j]).powi(2)).sum::<f64>()
                            / (nf - 1.0)
                    })
                    .sum::<f64>()
                    / dim as f64;
                let sigma = var.sqrt();
                if !(sigma.is_finite() && sigma > 0.0) {
                    return Err(ConfigError::Parameter {
                        name: "spread of the initial population (CMA-ES's initial step size)",
                        value: sigma,
                        range: "(0, inf): the individuals must not all be equal",
                    });
                }
                Adaptation::Cmaes(Box::new(CmaState::new(mean, sigma)))
            }
        };
        let best = initial_population[0].clone();
        Ok(Optimizer {
            config,
            state: State {
                rng: Xoshiro256PlusPlus::seed_from_u64(seed),
                initialized: false,
                generation: 0,
                evaluations: 0,
                dim,
                initial_population_size: n,
                population: initial_population,
                fitness: Vec::new(),
                best,
                best_fitness: f64::INFINITY,
                archive: Vec::new(),
                adaptation,
            },
        })
    }

    /// Evaluate the initial population (one `evaluate` call); generation 0.
    ///
    /// # Errors
    /// [`StepError::AlreadyInitialized`], the objective's error (state unchanged), or
    /// [`StepError::FitnessCount`].
    pub fn init<O: BatchObjective + ?Sized>(&mut self, obj: &mut O) -> Result<GenerationReport> {
        if self.state.initialized {
            return Err(StepError::AlreadyInitialized.into());
        }
        let fitness = evaluate(obj, &self.state.population, 0)?;
        let n = self.state.population.len();
        let st = &mut self.state;
        let best = ranking(&fitness)[0];
        st.best = st.population[best].clone();
        st.best_fitness = fitness[best];
        st.fitness = fitness;
        st.evaluations = st.population.len() as u64;
        st.initialized = true;
        if let Adaptation::Cmaes(c) = &mut st.adaptation {
            // Start the search from the best scored point, not the unscored centroid.
            let sigma = c.sigma();
            **c = CmaState::new(st.best.iter().map(|&v| v as f64).collect(), sigma);
        }
        Ok(self.make_report(n, None, None, 0, 0))
    }

    /// Run one generation: make every trial, score them in one `evaluate` call, select.
    ///
    /// # Errors
    /// [`StepError::NotInitialized`], the objective's error, or [`StepError::FitnessCount`].
    /// On error the optimizer is unchanged (its RNG included), so the step can be retried.
    pub fn step<O: BatchObjective + ?Sized>(&mut self, obj: &mut O) -> Result<GenerationReport> {
        if !self.state.initialized {
            return Err(StepError::NotInitialized.into());
        }
        let mut rng = self.state.rng.clone();
        let generation = self.state.generation + 1;
        if self.config.strategy == Strategy::Random {
            let xs = self.sample_random(&mut rng, obj);
            let fit = evaluate(obj, &xs, generation)?;
            self.state.rng = rng;
            return Ok(self.merge_random(xs, fit));
        }
        if self.config.strategy == Strategy::Cmaes {
            let (xs, factor) = self.sample_cmaes(&mut rng, obj);
            let fit = evaluate(obj, &xs, generation)?;
            self.state.rng = rng;
            return Ok(self.merge_cmaes(xs, fit, &factor));
        }
        let trials = self.make_trials(&mut rng, obj);
        let fit = evaluate(obj, &trials.xs, generation)?;
        self.state.rng = rng;
        Ok(self.select(trials, fit))
    }

    /// Initialise if needed, then step until `stop` fires, passing every report (the one
    /// from `init`, or [`snapshot`](Optimizer::snapshot) of a resumed run, first) to `observe`.
    ///
    /// # Errors
    /// The first error from `init` or `step`.
    pub fn run<O: BatchObjective + ?Sized>(
        &mut self,
        obj: &mut O,
        stop: &mut StopRule,
        mut observe: impl FnMut(&GenerationReport),
    ) -> Result<MinimizeOutcome> {
        let mut report = if self.state.initialized { self.snapshot() } else { self.init(obj)? };
        loop {
            observe(&report);
            if let Some(reason) = stop.check(&report) {
                return Ok(MinimizeOutcome { reason, last: report });
            }
            report = self.step(obj)?;
        }
    }

    /// Best vector seen and its fitness (before `init`: the first individual and `+inf`).
    pub fn best(&self) -> (&[f32], f64) {
        (&self.state.best, self.state.best_fitness)
    }

    /// Current population.
    pub fn population(&self) -> &[Vec<f32>] {
        &self.state.population
    }

    /// Fitness of the current population, same order (empty before `init`).
    pub fn fitness(&self) -> &[f64] {
        &self.state.fitness
    }

    /// External archive (JADE with archive, SHADE, L-SHADE; empty otherwise).
    pub fn archive(&self) -> &[Vec<f32>] {
        &self.state.archive
    }

    /// Objective evaluations so far.
    pub fn evaluations(&self) -> u64 {
        self.state.evaluations
    }

    /// Generations run (0 after `init`).
    pub fn generation(&self) -> u64 {
        self.state.generation
    }

    /// Current population size (shrinks under L-SHADE).
    pub fn population_size(&self) -> usize {
        self.state.population.len()
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.state.dim
    }

    /// Whether `init` has run.
    pub fn is_initialized(&self) -> bool {
        self.state.initialized
    }

    /// Settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The adapted parameters in force.
    pub fn parameters(&self) -> Parameters<'_> {
        match &self.state.adaptation {
            Adaptation::Fixed => Parameters::Fixed { f: self.config.mutation, cr: self.config.recombination },
            Adaptation::Jade { mu_f, mu_cr } => Parameters::Jade { mu_f: *mu_f, mu_cr: *mu_cr },
            Adaptation::Shade { m_f, m_cr, next } => Parameters::Shade { m_f, m_cr, next: *next },
            Adaptation::Random { mean, sd } => Parameters::Random { mean, sd },
            Adaptation::Cmaes(c) => {
                Parameters::Cmaes { mean: c.mean(), sigma: c.sigma(), separable: c.separable() }
            }
        }
    }

    /// A report of the current state with no per-generation statistics (`trials = 0`,
    /// no `F`/`CR`, no successes); what `run` starts from when resuming.
    pub fn snapshot(&self) -> GenerationReport {
        self.make_report(0, None, None, 0, 0)
    }

    /// The whole optimizer as JSON bytes, floats exact (see the `exact` serde helpers).
    ///
    /// # Errors
    /// Only if serialisation fails, which it does not for this type.
    pub fn to_checkpoint(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).context("serialising the optimizer")
    }

    /// Load what [`to_checkpoint`](Optimizer::to_checkpoint) wrote.
    ///
    /// # Errors
    /// Malformed JSON or an inconsistent state ([`ConfigError::Checkpoint`]).
    pub fn from_checkpoint(bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).context("loading an optimizer checkpoint")
    }

    fn check_consistent(&self) -> Result<(), ConfigError> {
        let st = &self.state;
        let bad = |m: String| Err(ConfigError::Checkpoint(m));
        self.config.validate(st.initial_population_size, st.dim)?;
        let n = st.population.len();
        let min = if self.config.strategy == Strategy::Lshade {
            self.config.min_population
        } else {
            st.initial_population_size
        };
        if n < min || n > st.initial_population_size {
            return bad(format!("population of {n}: expected {min} to {}", st.initial_population_size));
        }
        if let Some(i) = st
            .population
            .iter()
            .chain(&st.archive)
            .chain(std::iter::once(&st.best))
            .position(|x| x.len() != st.dim)
        {
            return bad(format!("vector {i} does not have dimension {}", st.dim));
        }
        let expected_fitness = if st.initialized { n } else { 0 };
        if st.fitness.len() != expected_fitness {
            return bad(format!("{} fitness values for {expected_fitness} expected", st.fitness.len()));
        }
        // An all-zero xoshiro state yields zeros for ever (and sampling loops would not end).
        let rng = serde_json::to_value(&st.rng).unwrap_or_default();
        if rng.get("s").and_then(|s| s.as_array()).is_some_and(|s| s.iter().all(|v| v.as_u64() == Some(0))) {
            return bad("rng state all zero: expected the state of a seeded generator".into());
        }
        let ok = match (&st.adaptation, self.config.strategy) {
            (Adaptation::Fixed, s) => !s.is_adaptive() && !matches!(s, Strategy::Random | Strategy::Cmaes),
            (Adaptation::Jade { .. }, Strategy::Jade) => true,
            (Adaptation::Shade { m_f, m_cr, next }, Strategy::Shade | Strategy::Lshade) => {
                let h = self.config.memory_size_for(st.initial_population_size);
                m_f.len() == h && m_cr.len() == h && *next < h
            }
            (Adaptation::Random { mean, sd }, Strategy::Random) => mean.len() == st.dim && sd.len() == st.dim,
            (Adaptation::Cmaes(c), Strategy::Cmaes) => c.consistent(st.dim),
            _ => false,
        };
        if !ok {
            return bad(format!("adaptation state does not match strategy {}", self.config.strategy));
        }
        Ok(())
    }

    fn make_report(
        &self,
        trials: usize,
        f: Option<MeanSd>,
        cr: Option<MeanSd>,
        successes: usize,
        replacements: usize,
    ) -> GenerationReport {
        let st = &self.state;
        let mut sorted = st.fitness.clone();
        sorted.sort_by(|a, b| cmp_fitness(*a, *b));
        let (best, median, worst) = if sorted.is_empty() {
            (f64::INFINITY, f64::INFINITY, f64::INFINITY)
        } else {
            let m = sorted.len() / 2;
            let median = if sorted.len() % 2 == 1 { sorted[m] } else { (sorted[m - 1] + sorted[m]) / 2.0 };
            (sorted[0], median, sorted[sorted.len() - 1])
        };
        GenerationReport {
            generation: st.generation,
            evaluations: st.evaluations,
            trials,
            best_fitness: best,
            median_fitness: median,
            worst_fitness: worst,
            best_so_far: st.best_fitness,
            f,
            cr,
            diversity: diversity(&st.population),
            successes,
            replacements,
            population_size: st.population.len(),
            archive_size: st.archive.len(),
        }
    }

    /// `(F_i, CR_i)` for an adaptive strategy.
    fn sample_parameters<R: Rng>(&self, rng: &mut R) -> (f64, f64) {
        match &self.state.adaptation {
            Adaptation::Jade { mu_f, mu_cr } => {
                let cr = adapt::sample_cr(rng, *mu_cr);
                (adapt::sample_f(rng, *mu_f), cr)
            }
            Adaptation::Shade { m_f, m_cr, .. } => {
                let r = rng.gen_range(0..m_f.len());
                let cr = match m_cr[r] {
                    Some(m) => adapt::sample_cr(rng, m),
                    None => 0.0,
                };
                (adapt::sample_f(rng, m_f[r]), cr)
            }
            Adaptation::Fixed | Adaptation::Random { .. } | Adaptation::Cmaes(_) => {
                (self.config.mutation, self.config.recombination)
            }
        }
    }

    /// How many of the best individuals `x_pbest` is drawn from.
    fn pbest_count<R: Rng>(&self, rng: &mut R, n: usize) -> usize {
        let round = |p: f64| (p * n as f64).round() as usize;
        match self.config.strategy {
            Strategy::Shade => {
                let lo = 2.0 / n as f64;
                let p = if lo < 0.2 { lo + (0.2 - lo) * rng.gen::<f64>() } else { lo };
                round(p).max(2)
            }
            Strategy::Lshade => round(self.config.pbest_rate_for()).max(2),
            _ => round(self.config.pbest_rate_for()).max(1),
        }
        .min(n)
    }

    fn make_trials<R: Rng, O: BatchObjective + ?Sized>(&self, rng: &mut R, obj: &O) -> Trials {
        let st = &self.state;
        let pop = &st.population;
        let n = pop.len();
        let order = ranking(&st.fitness);
        let xb = &pop[order[0]];
        let bounds = self.config.bounds;
        let mut out =
            Trials { xs: Vec::with_capacity(n), f: Vec::with_capacity(n), cr: Vec::with_capacity(n) };
        for (i, x) in pop.iter().enumerate() {
            let (f, cr) = self.sample_parameters(rng);
            let mut u = match self.config.strategy {
                Strategy::Rand1Bin => {
                    let r1 = pick(rng, n, &[i]);
                    let r2 = pick(rng, n, &[i, r1]);
                    let r3 = pick(rng, n, &[i, r1, r2]);
                    let (a, b, c) = (&pop[r1], &pop[r2], &pop[r3]);
                    binomial(rng, x, cr, bounds, |j| a[j] as f64 + f * (b[j] as f64 - c[j] as f64))
                }
                Strategy::Best1Bin => {
                    let r1 = pick(rng, n, &[i]);
                    let r2 = pick(rng, n, &[i, r1]);
                    let (b, c) = (&pop[r1], &pop[r2]);
                    binomial(rng, x, cr, bounds, |j| xb[j] as f64 + f * (b[j] as f64 - c[j] as f64))
                }
                Strategy::CurrentToBest1Bin => {
                    let r1 = pick(rng, n, &[i]);
                    let r2 = pick(rng, n, &[i, r1]);
                    let (b, c) = (&pop[r1], &pop[r2]);
                    binomial(rng, x, cr, bounds, |j| {
                        let xi = x[j] as f64;
                        xi + f * (xb[j] as f64 - xi) + f * (b[j] as f64 - c[j] as f64)
                    })
                }
                Strategy::Rand2Bin => {
                    let r1 = pick(rng, n, &[i]);
                    let r2 = pick(rng, n, &[i, r1]);
                    let r3 = pick(rng, n, &[i, r1, r2]);
                    let r4 = pick(rng, n, &[i, r1, r2, r3]);
                    let r5 = pick(rng, n, &[i, r1, r2, r3, r4]);
                    let (a, b, c, d, e) = (&pop[r1], &pop[r2], &pop[r3], &pop[r4], &pop[r5]);
                    binomial(rng, x, cr, bounds, |j| {
                        a[j] as f64 + f * (b[j] as f64 - c[j] as f64) + f * (d[j] as f64 - e[j] as f64)
                    })
                }
                Strategy::Jade | Strategy::Shade | Strategy::Lshade => {
                    let count = self.pbest_count(rng, n);
                    let pb = &pop[order[rng.gen_range(0..count)]];
                    let r1 = pick(rng, n, &[i]);
                    let r2 = pick(rng, n + st.archive.len(), &[i, r1]);
                    let b = &pop[r1];
                    let c = if r2 < n { &pop[r2] } else { &st.archive[r2 - n] };
                    binomial(rng, x, cr, bounds, |j| {
                        let xi = x[j] as f64;
                        xi + f * (pb[j] as f64 - xi) + f * (b[j] as f64 - c[j] as f64)
                    })
                }
                Strategy::Random | Strategy::Cmaes => {
                    unreachable!("{} does not make DE trials", self.config.strategy)
                }
            };
            obj.repair(&mut u);
            out.xs.push(u);
            out.f.push(f);
            out.cr.push(cr);
        }
        out
    }

    fn select(&mut self, trials: Trials, fit: Vec<f64>) -> GenerationReport {
        let strategy = self.config.strategy;
        let uses_archive = self.config.uses_archive();
        let st = &mut self.state;
        let n = st.population.len();
        let mut s_f = Vec::new();
        let mut s_cr = Vec::new();
        let mut deltas = Vec::new();
        let mut replacements = 0;
        for (i, (u, fu)) in trials.xs.into_iter().zip(fit).enumerate() {
            let fx = st.fitness[i];
            let order = cmp_fitness(fu, fx);
            let improved = order == Ordering::Less;
            // JADE keeps the parent on ties; the DE of the seed paper and SHADE take the trial.
            let replace = if strategy == Strategy::Jade { improved } else { order != Ordering::Greater };
            if improved {
                s_f.push(trials.f[i]);
                s_cr.push(trials.cr[i]);
                deltas.push(if fx.is_nan() { f64::INFINITY } else { fx - fu });
            }
            if cmp_fitness(fu, st.best_fitness) == Ordering::Less {
                st.best.clone_from(&u);
                st.best_fitness = fu;
            }
            if replace {
                replacements += 1;
                let parent = std::mem::replace(&mut st.population[i], u);
                st.fitness[i] = fu;
                if improved && uses_archive {
                    st.archive.push(parent);
                }
            }
        }
        let successes = s_f.len();
        st.generation += 1;
        st.evaluations += n as u64;

        match &mut st.adaptation {
            Adaptation::Jade { mu_f, mu_cr } => {
                let c = self.config.adaptation_rate;
                if let (Some(m_cr), Some(m_f)) = (adapt::mean(&s_cr), adapt::lehmer_mean(&s_f)) {
                    *mu_cr = (1.0 - c) * *mu_cr + c * m_cr;
                    *mu_f = (1.0 - c) * *mu_f + c * m_f;
                }
            }
            Adaptation::Shade { m_f, m_cr, next } if successes > 0 => {
                let w = adapt::improvement_weights(&deltas);
                if let Some(v) = adapt::weighted_lehmer_mean(&w, &s_f) {
                    m_f[*next] = v;
                }
                m_cr[*next] = if strategy == Strategy::Lshade {
                    m_cr[*next].and_then(|_| adapt::weighted_lehmer_mean(&w, &s_cr))
                } else {
                    Some(adapt::weighted_mean(&w, &s_cr))
                };
                *next = (*next + 1) % m_f.len();
            }
            _ => {}
        }

        if strategy == Strategy::Lshade {
            let n_init = st.initial_population_size as f64;
            let n_min = self.config.min_population;
            // validate() guarantees a budget for L-SHADE.
            let max = self.config.max_evaluations.unwrap_or(st.evaluations) as f64;
            let planned = ((n_min as f64 - n_init) / max * st.evaluations as f64 + n_init).round();
            let planned = (planned.max(0.0) as usize).clamp(n_min, n);
            if planned < n {
                let mut worst: Vec<usize> = (0..n).collect();
                worst.sort_by(|&a, &b| cmp_fitness(st.fitness[b], st.fitness[a]).then(a.cmp(&b)));
                let mut remove = worst[..n - planned].to_vec();
                remove.sort_unstable_by(|a, b| b.cmp(a));
                for k in remove {
                    st.population.remove(k);
                    st.fitness.remove(k);
                }
            }
        }
        if uses_archive {
            let cap = (self.config.archive_rate_for() * st.population.len() as f64).round() as usize;
            truncate_archive(&mut st.rng, &mut st.archive, cap);
        }
        let f = MeanSd::of(&trials.f);
        let cr = MeanSd::of(&trials.cr);
        self.make_report(n, f, cr, successes, replacements)
    }

    fn sample_random<R: Rng, O: BatchObjective + ?Sized>(&self, rng: &mut R, obj: &O) -> Vec<Vec<f32>> {
        let Adaptation::Random { mean, sd } = &self.state.adaptation else {
            unreachable!("random search state is checked at construction");
        };
        let bounds = self.config.bounds;
        (0..self.state.population.len())
            .map(|_| {
                let mut x: Vec<f32> = mean
                    .iter()
                    .zip(sd)
                    .map(|(&m, &s)| {
                        let z: f64 = rng.sample(StandardNormal);
                        let v = (m + s * z) as f32;
                        match bounds {
                            Some(b) => v.clamp(b.lower, b.upper),
                            None => v,
                        }
                    })
                    .collect();
                obj.repair(&mut x);
                x
            })
            .collect()
    }

    fn merge_random(&mut self, xs: Vec<Vec<f32>>, fit: Vec<f64>) -> GenerationReport {
        let st = &mut self.state;
        let n = st.population.len();
        let old = std::mem::take(&mut st.population);
        let old_fit = std::mem::take(&mut st.fitness);
        // Old members first, so a stable sort keeps them on ties.
        let mut all: Vec<(Vec<f32>, f64, bool)> = old
            .into_iter()
            .zip(old_fit)
            .map(|(x, f)| (x, f, false))
            .chain(xs.into_iter().zip(fit).map(|(x, f)| (x, f, true)))
            .collect();
        all.sort_by(|a, b| cmp_fitness(a.1, b.1));
        all.truncate(n);
        let successes = all.iter().filter(|e| e.2).count();
        if cmp_fitness(all[0].1, st.best_fitness) == Ordering::Less {
            st.best.clone_from(&all[0].0);
            st.best_fitness = all[0].1;
        }
        for (x, f, _) in all {
            st.population.push(x);
            st.fitness.push(f);
        }
        st.generation += 1;
        st.evaluations += n as u64;
        self.make_report(n, None, None, successes, successes)
    }

    fn sample_cmaes<R: Rng, O: BatchObjective + ?Sized>(
        &self,
        rng: &mut R,
        obj: &O,
    ) -> (Vec<Vec<f32>>, Factor) {
        let Adaptation::Cmaes(c) = &self.state.adaptation else {
            unreachable!("CMA-ES state is checked at construction");
        };
        let factor = c.factor();
        let bounds = self.config.bounds;
        let xs = (0..self.state.population.len())
            .map(|_| {
                let mut x: Vec<f32> = c
                    .sample(rng, &factor)
                    .into_iter()
                    .map(|v| {
                        let v = v as f32;
                        match bounds {
                            Some(b) => v.clamp(b.lower, b.upper),
                            None => v,
                        }
                    })
                    .collect();
                obj.repair(&mut x);
                x
            })
            .collect();
        (xs, factor)
    }

    /// The samples become the population (CMA-ES keeps no parents); `successes` counts those
    /// better than the best so far before this generation.
    fn merge_cmaes(&mut self, xs: Vec<Vec<f32>>, fit: Vec<f64>, factor: &Factor) -> GenerationReport {
        let st = &mut self.state;
        let n = xs.len();
        let order = ranking(&fit);
        let successes = fit.iter().filter(|&&f| cmp_fitness(f, st.best_fitness) == Ordering::Less).count();
        if cmp_fitness(fit[order[0]], st.best_fitness) == Ordering::Less {
            st.best.clone_from(&xs[order[0]]);
            st.best_fitness = fit[order[0]];
        }
        if let Adaptation::Cmaes(c) = &mut st.adaptation {
            c.update(&xs, &order, factor);
        }
        st.population = xs;
        st.fitness = fit;
        st.generation += 1;
        st.evaluations += n as u64;
        self.make_report(n, None, None, successes, n)
    }
}
