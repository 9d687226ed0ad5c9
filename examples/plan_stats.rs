//! Prints the rendered layout and the engine's token counts for a survey (development aid).
fn main() -> anyhow::Result<()> {
    use deopt::engine::{Engine, EngineConfig, Plan};
    let kind = if std::env::args().nth(1).as_deref() == Some("wvs") {
        deopt::data::survey::SurveyKind::Wvs
    } else {
        deopt::data::survey::SurveyKind::Vsm13
    };
    let survey = deopt::data::survey::Survey::builtin(kind)?;
    let m =
        deopt::provision::model_store::resolve_model(None, deopt::provision::model_store::Precision::F16)?;
    let model = deopt::llama::Model::load(&m.path, &Default::default())?;
    let items: Vec<_> = survey.items.iter().collect();
    for style in [deopt::prompt::render::ItemStyle::Compact, deopt::prompt::render::ItemStyle::Culturespa] {
        let layout = deopt::prompt::render::Layout { style, ..Default::default() };
        let plan = Plan::new(&model, &items, &layout)?;
        let mut e = Engine::new(&model, EngineConfig::default())?;
        let logical: usize = plan.items.iter().map(|i| i.before.len() + 10 + i.after.len()).sum();
        println!(
            "{style:?}: cells/prompt {} logical {}\n---\n{}\n---",
            e.cells_needed(&plan, 10),
            logical,
            plan.example
        );
    }
    Ok(())
}
