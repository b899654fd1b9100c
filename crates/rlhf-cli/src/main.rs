//! `rlhf`: the command-line edge. Library errors become `anyhow` errors here, printed with their
//! chain of causes; nothing below this crate knows about the CLI.

mod commands;
#[allow(dead_code)] // Used by the trainer commands (sft, dpo, ...), which land after this module.
mod config;
mod loading;
mod progress;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rlhf",
    version,
    about = "Align language models with human feedback: SFT, reward models, PPO/GRPO/DPO, human labelling, evaluation."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sample continuations of a prompt (greedy by default).
    Generate(commands::generate::Args),
    /// Per-token log-probabilities of a text, for checks against other frameworks.
    Logprobs(commands::logprobs::Args),
    /// Write a model (e.g. a GGUF file) as a Hugging Face folder that `transformers` loads.
    Convert(commands::convert::Args),
    /// Measure matmul GFLOP/s, decoding tokens/s and one training step of a model.
    Bench(commands::bench::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => commands::generate::run(a),
        Command::Logprobs(a) => commands::logprobs::run(a),
        Command::Convert(a) => commands::convert::run(a),
        Command::Bench(a) => commands::bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
