//! What any backend hands to scoring: per item, the probability of each answer option. Plain
//! data, so the llama.cpp engine and a second backend produce scores the same code reads.

use serde::Serialize;

/// The model's answer distribution on one item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemScore {
    /// Probability of each option (in option order), normalised over the options.
    pub probs: Vec<f64>,
    /// Probability mass the model put on the option labels before normalising (low = the
    /// model would rather say something else).
    pub label_mass: f64,
}

impl ItemScore {
    /// Probability-weighted answer code.
    pub fn expected(&self, first_code: i32) -> f64 {
        self.probs.iter().enumerate().map(|(k, p)| p * f64::from(first_code + k as i32)).sum()
    }

    /// Most probable answer code (the first on ties).
    pub fn argmax(&self, first_code: i32) -> i32 {
        let mut best = 0;
        for (k, p) in self.probs.iter().enumerate() {
            if *p > self.probs[best] {
                best = k;
            }
        }
        first_code + best as i32
    }
}
