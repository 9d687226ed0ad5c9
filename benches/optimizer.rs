//! `cargo bench --bench optimizer`: DE/rand/1/bin, JADE and SHADE on the 30-D sphere and
//! Rastrigin functions, each against random search on the same budget and seeds (the
//! baseline measured in the same run), with the same lines as `deopt bench optimizer
//! --baseline`.

use deopt::bench::optimizer_functions::{ratio_line, OptimizerBench};
use deopt::optim::testfn::Function;
use deopt::optim::Strategy;

fn main() -> anyhow::Result<()> {
    for function in [Function::Sphere, Function::Rastrigin] {
        let base = OptimizerBench {
            function,
            dim: 30,
            evals: 30_000,
            strategy: Strategy::Random,
            seed: 0,
            pop: Some(50),
            mutation: 0.5,
            recombination: 0.9,
            shift_rotate: false,
            repeats: 3,
        };
        let random = base.run(|_, _| {}, |_| {})?;
        for strategy in [Strategy::Rand1Bin, Strategy::Jade, Strategy::Shade] {
            let s = OptimizerBench { strategy, ..base.clone() }.run(|_, _| {}, |_| {})?;
            println!("{}", s.median_line(base.seed));
            println!("{}", ratio_line(&s, &random));
        }
    }
    Ok(())
}
