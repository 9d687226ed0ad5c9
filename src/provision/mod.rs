//! Model files: where deopt's cache lives ([`cache_dir`]), and resolving, fetching and hashing
//! models ([`model_store`]).

pub mod cache_dir;
pub mod model_store;
