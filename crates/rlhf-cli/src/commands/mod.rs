pub mod bench;
pub mod convert;
pub mod generate;
pub mod logprobs;
