//! `rlhf constitution`: Constitutional AI's critique → revision loop (Bai et al. 2022) against
//! any OpenAI-compatible endpoint. For each prompt the model answers, critiques its answer
//! against one principle and rewrites it; the revisions become SFT data and (revision, original)
//! preference pairs. Every reply goes to the judge's fsync'd [`ReplyCache`] before it is used, so
//! rerunning the same command after a failure sends only the calls still missing.

use super::endpoint::EndpointArgs;
use crate::progress;
use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rlhf_data::dataset::for_each_record;
use rlhf_reward::judge::{
    cache_key, render_text, ChatClient, ChatMessage, ChatRequest, Common, JudgeError, ReplyCache,
};
use serde_json::{json, Value};
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// Prompts (JSONL or Parquet, or a Hub dataset ORG/NAME[:SPLIT]): `prompt` as a string or a
    /// list of chat messages.
    #[arg(long)]
    data: String,
    /// The constitution: one principle per non-empty line; lines starting with `#` are comments.
    #[arg(long)]
    principles: PathBuf,
    /// SFT rows out: {"prompt", "completion": final revision}, the completion an assistant turn
    /// when the prompt is a conversation (what `rlhf sft` reads).
    #[arg(long)]
    sft_out: PathBuf,
    /// Preference pairs out: {"prompt", "chosen": revision, "rejected": original, "principle", "critique"}.
    #[arg(long)]
    pairs_out: PathBuf,
    /// Reply cache (JSONL, appended to; default: <pairs-out>.cache.jsonl).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Critique → revision rounds per prompt, each against its own principle.
    #[arg(long, default_value_t = 1)]
    revisions: usize,
    /// How principles are assigned: `round-robin` through the file, or `random` (seeded).
    #[arg(long, value_enum, default_value_t = PrincipleOrder::RoundRobin)]
    principle_order: PrincipleOrder,
    /// Seed of `--principle-order random` (default 0); when given it is also sent with every
    /// request, so servers that honour `seed` (`rlhf serve`, vLLM, OpenAI) sample reproducibly.
    #[arg(long)]
    seed: Option<u64>,
    /// Sampling temperature of the initial answer (some variety is the point).
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    /// Temperature of critiques and revisions (0: as deterministic as the server allows).
    #[arg(long, default_value_t = 0.0)]
    critique_temperature: f64,
    /// Token limit of every reply (answer, critique, revision).
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    /// Prompts processed at once (each runs its calls in sequence).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Use only the first N prompts.
    #[arg(long)]
    limit: Option<usize>,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum PrincipleOrder {
    RoundRobin,
    Random,
}

/// One prompt: as given (for the output rows) and as the model reads it.
struct Item {
    prompt: Value,
    /// What the generation request sends: the messages as given, or the string as a user turn.
    messages: Vec<ChatMessage>,
    /// The prompt as one text, quoted in critique and revision requests.
    text: String,
}

/// One critique → revision round.
struct Round {
    principle: usize,
    critique: String,
    revision: String,
}

/// What became of one prompt.
enum Outcome {
    /// The final revision differs from the answer: an SFT row and a pair.
    Revised { answer: String, rounds: Vec<Round> },
    /// The revision repeats the answer: a good SFT target, but no preference to learn.
    Unchanged { answer: String },
    /// Nothing to learn from: the answer or a revision came back empty.
    Empty,
}

/// The constitution file's principles, in order.
fn read_principles(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--principles {}: cannot read", path.display()))?;
    let principles: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect();
    if principles.is_empty() {
        bail!(
            "--principles {}: no principles (write one per line; blank lines and lines starting with # are skipped)",
            path.display()
        );
    }
    Ok(principles)
}

