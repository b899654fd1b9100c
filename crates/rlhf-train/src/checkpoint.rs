//! Checkpoints that resume bit-identically: trainable parameters, AdamW moments and step, and
//! the training state (step, seed, config). Data order, learning rate and any per-step
//! randomness are functions of `(seed, step)`, so the step is the whole cursor.
//!
//! Written atomically: everything goes into a hidden temporary folder that is renamed to
//! `step-NNNNNN` only when complete, so a crash never leaves a half checkpoint that looks whole.

use crate::error::{Result, TrainError};
use crate::optim::AdamW;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const PARAMS_FILE: &str = "params.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "state.json";
const FORMAT: u32 = 1;

/// What a checkpoint must match to be resumed: the model's config and every trainable
/// parameter's name and shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub model_config: serde_json::Value,
    pub params: Vec<(String, Vec<usize>)>,
}

impl Fingerprint {
    pub fn new(model_config: serde_json::Value, params: &[(String, Var)]) -> Self {
        Self { model_config, params: params.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())).collect() }
    }

    /// Why `self` (from a checkpoint) cannot be resumed into `current`, if it cannot.
    fn mismatch(&self, current: &Fingerprint) -> Option<String> {
        if self.model_config != current.model_config {
            return Some("it was written for a model with a different config.json".into());
        }
        let theirs: HashMap<_, _> = self.params.iter().cloned().collect();
        for (name, shape) in &current.params {
            match theirs.get(name) {
                None => return Some(format!("it has no parameter `{name}`")),
                Some(s) if s != shape => {
                    return Some(format!("parameter `{name}` has shape {s:?} there, {shape:?} here"))
                }
                Some(_) => {}
            }
        }
        (self.params.len() != current.params.len())
            .then(|| format!("it trains {} parameters, this run trains {}", self.params.len(), current.params.len()))
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointState {
    pub format: u32,
    /// Optimiser steps completed.
    pub step: u64,
    pub total_steps: u64,
    pub seed: u64,
    /// The trainer's whole configuration, so a resume can refuse changed settings.
    pub trainer: String,
    pub config: serde_json::Value,
    pub fingerprint: Fingerprint,
    /// A trainer's own state beyond parameters and moments (PPO: the KL coefficient).
    #[serde(default)]
    pub extra: serde_json::Value,
    /// AdamW steps taken (its bias correction): more than `step` where a trainer step makes
    /// several (GRPO's μ passes, minibatches). Filled by [`save`]; absent in older checkpoints.
    #[serde(default)]
    pub optimizer_steps: Option<u64>,
}

pub fn step_dir_name(step: u64) -> String {
    format!("step-{step:06}")
}

/// Writes a checkpoint into `root/step-NNNNNN` and keeps only the newest `keep_last` (0 = all).
/// Without an optimiser (RAFT starts a fresh one every round) only the parameters are written.
///
/// Data-parallel: every rank calls it; the ranks first prove they hold the same parameters
/// (a digest of every bit), then rank 0 alone writes, and the others wait until it has, so a
/// rank killed afterwards leaves a checkpoint the whole group can resume from.
pub fn save(
    root: &Path,
    params: &[(String, Var)],
    optimizer: Option<&AdamW>,
    state: &CheckpointState,
    keep_last: usize,
) -> Result<PathBuf> {
    let world = rlhf_dist::world();
    if world.size() == 1 {
        return write(root, params, optimizer, state, keep_last);
    }
    rlhf_dist::check_agreement(world, &format!("the parameters at step {}", state.step), params_digest(params)?)?;
    let written = if world.is_writer() {
        write(root, params, optimizer, state, keep_last)
    } else {
        Ok(root.join(step_dir_name(state.step)))
    };
    // Every rank learns whether rank 0 managed, so none goes on alone.
    let ok = rlhf_dist::all_gather(world, &written.is_ok())?;
    if !ok[0] && world.rank() != 0 {
        return Err(TrainError::file(root, format!("rank 0 could not write the checkpoint of step {}", state.step)));
    }
    written
}

/// FNV-1a over every parameter's name and bits (a word at a time), in order.
fn params_digest(params: &[(String, Var)]) -> Result<u64> {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut mix = |w: u64| h = (h ^ w).wrapping_mul(0x100_0000_01b3);
    for (name, var) in params {
        name.bytes().for_each(|b| mix(b as u64));
        let t = var.as_tensor().flatten_all()?;
        if t.dtype() == candle_core::DType::F64 {
            t.to_vec1::<f64>()?.iter().for_each(|x| mix(x.to_bits()));
        } else {
            t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?.iter().for_each(|x| mix(x.to_bits() as u64));
        }
    }
    Ok(h)
}

fn write(
    root: &Path,
    params: &[(String, Var)],
    optimizer: Option<&AdamW>,
    state: &CheckpointState,
    keep_last: usize,
) -> Result<PathBuf> {
    let io = |p: &Path, e: std::io::Error| TrainError::file(p, format!("cannot write checkpoint: {e}"));
    std::fs::create_dir_all(root).map_err(|e| io(root, e))?;
    let name = step_dir_name(state.step);
    let tmp = root.join(format!(".{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    let tensors: HashMap<String, Tensor> = params.iter().map(|(n, v)| (n.clone(), v.as_tensor().detach())).collect();
    save_tensors(&tmp.join(PARAMS_FILE), &tensors)?;
    if let Some(optimizer) = optimizer {
        save_moments(&tmp.join(OPTIMIZER_FILE), optimizer)?;
    }
    let state = CheckpointState { optimizer_steps: optimizer.map(AdamW::step_count), ..state.clone() };
    let text = serde_json::to_string_pretty(&state).expect("state serialises");
    std::fs::write(tmp.join(STATE_FILE), text).map_err(|e| io(&tmp, e))?;
    sync_dir(&tmp);
    let dest = root.join(&name);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| io(&dest, e))?;
    }
    std::fs::rename(&tmp, &dest).map_err(|e| io(&dest, e))?;
    sync_dir(root);
    if keep_last > 0 {
        let all = list(root)?;
        for (_, old) in all.iter().take(all.len().saturating_sub(keep_last)) {
            std::fs::remove_dir_all(old).map_err(|e| io(old, e))?;
        }
    }
    Ok(dest)
}

fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    candle_core::safetensors::save(tensors, path).map_err(|e| TrainError::file(path, format!("cannot write: {e}")))?;
    rlhf_model::io::set_default_mode(path).map_err(|e| TrainError::file(path, format!("cannot set its mode: {e}")))?;
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
    }
    Ok(())
}

