//! Running untrusted Python against tests, with the operating system as the boundary.
//!
//! A run is two processes. The *program* process runs the untrusted code (`program.py`); the
//! *test* process runs the tests (`harness.py`) and reaches the program's functions and objects
//! only through a pipe that carries plain values (`wire.py`), so it never runs the program's
//! code and no object of the program's is ever compared or tested for truth in it. The verdict
//! is the test process writing `passed` on a third pipe that only it and the parent hold.
//!
//! Each process (`jail.rs`, `child.rs`): a user of its own, fresh per process; a private mount
//! namespace where everything is read-only, `/tmp` is a small private tmpfs and directories
//! other users cannot enter stay hidden; an empty network namespace; a seccomp filter (no
//! process creation, no sockets, nothing root could abuse); limits on wall clock, CPU time,
//! address space, file size, processes and output. A Python audit hook (`guard.py`) refuses the
//! common forbidden actions early with a legible reason, as defence in depth only.
//!
//! Where the machine does not allow a layer (not root: no user switch, no mounts), [`Sandbox::new`]
//! finds out with a probe run and goes on without it; [`Sandbox::protections`] says what holds.

mod child;
mod jail;
mod monitor;
mod outcome;
mod seccomp;

pub use outcome::Outcome;

use crate::error::{Result, RewardError};
use child::{confine, pipe, ChildLimits, Placement, TempDir};
use jail::FsPlan;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const GUARD: &str = include_str!("guard.py");
const WIRE: &str = include_str!("wire.py");
const PROGRAM: &str = include_str!("program.py");
const HARNESS: &str = include_str!("harness.py");

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
    /// The Python audit hook (`guard.py`): defence in depth with legible refusals. Off, the
    /// operating system's layers stand alone (the hostile-program tests run both ways).
    pub audit_hook: bool,
    /// Run each process as a fresh unprivileged user (needs root; else skipped).
    pub separate_users: bool,
    /// A private read-only view of the file system with a private `/tmp` (needs root; else
    /// skipped, and the processes work in directories under `temp_root`).
    pub private_filesystem: bool,
    /// Size of each process's private `/tmp`.
    pub disk_bytes: u64,
    /// Where the per-run directories are made when there is no private file system (default:
    /// the system temp dir).
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
            audit_hook: true,
            separate_users: true,
            private_filesystem: true,
            disk_bytes: 64 << 20,
            temp_root: None,
        }
    }
}

/// What one process of a run printed.
#[derive(Clone, Debug, Default)]
pub struct Printed {
    pub stdout: String,
    pub stderr: String,
}

/// How a run ended and what its two processes printed.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub outcome: Outcome,
    pub program: Printed,
    pub tests: Printed,
    pub elapsed: Duration,
}

/// Which protections the probe found working on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protections {
    pub seccomp: bool,
    pub network_namespace: bool,
    pub separate_users: bool,
    pub private_filesystem: bool,
    pub python_version: (u32, u32),
}

impl Protections {
    /// The layers asked for in `cfg` that this machine did not allow.
    pub fn missing(&self, cfg: &SandboxConfig) -> Vec<&'static str> {
        [
            (cfg.separate_users && !self.separate_users, "separate users (needs root)"),
            (
                cfg.private_filesystem && !self.private_filesystem,
                "private file system (needs root and mount namespaces)",
            ),
            (cfg.seccomp && !self.seccomp, "seccomp"),
            (cfg.network_namespace && !self.network_namespace, "network namespace"),
        ]
        .into_iter()
        .filter_map(|(missing, what)| missing.then_some(what))
        .collect()
    }
}

/// A configured, probed sandbox; cheap to share between threads (`&Sandbox` is all a run needs).
#[derive(Clone, Debug)]
pub struct Sandbox {
    cfg: SandboxConfig,
    python: PathBuf,
    protections: Protections,
    fs: Option<FsPlan>,
}

/// The two processes of a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Program,
    Tests,
}

