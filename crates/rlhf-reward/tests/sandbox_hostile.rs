//! Hostile programs against the sandbox, each run twice: with the audit hook (as configured by
//! default) and without it, where the operating system's layers stand alone (root only, as CI
//! runs; elsewhere those layers are not there and the second half is skipped with a note). Every
//! program must score 0 and leave the host as it was: a world-writable directory with a file in
//! it, a root-only secret, a Unix socket and a TCP port listening, and this process alive.
#![cfg(target_os = "linux")]

mod common;
use common::outside_tmp;

use rlhf_reward::{CodeConfig, CodeVerifier, Outcome, RewardSource, Sample, Sandbox, SandboxConfig};
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::Instant;

const WRONG: &str = "\ndef add(a, b):\n    return a - b\n";
const TESTS: &str = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n";

/// What a program could touch on the host.
struct Host {
    dir: PathBuf,
    keep: PathBuf,
    secret: PathBuf,
    secret_text: String,
    unix: UnixListener,
    tcp: TcpListener,
}

impl Host {
    fn new(name: &str) -> Self {
        let dir = outside_tmp().join(format!("hostile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let keep = dir.join("keep.txt");
        std::fs::write(&keep, "keep").unwrap();
        std::fs::set_permissions(&keep, std::fs::Permissions::from_mode(0o666)).unwrap();
        let secret = dir.join("secret.txt");
        let secret_text = format!("s3cret-{}", std::process::id());
        std::fs::write(&secret, &secret_text).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let sock = dir.join("host.sock");
        let unix = UnixListener::bind(&sock).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
        unix.set_nonblocking(true).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        tcp.set_nonblocking(true).unwrap();
        Self { dir, keep, secret, secret_text, unix, tcp }
    }

    /// Fills `{dir}`, `{keep}`, `{secret}`, `{sock}`, `{port}` in a program.
    fn fill(&self, code: &str) -> String {
        code.replace("{dir}", &self.dir.display().to_string())
            .replace("{keep}", &self.keep.display().to_string())
            .replace("{secret}", &self.secret.display().to_string())
            .replace("{sock}", &self.dir.join("host.sock").display().to_string())
            .replace("{port}", &self.tcp.local_addr().unwrap().port().to_string())
    }

    fn assert_untouched(&self, what: &str) {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["host.sock", "keep.txt", "secret.txt"], "{what}: files changed");
        assert_eq!(std::fs::read_to_string(&self.keep).unwrap(), "keep", "{what}");
        let mode = |p: &PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!((mode(&self.keep), mode(&self.secret)), (0o666, 0o600), "{what}");
        assert_eq!(self.unix.accept().map(|_| ()).unwrap_err().kind(), ErrorKind::WouldBlock, "{what}: unix");
        assert_eq!(self.tcp.accept().map(|_| ()).unwrap_err().kind(), ErrorKind::WouldBlock, "{what}: tcp");
    }
}

/// The attacks: a name and a program (a wrong `add` is appended to those that define none).
const ATTACKS: &[(&str, &str)] = &[
    (
        "walk the frames and stub out every harness function",
        r#"
import sys
f = sys._getframe()
while f is not None:
    print(sorted(f.f_locals))
    for k, v in list(f.f_globals.items()):
        if k.startswith('_rlhf') and callable(v):
            f.f_globals[k] = lambda *a, **kw: None
    f = f.f_back
"#,
    ),
    (
        "forge the verdict on every descriptor and on stdout",
        r#"
import os
for fd in range(3, 64):
    try:
        os.write(fd, b'passed\n')
    except OSError:
        pass
print('passed')
os.write(1, b'\npassed\n')
"#,
    ),
    (
        "write the verdict into the test process through /proc",
        r#"
import os
for pid in os.listdir('/proc'):
    if not pid.isdigit() or int(pid) == os.getpid():
        continue
    try:
        if 'python' not in open('/proc/%s/comm' % pid).read():
            continue
    except OSError:
        continue
    for fd in range(3, 8):
        try:
            w = os.open('/proc/%s/fd/%d' % (pid, fd), os.O_WRONLY | os.O_NONBLOCK)
            os.write(w, b'passed\n')
            os.close(w)
        except OSError:
            pass
"#,
    ),
    ("exit 0 before the tests", "import os\nos._exit(0)\n"),
    (
        "kill every other python process (the test process among them) and the trainer",
        r#"
import os
for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
    try:
        if int(pid) != os.getpid() and 'python' in open('/proc/%s/comm' % pid).read():
            os.kill(int(pid), 9)
    except OSError:
        pass
try:
    os.kill(os.getppid(), 9)
except OSError:
    pass
"#,
    ),
    (
        "always-equal and always-true objects",
        r#"
class E:
    def __eq__(self, other):
        return True
    def __bool__(self):
        return True
    __hash__ = None
class I(int):
    def __eq__(self, other):
        return True
def add(a, b):
    return E() if a > 0 else I(7)
"#,
    ),
    (
        "write, delete, chmod, rename and link outside",
        r#"
import os
for f in [lambda: open('{keep}', 'w').write('pwned'), lambda: open('{dir}/new.txt', 'w').write('x'),
          lambda: os.remove('{keep}'), lambda: os.chmod('{keep}', 0o777), lambda: os.chmod('{secret}', 0o666),
          lambda: os.rename('{keep}', '{dir}/moved'), lambda: os.symlink('/etc/passwd', '{dir}/ln'),
          lambda: os.mkdir('{dir}/d'), lambda: os.truncate('{keep}', 0)]:
    try:
        f()
    except OSError:
        pass
"#,
    ),
    (
        "read the root-only secret and the trainer's environment",
        r#"
import os
for p in ['{secret}', '/proc/%d/environ' % os.getppid()]:
    try:
        print(open(p).read())
    except OSError:
        pass
"#,
    ),
    (
        "connect to the host's Unix socket and TCP port",
        r#"
import socket
for family, addr in [(socket.AF_UNIX, '{sock}'), (socket.AF_INET, ('127.0.0.1', {port}))]:
    try:
        s = socket.socket(family)
        s.connect(addr)
        s.sendall(b'x')
    except OSError:
        pass
"#,
    ),
    (
        "ctypes: write a file with the C library, then fork",
        r#"
import ctypes
libc = ctypes.CDLL(None)
fd = libc.open(b'{dir}/ctypes.txt', 0o101, 0o666)
libc.write(fd, b'x', 1)
libc.fork()
"#,
    ),
    ("fork", "import os\nos.fork()\n"),
    (
        "raw process creation below the audit hook",
        r#"
import _posixsubprocess, os
r, w = os.pipe()
_posixsubprocess.fork_exec(['/bin/sh', '-c', 'touch {dir}/sh.txt'], [b'/bin/sh'], True, (w,), None, None,
                           -1, -1, -1, -1, -1, -1, r, w, False, False, -1, None, None, None, -1, None, False)
"#,
    ),
    ("exhaust memory", "x = bytearray(4 * 1024 ** 3)\n"),
    ("exhaust CPU", "while True:\n    pass\n"),
    ("exhaust the disk", "i = 0\nwhile True:\n    open('f%d' % i, 'wb').write(b'x' * (1 << 20))\n    i += 1\n"),
    ("exhaust output", "while True:\n    print('y' * 1000)\n"),
];

fn config(audit_hook: bool) -> SandboxConfig {
    SandboxConfig { wall_seconds: 2.0, cpu_seconds: 2, audit_hook, ..SandboxConfig::default() }
}

fn is_root() -> bool {
    // SAFETY: plain system call.
    unsafe { libc::geteuid() == 0 }
}

fn attack_with(audit_hook: bool) {
    let sandbox = Sandbox::new(config(audit_hook)).unwrap();
    let host = Host::new(if audit_hook { "hook" } else { "os" });
    // Each attack also against tests that only ask for truth, which an always-true object meets.
    let tests = format!("{TESTS}assert add(2, 3)\n");
    for (name, code) in ATTACKS {
        let wrong = if code.contains("def add") { "" } else { WRONG };
        let program = host.fill(&format!("{code}{wrong}"));
        let t = Instant::now();
        let report = sandbox.run(&program, &tests).unwrap();
        let s = t.elapsed().as_secs_f64();
        eprintln!("hook {audit_hook:<5} {s:>6.3} s  {:<45} {name}", report.outcome.summary());
        assert!(!report.outcome.passed(), "{name}: {report:?}");
        assert!(s < 5.0, "{name}: took {s} s");
        assert!(!report.program.stdout.contains(&host.secret_text), "{name}: the secret leaked");
        host.assert_untouched(name);
    }
    // Scored by the verifier (as a trainer would), the attacks alone get reward 0 too.
    let mut verifier =
        CodeVerifier::new(CodeConfig { threads: 2, sandbox: config(audit_hook), ..CodeConfig::default() }).unwrap();
    let responses: Vec<String> = ATTACKS.iter().map(|(_, code)| host.fill(code)).collect();
    let blank = Sample {
        prompt: "",
        response: "",
        prompt_ids: &[],
        response_ids: &[],
        answer: None,
        tests: Some(&tests),
        finished: true,
    };
    let samples: Vec<Sample> = responses.iter().map(|r| Sample { response: r, ..blank }).collect();
    for (score, (name, _)) in verifier.score(&samples).unwrap().iter().zip(ATTACKS) {
        assert_eq!(score.value, Some(0.0), "{name}: {score:?}");
    }
    host.assert_untouched("verifier");
    std::fs::remove_dir_all(&host.dir).unwrap();
}

#[test]
fn hostile_programs_score_zero_with_the_audit_hook() {
    attack_with(true);
}

#[test]
fn hostile_programs_score_zero_on_the_os_layers_alone() {
    if !is_root() {
        eprintln!("skipped: not root, so the sandbox has no user or file system of its own here");
        return;
    }
    assert!(Sandbox::new(config(false)).unwrap().protections().missing(&config(false)).is_empty());
    attack_with(false);
}

#[test]
fn values_cross_the_boundary_faithfully() {
    let sandbox = Sandbox::new(config(true)).unwrap();
    let program = r#"
import math
LIMIT = 10
class Stack:
    def __init__(self):
        self.items = []
    def push(self, x):
        self.items.append(x)
    def pop(self):
        return self.items.pop()
    def __len__(self):
        return len(self.items)
def echo(*args, **kwargs):
    return args, kwargs
def sort_in_place(xs):
    xs.sort()
def fail(kind):
    raise {'value': ValueError, 'key': KeyError}[kind]('no')
def gen(n):
    return (i * i for i in range(n))
"#;
    let tests = r#"
import math
values = [None, True, 0, -5, 2 ** 100, 1.5, float('inf'), -0.0, 1e-310, 2j, 'é\x00', b'\xff', bytearray(b'ab'),
          [1, [2]], (3,), {1, 2}, frozenset({4}), {'a': [1.5]}, {(1, 2): None}]
args, kwargs = echo(*values, key=values)
assert list(args) == values and kwargs == {'key': values}, (args, kwargs)
assert [type(v) for v in args] == [type(v) for v in values]
assert math.copysign(1.0, args[7]) == -1.0
nan = echo(float('nan'))[0][0]
assert nan != nan
s = Stack()
s.push(1)
s.push('two')
assert len(s) == 2 and s.pop() == 'two' and s.items == [1]
assert s == s and s != Stack()
xs = [3, 1, 2]
sort_in_place(xs)
assert xs == [1, 2, 3]
for kind, exc in [('value', ValueError), ('key', KeyError)]:
    try:
        fail(kind)
        raise AssertionError('no exception')
    except exc:
        pass
assert list(gen(4)) == [0, 1, 4, 9]
assert LIMIT == 10 and math.pi > 3
try:
    echo(lambda: 1)
    raise AssertionError('a function crossed')
except TypeError:
    pass
"#;
    let report = sandbox.run(program, tests).unwrap();
    assert_eq!(report.outcome, Outcome::Passed, "{report:?}");
}

#[test]
fn the_program_sees_no_host_secrets() {
    if !is_root() {
        eprintln!("skipped: not root");
        return;
    }
    let sandbox = Sandbox::new(config(false)).unwrap();
    let program = "import os\nprint(sorted(os.listdir('/root')), sorted(os.listdir('/tmp')), os.getuid(), os.access('/etc', os.W_OK))\n";
    let report = sandbox.run(program, "pass\n").unwrap();
    assert_eq!(report.outcome, Outcome::Passed, "{report:?}");
    let out = report.program.stdout;
    eprintln!("{out}");
    // /root holds only the way to the interpreter (when the interpreter lives there at all).
    let visible: Vec<String> =
        std::fs::read_dir("/root").unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let leaked: Vec<&String> = visible.iter().filter(|n| *n != ".pyenv" && out.contains(&format!("'{n}'"))).collect();
    assert!(leaked.is_empty(), "/root entries visible in the sandbox: {leaked:?}");
    assert!(out.contains("[] "), "the sandbox's /tmp is not empty: {out}");
    assert!(out.trim_end().ends_with("False"), "/etc is writable: {out}");
}
