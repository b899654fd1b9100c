//! Per-step training metrics, written twice: `metrics.jsonl` (one JSON object per line, for scripts and
//! the run report) and a TensorBoard event file under `tb/` (for live curves).
//!
//! A fresh run starts both anew (a reused folder's old lines and event files are removed). A
//! resumed run keeps the lines up to its checkpoint's step and drops the later ones (they are
//! logged again), and starts a new event file that opens with a restart marker at the next step,
//! so TensorBoard, which shows the files of one folder as one run, drops the earlier file's values
//! of the repeated steps.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::tensorboard::EventWriter;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metrics file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("metric name `{0}` is reserved for the step and time columns")]
    ReservedName(String),
}

/// Names every line already has.
const RESERVED: [&str; 2] = ["step", "time"];

pub struct MetricsLogger {
    jsonl_path: PathBuf,
    /// `None` on the ranks of a data-parallel run other than rank 0, which alone writes.
    files: Option<Files>,
}

struct Files {
    jsonl: BufWriter<File>,
    events: EventWriter,
}

impl MetricsLogger {
    /// A fresh run: a new `run_dir/metrics.jsonl` and a new event file in `run_dir/tb/`; lines and
    /// event files a previous run left in the folder are removed.
    pub fn create(run_dir: impl AsRef<Path>) -> Result<Self, MetricsError> {
        Self::open(run_dir.as_ref(), None)
    }

    /// A run resumed from a checkpoint at `step`: `metrics.jsonl` keeps its lines of steps ≤ `step`
    /// (a line torn by the crash is dropped too), and the new event file starts with a restart
    /// marker at `step + 1`.
    pub fn resume(run_dir: impl AsRef<Path>, step: u64) -> Result<Self, MetricsError> {
        Self::open(run_dir.as_ref(), Some(step))
    }

    fn open(run_dir: &Path, resumed_at: Option<u64>) -> Result<Self, MetricsError> {
        let jsonl_path = run_dir.join("metrics.jsonl");
        if !rlhf_dist::world().is_writer() {
            return Ok(Self { jsonl_path, files: None });
        }
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| MetricsError::Io { path, source }
        };
        fs::create_dir_all(run_dir).map_err(io_err(run_dir))?;
        let tb_dir = run_dir.join("tb");
        match resumed_at {
            Some(step) => cut_after_step(&jsonl_path, step).map_err(io_err(&jsonl_path))?,
            None => {
                remove_if_present(&jsonl_path).map_err(io_err(&jsonl_path))?;
                remove_event_files(&tb_dir).map_err(io_err(&tb_dir))?;
            }
        }
        let jsonl = OpenOptions::new().append(true).create(true).open(&jsonl_path).map_err(io_err(&jsonl_path))?;
        let time = unix_time();
        let mut events = EventWriter::create(&tb_dir, time).map_err(io_err(&tb_dir))?;
        if let Some(step) = resumed_at {
            events.add_restart(step + 1, time).map_err(io_err(events.path()))?;
            events.flush().map_err(io_err(&tb_dir))?;
        }
        Ok(Self { jsonl_path, files: Some(Files { jsonl: BufWriter::new(jsonl), events }) })
    }

    pub fn jsonl_path(&self) -> &Path {
        &self.jsonl_path
    }

    pub fn event_file_path(&self) -> Option<&Path> {
        self.files.as_ref().map(|f| f.events.path())
    }

    /// Writes `{"step": .., "time": .., name: value, ..}` (names in the given order; NaN and ±inf become
    /// `null`, JSON having no such numbers) and one TensorBoard scalar per name, then flushes both, so
    /// the curves are live and a crash loses nothing already logged.
    pub fn log(&mut self, step: u64, metrics: &[(&str, f64)]) -> Result<(), MetricsError> {
        if let Some((name, _)) = metrics.iter().find(|(name, _)| RESERVED.contains(name)) {
            return Err(MetricsError::ReservedName(name.to_string()));
        }
        let time = unix_time();
        let mut line = format!("{{\"step\": {step}, \"time\": {}", json_number(time));
        for &(name, value) in metrics {
            // A string always serialises.
            let name = serde_json::to_string(name).unwrap_or_default();
            line.push_str(&format!(", {name}: {}", json_number(value)));
        }
        line.push_str("}\n");
        let jsonl_error = self.jsonl_error();
        let Some(files) = self.files.as_mut() else { return Ok(()) };
        files.jsonl.write_all(line.as_bytes()).map_err(jsonl_error)?;
        let path = files.events.path().to_path_buf();
        files.events.add_scalars(step, time, metrics).map_err(|source| MetricsError::Io { path, source })?;
        self.flush()
    }

    pub fn flush(&mut self) -> Result<(), MetricsError> {
        let jsonl_error = self.jsonl_error();
        let Some(files) = self.files.as_mut() else { return Ok(()) };
        files.jsonl.flush().map_err(jsonl_error)?;
        let path = files.events.path().to_path_buf();
        files.events.flush().map_err(|source| MetricsError::Io { path, source })
    }

    fn jsonl_error(&self) -> impl FnOnce(io::Error) -> MetricsError {
        let path = self.jsonl_path.clone();
        move |source| MetricsError::Io { path, source }
    }
}

