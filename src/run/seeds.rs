//! Seeds derived from one run seed, so that `--seed` alone fixes every random draw and each
//! purpose (initial population, held-out split, subspace, optimizer) gets its own stream.

/// splitmix64's output function of `z` (after its increment).
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    mix(z)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// What a derived seed is for; the numbers are part of the run format (changing one changes
/// every run's results).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// The initial population of soft prompts.
    InitialPrompts = 1,
    /// The held-out split of the survey.
    Holdout = 2,
    /// The random subspace matrix.
    Subspace = 3,
    /// The initial population in the subspace.
    SubspaceInit = 4,
    /// The optimizer's own random stream.
    Optimizer = 5,
}

/// A seed for one purpose, derived from the run seed.
pub fn sub_seed(seed: u64, purpose: Purpose) -> u64 {
    mix(seed ^ (purpose as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_are_fixed_and_distinct() {
        // Pinned: runs recorded before this module existed must resume identically.
        assert_eq!(sub_seed(0, Purpose::InitialPrompts), mix(0x9E37_79B9_7F4A_7C15));
        let all = [
            Purpose::InitialPrompts,
            Purpose::Holdout,
            Purpose::Subspace,
            Purpose::SubspaceInit,
            Purpose::Optimizer,
        ];
        let seeds: std::collections::BTreeSet<u64> = all.iter().map(|&p| sub_seed(7, p)).collect();
        assert_eq!(seeds.len(), all.len());
        assert_eq!(splitmix64(1), mix(1u64.wrapping_add(0x9E37_79B9_7F4A_7C15)));
    }
}
