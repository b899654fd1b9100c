//! `rlhf data`: dataset utilities. `rlhf data make arithmetic` writes a seeded set of verifiable
//! arithmetic tasks as SFT, preference, ranking and prompt files; `rlhf data make sums` writes
//! addition prompts for RL.

use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Generate a dataset.
    #[command(subcommand)]
    Make(Make),
}

#[derive(clap::Subcommand)]
pub enum Make {
    /// Arithmetic and one-step word problems with numeric answers.
    Arithmetic {
        /// Number of problems (train + held out).
        #[arg(long, default_value_t = 1000)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// "What is a + b? Reply with the number only." prompts (a, b in 10..=99) with answers, for RL.
    Sums {
        /// Training prompts.
        #[arg(long, default_value_t = 2000)]
        n: usize,
        /// Held-out prompts (never equal to a training prompt).
        #[arg(long, default_value_t = 200)]
        eval: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: Command) -> Result<()> {
    match cmd {
        Command::Make(Make::Arithmetic { n, seed, out }) => {
            let set = rlhf_data::generate_arithmetic(n, seed)?;
            let files = set.write(&out).with_context(|| format!("writing arithmetic tasks to {}", out.display()))?;
            eprintln!("{} problems: {} train, {} held out", n, set.train().len(), set.eval().len());
            for f in files {
                println!("{}", f.display());
            }
            Ok(())
        }
        Command::Make(Make::Sums { n, eval, seed, out }) => {
            let files = rlhf_data::arithmetic::write_sum_prompts(&out, n, eval, seed)
                .with_context(|| format!("writing sum prompts to {}", out.display()))?;
            eprintln!("{n} training / {eval} held-out addition prompts");
            for f in files {
                println!("{}", f.display());
            }
            Ok(())
        }
    }
}
