//! Running untrusted Python against tests: one process per run, in a fresh temporary directory
//! that is removed afterwards, under OS limits (wall clock, CPU time, address space, file size,
//! output) and, because tests run as root where `RLIMIT_NPROC` does not bind, three more layers:
//! a seccomp filter that kills the process on fork/vfork/clone-without-thread, an empty network
//! namespace (when permitted), and a Python audit hook (`prelude.py`) that refuses network and
//! process operations, writes outside the directory, ctypes and raising limits.

mod child;
mod monitor;
mod outcome;
mod seccomp;

pub use outcome::Outcome;

use crate::error::{Result, RewardError};
use child::{confine, random_u64, ChildLimits, TempDir};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const PRELUDE: &str = include_str!("prelude.py");

/// Settings of the sandbox; the defaults suit unit-test-sized programs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// The interpreter: a path, or a name looked up in `PATH`.
    pub python: PathBuf,
    pub wall_seconds: f64,
    pub cpu_seconds: u64,
    /// Address-space limit (RLIMIT_AS).
    pub memory_bytes: u64,
    /// Largest file the program may write (RLIMIT_FSIZE).
    pub file_bytes: u64,
    /// stdout + stderr kept before the program is killed.
    pub output_bytes: usize,
    /// Run in a new, empty network namespace when the kernel permits (root); else skipped.
    pub network_namespace: bool,
    /// Kill on process creation with seccomp when the kernel permits; else the audit hook also
    /// refuses `import _posixsubprocess` (the one process path it cannot see).
    pub seccomp: bool,
    /// Where the per-run directories are made (default: the system temp dir).
    pub temp_root: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            python: "python3".into(),
            wall_seconds: 10.0,
            cpu_seconds: 10,
            memory_bytes: 1 << 30,
            file_bytes: 16 << 20,
            output_bytes: 1 << 20,
            network_namespace: true,
            seccomp: true,
            temp_root: None,
        }
    }
}

/// What a run printed and how it ended.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub outcome: Outcome,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Which protections the probe found working on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protections {
    pub seccomp: bool,
    pub network_namespace: bool,
    pub python_version: (u32, u32),
}

/// A configured, probed sandbox; cheap to share between threads (`&Sandbox` is all a run needs).
#[derive(Clone, Debug)]
pub struct Sandbox {
    cfg: SandboxConfig,
    python: PathBuf,
    protections: Protections,
}

impl Sandbox {
    /// Finds the interpreter and probes which protections work (one short run).
    pub fn new(cfg: SandboxConfig) -> Result<Self> {
        if !(cfg.wall_seconds > 0.0 && cfg.wall_seconds.is_finite()) {
            return Err(RewardError::Config(format!("sandbox: wall_seconds = {} must be > 0", cfg.wall_seconds)));
        }
        let python = real_interpreter(&cfg.python)?;
        let mut sandbox = Self {
            python,
            protections: Protections {
                seccomp: cfg.seccomp && seccomp::program().is_some(),
                network_namespace: false,
                python_version: (0, 0),
            },
            cfg,
        };
        let probe = "import os, sys; print(sys.version_info[0], sys.version_info[1], os.readlink('/proc/self/ns/net'))";
        let out = match sandbox.probe(probe) {
            Err(_) if sandbox.protections.seccomp => {
                sandbox.protections.seccomp = false;
                sandbox.probe(probe)
            }
            other => other,
        }?;
        let mut parts = out.split_whitespace();
        let version = (parts.next().and_then(|v| v.parse().ok()), parts.next().and_then(|v| v.parse().ok()));
        let (Some(major), Some(minor)) = version else {
            return Err(RewardError::Sandbox(format!("{}: unexpected probe output `{out}`", sandbox.python.display())));
        };
        if (major, minor) < (3, 8) {
            return Err(RewardError::Config(format!(
                "sandbox: {} is Python {major}.{minor}; audit hooks need 3.8 or newer",
                sandbox.python.display()
            )));
        }
        let own_ns = std::fs::read_link("/proc/self/ns/net").ok().map(|p| p.display().to_string());
        sandbox.protections.python_version = (major, minor);
        sandbox.protections.network_namespace = parts.next().is_some_and(|ns| Some(ns.to_string()) != own_ns);
        Ok(sandbox)
    }

    pub fn protections(&self) -> Protections {
        self.protections
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.cfg
    }

