//! Bradley–Terry reward-model loss (InstructGPT; TRL's RewardTrainer):
//! loss = −mean(logσ(r_c − r_r − m)) + coef · mean((r_c + r_r)²).
//! The optional margin m asks for a larger gap on strongly preferred pairs; the centring term
//! (Eisenstein et al.) keeps rewards near zero so they need no offset before RL.

use crate::dpo::log_sigmoid;
use candle_core::{bail, DType, Result, Tensor};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RewardMetrics {
    pub bt_loss: f64,
    /// Fraction of pairs with r_c > r_r (strict).
    pub accuracy: f64,
    /// mean(r_c − r_r), without the input margin.
    pub margin: f64,
    pub min_reward: f64,
    pub mean_reward: f64,
    pub max_reward: f64,
}

pub struct RewardOutput {
    pub loss: Tensor,
    pub per_pair: Tensor,
    pub metrics: RewardMetrics,
}

/// `chosen`, `rejected`, `margin`: `[B]` scalar rewards of each pair's responses.
pub fn bradley_terry_loss(
    chosen: &Tensor,
    rejected: &Tensor,
    margin: Option<&Tensor>,
    center_rewards_coefficient: Option<f64>,
) -> Result<RewardOutput> {
    if chosen.dims() != rejected.dims() || chosen.rank() != 1 {
        bail!("bradley_terry_loss: chosen {:?} and rejected {:?} must both be [B]", chosen.dims(), rejected.dims());
    }
    let mut gap = (chosen - rejected)?;
    if let Some(m) = margin {
        gap = (gap - m.to_dtype(chosen.dtype())?)?;
    }
    let per_pair = log_sigmoid(&gap)?.neg()?;
    let bt = per_pair.mean_all()?;
    let loss = match center_rewards_coefficient {
        Some(c) => (&bt + ((chosen + rejected)?.sqr()?.mean_all()? * c)?)?,
        None => bt.clone(),
    };
    let f = |t: &Tensor| -> Result<Vec<f64>> { t.detach().to_dtype(DType::F64)?.to_vec1::<f64>() };
    let (c, r) = (f(chosen)?, f(rejected)?);
    let n = c.len().max(1) as f64;
    let all: Vec<f64> = c.iter().chain(&r).copied().collect();
    let metrics = RewardMetrics {
        bt_loss: bt.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        accuracy: c.iter().zip(&r).filter(|(a, b)| a > b).count() as f64 / n,
        margin: c.iter().zip(&r).map(|(a, b)| a - b).sum::<f64>() / n,
        min_reward: all.iter().copied().fold(f64::INFINITY, f64::min),
        mean_reward: all.iter().sum::<f64>() / all.len().max(1) as f64,
        max_reward: all.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    };
    Ok(RewardOutput { loss, per_pair, metrics })
}
