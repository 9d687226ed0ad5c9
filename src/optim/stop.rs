//! When to stop: a rule read against each [`GenerationReport`].
//!
//! The optimizer never decides when to stop; callers check a [`StopRule`] against each
//! report.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::generation_report::GenerationReport;

/// Why a [`StopRule`] fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// `max_generations` reached.
    MaxGenerations,
    /// The next generation would exceed `max_evaluations`.
    MaxEvaluations,
    /// The best fitness reached `target_fitness`.
    TargetReached,
    /// No strict improvement of the best fitness for `stagnation_generations`.
    Stagnation,
    /// `wall_clock` elapsed since the rule was made (or its clock restarted).
    WallClock,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::MaxGenerations => "maximum generations reached",
            StopReason::MaxEvaluations => "evaluation budget reached",
            StopReason::TargetReached => "target fitness reached",
            StopReason::Stagnation => "best fitness stagnated",
            StopReason::WallClock => "wall-clock limit reached",
        })
    }
}

/// Stop conditions checked against each report; any one that holds stops the run.
///
/// Stagnation needs history, so `check` takes `&mut self`; feed it every report in order.
///
/// ```
/// use deopt::optim::{StopRule, StopReason};
/// let mut stop = StopRule::new().max_generations(100).target_fitness(1e-8);
/// # let report = deopt::optim::GenerationReport { generation: 100, evaluations: 0, trials: 0,
/// #   best_fitness: 1.0, median_fitness: 1.0, worst_fitness: 1.0, best_so_far: 1.0, f: None,
/// #   cr: None, diversity: 0.0, successes: 0, replacements: 0, population_size: 10, archive_size: 0 };
/// assert_eq!(stop.check(&report), Some(StopReason::MaxGenerations));
/// ```
#[derive(Debug, Clone)]
pub struct StopRule {
    /// Stop once this many generations have run.
    pub max_generations: Option<u64>,
    /// Stop when the next generation (of `population_size` trials) would take the
    /// evaluation count past this budget, so a run never exceeds it.
    pub max_evaluations: Option<u64>,
    /// Stop once the best fitness is `<=` this.
    pub target_fitness: Option<f64>,
    /// Stop after this many consecutive generations without a strict improvement.
    pub stagnation_generations: Option<u64>,
    /// Stop once this much time has passed since the rule was made.
    pub wall_clock: Option<Duration>,
    started: Instant,
    seen: bool,
    best: f64,
    last_improvement: u64,
}

impl Default for StopRule {
    fn default() -> Self {
        StopRule::new()
    }
}

impl StopRule {
    /// No conditions (never stops); the wall clock starts now.
    pub fn new() -> Self {
        StopRule {
            max_generations: None,
            max_evaluations: None,
            target_fitness: None,
            stagnation_generations: None,
            wall_clock: None,
            started: Instant::now(),
            seen: false,
            best: f64::INFINITY,
            last_improvement: 0,
        }
    }

    /// Set `max_generations`.
    pub fn max_generations(mut self, n: u64) -> Self {
        self.max_generations = Some(n);
        self
    }

    /// Set `max_evaluations`.
    pub fn max_evaluations(mut self, n: u64) -> Self {
        self.max_evaluations = Some(n);
        self
    }

    /// Set `target_fitness`.
    pub fn target_fitness(mut self, f: f64) -> Self {
        self.target_fitness = Some(f);
        self
    }

    /// Set `stagnation_generations`.
    pub fn stagnation(mut self, generations: u64) -> Self {
        self.stagnation_generations = Some(generations);
        self
    }

    /// Set `wall_clock`.
    pub fn wall_clock(mut self, limit: Duration) -> Self {
        self.wall_clock = Some(limit);
        self
    }

    /// Restart the wall clock and forget the stagnation history.
    pub fn restart(&mut self) {
        self.started = Instant::now();
        self.seen = false;
        self.best = f64::INFINITY;
        self.last_improvement = 0;
    }

    /// Continue the stagnation count of an earlier session: the best so far and the step in
    /// which it last improved (a resumed run's rule then fires as an uninterrupted one's would).
    pub fn continue_from(&mut self, best_so_far: f64, last_improvement: u64) {
        self.seen = true;
        self.best = best_so_far;
        self.last_improvement = last_improvement;
    }

    /// The first condition that holds after `report`, if any.
    pub fn check(&mut self, report: &GenerationReport) -> Option<StopReason> {
        if !self.seen || report.best_so_far < self.best {
            self.seen = true;
            self.best = report.best_so_far;
            self.last_improvement = report.generation;
        }
        if let Some(target) = self.target_fitness {
            if report.best_so_far <= target {
                return Some(StopReason::TargetReached);
            }
        }
        if let Some(max) = self.max_generations {
            if report.generation >= max {
                return Some(StopReason::MaxGenerations);
            }
        }
        if let Some(max) = self.max_evaluations {
            if report.evaluations + report.population_size as u64 > max {
                return Some(StopReason::MaxEvaluations);
            }
        }
        if let Some(k) = self.stagnation_generations {
            if report.generation.saturating_sub(self.last_improvement) >= k {
                return Some(StopReason::Stagnation);
            }
        }
        if let Some(limit) = self.wall_clock {
            if self.started.elapsed() >= limit {
                return Some(StopReason::WallClock);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(generation: u64, evaluations: u64, best: f64) -> GenerationReport {
        GenerationReport {
            generation,
            evaluations,
            trials: 10,
            best_fitness: best,
            median_fitness: best,
            worst_fitness: best,
            best_so_far: best,
            f: None,
            cr: None,
            diversity: 0.0,
            successes: 0,
            replacements: 0,
            population_size: 10,
            archive_size: 0,
        }
    }

    #[test]
    fn each_condition_fires() {
        let mut s = StopRule::new().max_generations(3);
        assert_eq!(s.check(&report(2, 30, 1.0)), None);
        assert_eq!(s.check(&report(3, 40, 1.0)), Some(StopReason::MaxGenerations));

        let mut s = StopRule::new().max_evaluations(100);
        assert_eq!(s.check(&report(8, 90, 1.0)), None);
        assert_eq!(s.check(&report(9, 91, 1.0)), Some(StopReason::MaxEvaluations));

        let mut s = StopRule::new().target_fitness(0.5);
        assert_eq!(s.check(&report(1, 10, 0.6)), None);
        assert_eq!(s.check(&report(2, 20, 0.5)), Some(StopReason::TargetReached));

        let mut s = StopRule::new().wall_clock(Duration::ZERO);
        assert_eq!(s.check(&report(0, 10, 1.0)), Some(StopReason::WallClock));
    }

    #[test]
    fn stagnation_counts_generations_without_strict_improvement() {
        let mut s = StopRule::new().stagnation(2);
        assert_eq!(s.check(&report(0, 10, 5.0)), None);
        assert_eq!(s.check(&report(1, 20, 4.0)), None);
        assert_eq!(s.check(&report(2, 30, 4.0)), None);
        assert_eq!(s.check(&report(3, 40, 4.0)), Some(StopReason::Stagnation));
        let mut s = StopRule::new().stagnation(2);
        for g in 0..5 {
            assert_eq!(s.check(&report(g, 10 * g, 10.0 - g as f64)), None);
        }
    }
}