/// Keeps the lines whose `step` is at most `step`, rewriting the file atomically; lines without a
/// readable step (torn by a crash) go with the later ones.
fn cut_after_step(path: &Path, step: u64) -> io::Result<()> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                .is_some_and(|s| s <= step)
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    let tmp = path.with_extension("jsonl.tmp");
    fs::write(&tmp, kept)?;
    fs::rename(&tmp, path)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes the `events.out.tfevents.*` files of `dir` (nothing else in it).
fn remove_event_files(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("events.out.tfevents.") {
            remove_if_present(&entry.path())?;
        }
    }
    Ok(())
}

fn json_number(v: f64) -> String {
    if v.is_finite() {
        // `{:?}` is Rust's shortest round-trip form (`1e-5`, `0.1`, `3.0`), all valid JSON numbers.
        format!("{v:?}")
    } else {
        "null".to_string()
    }
}

fn unix_time() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensorboard::read::read_events;
    use serde_json::Value;

    fn temp_run_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rlhf-metrics-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn read_lines(path: &Path) -> Vec<Value> {
        fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn logs_json_lines_and_tensorboard_scalars() {
        let dir = temp_run_dir("log");
        let mut logger = MetricsLogger::create(&dir).unwrap();
        logger.log(1, &[("loss", 2.5), ("lr", 1e-5)]).unwrap();
        logger.log(2, &[("loss", f64::NAN), ("grad_norm", f64::INFINITY)]).unwrap();

        let lines = read_lines(&dir.join("metrics.jsonl"));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["step"], 1);
        assert_eq!(lines[0]["loss"], 2.5);
        assert_eq!(lines[0]["lr"], 1e-5);
        assert!(lines[0]["time"].as_f64().unwrap() > 1.6e9);
        assert!(lines[1]["loss"].is_null() && lines[1]["grad_norm"].is_null());
        // Keys keep the order they were logged in.
        let raw = fs::read_to_string(logger.jsonl_path()).unwrap();
        assert!(raw.starts_with("{\"step\": 1, \"time\": "), "{raw}");
        assert!(raw.lines().next().unwrap().ends_with(", \"loss\": 2.5, \"lr\": 1e-5}"), "{raw}");

        let events = read_events(logger.event_file_path().unwrap());
        assert_eq!(events.len(), 3, "version record + one per log call");
        assert_eq!(events[1].step, 1);
        assert_eq!(events[1].scalars, vec![("loss".to_string(), 2.5), ("lr".to_string(), 1e-5)]);
        assert_eq!(events[2].step, 2);
        assert!(events[2].scalars[0].1.is_nan(), "non-finite values still reach TensorBoard");
        assert_eq!(events[2].scalars[1].1, f32::INFINITY);
        // serde_json parses floats to within an ulp (no `float_roundtrip`); the line has the shortest exact form.
        assert!((events[1].wall_time - lines[0]["time"].as_f64().unwrap()).abs() < 1e-6);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resume_cuts_back_to_the_checkpoint_and_marks_the_restart() {
        let dir = temp_run_dir("resume");
        let first_events = {
            let mut logger = MetricsLogger::create(&dir).unwrap();
            for step in 1..=3 {
                logger.log(step, &[("loss", 4.0 - step as f64)]).unwrap();
            }
            logger.event_file_path().unwrap().to_path_buf()
        };
        // Killed mid-line after step 3; the checkpoint is at step 2.
        let jsonl = dir.join("metrics.jsonl");
        OpenOptions::new().append(true).open(&jsonl).unwrap().write_all(b"{\"step\": 4, \"lo").unwrap();

        let mut logger = MetricsLogger::resume(&dir, 2).unwrap();
        logger.log(3, &[("loss", 0.5)]).unwrap();
        assert_ne!(logger.event_file_path().unwrap(), first_events);
        assert_eq!(fs::read_dir(dir.join("tb")).unwrap().count(), 2);
        let steps: Vec<(u64, f64)> =
            read_lines(&jsonl).iter().map(|l| (l["step"].as_u64().unwrap(), l["loss"].as_f64().unwrap())).collect();
        assert_eq!(steps, vec![(1, 3.0), (2, 2.0), (3, 0.5)], "each step once, the repeated one from the resume");
        let events = read_events(logger.event_file_path().unwrap());
        assert_eq!((events[1].step, events[1].session_status), (3, Some(1)), "restart marker at step 3");
        assert_eq!(events[2].scalars, vec![("loss".to_string(), 0.5)]);

        // A fresh run in the same folder starts both files anew.
        drop(logger);
        let mut fresh = MetricsLogger::create(&dir).unwrap();
        fresh.log(1, &[("loss", 9.0)]).unwrap();
        assert_eq!(read_lines(&jsonl).len(), 1);
        assert_eq!(fs::read_dir(dir.join("tb")).unwrap().count(), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reserved_names_are_rejected() {
        let dir = temp_run_dir("reserved");
        let mut logger = MetricsLogger::create(&dir).unwrap();
        let err = logger.log(1, &[("step", 1.0)]).unwrap_err();
        assert!(matches!(err, MetricsError::ReservedName(ref n) if n == "step"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
