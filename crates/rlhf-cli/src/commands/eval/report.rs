//! `rlhf report`: one self-contained `report.html` with every run's training curves and the
//! evaluation tables (from `rlhf eval --out`).

use anyhow::{bail, Context, Result};
use rlhf_eval::{load_eval, load_run, render};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A run folder (with metrics.jsonl) or a metrics file; repeatable. A folder without
    /// metrics.jsonl is searched one level down (e.g. runs/quickstart → sft, reward, ppo, grpo).
    #[arg(long = "run")]
    runs: Vec<PathBuf>,
    /// Evaluation rows (JSONL), e.g. from `rlhf eval --out`; repeatable.
    #[arg(long = "eval")]
    evals: Vec<PathBuf>,
    #[arg(long, default_value = "report.html")]
    out: PathBuf,
    #[arg(long, default_value = "rlhf report")]
    title: String,
}

pub fn run(a: Args) -> Result<()> {
    if a.runs.is_empty() && a.evals.is_empty() {
        bail!("nothing to report: give --run DIR and/or --eval FILE");
    }
    let mut runs = vec![];
    for path in &a.runs {
        if path.is_dir() && !path.join("metrics.jsonl").exists() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("metrics.jsonl").exists())
                .collect();
            children.sort();
            if children.is_empty() {
                bail!("{}: no metrics.jsonl in it or in its sub-folders", path.display());
            }
            for c in children {
                runs.push(load_run(&c)?);
            }
        } else {
            runs.push(load_run(path)?);
        }
    }
    let evals = a.evals.iter().map(|p| load_eval(p)).collect::<Result<Vec<_>, _>>()?;
    std::fs::write(&a.out, render(&a.title, &runs, &evals)).with_context(|| format!("writing {}", a.out.display()))?;
    println!("{}: {} run(s), {} evaluation table(s)", a.out.display(), runs.len(), evals.len());
    Ok(())
}
