//! A seeded, deterministic train/eval split.

use crate::error::{DataError, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum EvalSplit {
    /// A share of the examples in `[0, 1)`, rounded to the nearest count.
    Fraction(f64),
    Count(usize),
}

/// Moves a seeded random subset of `examples` to the eval set; both sets keep the original order.
/// At least one example always stays for training.
pub fn split_train_eval<T>(examples: Vec<T>, eval: EvalSplit, seed: u64) -> Result<(Vec<T>, Vec<T>)> {
    let n = examples.len();
    let n_eval = match eval {
        EvalSplit::Fraction(f) if (0.0..1.0).contains(&f) => (f * n as f64).round() as usize,
        EvalSplit::Fraction(f) => {
            return Err(DataError::Invalid(format!("eval fraction {f} is outside [0, 1)")));
        }
        EvalSplit::Count(c) => c,
    };
    if n_eval > 0 && n_eval >= n {
        return Err(DataError::Invalid(format!(
            "cannot hold out {n_eval} eval examples from {n}: none would be left for training"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut is_eval = vec![false; n];
    for &i in &order[..n_eval] {
        is_eval[i] = true;
    }
    let (mut train, mut eval_set) = (Vec::with_capacity(n - n_eval), Vec::with_capacity(n_eval));
    for (example, to_eval) in examples.into_iter().zip(is_eval) {
        if to_eval {
            eval_set.push(example);
        } else {
            train.push(example);
        }
    }
    Ok((train, eval_set))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_disjoint_and_ordered() {
        let (train, eval) = split_train_eval((0..100).collect(), EvalSplit::Fraction(0.1), 3).unwrap();
        assert_eq!((train.len(), eval.len()), (90, 10));
        assert!(train.windows(2).all(|w| w[0] < w[1]) && eval.windows(2).all(|w| w[0] < w[1]));
        assert!(eval.iter().all(|e| !train.contains(e)));
        assert_eq!(split_train_eval((0..100).collect(), EvalSplit::Count(10), 3).unwrap().1, eval);
        assert_ne!(split_train_eval((0..100).collect::<Vec<i32>>(), EvalSplit::Count(10), 4).unwrap().1, eval);
    }

    #[test]
    fn impossible_splits_are_errors() {
        assert!(split_train_eval(vec![1, 2], EvalSplit::Count(2), 0).is_err());
        assert!(split_train_eval(vec![1, 2], EvalSplit::Fraction(1.5), 0).is_err());
        assert_eq!(split_train_eval(vec![1, 2], EvalSplit::Count(0), 0).unwrap(), (vec![1, 2], vec![]));
    }
}
