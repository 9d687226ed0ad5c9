//! From answers to numbers: VSM13 indices, losses and CAS ([`metrics`]), and the fitness of a
//! set of option distributions ([`fitness`]). Both take plain data (probabilities per option),
//! so any backend that produces option probabilities is scored the same way.

pub mod fitness;
pub mod gradient;
pub mod item_score;
pub mod metrics;
