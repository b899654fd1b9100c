//! `rlhf iterate`: the iterative RLHF outer loop. Each round collects K responses per prompt
//! from the current policy, gets preferences on them (an LLM judge or human labels), retrains
//! the reward model on this round's pairs plus a replayed share of earlier rounds' pairs (so it
//! does not forget the earlier policies' mistakes), runs PPO or GRPO against it with the round's
//! starting policy as the frozen reference, and evaluates the new policy against the round's
//! start and the original policy.
//!
//! Every stage is the `rlhf` binary itself run as a child process, so stages stay isolated (one
//! model in memory at a time, each with its own run folder) and behave exactly as when run by
//! hand. A round that ends with no preference pairs stops the run with an error: training a
//! reward model on replayed rows alone would only repeat the previous round.

use super::grpo::GrpoCommandConfig;
use super::ppo::PpoCommandConfig;
use super::reward::RewardConfig;
use crate::commands::eval::eval::EvalConfig;
use crate::commands::feedback::collect::CollectConfig;
use crate::commands::feedback::endpoint::EndpointSettings;
use crate::commands::feedback::judge::{JudgeCommandConfig, VerdictArg};
use crate::commands::rewards::RewardSpec;
use crate::config::{load_config, load_config_over, to_toml_string};
use crate::output::write_jsonl_atomically;
use anyhow::{bail, Context, Result};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rlhf_eval::policy::Verifier;
use rlhf_feedback::candidates::Settings as CandidateSettings;
use rlhf_train::metric_keys as keys;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(clap::Args)]
pub struct Args {
    /// TOML configuration (see `examples/iterate.toml`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Shortcut for `--set rounds=…`.
    #[arg(long)]
    rounds: Option<usize>,
    /// Override one key, e.g. `--set replay_share=0.2` (repeatable; wins over --config).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `rlhf judge` on the round's candidates.
    Judge,
    /// `rlhf label export` of a labelling database (the round's candidates are queued in it).
    Labels,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PreferencesSection {
    pub source: Source,
    /// Judge: API root of an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.
    pub url: String,
    /// Judge: the model name the endpoint knows.
    pub model: String,
    /// Judge: environment variable holding the API key (empty: none).
    pub api_key_env: String,
    /// Judge: a guidelines file for its system prompt (empty: the built-in one).
    pub guidelines: String,
    /// Judge: room for its reasoning before the verdict line.
    pub max_tokens: u32,
    /// Judge: "text" (the reply's verdict line) or "logprobs" (P(A) vs P(B) of a one-token answer
    /// in both orders; needs an endpoint with top_logprobs, e.g. `rlhf serve`).
    pub verdict: VerdictArg,
    /// Judge, logprob verdicts: debiased log-odds within ± this many nats are ties.
    pub tie_margin: f64,
    /// Labels: the labelling database. Each round queues its candidates there and trains on the
    /// pairs of items that no earlier round used.
    pub db: String,
}

impl Default for PreferencesSection {
    fn default() -> Self {
        Self {
            source: Source::Judge,
            url: String::new(),
            model: String::new(),
            api_key_env: String::new(),
            guidelines: String::new(),
            max_tokens: 512,
            verdict: VerdictArg::Text,
            tie_margin: 0.05,
            db: String::new(),
        }
    }
}

/// A stage's own config file and `key=value` overrides (applied after the settings `iterate`
/// fixes, so they win); the stage runs with the result, written to `round-R/<stage>.toml`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StageSection {
    pub config: String,
    pub set: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    Ppo,
    Grpo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RlSection {
    pub algorithm: Algorithm,
    pub config: String,
    pub set: Vec<String>,
}

impl Default for RlSection {
    fn default() -> Self {
        Self { algorithm: Algorithm::Ppo, config: String::new(), set: Vec::new() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalStage {
    /// Held-out prompts with answers (`rlhf eval --prompts`).
    pub prompts: String,
    pub limit: usize,
    /// `math` or `last_integer`.
    pub verifier: Verifier,
    pub max_new_tokens: usize,
}

impl Default for EvalStage {
    /// `rlhf eval`'s.
    fn default() -> Self {
        let eval = EvalConfig::default();
        Self { prompts: eval.prompts, limit: eval.limit, verifier: eval.verifier, max_new_tokens: eval.max_new_tokens }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IterateConfig {
    /// The starting policy (usually the SFT model); win rates are measured against it.
    pub policy: String,
    /// The run folder: `round-R/` per round, `rounds.jsonl`, `eval.jsonl`, `report.html`.
    pub out: String,
    pub rounds: usize,
    /// Prompts (JSONL, `prompt` plus optional `answer`); round R takes the next
    /// `prompts_per_round` lines, wrapping around.
    pub prompts: String,
    /// 0: every prompt every round.
    pub prompts_per_round: usize,
    /// Responses per prompt (2–9).
    pub k: usize,
    pub temperatures: Vec<f64>,
    /// Longest sampled response in tokens (`rlhf collect --max-new-tokens`).
    pub max_new_tokens: usize,
    /// Share of all earlier rounds' pairs added to each round's reward-model data (0–1).
    pub replay_share: f64,
    /// Seeds the replay sampling and each round's collection.
    pub seed: u64,
    pub preferences: PreferencesSection,
    pub reward: StageSection,
    pub rl: RlSection,
    pub eval: EvalStage,
}

impl Default for IterateConfig {
    fn default() -> Self {
        Self {
            policy: String::new(),
            out: String::new(),
            rounds: 2,
            prompts: String::new(),
            prompts_per_round: 64,
            k: 4,
            temperatures: vec![0.6, 0.8, 1.0, 1.2],
            max_new_tokens: 256,
            replay_share: 0.1,
            seed: 0,
            preferences: PreferencesSection::default(),
            reward: StageSection::default(),
            rl: RlSection::default(),
            eval: EvalStage::default(),
        }
    }
}

fn check(cfg: &IterateConfig) -> Result<()> {
    let need = |value: &str, key: &str, what: &str| {
        if value.trim().is_empty() {
            bail!("`{key}` is not set: give {what}");
        }
        Ok(())
    };
    need(&cfg.policy, "policy", "the starting model (e.g. runs/sft/final)")?;
    need(&cfg.out, "out", "a run folder")?;
    need(&cfg.prompts, "prompts", "a JSONL prompt file")?;
    need(&cfg.eval.prompts, "eval.prompts", "held-out prompts with answers for `rlhf eval`")?;
    if cfg.rounds == 0 {
        bail!("rounds = 0: run at least one round");
    }
    if !(2..=9).contains(&cfg.k) {
        bail!("k = {}: use 2 to 9 responses per prompt", cfg.k);
    }
    if !(0.0..=1.0).contains(&cfg.replay_share) {
        bail!("replay_share = {}: give a share between 0 and 1", cfg.replay_share);
    }
    match cfg.preferences.source {
        Source::Judge => {
            need(&cfg.preferences.url, "preferences.url", "the judge's API root, e.g. http://127.0.0.1:8000/v1")?;
            need(&cfg.preferences.model, "preferences.model", "the judge's model name")?;
        }
        Source::Labels => need(&cfg.preferences.db, "preferences.db", "the labelling database")?,
    }
    Ok(())
}

/// Writes a stage's settings to `path`, for `rlhf <stage> --config path`: the section's config
/// file over the command's defaults, then what the round fixes (`fix`: model, data, run folder,
/// reference, reward model), then the section's `set`, which wins. The file is also the record
/// of what the stage ran with.
fn stage_config<T: Serialize + DeserializeOwned + Default>(
    round: usize,
    stage: &str,
    file: &str,
    sets: &[String],
    path: &Path,
    fix: impl FnOnce(&mut T),
) -> Result<()> {
    let settings = (|| {
        let mut settings: T = load_config((!file.is_empty()).then(|| Path::new(file)), &[])?;
        fix(&mut settings);
        load_config_over(settings, None, sets)
    })()
    .with_context(|| format!("round {round}: the {stage} stage (`rlhf {stage}`) failed: its settings"))?;
    std::fs::write(path, to_toml_string(&settings)?).with_context(|| format!("writing {}", path.display()))
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Runs one stage (`rlhf <args>`), its stderr streamed through and its stdout copied to our
/// stderr, so `iterate`'s own stdout is only its summary.
fn stage(round: usize, name: &str, args: &[String]) -> Result<()> {
    eprintln!("\n== round {round}: {name} ==\nrlhf {}", args.join(" "));
    let exe = std::env::current_exe().context("locating the rlhf binary")?;
    let out = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("round {round}: starting the {name} stage"))?;
    eprint!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        bail!("round {round}: the {name} stage (`rlhf {}`) failed ({}); see its output above", args[0], out.status);
    }
    Ok(())
}

fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not JSON", path.display(), i + 1)))
        .collect()
}

fn append_jsonl(path: &Path, rows: &[Value]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for r in rows {
        writeln!(f, "{r}").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Round `round`'s slice of the prompt lines: the next `n` after the previous rounds', wrapping.
fn round_prompts(lines: &[String], n: usize, round: usize) -> Vec<String> {
    if n == 0 || n >= lines.len() {
        return lines.to_vec();
    }
    let start = (round - 1) * n;
    (start..start + n).map(|i| lines[i % lines.len()].clone()).collect()
}

/// `replay_share` of the earlier rounds' pairs (all of them pooled), sampled without
/// replacement with a seeded RNG: (rows, how many came from each round).
fn replay(
    earlier: &[(usize, Vec<Value>)],
    share: f64,
    seed: u64,
    round: usize,
) -> (Vec<Value>, BTreeMap<usize, usize>) {
    let pool: Vec<(usize, &Value)> = earlier.iter().flat_map(|(r, rows)| rows.iter().map(move |v| (*r, v))).collect();
    let n = ((share * pool.len() as f64).round() as usize).min(pool.len());
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut picked: Vec<usize> = sample(&mut rng, pool.len(), n).into_vec();
    picked.sort_unstable();
    let mut from = BTreeMap::new();
    let rows = picked
        .into_iter()
        .map(|i| {
            *from.entry(pool[i].0).or_insert(0) += 1;
            pool[i].1.clone()
        })
        .collect();
    (rows, from)
}

/// The last value of `key` in a run's metrics.jsonl.
fn last_metric(run: &Path, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).ok()?;
    text.lines().rev().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find_map(|v| v.get(key)?.as_f64())
}

/// `rlhf collect`'s settings for a round: candidates from `policy` into `dest`.
fn collect_config(cfg: &IterateConfig, policy: &str, prompts: &Path, dest: Dest, round: usize) -> CollectConfig {
    let (db, out) = match dest {
        Dest::Db(db) => (Some(db.to_path_buf()), None),
        Dest::File(file) => (None, Some(file.to_path_buf())),
    };
    CollectConfig {
        model: policy.into(),
        prompts: path_str(prompts),
        db,
        out,
        limit: 0,
        sampling: CandidateSettings {
            k: cfg.k,
            temperatures: cfg.temperatures.clone(),
            max_new_tokens: cfg.max_new_tokens,
            seed: cfg.seed.wrapping_add(round as u64),
            ..CandidateSettings::default()
        },
    }
}

/// Where a round's candidates go.
enum Dest<'a> {
    Db(&'a Path),
    File(&'a Path),
}

/// Writes a stage's settings to `path` and runs it with `--config path`.
fn run_stage<T: Serialize>(round: usize, command: &str, settings: &T, path: &Path) -> Result<()> {
    std::fs::write(path, to_toml_string(settings)?).with_context(|| format!("writing {}", path.display()))?;
    stage(round, command, &[command.into(), "--config".into(), path_str(path)])
}

/// Steps (1)–(2): candidates from the current policy and this round's preference pairs.
fn preferences(
    cfg: &IterateConfig,
    policy: &str,
    dir: &Path,
    round: usize,
    used_items: &mut HashSet<String>,
) -> Result<Vec<Value>> {
    let prompts = dir.join("prompts.jsonl");
    let pairs_path = dir.join("pairs.jsonl");
    let p = &cfg.preferences;
    let rows = match p.source {
        Source::Judge => {
            let candidates = dir.join("candidates.jsonl");
            let collect = collect_config(cfg, policy, &prompts, Dest::File(&candidates), round);
            run_stage(round, "collect", &collect, &dir.join("collect.toml"))?;
            let judge = JudgeCommandConfig {
                data: candidates,
                out: pairs_path.clone(),
                guidelines: (!p.guidelines.is_empty()).then(|| PathBuf::from(&p.guidelines)),
                max_tokens: p.max_tokens,
                verdict: p.verdict,
                tie_margin: p.tie_margin,
                endpoint: EndpointSettings {
                    url: p.url.clone(),
                    model: p.model.clone(),
                    api_key_env: p.api_key_env.clone(),
                    ..EndpointSettings::default()
                },
                ..JudgeCommandConfig::default()
            };
            run_stage(round, "judge", &judge, &dir.join("judge.toml"))?;
            read_jsonl(&pairs_path)?
        }
        Source::Labels => {
            let db = Path::new(&p.db);
            let collect = collect_config(cfg, policy, &prompts, Dest::Db(db), round);
            run_stage(round, "collect", &collect, &dir.join("collect.toml"))?;
            let export = dir.join("labels_export.jsonl");
            let args = ["label", "export", "--db", &p.db, "--format", "pairs", "--out", &path_str(&export)];
            stage(round, "label export", &args.map(String::from))?;
            // Only items no earlier round trained on: those are in the replay pool already.
            let fresh: Vec<Value> = read_jsonl(&export)?
                .into_iter()
                .filter(|r| !used_items.contains(&r.get("item").map(|i| i.to_string()).unwrap_or_default()))
                .collect();
            used_items.extend(fresh.iter().filter_map(|r| r.get("item")).map(|i| i.to_string()));
            write_jsonl_atomically(&pairs_path, &fresh)?;
            fresh
        }
    };
    if rows.is_empty() {
        let why = match p.source {
            Source::Judge => "the judge preferred neither response consistently in every pair (all ties or no verdict)",
            Source::Labels => "no newly labelled items in the database",
        };
        bail!(
            "round {round}: 0 preference pairs ({why}); nothing new to train the reward model on. \
             The round's data is kept in {}",
            dir.display()
        );
    }
    Ok(rows)
}

pub fn run(a: Args) -> Result<()> {
    let mut sets = Vec::new();
    if let Some(r) = a.rounds {
        sets.push(format!("rounds={r}"));
    }
    sets.extend(a.sets.iter().cloned());
    let cfg: IterateConfig = load_config(a.config.as_deref(), &sets)?;
    check(&cfg)?;
    let out = PathBuf::from(&cfg.out);
    if out.join("rounds.jsonl").exists() || out.join("round-1").exists() {
        bail!("{} already holds an iterate run; choose another `out`", out.display());
    }
    let lines = read_prompt_lines(&cfg.prompts)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("config.toml"), to_toml_string(&cfg)?)?;

    let original = cfg.policy.clone();
    let mut policy = original.clone();
    let mut earlier: Vec<(usize, Vec<Value>)> = Vec::new();
    let mut used_items = HashSet::new();
    let mut summaries = Vec::new();
    for round in 1..=cfg.rounds {
        let dir = out.join(format!("round-{round}"));
        std::fs::create_dir_all(&dir)?;
        let prompts = round_prompts(&lines, cfg.prompts_per_round, round);
        std::fs::write(dir.join("prompts.jsonl"), prompts.iter().map(|l| format!("{l}\n")).collect::<String>())?;

        // (1)–(2) candidates and preferences.
        let pairs = preferences(&cfg, &policy, &dir, round, &mut used_items)?;
        // (3) this round's pairs plus the replayed share of the earlier rounds'.
        let data = reward_data(&cfg, &dir, round, &pairs, &mut earlier)?;
        // (4) the reward model, from the round's starting policy.
        let reward_dir = train_reward(&cfg, &dir, round, &policy, &data.path)?;
        let rm_final = reward_dir.join("final");
        // (5) RL against it; the reference is the round's starting policy.
        let policy_dir = train_policy(&cfg, &dir, round, &policy, &rm_final)?;
        let new_policy = path_str(&policy_dir.join("final"));
        // (6) the new policy against the round's start and the original policy.
        let eval_rows = evaluate(&cfg, &dir, round, (&original, &policy, &new_policy), &rm_final)?;
        append_jsonl(&out.join("eval.jsonl"), &eval_rows)?;

        let new_row = eval_rows.iter().find(|v| v["model"] == json!(format!("round-{round}")));
        let reward_key = if cfg.rl.algorithm == Algorithm::Ppo { keys::REWARD_SCORE } else { keys::REWARD_MEAN };
        let summary = json!({
            "round": round,
            "start_policy": policy,
            "policy": new_policy,
            "prompts": prompts.len(),
            "pairs": pairs.len(),
            "replayed": data.replayed,
            "replayed_from": data.replayed_from,
            "rm_rows": data.rows,
            "rm_eval_accuracy": last_metric(&reward_dir, keys::EVAL_ACCURACY),
            "rl_reward": last_metric(&policy_dir, reward_key),
            "rl_kl": last_metric(&policy_dir, keys::KL_SEQUENCE),
            "accuracy": new_row.and_then(|v| v["accuracy"].as_f64()),
            "rm_reward": new_row.and_then(|v| v["rm_reward"].as_f64()),
            "win_rate_rm_vs_original": new_row.and_then(|v| v["win_rate_rm"].as_f64()),
            "win_rate_verifier_vs_original": new_row.and_then(|v| v["win_rate_verifier"].as_f64()),
            "kl_to_start": new_row.and_then(|v| v["kl_to_reference"].as_f64()),
        });
        append_jsonl(&out.join("rounds.jsonl"), std::slice::from_ref(&summary))?;
        summaries.push(summary);
        policy = new_policy;
    }
    report(&cfg, &out)?;
    print_table(&summaries);
    println!("final policy: {policy}\nper-round summary: {}", out.join("rounds.jsonl").display());
    Ok(())
}

/// The prompt file's non-empty lines, each checked to be JSON.
fn read_prompt_lines(path: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading prompts {path}"))?;
    let lines: Vec<String> = text.lines().filter(|l| !l.trim().is_empty()).map(String::from).collect();
    if lines.is_empty() {
        bail!("{path}: no prompts");
    }
    if let Some((i, _)) = lines.iter().enumerate().find(|(_, l)| serde_json::from_str::<Value>(l).is_err()) {
        bail!("{path}:{}: not JSON (iterate reads prompts as JSONL)", i + 1);
    }
    Ok(lines)
}

/// A round's reward-model data as written to `rm_data.jsonl`.
struct RewardData {
    path: PathBuf,
    rows: usize,
    replayed: usize,
    /// Replayed pairs by the round they came from.
    replayed_from: Map<String, Value>,
}

/// Step (3): this round's pairs plus the replayed share of the earlier rounds' (each row tagged
/// with its round), written to `rm_data.jsonl`; the round's pairs join `earlier`.
fn reward_data(
    cfg: &IterateConfig,
    dir: &Path,
    round: usize,
    pairs: &[Value],
    earlier: &mut Vec<(usize, Vec<Value>)>,
) -> Result<RewardData> {
    let (replayed, from) = replay(earlier, cfg.replay_share, cfg.seed, round);
    let tag = |rows: &[Value], r: usize| -> Vec<Value> {
        rows.iter()
            .map(|v| {
                let mut v = v.clone();
                if let Some(o) = v.as_object_mut() {
                    o.entry("round").or_insert(json!(r));
                }
                v
            })
            .collect()
    };
    let mut rm_rows = tag(pairs, round);
    rm_rows.extend(replayed.iter().cloned());
    let path = dir.join("rm_data.jsonl");
    write_jsonl_atomically(&path, &rm_rows)?;
    let replayed_from: Map<String, Value> = from.iter().map(|(r, n)| (r.to_string(), json!(n))).collect();
    eprintln!(
        "round {round}: {} pairs + {} replayed (by round: {}) → {}",
        pairs.len(),
        replayed.len(),
        Value::Object(replayed_from.clone()),
        path.display()
    );
    earlier.push((round, tag(pairs, round)));
    Ok(RewardData { path, rows: rm_rows.len(), replayed: replayed.len(), replayed_from })
}

/// Step (4): `rlhf reward` from the round's starting policy; returns its run folder.
fn train_reward(cfg: &IterateConfig, dir: &Path, round: usize, policy: &str, data: &Path) -> Result<PathBuf> {
    let reward_dir = dir.join("reward");
    let reward_toml = dir.join("reward.toml");
    stage_config(round, "reward", &cfg.reward.config, &cfg.reward.set, &reward_toml, |c: &mut RewardConfig| {
        c.model = policy.to_string();
        c.data.path = path_str(data);
        c.out = path_str(&reward_dir);
    })?;
    stage(round, "reward", &["reward".into(), "--config".into(), path_str(&reward_toml)])?;
    Ok(reward_dir)
}

/// Step (5): `rlhf ppo|grpo` against the round's reward model, the round's starting policy as
/// the reference (and, for PPO, the critic starting from the reward model); returns its run
/// folder.
fn train_policy(cfg: &IterateConfig, dir: &Path, round: usize, policy: &str, rm_final: &Path) -> Result<PathBuf> {
    let policy_dir = dir.join("policy");
    let command = match cfg.rl.algorithm {
        Algorithm::Ppo => "ppo",
        Algorithm::Grpo => "grpo",
    };
    let rl_toml = dir.join(format!("{command}.toml"));
    let (rl_config, rl_set) = (&cfg.rl.config, &cfg.rl.set);
    let data = path_str(&dir.join("prompts.jsonl"));
    let rewards = vec![RewardSpec::reward_model(&path_str(rm_final))];
    match cfg.rl.algorithm {
        Algorithm::Ppo => stage_config(round, command, rl_config, rl_set, &rl_toml, |c: &mut PpoCommandConfig| {
            (c.model, c.reference, c.out) = (policy.to_string(), policy.to_string(), path_str(&policy_dir));
            c.data.path = data;
            c.rewards = rewards;
            c.critic.model = path_str(rm_final);
        })?,
        Algorithm::Grpo => stage_config(round, command, rl_config, rl_set, &rl_toml, |c: &mut GrpoCommandConfig| {
            (c.model, c.reference, c.out) = (policy.to_string(), policy.to_string(), path_str(&policy_dir));
            c.data.path = data;
            c.rewards = rewards;
        })?,
    }
    stage(round, command, &[command.into(), "--config".into(), path_str(&rl_toml)])?;
    Ok(policy_dir)
}

/// Step (6): `rlhf eval` of the original policy, the round's start (after round 1) and the new
/// policy, win rates against the original, KL to the start; its rows tagged with the round.
fn evaluate(
    cfg: &IterateConfig,
    dir: &Path,
    round: usize,
    (original, start, new): (&str, &str, &str),
    rm_final: &Path,
) -> Result<Vec<Value>> {
    let eval_path = dir.join("eval.jsonl");
    let mut models = vec![format!("original={original}")];
    if round > 1 {
        models.push(format!("start={start}"));
    }
    models.push(format!("round-{round}={new}"));
    let settings = EvalConfig {
        models,
        prompts: cfg.eval.prompts.clone(),
        limit: cfg.eval.limit,
        verifier: cfg.eval.verifier,
        max_new_tokens: cfg.eval.max_new_tokens,
        reward_model: path_str(rm_final),
        reference: start.to_string(),
        baseline: "original".into(),
        out: path_str(&eval_path),
        ..EvalConfig::default()
    };
    run_stage(round, "eval", &settings, &dir.join("eval.toml"))?;
    Ok(read_jsonl(&eval_path)?
        .into_iter()
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.insert("round".into(), json!(round));
            }
            v
        })
        .collect())
}

/// `rlhf report` over every round's runs and the eval table.
fn report(cfg: &IterateConfig, out: &Path) -> Result<()> {
    let mut args: Vec<String> = vec!["report".into()];
    for round in 1..=cfg.rounds {
        args.extend(["--run".into(), path_str(&out.join(format!("round-{round}")))]);
    }
    args.extend([
        "--eval".into(),
        path_str(&out.join("eval.jsonl")),
        "--out".into(),
        path_str(&out.join("report.html")),
        "--title".into(),
        format!("rlhf iterate: {}", out.display()),
    ]);
    stage(cfg.rounds, "report", &args)
}

fn print_table(rows: &[Value]) {
    let num = |v: &Value, k: &str| v[k].as_f64().map_or("–".to_string(), |x| format!("{x:.3}"));
    println!(
        "{:>5} {:>6} {:>8} {:>7} {:>9} {:>8} {:>9} {:>9} {:>11}",
        "round", "pairs", "replayed", "RM acc", "RL reward", "RL KL", "accuracy", "RM score", "RM win/orig"
    );
    for r in rows {
        println!(
            "{:>5} {:>6} {:>8} {:>7} {:>9} {:>8} {:>9} {:>9} {:>11}",
            r["round"].to_string(),
            r["pairs"].to_string(),
            r["replayed"].to_string(),
            num(r, "rm_eval_accuracy"),
            num(r, "rl_reward"),
            num(r, "rl_kl"),
            num(r, "accuracy"),
            num(r, "rm_reward"),
            num(r, "win_rate_rm_vs_original"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(round: usize, n: usize) -> (usize, Vec<Value>) {
        (round, (0..n).map(|i| json!({"round": round, "i": i})).collect())
    }

    #[test]
    fn replay_takes_the_share_of_all_earlier_pairs_without_repeats() {
        let earlier = [rows(1, 10), rows(2, 30)];
        let (picked, from) = replay(&earlier, 0.25, 3, 3);
        assert_eq!(picked.len(), 10);
        assert_eq!(from.values().sum::<usize>(), 10);
        let distinct: HashSet<String> = picked.iter().map(|v| v.to_string()).collect();
        assert_eq!(distinct.len(), 10);
        for (r, n) in &from {
            assert_eq!(picked.iter().filter(|v| v["round"] == *r).count(), *n);
        }
        assert_eq!(replay(&earlier, 0.25, 3, 3).0, picked, "seeded");
        assert_ne!(replay(&earlier, 0.25, 4, 3).0, picked, "another seed, another sample");
        assert_eq!(replay(&earlier, 1.0, 3, 3).0.len(), 40);
        assert!(replay(&earlier, 0.0, 3, 3).0.is_empty());
        assert!(replay(&[], 0.5, 3, 1).0.is_empty());
    }

    #[test]
    fn rounds_take_consecutive_prompt_slices_and_wrap() {
        let lines: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        assert_eq!(round_prompts(&lines, 2, 1), ["0", "1"]);
        assert_eq!(round_prompts(&lines, 2, 3), ["4", "0"]);
        assert_eq!(round_prompts(&lines, 0, 2), lines);
        assert_eq!(round_prompts(&lines, 9, 2), lines);
    }
}
