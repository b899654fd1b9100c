//! What happened to one sandboxed run, read from how the process ended.

use super::monitor::{Captured, Ended, Kill};
use std::os::unix::process::ExitStatusExt;

/// Exit statuses of the sandbox's Python side (`guard.py`, `program.py`).
pub(crate) const EXIT_BLOCKED: i32 = 97;
pub(crate) const EXIT_MEMORY: i32 = 98;
const BLOCKED_LINE: &str = "rlhf-sandbox: blocked ";
/// How much of stderr an outcome keeps.
const TAIL_BYTES: usize = 2000;

/// The result of running a program against its tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every file ran to its end without an exception.
    Passed,
    /// An exception (a failed assert, a syntax error, `sys.exit`): the end of stderr.
    Failed {
        stderr_tail: String,
    },
    /// Wall-clock or CPU-time limit.
    Timeout,
    MemoryLimit,
    /// More output than the cap (stdout and stderr together).
    OutputLimit,
    /// A forbidden operation (network, processes, writing outside the sandbox, ...).
    Blocked {
        what: String,
    },
    /// Killed by a signal we did not send (e.g. SIGSEGV).
    Crashed {
        signal: i32,
        stderr_tail: String,
    },
}

impl Outcome {
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Passed)
    }

    /// A short machine-friendly name: `passed`, `failed`, `timeout`, ...
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed { .. } => "failed",
            Outcome::Timeout => "timeout",
            Outcome::MemoryLimit => "memory_limit",
            Outcome::OutputLimit => "output_limit",
            Outcome::Blocked { .. } => "blocked",
            Outcome::Crashed { .. } => "crashed",
        }
    }

    /// One line for a score's note: the kind and the most telling detail.
    pub fn summary(&self) -> String {
        let last_line = |s: &str| s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
        match self {
            Outcome::Failed { stderr_tail } => format!("failed: {}", last_line(stderr_tail)),
            Outcome::Blocked { what } => format!("blocked: {what}"),
            Outcome::Crashed { signal, stderr_tail } => format!("crashed: signal {signal} {}", last_line(stderr_tail)),
            other => other.kind().to_string(),
        }
    }
}

pub(crate) fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(TAIL_BYTES);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Reads the outcome of a run. A process that hit a limit or a refusal decides it (the program
/// first, if it ended by itself); otherwise the run passed only if the test process exited 0
/// after writing `passed` on the verdict pipe, which the program process never holds.
pub(crate) fn classify(run: &Captured) -> Outcome {
    match run.killed {
        Some(Kill::Output) => return Outcome::OutputLimit,
        Some(Kill::Wall) => return Outcome::Timeout,
        None => {}
    }
    if run.program.by_itself {
        if let Some(o) = abnormal(&run.program) {
            return o;
        }
    }
    if let Some(o) = abnormal(&run.tests) {
        return o;
    }
    let program_err = tail(&run.program.stderr);
    let tests_err = tail(&run.tests.stderr);
    let stderr = if program_err.trim().is_empty() { tests_err } else { format!("{program_err}\n{tests_err}") };
    match run.tests.status.code() {
        Some(0) if run.verdict == b"passed\n" => Outcome::Passed,
        Some(0) => {
            Outcome::Failed { stderr_tail: format!("{stderr}\nthe tests exited with status 0 before they finished") }
        }
        _ => Outcome::Failed { stderr_tail: stderr },
    }
}

/// A limit, a refusal or a crash, read from how one process ended.
fn abnormal(p: &Ended) -> Option<Outcome> {
    let stderr = tail(&p.stderr);
    let memory = stderr.contains("MemoryError") || stderr.contains("Cannot allocate memory");
    if let Some(signal) = p.status.signal() {
        return Some(match signal {
            // RLIMIT_CPU: SIGXCPU at the soft limit, SIGKILL at the hard one.
            libc::SIGXCPU | libc::SIGKILL => Outcome::Timeout,
            libc::SIGSYS => Outcome::Blocked { what: "a forbidden system call (seccomp)".into() },
            _ if memory => Outcome::MemoryLimit,
            _ => Outcome::Crashed { signal, stderr_tail: stderr },
        });
    }
    match p.status.code() {
        Some(EXIT_BLOCKED) => stderr
            .rfind(BLOCKED_LINE)
            .map(|i| Outcome::Blocked { what: stderr[i + BLOCKED_LINE.len()..].trim().to_string() }),
        Some(EXIT_MEMORY) => Some(Outcome::MemoryLimit),
        Some(0) => None,
        _ if memory => Some(Outcome::MemoryLimit),
        _ => None,
    }
}