/// Every record's `prompt`; the first bad one is an error naming path:line and the field.
fn read_prompts(path: &Path) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut problem = None;
    for_each_record(path, |location, record| {
        if problem.is_some() {
            return Ok(());
        }
        let parsed = record.map_err(|reason| format!("{location}: {reason}")).and_then(|map| {
            let bad = |m: String| format!("{location}: field `prompt`: {m}");
            let prompt = map
                .get("prompt")
                .filter(|v| !v.is_null())
                .ok_or_else(|| bad("missing (a string or a list of messages)".into()))?;
            let text = render_text(prompt).map_err(bad)?;
            if text.trim().is_empty() {
                return Err(bad("empty prompt".into()));
            }
            let messages = match prompt {
                Value::Array(list) => list
                    .iter()
                    .map(|m| {
                        ChatMessage::text(
                            m["role"].as_str().unwrap_or_default(),
                            m["content"].as_str().unwrap_or_default(),
                        )
                    })
                    .collect(),
                _ => vec![user(text.clone())],
            };
            Ok(Item { prompt: prompt.clone(), messages, text })
        });
        match parsed {
            Ok(item) => items.push(item),
            Err(message) => problem = Some(message),
        }
        Ok(())
    })
    .with_context(|| format!("--data {}", path.display()))?;
    if let Some(message) = problem {
        bail!(message);
    }
    if items.is_empty() {
        bail!("--data {}: no prompts", path.display());
    }
    Ok(items)
}

fn user(content: String) -> ChatMessage {
    ChatMessage::text("user", content)
}

/// The critique request. Short on purpose: small models have small context windows.
fn critique_request(principle: &str, request: &str, response: &str) -> ChatMessage {
    user(format!(
        "Principle: {principle}\nRequest: {request}\nResponse: {response}\n\
         Point out briefly how the response falls short of the principle."
    ))
}

fn revision_request(principle: &str, request: &str, response: &str, critique: &str) -> ChatMessage {
    user(format!(
        "Principle: {principle}\nRequest: {request}\nResponse: {response}\nCritique: {critique}\n\
         Rewrite the response so it follows the principle and answers the critique. \
         Reply with the rewritten response only."
    ))
}

/// Which principle each round of each item uses: round-robin continues through the file across
/// items and rounds, so every principle gets used about equally often.
fn assign_principles(
    items: usize,
    rounds: usize,
    principles: usize,
    order: PrincipleOrder,
    seed: u64,
) -> Vec<Vec<usize>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..items)
        .map(|i| {
            (0..rounds)
                .map(|r| match order {
                    PrincipleOrder::RoundRobin => (i * rounds + r) % principles,
                    PrincipleOrder::Random => rng.random_range(0..principles),
                })
                .collect()
        })
        .collect()
}

/// The model's calls, answered from the cache when it has them.
struct Caller<'a> {
    client: ChatClient,
    model: String,
    cache: &'a ReplyCache,
    max_tokens: u32,
    seed: Option<i64>,
    requests: AtomicUsize,
    cache_hits: AtomicUsize,
}

impl Caller<'_> {
    fn call(&self, messages: &[ChatMessage], temperature: f64) -> std::result::Result<String, JudgeError> {
        let request = ChatRequest {
            model: Some(self.model.clone()),
            messages: messages.to_vec(),
            common: Common {
                temperature: Some(temperature),
                max_tokens: Some(self.max_tokens.into()),
                seed: self.seed,
                ..Common::default()
            },
            ..ChatRequest::default()
        };
        let key = cache_key(&request.to_value());
        self.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(reply) = self.cache.get(&key) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(reply);
        }
        let reply = self.client.chat(&request)?;
        self.cache.insert(&key, &self.model, &reply)?;
        Ok(reply)
    }
}

