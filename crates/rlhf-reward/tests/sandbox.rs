//! The sandbox against hostile programs: each is stopped with the right outcome, scored 0 with a
//! note, and the verifier keeps going (a correct solution right after it still scores 1).
#![cfg(target_os = "linux")]

mod common;
use common::outside_tmp;

use rlhf_reward::{CodeConfig, CodeVerifier, Outcome, RewardSource, Sample, Sandbox, SandboxConfig};
use std::time::Instant;

fn config() -> SandboxConfig {
    SandboxConfig { wall_seconds: 2.0, cpu_seconds: 2, ..SandboxConfig::default() }
}

fn sandbox() -> Sandbox {
    Sandbox::new(config()).expect("python3 runs in the sandbox")
}

const GOOD: &str = "def add(a, b):\n    return a + b\n";
const TESTS: &str = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n";

fn check(code: &str) -> Outcome {
    let t = Instant::now();
    let outcome = sandbox().check(code, TESTS).unwrap();
    let s = t.elapsed().as_secs_f64();
    eprintln!("{:>6.3} s  {:<40} {}", s, outcome.summary(), code.lines().last().unwrap_or(""));
    assert!(s < 5.0, "took {s} s");
    outcome
}

#[test]
fn probe_reports_protections() {
    let p = sandbox().protections();
    eprintln!("{p:?}");
    assert!(p.python_version >= (3, 10));
    // SAFETY: plain system call.
    if unsafe { libc::geteuid() } == 0 {
        // As root (as CI runs) every layer must hold.
        assert!(p.separate_users && p.private_filesystem && p.seccomp && p.network_namespace, "{p:?}");
        assert!(p.missing(&config()).is_empty());
    } else {
        eprintln!("not root: missing {:?}", p.missing(&config()));
    }
}

#[test]
fn correct_and_wrong_solutions() {
    assert_eq!(check(GOOD), Outcome::Passed);
    let wrong = check("def add(a, b):\n    return a - b\n");
    assert!(matches!(&wrong, Outcome::Failed { stderr_tail } if stderr_tail.contains("AssertionError")), "{wrong:?}");
    assert!(matches!(check("def add(a, b) return"), Outcome::Failed { .. }));
    let report = sandbox().run("print('hi')\n", "import sys\nprint('err', file=sys.stderr)\n").unwrap();
    assert_eq!(report.outcome, Outcome::Passed);
    assert_eq!((report.program.stdout.as_str(), report.program.stderr.as_str()), ("hi\n", ""));
    assert_eq!((report.tests.stdout.as_str(), report.tests.stderr.as_str()), ("", "err\n"));
}

#[test]
fn exiting_early_is_not_a_pass() {
    for code in ["import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit\n"] {
        let o = check(&format!("{GOOD}{code}"));
        assert!(matches!(o, Outcome::Failed { .. }), "{code}: {o:?}");
    }
}

#[test]
fn infinite_loop_times_out() {
    assert_eq!(check("while True:\n    pass\n"), Outcome::Timeout);
    assert_eq!(check("import time\ntime.sleep(60)\n"), Outcome::Timeout);
}

#[test]
fn process_creation_is_blocked() {
    for code in [
        "import os\nwhile True:\n    os.fork()\n",
        "import subprocess\nsubprocess.Popen(['sleep', '30'])\n",
        "import os\nos.system('sleep 30')\n",
        "import os\nos.execv('/bin/sh', ['sh', '-c', 'sleep 30'])\n",
        "import os\nos.posix_spawn('/bin/sleep', ['sleep', '30'], {})\n",
        "import multiprocessing\nmultiprocessing.Process(target=print).start()\n",
        // Below the audit hook: only seccomp (or the refused import) stops it.
        "import _posixsubprocess, os\nr, w = os.pipe()\n_posixsubprocess.fork_exec(['/bin/sleep', '30'], [b'/bin/sleep'], True, (w,), None, None, -1, -1, -1, -1, -1, -1, r, w, False, False, -1, None, None, None, -1, None, False)\n",
        "import ctypes\nctypes.CDLL(None).fork()\n",
    ] {
        let o = check(code);
        assert!(matches!(o, Outcome::Blocked { .. }), "{code}: {o:?}");
    }
}

#[test]
fn network_is_blocked() {
    for code in [
        "import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\n",
        "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))\n",
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n",
    ] {
        let o = check(code);
        assert!(matches!(o, Outcome::Blocked { .. }), "{code}: {o:?}");
    }
    // The audit hook lets a Unix socket be made; seccomp refuses it.
    let o = check("import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('/run/nothing.sock')\n");
    assert!(matches!(&o, Outcome::Failed { stderr_tail } if stderr_tail.contains("PermissionError")), "{o:?}");
}

