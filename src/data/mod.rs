//! Input data: survey instruments, countries, their targets (Hofstede scores, WVS-7 answer
//! distributions), files of answers, and the embedded copies of surveys/ and targets/.

pub mod answers;
pub mod country;
pub mod dimension;
pub mod embedded;
pub mod input_error;
pub mod load;
pub mod survey;
pub mod targets;
