# rlhf sandbox prelude: runs before untrusted code, in the same interpreter.
#
# argv: <root> <seccomp 0|1> <file>...  (files inside root, executed in order in one namespace)
# stdin: one line, the nonce printed on stdout after the last file ran without error.
#
# An audit hook (it cannot be removed from Python) ends the process with exit status 97 at the
# first forbidden action: a network or process operation, a write outside root, ctypes, raising
# resource limits, a subinterpreter (it would run without this hook), writing to a device,
# another process's /proc entries. Exit status 98 is a MemoryError. The process always ends
# with os._exit, so no user code runs during interpreter finalisation (which clears audit hooks).
import builtins
import os
import sys
import traceback


def _rlhf_sandbox_main(argv):
    root = os.path.realpath(argv[1])
    seccomp = argv[2] == "1"
    nonce = sys.stdin.buffer.readline().strip()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sources = []
    for name in argv[3:]:
        path = os.path.join(root, name)
        with open(path, encoding="utf-8") as f:
            sources.append((path, f.read()))

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

    namespace = {"__name__": "__main__", "__builtins__": builtins}
    sys.addaudithook(hook)
    status = 0
    try:
        for path, source in sources:
            exec(compile(source, path, "exec"), namespace)
    except MemoryError:
        write(2, b"\nMemoryError\n")
        exit_(98)
    except SystemExit as e:
        write(2, ("\nSystemExit(%r) before the tests finished\n" % (e.code,)).encode())
        status = 1
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            write(2, b"\nuncaught exception\n")
        status = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    if status == 0:
        write(1, b"\n" + nonce + b"\n")
    exit_(status)


_rlhf_sandbox_main(sys.argv)