#[test]
fn writes_outside_the_directory_are_blocked() {
    // Not under /tmp: with a private file system the sandbox's /tmp is its own.
    let target = outside_tmp().join(format!("outside_{:x}", std::process::id() as u64 * 7919 + 13));
    let t = target.display();
    for code in [
        format!("open('{t}', 'w').write('x')\n"),
        format!("import os\nos.close(os.open('{t}', os.O_WRONLY | os.O_CREAT))\n"),
        format!("import pathlib\npathlib.Path('{t}').write_text('x')\n"),
        format!("import os\nos.symlink('{t}', 'link')\nopen('link', 'w').write('x')\n"),
        format!("import os\nos.mkdir('{t}')\n"),
        "import os\nfd = os.open('/', os.O_RDONLY)\nos.open('etc_x', os.O_WRONLY | os.O_CREAT, dir_fd=fd)\n"
            .to_string(),
        "import os\nos.chmod('/etc/hostname', 0o777)\n".to_string(),
        "import os\nos.kill(os.getppid(), 9)\n".to_string(),
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n".to_string(),
    ] {
        let o = check(&code);
        assert!(matches!(o, Outcome::Blocked { .. }), "{code}: {o:?}");
        assert!(!target.exists(), "{code}: {t} was written");
    }
    // Inside the directory (and its temp files) is fine.
    let inside =
        "import tempfile\nopen('data.txt', 'w').write('x')\nwith tempfile.TemporaryFile() as f:\n    f.write(b'y')\n";
    assert_eq!(check(&format!("{GOOD}{inside}")), Outcome::Passed);
}

#[test]
fn output_and_memory_limits() {
    assert_eq!(check("print('x' * 100_000_000)\n"), Outcome::OutputLimit);
    assert_eq!(check("while True:\n    print('y' * 1000)\n"), Outcome::OutputLimit);
    assert_eq!(check("x = bytearray(4 * 1024 ** 3)\n"), Outcome::MemoryLimit);
    assert_eq!(check("x = [0] * (600 * 1024 ** 2)\n"), Outcome::MemoryLimit);
}

