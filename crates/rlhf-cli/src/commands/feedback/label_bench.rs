//! `rlhf label bench`: concurrent annotators against a real `rlhf label serve` process that is
//! SIGKILLed and restarted mid-run. Clients retry a submission until it is acknowledged (a
//! resend of a stored answer is acknowledged as a duplicate), so afterwards the database must
//! hold every acknowledged submission exactly once.

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rlhf_feedback::labels::{LabelDb, NewItem, NewResponse, Role, StoredSubmission};
use rlhf_server::label::client::{Client, ClientError};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value_t = 8)]
    annotators: usize,
    /// Acknowledged rankings to collect in all.
    #[arg(long, default_value_t = 1000)]
    rankings: usize,
    /// SIGKILL the server (then restart it) once this many rankings are acknowledged; 0: never.
    #[arg(long, default_value_t = 400)]
    kill_after: usize,
    #[arg(long, default_value_t = 4)]
    k: usize,
    /// Working directory for the database (a fresh temporary one by default).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
}

struct ServerProcess {
    child: Child,
}

impl ServerProcess {
    fn start(db: &Path, port: u16) -> Result<ServerProcess> {
        let exe = std::env::current_exe().context("locating the rlhf binary")?;
        let child = Command::new(exe)
            .args(["label", "serve", "--db"])
            .arg(db)
            .args(["--port", &port.to_string(), "--overlap", "0.2"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting `rlhf label serve`")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(ServerProcess { child });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("`rlhf label serve` did not listen on port {port} within 20 s")
    }

    fn kill(mut self) -> Result<()> {
        self.child.kill().context("killing the server")?; // SIGKILL on Unix
        self.child.wait()?;
        Ok(())
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// What the annotators saw, shared by their threads.
#[derive(Default)]
struct Tally {
    acked: AtomicUsize,
    /// assignment → tiers, for every acknowledged submission.
    ledger: Mutex<BTreeMap<i64, Vec<Vec<i64>>>>,
    /// Seconds from sending a submission to its acknowledgement.
    latencies: Mutex<Vec<f64>>,
    transport_errors: AtomicUsize,
    duplicates_acked: AtomicUsize,
}

fn poisoned<T>(_: T) -> anyhow::Error {
    anyhow::anyhow!("a client thread panicked while holding the tally")
}

/// A database with `rankings` items of `k` responses and one token per annotator.
fn fill_db(db_path: &Path, a: &Args) -> Result<Vec<String>> {
    let mut db = LabelDb::open(db_path)?;
    for i in 0..a.rankings {
        let responses = (0..a.k)
            .map(|r| NewResponse { text: format!("response {r} to prompt {i}"), temperature: None, model: None })
            .collect();
        db.add_item(&NewItem { prompt: format!("prompt {i}"), prompt_json: None, source: None, responses })?;
    }
    (0..a.annotators).map(|i| Ok(db.add_annotator(&format!("bench-{i}"), Role::Annotator)?)).collect()
}

/// One annotator: takes tasks and submits a random ranking of each, resending through outages
/// until it is acknowledged, until `target` rankings are acknowledged in all. A 4xx ends it.
fn annotate(base: &str, token: &str, seed: u64, target: usize, tally: &Tally) -> Result<()> {
    let client = Client::new(base, token);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let retry = |e: ClientError| -> Result<()> {
        match e {
            ClientError::Transport(_) => {
                tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
                Ok(())
            }
            e => Err(e.into()),
        }
    };
    while tally.acked.load(Ordering::SeqCst) < target {
        let task = match client.task() {
            Ok(t) => t,
            Err(e) => {
                retry(e)?;
                continue;
            }
        };
        let Some(assignment) = task.assignment else { return Ok(()) };
        let mut ids: Vec<i64> = task.responses.iter().map(|r| r.id).collect();
        ids.shuffle(&mut rng);
        let tiers: Vec<Vec<i64>> = ids.into_iter().map(|id| vec![id]).collect();
        loop {
            let sent = Instant::now();
            match client.submit(assignment, &tiers) {
                Ok(duplicate) => {
                    tally.latencies.lock().map_err(poisoned)?.push(sent.elapsed().as_secs_f64());
                    if duplicate {
                        tally.duplicates_acked.fetch_add(1, Ordering::Relaxed);
                    }
                    tally.ledger.lock().map_err(poisoned)?.insert(assignment, tiers.clone());
                    tally.acked.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Err(e) => retry(e)?,
            }
        }
    }
    Ok(())
}

/// The durability check: every acknowledged submission stored once and as sent, nothing else.
#[derive(Debug, Default, PartialEq, Eq)]
struct Audit {
    lost: usize,
    stored_twice: usize,
    altered: usize,
    unacknowledged: usize,
}

impl Audit {
    fn of(stored: &[StoredSubmission], ledger: &BTreeMap<i64, Vec<Vec<i64>>>) -> Self {
        let mut per_assignment: HashMap<i64, usize> = HashMap::new();
        for s in stored {
            *per_assignment.entry(s.assignment).or_default() += 1;
        }
        Audit {
            lost: ledger.keys().filter(|k| !per_assignment.contains_key(k)).count(),
            stored_twice: per_assignment.values().filter(|&&n| n > 1).count(),
            altered: stored.iter().filter(|s| ledger.get(&s.assignment).is_some_and(|t| *t != s.tiers)).count(),
            unacknowledged: stored.iter().filter(|s| !ledger.contains_key(&s.assignment)).count(),
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    if a.annotators == 0 || a.rankings == 0 {
        bail!("--annotators and --rankings must be positive");
    }
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("rlhf-label-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let db_path = dir.join("bench.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("bench.db{suffix}")));
    }
    let tokens = fill_db(&db_path, &a)?;
    let port = free_port()?;
    let mut server = Some(ServerProcess::start(&db_path, port)?);
    let base = format!("http://127.0.0.1:{port}");
    let tally = Tally::default();
    let start = Instant::now();
    let mut downtime = Duration::ZERO;
    let mut restarts = 0;
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = tokens
            .iter()
            .enumerate()
            .map(|(w, token)| {
                let (base, tally) = (&base, &tally);
                scope.spawn(move || annotate(base, token, w as u64, a.rankings, tally))
            })
            .collect();
        if a.kill_after > 0 {
            while tally.acked.load(Ordering::SeqCst) < a.kill_after && !workers.iter().all(|w| w.is_finished()) {
                std::thread::sleep(Duration::from_millis(2));
            }
            if let Some(s) = server.take() {
                let down = Instant::now();
                s.kill()?;
                server = Some(ServerProcess::start(&db_path, port)?);
                downtime = down.elapsed();
                restarts += 1;
            }
        }
        for w in workers {
            w.join().map_err(|_| anyhow::anyhow!("a client thread panicked"))??;
        }
        Ok(())
    })?;
    let wall = start.elapsed();
    if let Some(s) = server.take() {
        s.kill()?;
    }
    let stored = LabelDb::open(&db_path)?.submissions()?;
    let ledger = tally.ledger.into_inner().map_err(poisoned)?;
    let Audit { lost, stored_twice: twice, altered, unacknowledged } = Audit::of(&stored, &ledger);
    let mut lat = tally.latencies.into_inner().map_err(poisoned)?;
    lat.sort_by(f64::total_cmp);
    let up = (wall - downtime).as_secs_f64();
    let figures = json!({
        "annotators": a.annotators, "acknowledged": ledger.len(), "stored": stored.len(),
        "lost": lost, "stored_twice": twice, "altered": altered, "stored_unacknowledged": unacknowledged,
        "restarts": restarts, "downtime_s": downtime.as_secs_f64(), "wall_s": wall.as_secs_f64(),
        "submissions_per_s": ledger.len() as f64 / wall.as_secs_f64(),
        "submissions_per_s_while_up": ledger.len() as f64 / up,
        "submit_p50_ms": percentile(&lat, 0.5) * 1e3, "submit_p95_ms": percentile(&lat, 0.95) * 1e3,
        "submit_p99_ms": percentile(&lat, 0.99) * 1e3,
        "retries_after_outage": tally.transport_errors.load(Ordering::Relaxed),
        "duplicates_acknowledged": tally.duplicates_acked.load(Ordering::Relaxed),
    });
    if a.json {
        println!("{figures}");
    } else {
        println!(
            "{} annotators, {} rankings acknowledged in {:.2} s ({} restart, {:.2} s down): {:.0} submissions/s \
             ({:.0}/s while up); submit latency p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms\n\
             stored {}, lost {lost}, stored twice {twice}, altered {altered}, stored but never acknowledged {unacknowledged}",
            a.annotators,
            ledger.len(),
            wall.as_secs_f64(),
            restarts,
            downtime.as_secs_f64(),
            figures["submissions_per_s"].as_f64().unwrap_or(0.0),
            figures["submissions_per_s_while_up"].as_f64().unwrap_or(0.0),
            percentile(&lat, 0.5) * 1e3,
            percentile(&lat, 0.95) * 1e3,
            percentile(&lat, 0.99) * 1e3,
            stored.len()
        );
    }
    if lost + twice + altered + unacknowledged > 0 {
        bail!("durability check failed: {lost} lost, {twice} stored twice, {altered} altered, {unacknowledged} unacknowledged");
    }
    if a.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(assignment: i64, tiers: Vec<Vec<i64>>) -> StoredSubmission {
        StoredSubmission {
            assignment,
            item: assignment,
            annotator: "a".into(),
            action: "rank".into(),
            tiers,
            flag: None,
            comment: None,
        }
    }

    #[test]
    fn the_audit_finds_each_kind_of_damage() {
        let ledger: BTreeMap<i64, Vec<Vec<i64>>> =
            [(1, vec![vec![1], vec![2]]), (2, vec![vec![3], vec![4]]), (3, vec![vec![5]])].into();
        let clean = [stored(1, vec![vec![1], vec![2]]), stored(2, vec![vec![3], vec![4]]), stored(3, vec![vec![5]])];
        assert_eq!(Audit::of(&clean, &ledger), Audit::default());
        let damaged = [
            stored(1, vec![vec![1], vec![2]]),
            stored(1, vec![vec![1], vec![2]]), // twice
            stored(2, vec![vec![4], vec![3]]), // altered
            stored(9, vec![vec![7]]),          // never acknowledged; 3 is lost
        ];
        assert_eq!(Audit::of(&damaged, &ledger), Audit { lost: 1, stored_twice: 1, altered: 1, unacknowledged: 1 });
    }
}
