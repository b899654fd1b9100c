//! The plain statistics every metric uses, with one rule for empty input: no data gives NaN
//! (written as `null` in metrics.jsonl), never a 0 that reads like a measurement.

pub fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        return f64::NAN;
    }
    x.iter().sum::<f64>() / x.len() as f64
}

/// Population standard deviation (NaN for no data).
pub fn std(x: &[f64]) -> f64 {
    let m = mean(x);
    (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / x.len() as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_data_is_nan_not_zero() {
        assert!(mean(&[]).is_nan() && std(&[]).is_nan());
        assert_eq!(mean(&[1.0, 2.0, 6.0]), 3.0);
        assert_eq!(std(&[1.0, 3.0]), 1.0);
    }
}
