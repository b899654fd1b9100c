//! `rlhf label …`: run the labelling app, manage annotators, report agreement, export rankings.

use anyhow::{bail, Context, Result};
use rlhf_feedback::labels::export::{export, ExportFormat, ExportOptions};
use rlhf_feedback::labels::{prompt_text, Allocation, LabelDb, Role};
use rlhf_reward::math::last_integer;
use rlhf_server::label::client::Client;
use rlhf_server::label::{spawn, summary, ServerOptions, Summary};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create an annotator (or admin) and print their sign-in token (shown once, stored hashed).
    AddAnnotator {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        name: String,
        /// Admins see progress and agreement, and edit the guidelines.
        #[arg(long)]
        admin: bool,
    },
    /// Serve the labelling web app and its JSON API.
    Serve(ServeArgs),
    /// Progress, Cohen's κ per annotator pair, Krippendorff's α, agreement with the majority.
    Stats {
        #[arg(long)]
        db: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write rankings as preference JSONL that `rlhf reward` reads.
    Export {
        #[arg(long)]
        db: PathBuf,
        /// `pairs` (prompt/chosen/rejected, C(K,2) per ranking, ties dropped) or `rankings`.
        #[arg(long, default_value = "pairs")]
        format: String,
        #[arg(long)]
        out: PathBuf,
        /// Keep pairs that at least this share of the item's annotators agree with.
        #[arg(long, default_value_t = 0.0)]
        min_agreement: f64,
    },
    /// A scripted annotator through the HTTP API: an arithmetic grader, optionally noisy.
    Simulate(SimulateArgs),
    /// Load test: N concurrent annotators submit rankings while the server is SIGKILLed and
    /// restarted; checks that every acknowledged submission is stored once.
    Bench(super::label_bench::Args),
}

#[derive(clap::Args)]
pub struct ServeArgs {
    #[arg(long)]
    pub db: PathBuf,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to bind; anything but loopback exposes the app to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Share of items that go to several annotators, for agreement statistics.
    #[arg(long, default_value_t = 0.2)]
    pub overlap: f64,
    /// Annotators per overlapping item.
    #[arg(long, default_value_t = 2)]
    pub overlap_annotators: usize,
    /// Replace the guidelines shown on the task page with this file's text.
    #[arg(long)]
    pub guidelines: Option<PathBuf>,
    /// Largest request body, in KiB.
    #[arg(long, default_value_t = 64)]
    pub max_body_kib: usize,
}

#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Base URL of a running `rlhf label serve`.
    #[arg(long)]
    url: String,
    #[arg(long)]
    token: String,
    /// The prompts file the queue was collected from: its `answer` column is the truth.
    #[arg(long)]
    answers: PathBuf,
    /// Chance, per item, of ranking at random instead of by distance to the true answer.
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after N items (0: until the queue is empty for this annotator).
    #[arg(long, default_value_t = 0)]
    limit: usize,
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::AddAnnotator { db, name, admin } => {
            let mut db = LabelDb::open(&db)?;
            let role = if admin { Role::Admin } else { Role::Annotator };
            let token = db.add_annotator(&name, role)?;
            eprintln!("{name} ({role:?}): give them this token; it is not shown again");
            println!("{token}");
            Ok(())
        }
        Command::Serve(a) => serve(a),
        Command::Stats { db, json } => {
            let s = summary(&LabelDb::open_existing(&db)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_summary(&s);
            }
            Ok(())
        }
        Command::Export { db, format, out, min_agreement } => {
            let format = match format.as_str() {
                "pairs" => ExportFormat::Pairs,
                "rankings" => ExportFormat::Rankings,
                f => bail!("--format {f}: use `pairs` or `rankings`"),
            };
            let (rows, counts) = export(&LabelDb::open_existing(&db)?, format, ExportOptions { min_agreement })?;
            // Written beside --out and renamed over it, so an existing file is replaced only
            // by a complete export.
            let tmp = out.with_file_name(format!(
                ".{}.tmp-{}",
                out.file_name().and_then(|n| n.to_str()).unwrap_or("export"),
                std::process::id()
            ));
            let mut w = std::io::BufWriter::new(
                std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
            );
            for row in &rows {
                writeln!(w, "{row}").with_context(|| format!("writing {}", tmp.display()))?;
            }
            w.flush()?;
            drop(w);
            std::fs::rename(&tmp, &out).with_context(|| format!("moving the export into {}", out.display()))?;
            println!(
                "{}: {} rows from {} rankings ({} flagged items left out, {} tied pairs dropped, {} below agreement {min_agreement})",
                out.display(),
                counts.rows,
                counts.rankings,
                counts.flagged_items,
                counts.tied_pairs,
                counts.below_agreement
            );
            Ok(())
        }
        Command::Simulate(a) => simulate(a),
        Command::Bench(a) => super::label_bench::run(a),
    }
}

