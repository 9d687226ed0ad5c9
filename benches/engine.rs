//! `cargo bench --bench engine`: the scoring engine against naive scoring and raw llama.cpp
//! prompt processing on the VSM13 workload (16 random soft prompts, T = 10, 24 items), the
//! same measurement and table as `deopt bench engine`. Uses the default model (fetched on
//! first use).

use deopt::bench::engine_throughput::{engine_bench, Workload};
use deopt::data::survey::{Survey, SurveyKind};
use deopt::run::spec::ModelSpec;

fn main() -> anyhow::Result<()> {
    let spec = ModelSpec::default();
    let (resolved, model) = spec.load()?;
    let survey = Survey::builtin(SurveyKind::Vsm13)?;
    let work = Workload {
        survey: &survey,
        prompts: 16,
        rows: 10,
        seed: 0,
        batch_prompts: 8,
        naive: true,
        repeats: 3,
    };
    let b = engine_bench(&model, &resolved.display_name, &spec.engine_config(), &work, |m| eprintln!("{m}"))?;
    print!("{}", b.table());
    Ok(())
}