#[test]
fn run_directories_are_removed() {
    let root = std::env::temp_dir().join(format!("rlhf-sandbox-test-root-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    // Host directories are used only without a private file system.
    let sb =
        Sandbox::new(SandboxConfig { temp_root: Some(root.clone()), private_filesystem: false, ..config() }).unwrap();
    assert!(!sb.protections().private_filesystem);
    assert_eq!(sb.check(&format!("{GOOD}open('f', 'w').write('z')\n"), TESTS).unwrap(), Outcome::Passed);
    assert_eq!(sb.check("while True: pass\n", TESTS).unwrap(), Outcome::Timeout);
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    std::fs::remove_dir(&root).unwrap();
}

#[test]
fn verifier_scores_hostile_programs_zero_and_keeps_going() {
    let hostile = [
        ("timeout", "while True:\n    pass\n"),
        ("blocked", "import os\nwhile True:\n    os.fork()\n"),
        ("blocked", "import subprocess\nsubprocess.Popen(['true'])\n"),
        ("blocked", "import socket\nsocket.create_connection(('127.0.0.1', 9))\n"),
        ("blocked", "open('/etc/outside_rlhf_verifier', 'w').write('x')\n"),
        ("output_limit", "print('x' * 100_000_000)\n"),
        ("memory_limit", "x = bytearray(4 * 1024 ** 3)\n"),
    ];
    let mut responses = Vec::new();
    for (_, code) in hostile {
        responses.push(format!("```python\n{code}```\n"));
        responses.push(format!("Here you go:\n```python\n{GOOD}```\n"));
    }
    let samples: Vec<Sample> = responses
        .iter()
        .map(|r| Sample {
            prompt: "",
            response: r,
            prompt_ids: &[],
            response_ids: &[],
            answer: None,
            tests: Some(TESTS),
            finished: true,
        })
        .collect();
    let mut v = CodeVerifier::new(CodeConfig { threads: 2, sandbox: config(), ..CodeConfig::default() }).unwrap();
    let t = Instant::now();
    let scores = v.score(&samples).unwrap();
    eprintln!("{} programs in {:.2} s", samples.len(), t.elapsed().as_secs_f64());
    for (i, (kind, _)) in hostile.iter().enumerate() {
        let (bad, good) = (&scores[2 * i], &scores[2 * i + 1]);
        assert_eq!(bad.value, Some(0.0), "{kind}: {bad:?}");
        assert!(bad.note.as_deref().unwrap().starts_with(kind), "{kind}: {bad:?}");
        assert_eq!(good.value, Some(1.0), "after {kind}: {good:?}");
    }
    assert!(!std::path::Path::new("/etc/outside_rlhf_verifier").exists());
    let no_tests = Sample { tests: None, ..samples[1] };
    assert_eq!(v.score(&[no_tests]).unwrap()[0].value, None);
}

#[test]
fn threads_still_work_under_seccomp() {
    let code = "import threading\nfrom concurrent.futures import ThreadPoolExecutor\n\
                t = threading.Thread(target=lambda: None)\nt.start()\nt.join()\n\
                with ThreadPoolExecutor(4) as ex:\n    assert list(ex.map(abs, [-1, -2])) == [1, 2]\n";
    assert_eq!(check(&format!("{GOOD}{code}")), Outcome::Passed);
}

#[test]
fn without_seccomp_the_hook_refuses_the_raw_fork_path() {
    let sb = Sandbox::new(SandboxConfig { seccomp: false, ..config() }).unwrap();
    assert!(!sb.protections().seccomp);
    let o = sb.check("import _posixsubprocess\n", TESTS).unwrap();
    assert_eq!(o, Outcome::Blocked { what: "import _posixsubprocess".into() });
    let o = sb.check("import os\nos.fork()\n", TESTS).unwrap();
    assert_eq!(o, Outcome::Blocked { what: "os.fork".into() });
    assert_eq!(sb.check(GOOD, TESTS).unwrap(), Outcome::Passed);
}

#[test]
fn many_runs_reuse_one_sandbox() {
    let sb = sandbox();
    let t = Instant::now();
    for _ in 0..10 {
        assert_eq!(sb.check(GOOD, TESTS).unwrap(), Outcome::Passed);
    }
    eprintln!("one run: {:.1} ms", t.elapsed().as_secs_f64() * 100.0);
}

#[test]
fn what_root_could_abuse_is_blocked() {
    for code in [
        // Signalling the parent (the trainer) through a pidfd: no audit event, seccomp only.
        "import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(os.getppid()), signal.SIGKILL)\n",
        "import os, stat\nos.mknod('disk', stat.S_IFBLK | 0o600, os.makedev(8, 0))\n",
        "import os\nprint(open('/proc/%d/environ' % os.getppid()).read())\n",
        "import os\nos.chroot('.')\n",
        "import os\nos.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))\n",
    ] {
        let o = check(code);
        assert!(matches!(o, Outcome::Blocked { .. }), "{code}: {o:?}");
    }
    // Reading its own /proc entries and ordinary files is fine.
    let own = "import os\nopen('/proc/self/status').read()\nopen('/proc/%d/stat' % os.getpid()).read()\n";
    assert_eq!(check(&format!("{GOOD}{own}")), Outcome::Passed);
}

#[test]
fn cpu_time_limit_is_a_timeout() {
    let sb = Sandbox::new(SandboxConfig { wall_seconds: 10.0, cpu_seconds: 1, ..config() }).unwrap();
    let t = Instant::now();
    assert_eq!(sb.check("while True:\n    pass\n", TESTS).unwrap(), Outcome::Timeout);
    assert!(t.elapsed().as_secs_f64() < 3.0, "{:?}", t.elapsed());
}

#[test]
fn file_size_limit_fails_the_write() {
    let sb = Sandbox::new(SandboxConfig { file_bytes: 1 << 20, ..config() }).unwrap();
    let o = sb.check("open('big', 'wb').write(b'x' * (4 << 20))\n", TESTS).unwrap();
    assert!(matches!(&o, Outcome::Failed { stderr_tail } if stderr_tail.contains("File too large")), "{o:?}");
}

#[test]
fn without_os_layers_the_hook_refuses_device_nodes() {
    // As root with no other layer, mknod works: only the audit hook is left to refuse.
    let cfg = SandboxConfig { seccomp: false, separate_users: false, private_filesystem: false, ..config() };
    let sb = Sandbox::new(cfg).unwrap();
    // /dev/zero as a character device made inside the directory (mknod is not audited).
    let code = "import os, stat\nos.mknod('z', stat.S_IFCHR | 0o600, os.makedev(1, 5))\nopen('z', 'wb').write(b'x')\n";
    let o = sb.check(code, TESTS).unwrap();
    // SAFETY: plain system call.
    if unsafe { libc::geteuid() } == 0 {
        assert!(matches!(&o, Outcome::Blocked { what } if what.starts_with("open device")), "{o:?}");
    } else {
        // Not root: the kernel refuses the mknod itself.
        assert!(matches!(&o, Outcome::Failed { stderr_tail } if stderr_tail.contains("PermissionError")), "{o:?}");
    }
}
