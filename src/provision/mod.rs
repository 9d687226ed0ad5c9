//! Model files: where deopt's cache lives ([`cache_dir`]), and resolving, fetching and hashing
//! models ([`model_store`]), writing synthetic models ([`synth`]).

pub mod cache_dir;
pub mod model_store;
pub mod synth;
