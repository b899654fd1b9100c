//! What a sandboxed process gets before `exec`: its own session (so one `killpg` ends all it
//! started), its pipes, its view of the file system and its user (`jail`), death with its
//! parent, resource limits, an empty network namespace when permitted, and the seccomp filter.
//! Also the host directory a run uses where no private file system can be had.

use super::jail::{become_user, FsPlan};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// Limits applied with `setrlimit` in the child.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChildLimits {
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub file_bytes: u64,
    pub open_files: u64,
    pub network_namespace: bool,
    pub seccomp: bool,
}

/// Where and as whom the child runs, and which of the parent's descriptors it gets.
pub(crate) struct Placement {
    /// A user of its own (see `jail`); `None` keeps the parent's.
    pub user: Option<u32>,
    /// A private, read-only view of the file system; `None` runs in `dir` on the host.
    pub fs: Option<FsPlan>,
    pub dir: CString,
    /// `(parent's descriptor, number in the child)`; the parent's must be above 9 (see `high_fd`).
    pub fds: Vec<(RawFd, RawFd)>,
}

/// Most processes one sandbox user may have (threads count): binds because the user is fresh.
const USER_PROCESSES: u64 = 64;

/// Installs the `pre_exec` hook. Only async-signal-safe calls run in it (the parent may have
/// other threads); the seccomp program is built before forking. A failing seccomp install,
/// mount or user switch is an error (so a probe can tell whether the kernel allows it); an
/// unshare of the network that is not permitted is skipped silently.
pub(crate) fn confine(cmd: &mut Command, limits: ChildLimits, mut place: Placement) {
    let filter = super::seccomp::program();
    // SAFETY: the closure only makes raw syscalls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            for &(from, to) in &place.fds {
                if libc::dup2(from, to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            match place.fs.as_mut() {
                Some(fs) => fs.apply()?,
                None if libc::chdir(place.dir.as_ptr()) != 0 => return Err(io::Error::last_os_error()),
                None => {}
            }
            if limits.network_namespace {
                libc::unshare(libc::CLONE_NEWNET);
            }
            let cpu = limits.cpu_seconds.max(1);
            set_limit(libc::RLIMIT_CPU, cpu, cpu + 1)?;
            set_limit(libc::RLIMIT_AS, limits.memory_bytes, limits.memory_bytes)?;
            set_limit(libc::RLIMIT_FSIZE, limits.file_bytes, limits.file_bytes)?;
            set_limit(libc::RLIMIT_NOFILE, limits.open_files, limits.open_files)?;
            set_limit(libc::RLIMIT_CORE, 0, 0)?;
            if let Some(uid) = place.user {
                set_limit(libc::RLIMIT_NPROC, USER_PROCESSES, USER_PROCESSES)?;
                become_user(uid)?;
            } else if !limits.seccomp {
                // Binds non-root users only (and counts threads); seccomp is the real guard.
                set_limit(libc::RLIMIT_NPROC, 1, 1)?;
            }
            // After the user switch, which clears it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            if limits.seccomp {
                if let Some(filter) = filter.as_ref() {
                    super::seccomp::install(filter)?;
                }
            }
            Ok(())
        });
    }
}

/// `fd` moved above 9, close-on-exec, so that `dup2` onto 3..=9 in the child cannot overwrite
/// a descriptor it still has to copy.
pub(crate) fn high_fd(fd: OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl on a descriptor we own; the result is a new descriptor we then own.
    unsafe {
        let high = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10);
        if high < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(high))
    }
}

/// A pipe `(read, write)`, both ends close-on-exec and above 9.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and ours.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((high_fd(r)?, high_fd(w)?))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
type Resource = libc::c_int;

fn set_limit(resource: Resource, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
    // SAFETY: plain syscall on a stack value.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A fresh private directory, removed (with everything in it) by [`TempDir::remove`] or on drop.
pub(crate) struct TempDir {
    path: Option<PathBuf>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TempDir {
    pub fn new(parent: &Path) -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("rlhf-sandbox-{}-{n}-{:08x}", std::process::id(), random_u64() as u32));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path: Some(path) }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("path is set until removal")
    }

    pub fn remove(mut self) -> io::Result<()> {
        match self.path.take() {
            Some(p) => {
                std::fs::remove_dir_all(&p).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
            }
            None => Ok(()),
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// 64 random bits from the kernel (for nonces and directory names).
pub(crate) fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: writes at most 8 bytes into `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // Not secret-grade then, but still unpredictable enough to make guessing pointless.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32);
    }
    u64::from_ne_bytes(buf)
}
