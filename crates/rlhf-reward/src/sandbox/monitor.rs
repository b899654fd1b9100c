//! Watching a run's two processes from one thread: read their pipes and the verdict pipe without
//! blocking (up to a byte cap), notice exits without reaping, and kill both process groups at
//! the wall-clock limit, at the output cap, and once the tests have ended (stragglers). Killing
//! before reaping means a group id cannot have been reused by an unrelated process.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// Why the sandbox killed the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kill {
    Wall,
    Output,
}

/// One process of a run, as it ended.
pub(crate) struct Ended {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
    /// It ended by itself; otherwise the sandbox killed it (at a limit, or after the tests ended).
    pub by_itself: bool,
}

/// A run: the program process, the test process, and what the tests wrote on the verdict pipe.
pub(crate) struct Captured {
    pub program: Ended,
    pub tests: Ended,
    pub verdict: Vec<u8>,
    pub killed: Option<Kill>,
    pub elapsed: Duration,
}

/// How long the program may take to end by itself once the tests have (it reads end-of-file).
const GRACE: Duration = Duration::from_millis(200);

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

fn file(pipe: Option<impl Into<OwnedFd>>) -> Option<File> {
    pipe.map(|p| File::from(p.into()))
}

/// Runs both processes to the end of the tests under the limits, then reaps them.
pub(crate) fn supervise(
    program: &mut Child,
    tests: &mut Child,
    verdict: File,
    wall: Duration,
    output_cap: usize,
) -> io::Result<Captured> {
    let pids = [program.id() as libc::pid_t, tests.id() as libc::pid_t];
    let start = Instant::now();
    let mut pipes = [
        Pipe::new(file(program.stdout.take()))?,
        Pipe::new(file(program.stderr.take()))?,
        Pipe::new(file(tests.stdout.take()))?,
        Pipe::new(file(tests.stderr.take()))?,
    ];
    let mut verdict = Pipe::new(Some(verdict))?;
    let result = watch(&mut pipes, &mut verdict, pids, start, wall, output_cap);
    let by_itself = pids.map(|p| has_exited(p).unwrap_or(false));
    // Always: end both groups (stragglers, or everything on an error) before reaping the leaders.
    pids.into_iter().for_each(kill_group);
    let statuses = [program.wait()?, tests.wait()?];
    let killed = result?;
    let [p_out, p_err, t_out, t_err] = pipes.map(|p| p.buf);
    let ended = |stdout, stderr, i: usize| Ended { stdout, stderr, status: statuses[i], by_itself: by_itself[i] };
    Ok(Captured {
        program: ended(p_out, p_err, 0),
        tests: ended(t_out, t_err, 1),
        verdict: verdict.buf,
        killed,
        elapsed: start.elapsed(),
    })
}

fn watch(
    pipes: &mut [Pipe<File>; 4],
    verdict: &mut Pipe<File>,
    pids: [libc::pid_t; 2],
    start: Instant,
    wall: Duration,
    cap: usize,
) -> io::Result<Option<Kill>> {
    let over = |pipes: &[Pipe<_>; 4]| pipes.iter().map(|p| p.buf.len()).sum::<usize>() > cap;
    let mut tests_ended: Option<Instant> = None;
    loop {
        let mut fds: Vec<libc::pollfd> = pipes.iter().map(Pipe::pollfd).chain([verdict.pollfd()]).flatten().collect();
        let left = wall.saturating_sub(start.elapsed());
        let ms = left.as_millis().clamp(1, 5) as libc::c_int;
        if fds.is_empty() {
            std::thread::sleep(Duration::from_millis(ms as u64));
        } else {
            // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        }
        for p in pipes.iter_mut() {
            p.drain(cap)?;
        }
        verdict.drain(64)?;
        if over(pipes) {
            return Ok(Some(Kill::Output));
        }
        if tests_ended.is_none() && has_exited(pids[1])? {
            tests_ended = Some(Instant::now());
        }
        if let Some(at) = tests_ended {
            // What they wrote before exiting is in the pipes' buffers.
            if has_exited(pids[0])? || at.elapsed() >= GRACE {
                for p in pipes.iter_mut() {
                    p.drain(cap)?;
                }
                verdict.drain(64)?;
                return Ok(over(pipes).then_some(Kill::Output));
            }
        }
        if start.elapsed() >= wall {
            return Ok(Some(Kill::Wall));
        }
    }
}
