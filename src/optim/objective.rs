//! What the optimizer minimises: a batch objective scored one generation at a time.

/// A fitness function that scores a whole generation in one call.
///
/// The optimizer calls [`evaluate`](BatchObjective::evaluate) once per generation with every
/// trial of that generation, so an implementation can batch them (one LLM pass over all soft
/// prompts, a rayon pool over test functions, ...). Lower fitness is better. A NaN fitness is
/// ranked worse than every number, including `+inf`.
pub trait BatchObjective {
    /// Fitness (lower is better) of every vector, same order. Called once per generation
    /// with all trials.
    ///
    /// # Errors
    /// Whatever stops the evaluation; the optimizer passes it on and leaves its own state
    /// unchanged, so the same step can be retried.
    fn evaluate(&mut self, xs: &[Vec<f32>]) -> anyhow::Result<Vec<f64>>;

    /// Optional repair of a freshly made trial (e.g. clip row norms); default no-op.
    ///
    /// Called on every new trial after bound handling and before evaluation, never on the
    /// caller's initial population.
    fn repair(&self, _x: &mut [f32]) {}
}

impl<O: BatchObjective + ?Sized> BatchObjective for &mut O {
    fn evaluate(&mut self, xs: &[Vec<f32>]) -> anyhow::Result<Vec<f64>> {
        (**self).evaluate(xs)
    }

    fn repair(&self, x: &mut [f32]) {
        (**self).repair(x)
    }
}

impl<O: BatchObjective + ?Sized> BatchObjective for Box<O> {
    fn evaluate(&mut self, xs: &[Vec<f32>]) -> anyhow::Result<Vec<f64>> {
        (**self).evaluate(xs)
    }

    fn repair(&self, x: &mut [f32]) {
        (**self).repair(x)
    }
}

/// Wraps an objective and counts its `evaluate` calls and the vectors scored.
///
/// With an LLM objective this counts forward-pass batches for free.
#[derive(Debug, Clone, Default)]
pub struct Counting<O> {
    /// The wrapped objective.
    pub inner: O,
    /// Number of `evaluate` calls.
    pub calls: u64,
    /// Number of vectors passed to `evaluate`.
    pub evaluations: u64,
    /// Size of each batch, in call order.
    pub batch_sizes: Vec<usize>,
}

impl<O> Counting<O> {
    /// Start counting from zero.
    pub fn new(inner: O) -> Self {
        Counting { inner, calls: 0, evaluations: 0, batch_sizes: Vec::new() }
    }
}

impl<O: BatchObjective> BatchObjective for Counting<O> {
    fn evaluate(&mut self, xs: &[Vec<f32>]) -> anyhow::Result<Vec<f64>> {
        self.calls += 1;
        self.evaluations += xs.len() as u64;
        self.batch_sizes.push(xs.len());
        self.inner.evaluate(xs)
    }

    fn repair(&self, x: &mut [f32]) {
        self.inner.repair(x)
    }
}

/// A batch objective from a closure over one vector, evaluated sequentially.
///
/// Handy in tests and examples; real objectives implement [`BatchObjective`] directly.
pub struct FnObjective<F>(pub F);

impl<F: FnMut(&[f32]) -> f64> BatchObjective for FnObjective<F> {
    fn evaluate(&mut self, xs: &[Vec<f32>]) -> anyhow::Result<Vec<f64>> {
        Ok(xs.iter().map(|x| (self.0)(x)).collect())
    }
}
