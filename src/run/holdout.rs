//! The held-out split: which survey items the fitness sees and which are kept out to measure
//! generalisation (`--holdout`).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::data::dimension::Dimension;
use crate::run::seeds::{sub_seed, Purpose};
use crate::score::fitness::{Target, Task};

/// Training and held-out item indices for a held-out `fraction`, drawn from the run seed.
/// VSM13 holds out whole dimensions (all items of round(fraction x 6) of them, at least 1,
/// at most all but one); WVS holds out items.
pub fn split_items(task: &Task, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let n = task.survey.items.len();
    if fraction <= 0.0 || n < 2 {
        return ((0..n).collect(), Vec::new());
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(sub_seed(seed, Purpose::Holdout));
    match task.target {
        Target::Hofstede { .. } => {
            let mut dims: Vec<Dimension> = Dimension::ALL
                .into_iter()
                .filter(|d| task.survey.items.iter().any(|it| it.term.is_some_and(|(x, _)| x == *d)))
                .collect();
            dims.shuffle(&mut rng);
            let k = ((fraction * dims.len() as f64).round() as usize)
                .clamp(1, dims.len().saturating_sub(1).max(1));
            let held = &dims[..k];
            (0..n).partition(|&i| !task.survey.items[i].term.is_some_and(|(d, _)| held.contains(&d)))
        }
        Target::Wvs { .. } | Target::Selfgen { .. } => {
            let mut idx: Vec<usize> = (0..n).collect();
            idx.shuffle(&mut rng);
            let k = ((fraction * n as f64).round() as usize).clamp(1, n - 1);
            let mut held = idx[..k].to_vec();
            held.sort_unstable();
            ((0..n).filter(|i| !held.contains(i)).collect(), held)
        }
    }
}