/// A borrowed f32 buffer as a safetensors view: serialised one tensor at a time, so saving the
/// AdamW moments never holds a second copy of them (1 GB on the default model).
struct F32View<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl safetensors::View for F32View<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Owned(self.data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}

/// Writes the moments under PyTorch's names (`exp_avg.<param>`, `exp_avg_sq.<param>`).
fn save_moments(path: &Path, optimizer: &AdamW) -> Result<()> {
    let views = optimizer.moments().flat_map(|(name, shape, m, v)| {
        [
            (format!("exp_avg.{name}"), F32View { shape, data: m }),
            (format!("exp_avg_sq.{name}"), F32View { shape, data: v }),
        ]
    });
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| TrainError::file(path, format!("cannot write: {e}")))?;
    rlhf_model::io::set_default_mode(path).map_err(|e| TrainError::file(path, format!("cannot set its mode: {e}")))?;
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Complete checkpoints under `root`, oldest first.
pub fn list(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let Ok(entries) = std::fs::read_dir(root) else { return Ok(Vec::new()) };
    let mut out: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let step = e.file_name().to_str()?.strip_prefix("step-")?.parse::<u64>().ok()?;
            e.path().join(STATE_FILE).exists().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// `path` is a checkpoint folder, or a run / checkpoints folder whose newest checkpoint is meant.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join(STATE_FILE).exists() {
        return Ok(path.to_path_buf());
    }
    for root in [path.join("checkpoints"), path.to_path_buf()] {
        if let Some((_, newest)) = list(&root)?.pop() {
            return Ok(newest);
        }
    }
    Err(TrainError::file(path, "no checkpoint here (expected a step-NNNNNN folder with state.json, or a run folder)"))
}

/// Reads a checkpoint's state, refusing one from a different model or parameter set.
pub fn read_state(dir: &Path, expected: &Fingerprint) -> Result<CheckpointState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::file(&path, format!("cannot read: {e}")))?;
    let state: CheckpointState =
        serde_json::from_str(&text).map_err(|e| TrainError::file(&path, format!("not a checkpoint state: {e}")))?;
    if state.format != FORMAT {
        return Err(TrainError::file(&path, format!("checkpoint format {} (this build reads {FORMAT})", state.format)));
    }
    if let Some(why) = state.fingerprint.mismatch(expected) {
        return Err(TrainError::file(dir, format!("cannot resume: {why}")));
    }
    Ok(state)
}

/// [`read_state`], also refusing a checkpoint of another trainer or configuration: a resume
/// continues the same run.
pub fn read_state_of(
    dir: &Path,
    expected: &Fingerprint,
    trainer: &str,
    config: &serde_json::Value,
) -> Result<CheckpointState> {
    let state = read_state(dir, expected)?;
    if state.trainer != trainer || &state.config != config {
        return Err(TrainError::file(
            dir,
            format!(
                "cannot resume: the checkpoint was written by `{}` with a different configuration \
                 (resume with the run's own config.toml)",
                state.trainer
            ),
        ));
    }
    Ok(state)
}

/// Loads parameters and (where given) optimiser state from `dir` into the live `params` and
/// `optimizer`.
pub fn restore(
    dir: &Path,
    state: &CheckpointState,
    params: &[(String, Var)],
    optimizer: Option<&mut AdamW>,
) -> Result<()> {
    let device = params.first().map(|(_, v)| v.device().clone()).unwrap_or(candle_core::Device::Cpu);
    let path = dir.join(PARAMS_FILE);
    let saved = candle_core::safetensors::load(&path, &device)
        .map_err(|e| TrainError::file(&path, format!("cannot read: {e}")))?;
    for (name, var) in params {
        let t = saved.get(name).ok_or_else(|| TrainError::file(&path, format!("missing parameter `{name}`")))?;
        var.set(t).map_err(|e| TrainError::file(&path, format!("parameter `{name}`: {e}")))?;
    }
    // Written in place: copies made from the weights (the bf16 decoding copy) are stale.
    rlhf_model::weights::note_in_place_update();
    let Some(optimizer) = optimizer else { return Ok(()) };
    let path = dir.join(OPTIMIZER_FILE);
    let opt = candle_core::safetensors::load(&path, &device)
        .map_err(|e| TrainError::file(&path, format!("cannot read: {e}")))?;
    let steps = state.optimizer_steps.unwrap_or(state.step);
    optimizer.load_state(steps, &opt).map_err(|e| TrainError::file(&path, e.to_string()))?;
    Ok(())
}

impl CheckpointState {
    pub fn new(
        step: u64,
        total_steps: u64,
        seed: u64,
        trainer: &str,
        config: serde_json::Value,
        fingerprint: Fingerprint,
    ) -> Self {
        Self {
            format: FORMAT,
            step,
            total_steps,
            seed,
            trainer: trainer.into(),
            config,
            fingerprint,
            extra: serde_json::Value::Null,
            optimizer_steps: None,
        }
    }
}
