//! `rlhf data`: dataset utilities. `rlhf data make arithmetic` writes a seeded set of verifiable
//! arithmetic tasks as SFT, preference, ranking and prompt files.

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
    }
}
