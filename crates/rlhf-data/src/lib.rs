//! `rlhf-data`: tokenizers and chat templates, datasets in TRL's column conventions (JSON lines and
//! Parquet), collation into padded batches, and a seeded arithmetic task generator.

pub mod arithmetic;
pub mod chat;
pub mod collate;
pub mod dataset;
pub mod error;
pub mod tiny;
pub mod tokenizer;

pub use arithmetic::{
    extract_final_answer, generate_arithmetic, is_correct, is_well_formatted, write_arithmetic, ArithmeticProblem,
    ArithmeticSet,
};
pub use chat::{ChatTemplate, Message};
pub use collate::Batch;
pub use dataset::{
    load_preferences, load_prompts, load_sft, split_train_eval, EvalSplit, LoadOptions, Loaded, OnBadRecord,
    PairExample, PreferenceGroup, PromptExample, SftExample, TextOrMessages,
};
pub use error::{BadRecord, DataError, Location, RecordIndex, Result};
pub use tokenizer::{StopStrings, Tokenizer};
