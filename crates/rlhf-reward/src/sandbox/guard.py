# rlhf sandbox guard: defence in depth inside both sandboxed interpreters, never the boundary.
#
# The boundary is the operating system (a user of its own, a read-only file system, no network,
# seccomp, limits; see mod.rs). This audit hook only makes the common refusals fast and legible:
# it ends the process with exit status 97 at the first forbidden action (a network or process
# operation, a write outside the work directory, ctypes, raising limits, a subinterpreter,
# writing to a device, another process's /proc entries). Code in the same interpreter can
# disarm it (its closure cells are reachable through frames), which is why nothing depends on it.
import builtins
import os
import sys
import traceback


def _rlhf_guard(root, seccomp):
    root = os.path.realpath(root)
    write, exit_, getpid = os.write, os._exit, os.getpid
    realpath, fsdecode, isdir, stat = os.path.realpath, os.fsdecode, os.path.isdir, os.stat
    inside_prefix = root.rstrip(os.sep) + os.sep
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    af_unix = 1
    always = frozenset(
        (
            "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
            "os.startfile", "subprocess.Popen", "resource.setrlimit", "resource.prlimit",
            "fcntl.ioctl", "cpython.PyInterpreterState_New", "os.unshare", "os.setns",
            "gc.get_objects", "gc.get_referrers", "gc.get_referents",
        )
    )
    # Events that change the file system, and how many leading arguments are paths.
    path_events = {
        "os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "os.rename": 2, "os.chmod": 1, "os.chown": 1,
        "os.symlink": 2, "os.link": 2, "os.truncate": 1, "os.utime": 1, "os.setxattr": 1,
        "os.removexattr": 1, "shutil.rmtree": 1,
    }
    blocked_imports = frozenset(("_xxsubinterpreters", "_xxinterpchannels") + (() if seccomp else ("_posixsubprocess",)))

    def deny(what):
        try:
            write(2, b"\nrlhf-sandbox: blocked " + what.encode("utf-8", "replace")[:300] + b"\n")
        finally:
            exit_(97)

    def device(path):
        # os.mknod is not audited: a device node made inside root must not be writable.
        try:
            mode = stat(path).st_mode
        except Exception:
            return False
        return (mode & 0o170000) in (0o060000, 0o020000) and realpath(fsdecode(path)) != "/dev/null"

    def inside(path):
        try:
            p = realpath(fsdecode(path))
        except Exception:
            return False
        return p == root or p.startswith(inside_prefix) or p == "/dev/null"

    own_proc = "/proc/%d" % getpid()

    def other_process(path):
        try:
            p = realpath(fsdecode(path))
        except Exception:
            return True
        parts = p.split(os.sep)
        return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and not (p + os.sep).startswith(own_proc + os.sep)

    def hook(event, args):
        if event == "open":
            path, flags = args[0], args[2]
            if isinstance(path, int):
                return
            if other_process(path):
                deny("open %r: another process's /proc entry" % (path,))
            if (flags or 0) & write_flags:
                if not inside(path):
                    deny("open %r for writing outside the sandbox" % (path,))
                if device(path):
                    deny("open device %r for writing" % (path,))
            elif args[1] is None and not inside(path) and isdir(path):
                deny("os.open of directory %r outside the sandbox" % (path,))
        elif event in path_events:
            for p in args[: path_events[event]]:
                if isinstance(p, int) and event == "os.truncate":
                    continue
                if p is None or isinstance(p, int) or not inside(p):
                    deny("%s %r outside the sandbox" % (event, p))
        elif event in always or event.startswith(("ctypes.", "syslog.")):
            deny(event)
        elif event.startswith("socket."):
            if not (event == "socket.__new__" and len(args) > 1 and args[1] == af_unix):
                deny(event)
        elif event == "os.kill":
            if args[0] not in (0, getpid()):
                deny("os.kill of pid %r" % (args[0],))
        elif event == "os.killpg":
            if args[0] not in (0, getpid()):
                deny("os.killpg of group %r" % (args[0],))
        elif event == "import":
            if args[0] in blocked_imports:
                deny("import " + args[0])

    sys.addaudithook(hook)


def _rlhf_read_source():
    """The code to run arrives on stdin (the parent closes it); stdin is then /dev/null."""
    source = sys.stdin.buffer.read().decode("utf-8")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return source


def _rlhf_report_exception():
    try:
        traceback.print_exc()
    except BaseException:
        os.write(2, b"\nuncaught exception\n")


def _rlhf_flush():
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
