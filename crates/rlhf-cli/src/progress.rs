//! Progress bars on stderr (hidden automatically when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg:<12} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Training progress: `step/total [bar] loss 1.234 · lr 2.0e-05 · 1,234 tok/s · ETA 3m12s`.
///
/// The ETA is computed here from the steps taken by this process (not indicatif's `{eta}`), so a
/// resumed run does not count the steps done before the resume as instantaneous.
pub struct TrainProgress {
    bar: ProgressBar,
    start_step: u64,
    total_steps: u64,
    started: std::time::Instant,
}

impl TrainProgress {
    pub fn new(total_steps: u64, start_step: u64) -> Self {
        let bar = ProgressBar::new(total_steps).with_position(start_step);
        bar.set_style(
            ProgressStyle::with_template("{pos}/{len} [{bar:30}] {msg}").expect("valid template").progress_chars("=> "),
        );
        Self { bar, start_step, total_steps, started: std::time::Instant::now() }
    }

    /// `step` is the number of optimiser steps completed.
    /// `label value` is the headline number: the loss, or the mean reward in RL.
    pub fn update_labelled(&self, step: u64, label: &str, value: f64, lr: f64, tokens_per_sec: f64) {
        let done = step.saturating_sub(self.start_step);
        let remaining = self.total_steps.saturating_sub(step);
        let eta = (done > 0).then(|| self.started.elapsed().as_secs_f64() / done as f64 * remaining as f64);
        self.bar.set_position(step);
        self.bar.set_message(train_message(label, value, lr, tokens_per_sec, eta));
    }

    pub fn finish(&self) {
        self.bar.finish();
    }
}

fn train_message(label: &str, value: f64, lr: f64, tokens_per_sec: f64, eta_secs: Option<f64>) -> String {
    let eta = eta_secs.map_or_else(|| "?".to_string(), short_duration);
    format!(
        "{label} {value:.3} · lr {} · {} tok/s · ETA {eta}",
        scientific(lr),
        thousands(tokens_per_sec.round().max(0.0) as u64)
    )
}

/// Python's `{:.1e}` (`2.0e-05`), the form learning rates are usually written in.
fn scientific(v: f64) -> String {
    let s = format!("{v:.1e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = exp.strip_prefix('-').map_or(("+", exp), |d| ("-", d));
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s, // NaN, inf
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits.as_bytes().rchunks(3).rev().filter_map(|g| std::str::from_utf8(g).ok()).collect();
    groups.join(",")
}

/// `45s`, `3m12s`, `2h05m`.
fn short_duration(secs: f64) -> String {
    let secs = secs.round().max(0.0) as u64;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_matches_the_documented_layout() {
        assert_eq!(
            train_message("loss", 1.23449, 2e-5, 1234.4, Some(192.0)),
            "loss 1.234 · lr 2.0e-05 · 1,234 tok/s · ETA 3m12s"
        );
        assert_eq!(train_message("loss", 0.5, 0.0, 0.0, None), "loss 0.500 · lr 0.0e+00 · 0 tok/s · ETA ?");
    }

    #[test]
    fn number_formats() {
        assert_eq!(scientific(3e-4), "3.0e-04");
        assert_eq!(scientific(1.26e10), "1.3e+10");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(short_duration(45.2), "45s");
        assert_eq!(short_duration(7500.0), "2h05m");
    }

    #[test]
    fn hidden_bar_accepts_updates() {
        // Under `cargo test` stderr is not a terminal, so the bar draws nothing; the calls still work.
        let progress = TrainProgress::new(10, 4);
        progress.update_labelled(5, "loss", 1.0, 1e-5, 100.0);
        assert_eq!(progress.bar.position(), 5);
        progress.finish();
    }
}