pub fn server_options(a: &ServeArgs) -> Result<ServerOptions> {
    if !(0.0..=1.0).contains(&a.overlap) {
        bail!("--overlap {}: a share between 0 and 1", a.overlap);
    }
    if a.overlap_annotators < 1 {
        bail!("--overlap-annotators must be at least 1");
    }
    Ok(ServerOptions {
        allocation: Allocation { overlap: a.overlap, overlap_annotators: a.overlap_annotators },
        max_body_bytes: a.max_body_kib.max(1) * 1024,
        ..ServerOptions::default()
    })
}

fn serve(a: ServeArgs) -> Result<()> {
    let opts = server_options(&a)?;
    let mut db = LabelDb::open(&a.db)?;
    if let Some(path) = &a.guidelines {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        db.set_guidelines(&text)?;
    }
    if db.annotators()?.is_empty() {
        eprintln!(
            "note: no annotators yet; create one with `rlhf label add-annotator --db {} --name NAME`",
            a.db.display()
        );
    }
    drop(db);
    if !a.host.is_loopback() {
        eprintln!("warning: binding {}: the app is reachable from the network (use TLS in front of it)", a.host);
    }
    let server = spawn(SocketAddr::new(a.host, a.port), &a.db, opts)?;
    eprintln!("labelling app on http://{} (database {}); Ctrl-C stops it", server.addr, a.db.display());
    server.wait()?;
    Ok(())
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("n/a".to_string(), |x| format!("{x:.3}"))
}

fn print_summary(s: &Summary) {
    let i = &s.items;
    println!("items: {} total, {} complete, {} in progress, {} flagged", i.total, i.complete, i.in_progress, i.flagged);
    println!("\n{:<20} {:>9} {:>6} {:>8} {:>8} {:>5}", "annotator", "role", "done", "skipped", "flagged", "open");
    for a in &s.annotators {
        println!(
            "{:<20} {:>9} {:>6} {:>8} {:>8} {:>5}",
            a.name,
            format!("{:?}", a.role).to_lowercase(),
            a.done,
            a.skipped,
            a.flagged,
            a.open
        );
    }
    let g = &s.agreement;
    println!(
        "\nagreement on {} items ranked by 2+ annotators; Krippendorff's α (ordinal) = {}",
        g.items_with_overlap,
        fmt_opt(g.alpha_ordinal)
    );
    if !g.pairs.is_empty() {
        println!(
            "{:<20} {:<20} {:>6} {:>11} {:>8} {:>7}",
            "annotator A", "annotator B", "items", "comparisons", "raw", "κ"
        );
        for p in &g.pairs {
            println!(
                "{:<20} {:<20} {:>6} {:>11} {:>8.3} {:>7}",
                p.a,
                p.b,
                p.shared_items,
                p.comparisons,
                p.raw_agreement,
                fmt_opt(p.kappa)
            );
        }
    }
    for a in &g.per_annotator {
        println!(
            "{:<20} agrees with the majority on {} of {} pairwise comparisons",
            a.annotator,
            fmt_opt(a.agreement_with_majority),
            a.compared
        );
    }
}

/// Prompt text (as annotators see it) → reference answer, from the collected prompts file.
fn answers_by_prompt(path: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}: not valid JSON", path.display(), n + 1))?;
        let answer = match &v["answer"] {
            Value::String(s) => s.clone(),
            Value::Number(x) => x.to_string(),
            _ => bail!("{}:{}: field \"answer\": missing or not a string/number", path.display(), n + 1),
        };
        out.insert(prompt_text(&v["prompt"]), answer);
    }
    Ok(out)
}

fn simulate(a: SimulateArgs) -> Result<()> {
    use rand::{Rng, SeedableRng};
    let answers = answers_by_prompt(&a.answers)?;
    let client = Client::new(&a.url, &a.token);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(a.seed);
    let (mut done, mut random) = (0usize, 0usize);
    loop {
        let task = client.task()?;
        let (Some(assignment), Some(prompt)) = (task.assignment, task.prompt.as_ref()) else { break };
        let answer = answers
            .get(prompt)
            .with_context(|| format!("item {:?}: its prompt is not in {}", task.item, a.answers.display()))?;
        let tiers: Vec<Vec<i64>> = if rng.random::<f64>() < a.noise {
            random += 1;
            let mut ids: Vec<i64> = task.responses.iter().map(|r| r.id).collect();
            rand::seq::SliceRandom::shuffle(ids.as_mut_slice(), &mut rng);
            ids.into_iter().map(|id| vec![id]).collect()
        } else {
            // The truth first, then answers by distance from it (equal distances tied), then
            // replies without a number: an arithmetic grader's ranking.
            let want: i128 = answer.trim().parse().with_context(|| format!("answer {answer:?} is not an integer"))?;
            let mut by_distance: std::collections::BTreeMap<u128, Vec<i64>> = Default::default();
            for r in &task.responses {
                let distance = last_integer(&r.text).map_or(u128::MAX, |got| got.abs_diff(want));
                by_distance.entry(distance).or_default().push(r.id);
            }
            by_distance.into_values().collect()
        };
        client.submit(assignment, &tiers)?;
        done += 1;
        if a.limit > 0 && done >= a.limit {
            break;
        }
    }
    println!("{}", json!({ "submitted": done, "random": random }));
    Ok(())
}