    fn limits(&self) -> ChildLimits {
        ChildLimits {
            cpu_seconds: self.cfg.cpu_seconds,
            memory_bytes: self.cfg.memory_bytes,
            file_bytes: self.cfg.file_bytes,
            open_files: 256,
            network_namespace: self.cfg.network_namespace,
            seccomp: self.protections.seccomp,
        }
    }

    /// Runs `-c code` under the limits without the prelude; returns stdout of a clean exit.
    fn probe(&self, code: &str) -> Result<String> {
        let mut cmd = Command::new(&self.python);
        cmd.args(["-I", "-c", code]).env_clear().stdin(Stdio::null()).stderr(Stdio::piped()).stdout(Stdio::piped());
        confine(&mut cmd, self.limits());
        let what = format!("probe run of {}", self.python.display());
        let out = cmd.output().map_err(|e| RewardError::Sandbox(format!("{what}: {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(RewardError::Sandbox(format!("{what}: {} {}", out.status, err.trim())));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the files in order in one Python namespace (e.g. a solution, then its tests).
    pub fn run(&self, files: &[(&str, &str)]) -> Result<RunReport> {
        let parent = self.cfg.temp_root.clone().unwrap_or_else(std::env::temp_dir);
        let dir =
            TempDir::new(&parent).map_err(|e| RewardError::Sandbox(format!("cannot make a run directory: {e}")))?;
        let report = self.run_in(dir.path(), files);
        dir.remove().map_err(|e| RewardError::Sandbox(format!("cannot remove a run directory: {e}")))?;
        report
    }

    /// `code`, then `tests`, as `solution.py` and `tests.py`.
    pub fn check(&self, code: &str, tests: &str) -> Result<Outcome> {
        Ok(self.run(&[("solution.py", code), ("tests.py", tests)])?.outcome)
    }

    fn run_in(&self, dir: &Path, files: &[(&str, &str)]) -> Result<RunReport> {
        let file_err =
            |e: std::io::Error| RewardError::File { path: dir.display().to_string(), message: e.to_string() };
        for (name, text) in files {
            if name.contains('/') || name.starts_with('.') || name.is_empty() {
                return Err(RewardError::Config(format!("sandbox: file name `{name}` must be a plain name")));
            }
            std::fs::write(dir.join(name), text).map_err(file_err)?;
        }
        let nonce = format!("rlhf-ok-{:016x}{:016x}", random_u64(), random_u64());
        let mut cmd = Command::new(&self.python);
        cmd.args(["-I", "-B", "-u", "-X", "utf8", "-c", PRELUDE])
            .arg(dir)
            .arg(if self.protections.seccomp { "1" } else { "0" })
            .args(files.iter().map(|(n, _)| n))
            .current_dir(dir)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", dir)
            .env("TMPDIR", dir)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        confine(&mut cmd, self.limits());
        let mut child = cmd.spawn().map_err(|e| RewardError::Sandbox(format!("{}: {e}", self.python.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A child that already died closes the pipe: its outcome says why, not this write.
            let _ = stdin.write_all(format!("{nonce}\n").as_bytes());
        }
        let wall = Duration::from_secs_f64(self.cfg.wall_seconds);
        let run = monitor::supervise(&mut child, wall, self.cfg.output_bytes).map_err(file_err)?;
        let outcome = outcome::classify(&run, &nonce);
        // The success marker is `\n<nonce>\n` at the very end.
        let keep = if outcome.passed() { run.stdout.len() - (nonce.len() + 2) } else { run.stdout.len() };
        Ok(RunReport {
            outcome,
            stdout: String::from_utf8_lossy(&run.stdout[..keep]).into_owned(),
            stderr: String::from_utf8_lossy(&run.stderr).into_owned(),
            elapsed: run.elapsed,
        })
    }
}

/// The interpreter binary itself (`sys.executable`): `python3` in `PATH` may be a wrapper
/// script (pyenv, conda shims) that forks, which the sandbox would kill.
fn real_interpreter(python: &Path) -> Result<PathBuf> {
    let what = || format!("sandbox: python interpreter `{}`", python.display());
    let out = Command::new(python)
        .args(["-I", "-c", "import sys; print(sys.executable)"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RewardError::Config(format!("{}: {e} (set `python` to its path)", what())))?;
    let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || exe.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(RewardError::Config(format!("{} does not run: {} {}", what(), out.status, err.trim())));
    }
    Ok(PathBuf::from(exe))
}