impl Sandbox {
    /// Finds the interpreter and probes which protections work: the configured ones first, then
    /// fewer, one layer at a time (each probe is one short run).
    pub fn new(cfg: SandboxConfig) -> Result<Self> {
        if !(cfg.wall_seconds > 0.0 && cfg.wall_seconds.is_finite()) {
            return Err(RewardError::Config(format!("sandbox: wall_seconds = {} must be > 0", cfg.wall_seconds)));
        }
        let python = Interpreter::find(&cfg.python)?;
        if python.version < (3, 10) {
            return Err(RewardError::Config(format!(
                "sandbox: {} is Python {}.{}; the sandbox needs 3.10 or newer",
                python.executable.display(),
                python.version.0,
                python.version.1
            )));
        }
        let root = jail::can_switch_users();
        let seccomp = cfg.seccomp && seccomp::program().is_some();
        let users = cfg.separate_users && root;
        let fs = if cfg.private_filesystem && root { FsPlan::new(&python.installation).ok() } else { None };
        let mut ladder = vec![(users, fs.clone(), seccomp)];
        for step in [(users, None, seccomp), (false, None, seccomp), (false, None, false)] {
            let last = ladder.last().expect("not empty");
            if (last.0, last.1.is_some(), last.2) != (step.0, false, step.2) {
                ladder.push(step);
            }
        }
        let mut error = None;
        for (users, fs, seccomp) in ladder {
            let protections = Protections {
                seccomp,
                network_namespace: false,
                separate_users: users,
                private_filesystem: fs.is_some(),
                python_version: python.version,
            };
            let mut sandbox = Self { cfg: cfg.clone(), python: python.executable.clone(), protections, fs };
            match sandbox.probe() {
                Ok(network_namespace) => {
                    sandbox.protections.network_namespace = network_namespace;
                    return Ok(sandbox);
                }
                Err(e) => error = Some(e),
            }
        }
        Err(error.expect("at least one probe ran"))
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

    /// One run with every layer of this sandbox; returns whether the network was private. It
    /// fails if a layer cannot be set up, if the program does not run as its own user, or if a
    /// call and a value do not make the round trip.
    fn probe(&self) -> Result<bool> {
        let program = "import os\nprint(os.getuid(), os.readlink('/proc/self/ns/net'))\n\
                       def f(x):\n    return [x, 0.5]\n";
        let report = self.run(program, "assert f(2) == [2, 0.5]\n")?;
        let what = format!("probe run of {}", self.python.display());
        if !report.outcome.passed() {
            return Err(RewardError::Sandbox(format!("{what}: {}", report.outcome.summary())));
        }
        let mut out = report.program.stdout.split_whitespace();
        let uid: Option<u32> = out.next().and_then(|u| u.parse().ok());
        // SAFETY: plain system call.
        let own_uid = unsafe { libc::getuid() };
        if self.protections.separate_users == (uid == Some(own_uid)) {
            return Err(RewardError::Sandbox(format!("{what}: ran as uid {uid:?}")));
        }
        let own_ns = std::fs::read_link("/proc/self/ns/net").ok().map(|p| p.display().to_string());
        Ok(out.next().is_some_and(|ns| Some(ns.to_string()) != own_ns))
    }

    /// `program`, then `tests` against it, in two processes (see the module's documentation).
    pub fn run(&self, program: &str, tests: &str) -> Result<RunReport> {
        let users = self.protections.separate_users.then(jail::fresh_users);
        // Host directories only where there is no private /tmp.
        let dirs = match self.fs {
            Some(_) => None,
            None => {
                let parent = self.cfg.temp_root.clone().unwrap_or_else(std::env::temp_dir);
                let make = |owner: Option<u32>| -> Result<TempDir> {
                    let dir = TempDir::new(&parent)
                        .map_err(|e| RewardError::Sandbox(format!("cannot make a run directory: {e}")))?;
                    if let Some(uid) = owner {
                        std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid))
                            .map_err(|e| RewardError::Sandbox(format!("{}: {e}", dir.path().display())))?;
                    }
                    Ok(dir)
                };
                Some((make(users.map(|u| u.0))?, make(users.map(|u| u.1))?))
            }
        };
        let report = self.run_in(program, tests, users, dirs.as_ref().map(|(p, t)| (p.path(), t.path())));
        if let Some((p, t)) = dirs {
            for dir in [p, t] {
                dir.remove().map_err(|e| RewardError::Sandbox(format!("cannot remove a run directory: {e}")))?;
            }
        }
        report
    }

    /// `program`, then `tests`: how it ended.
    pub fn check(&self, program: &str, tests: &str) -> Result<Outcome> {
        Ok(self.run(program, tests)?.outcome)
    }

    fn run_in(
        &self,
        program: &str,
        tests: &str,
        users: Option<(u32, u32)>,
        dirs: Option<(&Path, &Path)>,
    ) -> Result<RunReport> {
        let io_err = |e: std::io::Error| RewardError::Sandbox(format!("cannot set up a run: {e}"));
        let (requests_r, requests_w) = pipe().map_err(io_err)?;
        let (answers_r, answers_w) = pipe().map_err(io_err)?;
        let (verdict_r, verdict_w) = pipe().map_err(io_err)?;
        let fds = vec![(requests_r.as_raw_fd(), 3), (answers_w.as_raw_fd(), 4)];
        let mut program_child = self.spawn(Side::Program, program, users.map(|u| u.0), dirs.map(|d| d.0), fds)?;
        let fds = vec![(requests_w.as_raw_fd(), 3), (answers_r.as_raw_fd(), 4), (verdict_w.as_raw_fd(), 5)];
        let mut tests_child = match self.spawn(Side::Tests, tests, users.map(|u| u.1), dirs.map(|d| d.1), fds) {
            Ok(c) => c,
            Err(e) => {
                end(&mut program_child);
                return Err(e);
            }
        };
        // Only the two processes may hold their ends: end-of-file must reach each of them.
        drop((requests_r, requests_w, answers_r, answers_w, verdict_w));
        let wall = Duration::from_secs_f64(self.cfg.wall_seconds);
        let verdict = File::from(verdict_r);
        let run = monitor::supervise(&mut program_child, &mut tests_child, verdict, wall, self.cfg.output_bytes)
            .map_err(io_err)?;
        let printed = |p: &monitor::Ended| Printed {
            stdout: String::from_utf8_lossy(&p.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&p.stderr).into_owned(),
        };
        Ok(RunReport {
            outcome: outcome::classify(&run),
            program: printed(&run.program),
            tests: printed(&run.tests),
            elapsed: run.elapsed,
        })
    }

    /// Starts one process of a run and hands it its source on stdin.
    fn spawn(
        &self,
        side: Side,
        source: &str,
        user: Option<u32>,
        dir: Option<&Path>,
        fds: Vec<(i32, i32)>,
    ) -> Result<Child> {
        let work = dir.map_or_else(|| PathBuf::from(jail::WORK_DIR), Path::to_path_buf);
        let script = [GUARD, WIRE, if side == Side::Program { PROGRAM } else { HARNESS }].concat();
        let mut cmd = Command::new(&self.python);
        cmd.args(["-I", "-B", "-u", "-X", "utf8", "-c", &script])
            .arg(&work)
            .arg(if self.protections.seccomp { "1" } else { "0" })
            .arg(if self.cfg.audit_hook { "1" } else { "0" })
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &work)
            .env("TMPDIR", &work)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let bad_path = |_| RewardError::Sandbox(format!("{}: NUL in path", work.display()));
        let place = Placement {
            user,
            fs: self.fs.as_ref().map(|fs| fs.for_process(user.unwrap_or(0), self.cfg.disk_bytes)),
            dir: CString::new(work.as_os_str().as_bytes()).map_err(bad_path)?,
            fds,
        };
        confine(&mut cmd, self.limits(), place);
        let mut child = cmd.spawn().map_err(|e| RewardError::Sandbox(format!("{}: {e}", self.python.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A child that already died closes the pipe: its outcome says why, not this write.
            let _ = stdin.write_all(source.as_bytes());
        }
        Ok(child)
    }
}