fn process(
    caller: &Caller,
    a: &Args,
    item: &Item,
    principles: &[String],
    plan: &[usize],
) -> std::result::Result<Outcome, JudgeError> {
    let answer = caller.call(&item.messages, a.temperature)?.trim().to_string();
    if answer.is_empty() {
        return Ok(Outcome::Empty);
    }
    let mut current = answer.clone();
    let mut rounds = Vec::with_capacity(plan.len());
    for &p in plan {
        let principle = &principles[p];
        let critique = caller.call(&[critique_request(principle, &item.text, &current)], a.critique_temperature)?;
        let critique = critique.trim().to_string();
        let request = revision_request(principle, &item.text, &current, &critique);
        let revision = caller.call(&[request], a.critique_temperature)?.trim().to_string();
        if revision.is_empty() {
            return Ok(Outcome::Empty);
        }
        current = revision.clone();
        rounds.push(Round { principle: p, critique, revision });
    }
    if current == answer {
        return Ok(Outcome::Unchanged { answer });
    }
    Ok(Outcome::Revised { answer, rounds })
}

/// A response in the prompt's shape: a string for a string prompt, an assistant turn for a
/// conversation (TRL's conversational form, which `rlhf sft`/`reward`/`dpo` read).
fn response(prompt: &Value, text: &str) -> Value {
    match prompt {
        Value::Array(_) => json!([{"role": "assistant", "content": text}]),
        _ => Value::String(text.to_string()),
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes JSON lines to a temporary file and renames it over `path`, so a reader never sees a
/// half-written file.
fn write_atomically(path: &Path, rows: &[Value]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = with_suffix(path, ".tmp");
    let mut text = String::new();
    for row in rows {
        text.push_str(&row.to_string());
        text.push('\n');
    }
    std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
}

pub fn run(a: Args) -> Result<()> {
    for (flag, t) in [("--temperature", a.temperature), ("--critique-temperature", a.critique_temperature)] {
        if !(t.is_finite() && t >= 0.0) {
            bail!("{flag} {t}: give a number ≥ 0");
        }
    }
    if a.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if a.max_tokens == 0 {
        bail!("--max-tokens must be at least 1");
    }
    if a.revisions == 0 {
        bail!("--revisions must be at least 1 (each round is one critique and one revision)");
    }
    if a.limit == Some(0) {
        bail!("--limit 0 leaves no prompts");
    }
    if a.sft_out == a.pairs_out {
        bail!("--sft-out and --pairs-out are the same file ({})", a.sft_out.display());
    }
    let principles = read_principles(&a.principles)?;
    let mut items = Vec::new();
    for file in crate::loading::dataset_files(&a.data)? {
        items.extend(read_prompts(&file)?);
    }
    if let Some(limit) = a.limit {
        items.truncate(limit);
    }
    let plan = assign_principles(items.len(), a.revisions, principles.len(), a.principle_order, a.seed.unwrap_or(0));

    let client = ChatClient::new(&a.endpoint.config()?.client())?;
    let cache_path = a.cache.clone().unwrap_or_else(|| with_suffix(&a.pairs_out, ".cache.jsonl"));
    if let Some(dir) = cache_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let (cache, load) = ReplyCache::open(&cache_path)?;
    for w in &load.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "constitution: {} prompts × {} round(s) against {} principles with {} at {} ({} cached replies in {})",
        items.len(),
        a.revisions,
        principles.len(),
        a.endpoint.model,
        a.endpoint.url,
        load.entries,
        cache_path.display()
    );

    let caller =
        Caller {
            client,
            model: a.endpoint.model.clone(),
            cache: &cache,
            max_tokens: a.max_tokens,
            seed: a.seed.map(i64::try_from).transpose().map_err(|_| {
                anyhow::anyhow!("--seed: at most 2^63 − 1 (requests carry it as a signed 64-bit integer)")
            })?,
            requests: AtomicUsize::new(0),
            cache_hits: AtomicUsize::new(0),
        };
    let outcomes: Vec<OnceLock<Outcome>> = items.iter().map(|_| OnceLock::new()).collect();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<JudgeError>> = Mutex::new(None);
    let bar = progress::bar(items.len() as u64, "constitution");
    std::thread::scope(|scope| {
        for _ in 0..a.concurrency.min(items.len()) {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    match process(&caller, &a, item, &principles, &plan[i]) {
                        Ok(outcome) => {
                            let _ = outcomes[i].set(outcome);
                            bar.inc(1);
                        }
                        Err(e) => {
                            stop.store(true, Ordering::SeqCst);
                            failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    bar.finish_and_clear();
    if let Some(e) = failure.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
        return Err(anyhow::Error::new(e).context(format!(
            "stopped ({} replies so far are cached in {}; rerun the same command to resume)",
            cache.len(),
            cache_path.display()
        )));
    }

    let (mut sft, mut pairs, mut unchanged, mut empty) = (Vec::new(), Vec::new(), 0usize, 0usize);
    let annotator = format!("constitution:{}", a.endpoint.model);
    for (item, outcome) in items.iter().zip(outcomes) {
        // Every worker either set its outcome or the run returned its error above.
        match outcome.into_inner() {
            Some(Outcome::Revised { answer, rounds }) => {
                let last = rounds.last().expect("--revisions ≥ 1 gives every revised item a round");
                sft.push(json!({"prompt": item.prompt, "completion": response(&item.prompt, &last.revision)}));
                let mut pair = json!({
                    "prompt": item.prompt,
                    "chosen": response(&item.prompt, &last.revision),
                    "rejected": response(&item.prompt, &answer),
                    "principle": principles[last.principle],
                    "critique": last.critique,
                    "annotator": annotator,
                });
                if rounds.len() > 1 {
                    pair["rounds"] = rounds
                        .iter()
                        .map(|r| json!({"principle": principles[r.principle], "critique": r.critique, "revision": r.revision}))
                        .collect();
                }
                pairs.push(pair);
            }
            Some(Outcome::Unchanged { answer }) => {
                unchanged += 1;
                sft.push(json!({"prompt": item.prompt, "completion": response(&item.prompt, &answer)}));
            }
            Some(Outcome::Empty) | None => empty += 1,
        }
    }
    write_atomically(&a.sft_out, &sft)?;
    write_atomically(&a.pairs_out, &pairs)?;

    let stats = caller.client.stats();
    let requests = caller.requests.load(Ordering::Relaxed);
    let cache_hits = caller.cache_hits.load(Ordering::Relaxed);
    if a.json {
        println!(
            "{}",
            json!({
                "prompts": items.len(), "sft_rows": sft.len(), "pairs": pairs.len(),
                "unchanged": unchanged, "empty": empty, "requests": requests, "cache_hits": cache_hits,
                "http_calls": stats.http_calls, "retries": stats.retries,
                "sft_out": a.sft_out.display().to_string(), "pairs_out": a.pairs_out.display().to_string(),
                "cache": cache_path.display().to_string(),
            })
        );
    } else {
        println!(
            "{} prompts: {} revised, {} unchanged (SFT row, no pair), {} empty answer or revision (skipped)",
            items.len(),
            pairs.len(),
            unchanged,
            empty
        );
        println!(
            "{requests} requests: {cache_hits} from the cache, {} HTTP calls ({} retries)",
            stats.http_calls, stats.retries
        );
        println!(
            "wrote {} SFT rows to {} and {} pairs to {}",
            sft.len(),
            a.sft_out.display(),
            pairs.len(),
            a.pairs_out.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_continues_across_items_and_random_is_seeded() {
        let plan = assign_principles(3, 2, 4, PrincipleOrder::RoundRobin, 0);
        assert_eq!(plan, vec![vec![0, 1], vec![2, 3], vec![0, 1]]);
        let a = assign_principles(50, 1, 5, PrincipleOrder::Random, 7);
        assert_eq!(a, assign_principles(50, 1, 5, PrincipleOrder::Random, 7));
        assert_ne!(a, assign_principles(50, 1, 5, PrincipleOrder::Random, 8));
        assert!(a.iter().all(|r| r[0] < 5));
    }

    #[test]
    fn responses_take_the_prompts_shape() {
        assert_eq!(response(&json!("q"), "a"), json!("a"));
        assert_eq!(
            response(&json!([{"role": "user", "content": "q"}]), "a"),
            json!([{"role": "assistant", "content": "a"}])
        );
    }
}
