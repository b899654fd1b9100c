//! Evaluation statistics that do not need a model: win rates, majority voting, correlation and
//! the reward-hacking signals (length–reward correlation, repetition, RM–verifier divergence).

use std::collections::HashMap;

/// Share of prompts where `a` beats `b`, a tie (|a − b| ≤ `tie`) counting half. `None` if empty.
pub fn win_rate(a: &[f64], b: &[f64], tie: f64) -> Option<f64> {
    let n = a.len().min(b.len());
    if n == 0 {
        return None;
    }
    let points: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| {
            if (x - y).abs() <= tie {
                0.5
            } else if x > y {
                1.0
            } else {
                0.0
            }
        })
        .sum();
    Some(points / n as f64)
}

/// Pearson correlation; `None` with fewer than two points or no variance in either.
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len().min(y.len());
    if n < 2 {
        return None;
    }
    let (mx, my) = (x[..n].iter().sum::<f64>() / n as f64, y[..n].iter().sum::<f64>() / n as f64);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y).take(n) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// The most frequent answer (Maj@K); equal counts go to the answer seen first. Missing answers
/// do not vote.
pub fn majority<'a>(answers: &[Option<&'a str>]) -> Option<&'a str> {
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for (i, a) in answers.iter().enumerate() {
        if let Some(a) = a {
            counts.entry(a).or_insert((0, i)).0 += 1;
        }
    }
    counts.into_iter().max_by(|x, y| x.1 .0.cmp(&y.1 .0).then(y.1 .1.cmp(&x.1 .1))).map(|(a, _)| a)
}

/// Whether some `n`-gram of tokens occurs at least `times` times: the degenerate loops an
/// over-optimised policy falls into.
pub fn repeats(tokens: &[u32], n: usize, times: usize) -> bool {
    if n == 0 || tokens.len() < n {
        return false;
    }
    let mut seen: HashMap<&[u32], usize> = HashMap::new();
    tokens.windows(n).any(|w| {
        let c = seen.entry(w).or_default();
        *c += 1;
        *c >= times
    })
}

/// Among pairs of one prompt's samples that the verifier tells apart, how many the reward
/// model orders the other way: (disagreeing pairs, pairs told apart).
pub fn rm_verifier_disagreements(rm: &[f64], correct: &[bool]) -> (usize, usize) {
    let (mut against, mut apart) = (0, 0);
    for i in 0..rm.len().min(correct.len()) {
        for j in i + 1..rm.len().min(correct.len()) {
            if correct[i] != correct[j] {
                apart += 1;
                let (good, bad) = if correct[i] { (i, j) } else { (j, i) };
                if rm[bad] >= rm[good] {
                    against += 1;
                }
            }
        }
    }
    (against, apart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn win_rate_counts_ties_as_half() {
        assert_eq!(win_rate(&[1.0, 0.0, 0.5, 2.0], &[0.0, 1.0, 0.5, 1.0], 1e-9), Some(0.625));
        assert_eq!(win_rate(&[], &[], 0.0), None);
    }

    #[test]
    fn pearson_against_hand_computed_values() {
        // x = 1..5, y = 2x + 1: perfectly correlated; y reversed: −1.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((pearson(&x, &[3.0, 5.0, 7.0, 9.0, 11.0]).unwrap() - 1.0).abs() < 1e-12);
        assert!((pearson(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
        // x = (1,2,3), y = (1,3,2): deviations (−1,0,1) and (−1,1,0): sxy = 1, sxx = syy = 2 → 0.5.
        assert!((pearson(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(pearson(&[1.0, 1.0], &[2.0, 3.0]), None);
    }

    #[test]
    fn majority_ignores_missing_answers_and_breaks_ties_by_first_seen() {
        assert_eq!(majority(&[Some("3"), None, Some("4"), Some("4")]), Some("4"));
        assert_eq!(majority(&[Some("7"), Some("3"), Some("3"), Some("7")]), Some("7"));
        assert_eq!(majority(&[None, None]), None);
    }

    #[test]
    fn repetition_and_divergence() {
        assert!(repeats(&[1, 2, 1, 2, 1, 2], 2, 3));
        assert!(!repeats(&[1, 2, 3, 1, 2, 4], 2, 3));
        // Correct = 0 and 2; the RM ranks wrong sample 1 above correct sample 2 only.
        assert_eq!(rm_verifier_disagreements(&[0.9, 0.5, 0.1, -1.0], &[true, false, true, false]), (1, 4));
    }
}