/// Kills and reaps a process of a run that cannot go on.
fn end(child: &mut Child) {
    // SAFETY: the unreaped child leads its own process group.
    unsafe {
        libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// The interpreter and what of the file system it needs.
struct Interpreter {
    /// The binary itself (`sys.executable`): `python3` in `PATH` may be a wrapper script (pyenv,
    /// conda shims) that forks, which the sandbox would kill.
    executable: PathBuf,
    version: (u32, u32),
    /// Its prefixes and its binary's directory: what the unprivileged user must be able to read.
    installation: Vec<PathBuf>,
}

impl Interpreter {
    fn find(python: &Path) -> Result<Self> {
        let what = || format!("sandbox: python interpreter `{}`", python.display());
        let script = "import sys, json; print(json.dumps([sys.executable, list(sys.version_info[:2]), \
                      [sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix]]))";
        let out = Command::new(python)
            .args(["-I", "-c", script])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| RewardError::Config(format!("{}: {e} (set `python` to its path)", what())))?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(RewardError::Config(format!("{} does not run: {} {}", what(), out.status, err.trim())));
        }
        let (executable, version, prefixes): (PathBuf, (u32, u32), Vec<PathBuf>) = serde_json::from_str(text.trim())
            .map_err(|e| RewardError::Config(format!("{}: unexpected answer `{}`: {e}", what(), text.trim())))?;
        if executable.as_os_str().is_empty() {
            return Err(RewardError::Config(format!("{}: it does not know its own executable", what())));
        }
        let mut installation = prefixes;
        let binary = std::fs::canonicalize(&executable).unwrap_or_else(|_| executable.clone());
        installation.extend(binary.parent().map(Path::to_path_buf));
        Ok(Self { executable, version, installation })
    }
}
