//! Watching a sandboxed process from one thread: read both pipes without blocking (up to a byte
//! cap), notice its exit without reaping it, and kill its whole process group at the wall-clock
//! limit, at the output cap, and after it exits (stragglers). Killing before reaping means the
//! group id cannot have been reused by an unrelated process.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Why the sandbox killed the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kill {
    Wall,
    Output,
}

pub(crate) struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
    pub killed: Option<Kill>,
    pub elapsed: Duration,
}

struct Pipe<R> {
    reader: Option<R>,
    buf: Vec<u8>,
}

impl<R: Read + AsRawFd> Pipe<R> {
    fn new(reader: Option<R>) -> io::Result<Self> {
        if let Some(r) = &reader {
            let fd = r.as_raw_fd();
            // SAFETY: fcntl on a pipe fd we own.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(Self { reader, buf: Vec::new() })
    }

    /// Reads what is available, stopping once `room` bytes are exceeded.
    fn drain(&mut self, room: usize) -> io::Result<()> {
        let Some(r) = self.reader.as_mut() else { return Ok(()) };
        let mut chunk = [0u8; 65536];
        while self.buf.len() <= room {
            match r.read(&mut chunk) {
                Ok(0) => {
                    self.reader = None;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn pollfd(&self) -> Option<libc::pollfd> {
        self.reader.as_ref().map(|r| libc::pollfd { fd: r.as_raw_fd(), events: libc::POLLIN, revents: 0 })
    }
}

/// True once `pid` has exited; it stays a zombie (not reaped) so its group id stays taken.
fn has_exited(pid: libc::pid_t) -> io::Result<bool> {
    // SAFETY: waitid writes into a zeroed siginfo_t we own.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        if libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(info.si_pid() != 0)
    }
}

fn kill_group(pid: libc::pid_t) {
    // SAFETY: the group leader `pid` is our unreaped child, so the group id is still ours.
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
    }
}

/// Runs the child to its end under the limits, then reaps it.
pub(crate) fn supervise(child: &mut Child, wall: Duration, output_cap: usize) -> io::Result<Captured> {
    let pid = child.id() as libc::pid_t;
    let start = Instant::now();
    let result = watch(child, pid, start, wall, output_cap);
    // Always: end the group (stragglers, or everything on an error) before reaping the leader.
    kill_group(pid);
    let status = child.wait()?;
    let (stdout, stderr, killed) = result?;
    Ok(Captured { stdout, stderr, status, killed, elapsed: start.elapsed() })
}

type Watched = (Vec<u8>, Vec<u8>, Option<Kill>);

fn watch(child: &mut Child, pid: libc::pid_t, start: Instant, wall: Duration, cap: usize) -> io::Result<Watched> {
    let mut out = Pipe::new(child.stdout.take())?;
    let mut err = Pipe::new(child.stderr.take())?;
    let over = |out: &Pipe<_>, err: &Pipe<_>| out.buf.len() + err.buf.len() > cap;
    let killed = loop {
        let mut fds: Vec<libc::pollfd> = [out.pollfd(), err.pollfd()].into_iter().flatten().collect();
        let left = wall.saturating_sub(start.elapsed());
        let ms = left.as_millis().clamp(1, 5) as libc::c_int;
        if fds.is_empty() {
            std::thread::sleep(Duration::from_millis(ms as u64));
        } else {
            // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        }
        out.drain(cap)?;
        err.drain(cap)?;
        if over(&out, &err) {
            break Some(Kill::Output);
        }
        if has_exited(pid)? {
            // What it wrote before exiting is in the pipes' buffers.
            out.drain(cap)?;
            err.drain(cap)?;
            break over(&out, &err).then_some(Kill::Output);
        }
        if start.elapsed() >= wall {
            break Some(Kill::Wall);
        }
    };
    if killed.is_some() {
        kill_group(pid);
    }
    Ok((out.buf, err.buf, killed))
}
