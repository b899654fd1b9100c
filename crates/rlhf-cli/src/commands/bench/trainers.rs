//! Trainer steps for `rlhf bench`: one SFT, reward-model or DPO optimiser step (forward,
//! backward, clipping, AdamW) through the same objectives and loop pieces `rlhf sft|reward|dpo`
//! use, at TRL's benchmark shapes: batch 4, sequences of 128 tokens (64 prompt + 64 response).

use crate::loading;
use anyhow::Result;
use candle_core::{Device, Var};
use rand::{Rng, SeedableRng};
use rlhf_data::{Location, PairExample, PreferenceGroup, RecordIndex, SftExample};
use rlhf_model::heads::{init_scalar_head, SCORE_WEIGHT};
use rlhf_train::dpo::{precompute_reference, DpoLossConfig, DpoObjective};
use rlhf_train::reward::RewardObjective;
use rlhf_train::sft::SftObjective;
use rlhf_train::trainer::{accumulate_batch, apply_gradients};
use rlhf_train::{AdamW, Objective, TrainConfig};
use serde_json::{json, Value};
use std::time::Instant;

const BATCH: usize = 4;
const PROMPT: usize = 64;
const RESPONSE: usize = 64;

fn random_ids(rng: &mut rand_chacha::ChaCha8Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(3..vocab as u32)).collect()
}

fn loc() -> Location {
    Location { path: "bench".into(), index: RecordIndex::Row(0) }
}

/// Times `steps` optimiser steps after one warm-up step.
fn time_steps<O: Objective>(
    obj: &mut O,
    batch: &[&O::Example],
    params: &[(String, Var)],
    steps: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let mut opt = AdamW::new(params.to_vec(), TrainConfig::default().adamw())?;
    let (mut secs, mut losses) = (vec![], vec![]);
    for i in 0..=steps {
        let t = Instant::now();
        let out = accumulate_batch(obj, batch, batch.len(), params)?;
        apply_gradients(obj.model(), params, &mut opt, 1e-6, 1.0, i as u64 + 1)?;
        if i > 0 {
            secs.push(t.elapsed().as_secs_f64());
        }
        losses.push(out.loss);
    }
    Ok((secs, losses))
}

pub fn trainer_step(model_arg: &str, which: &str, steps: usize, checkpointing: bool) -> Result<Value> {
    let loaded = loading::load(model_arg, &Device::Cpu)?;
    let vocab = loaded.model.config().vocab_size;
    let pad = loaded.tokenizer.pad_id();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let (secs, losses) = match which {
        "sft" => {
            let (model, params) = loaded.model.trainable()?;
            drop(loaded.model);
            let data: Vec<SftExample> = (0..BATCH)
                .map(|_| SftExample {
                    input_ids: random_ids(&mut rng, PROMPT + RESPONSE, vocab),
                    loss_mask: (0..PROMPT + RESPONSE).map(|t| u8::from(t >= PROMPT)).collect(),
                    source: loc(),
                })
                .collect();
            model.set_activation_checkpointing(checkpointing);
            let mut obj = SftObjective { model: &model, pad_id: pad, eval_batch_size: BATCH };
            time_steps(&mut obj, &data.iter().collect::<Vec<_>>(), &params, steps)?
        }
        "reward" => {
            let (model, mut params) = loaded.model.trainable()?;
            drop(loaded.model);
            let d = model.config().hidden_size;
            let head = Var::from_tensor(&init_scalar_head(d, 0, model.dtype(), model.device())?)?;
            params.push((SCORE_WEIGHT.into(), head.clone()));
            // 4 pairs, 8 sequences of 128 tokens (TRL's RewardTrainer batch of 4 pairs).
            let data: Vec<PreferenceGroup> = (0..BATCH)
                .map(|_| PreferenceGroup {
                    prompt: random_ids(&mut rng, PROMPT, vocab),
                    pairs: vec![(random_ids(&mut rng, RESPONSE, vocab), random_ids(&mut rng, RESPONSE, vocab))],
                    source: loc(),
                })
                .collect();
            model.set_activation_checkpointing(checkpointing);
            let mut obj = RewardObjective {
                model: &model,
                head: head.as_tensor().clone(),
                pad_id: pad,
                center_rewards_coefficient: None,
                eval_batch_size: BATCH,
            };
            time_steps(&mut obj, &data.iter().collect::<Vec<_>>(), &params, steps)?
        }
        "dpo" => {
            let pairs: Vec<PairExample> = (0..BATCH)
                .map(|_| PairExample {
                    prompt: random_ids(&mut rng, PROMPT, vocab),
                    chosen: random_ids(&mut rng, RESPONSE, vocab),
                    rejected: random_ids(&mut rng, RESPONSE, vocab),
                    source: loc(),
                })
                .collect();
            // The reference pass runs once per dataset (cached), as in `rlhf dpo`.
            let data = precompute_reference(&loaded.model, pad, pairs, BATCH, |_| {})?;
            let (model, params) = loaded.model.trainable()?;
            drop(loaded.model);
            model.set_activation_checkpointing(checkpointing);
            let mut obj =
                DpoObjective { policy: &model, pad_id: pad, loss: DpoLossConfig::default(), eval_batch_size: BATCH };
            time_steps(&mut obj, &data.iter().collect::<Vec<_>>(), &params, steps)?
        }
        other => anyhow::bail!("unknown trainer section {other}"),
    };
    Ok(json!({
        "trainer": which, "batch": BATCH, "seq_len": PROMPT + RESPONSE, "gradient_checkpointing": checkpointing,
        "step_s": super::bench::median(&secs), "samples_s": secs, "losses": losses,
        "peak_rss_mb": super::bench::peak_rss_mb(),
    }))
}
