//! What the model is shown: the rendered layout of an item, soft prompts and their files,
//! initial soft prompts, and the text-prompt baselines.

pub mod baseline;
pub mod init;
pub mod render;
pub mod softprompt;
