# rlhf sandbox, test side: runs the tests against the program, which lives in another process.
#
# argv: <work dir> <seccomp 0|1> <audit hook 0|1>; stdin: the tests' source; fd 3: requests to the program
# process; fd 4: its answers; fd 5: the verdict, read by the sandbox's parent. The tests see the
# program's top-level names: plain data arrives as values; functions, classes and other objects
# as `RemoteObject` handles whose calls travel to the program and whose results come back as
# values decoded strictly (wire.py). A handle is equal only to itself and has no truth value, so
# an object whose `__eq__` or `__bool__` always says yes cannot satisfy an assert. "passed" is
# written here, after the last test line ran, on a pipe the program process does not hold.
import importlib

_RLHF_REQUESTS, _RLHF_ANSWERS, _RLHF_VERDICT = 3, 4, 5
# Attributes a handle forwards although they look like Python's own (the rest stay local).
_RLHF_FORWARDED_DUNDERS = frozenset(("__name__", "__qualname__", "__doc__", "__module__"))


class ProgramError(Exception):
    """An exception raised in the program whose type is not a built-in one."""


class RemoteObject:
    """An object that stays in the program process."""

    __slots__ = ("_rlhf_id", "_rlhf_type")

    def __call__(self, *args, **kwargs):
        return _rlhf_call(self, args, kwargs)

    def __getattr__(self, name):
        if name.startswith("__") and name not in _RLHF_FORWARDED_DUNDERS:
            raise AttributeError(name)
        return _rlhf_request(("get", ("h", self._rlhf_id), name))

    def __setattr__(self, name, value):
        if name.startswith("_rlhf_"):
            object.__setattr__(self, name, value)
        else:
            _rlhf_request(("set", ("h", self._rlhf_id), name, _rlhf_outgoing(value)))

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    __hash__ = object.__hash__

    def __bool__(self):
        raise TypeError(
            "a %s object from the program has no truth value in the tests (only plain values cross the sandbox)"
            % self._rlhf_type
        )

    def __len__(self):
        n = _rlhf_special(self, "__len__")
        if type(n) is not int:
            raise TypeError("__len__ of a %s returned a %s" % (self._rlhf_type, type(n).__name__))
        return n

    def __getitem__(self, key):
        return _rlhf_special(self, "__getitem__", key)

    def __setitem__(self, key, value):
        _rlhf_special(self, "__setitem__", key, value)

    def __delitem__(self, key):
        _rlhf_special(self, "__delitem__", key)

    def __contains__(self, item):
        found = _rlhf_special(self, "__contains__", item)
        if type(found) is not bool:
            raise TypeError("__contains__ of a %s returned a %s" % (self._rlhf_type, type(found).__name__))
        return found

    def __iter__(self):
        return iter(_rlhf_request(("list", ("h", self._rlhf_id))))

    def __repr__(self):
        return _rlhf_text(self, "repr")

    def __str__(self):
        return _rlhf_text(self, "str")


_rlhf_handles = {}


def _rlhf_incoming(tagged):
    if tagged[0] == "m":
        name = tagged[1] if len(tagged) == 2 else None
        # Only the standard library, imported here: a name from the program is only a name.
        if type(name) is str and name in sys.stdlib_module_names and not name.startswith("_"):
            return importlib.import_module(name)
        raise _RlhfWireError("the program's module %r is not available to the tests" % (name,))
    if len(tagged) != 3 or type(tagged[1]) is not int or type(tagged[2]) is not str:
        raise _RlhfWireError("malformed handle")
    obj = _rlhf_handles.get(tagged[1])
    if obj is None:
        obj = object.__new__(RemoteObject)
        object.__setattr__(obj, "_rlhf_id", tagged[1])
        object.__setattr__(obj, "_rlhf_type", tagged[2][:100])
        _rlhf_handles[tagged[1]] = obj
    return obj


def _rlhf_outgoing(value):
    def handle(obj):
        if type(obj) is RemoteObject:
            return ("h", obj._rlhf_id)
        raise TypeError("a %s cannot be sent to the program (only plain values and its own objects)" % type(obj).__name__)

    return _rlhf_encode(value, handle)


def _rlhf_request(request):
    _rlhf_send(_RLHF_REQUESTS, request)
    answer = _rlhf_receive(_RLHF_ANSWERS)
    if type(answer) is not tuple or not answer:
        raise _RlhfWireError("malformed answer")
    if answer[0] == "raise" and len(answer) == 3 and type(answer[1]) is str and type(answer[2]) is str:
        name, message = answer[1], answer[2]
        builtin = getattr(builtins, name, None)
        if isinstance(builtin, type) and issubclass(builtin, Exception):
            raise builtin(message)
        raise ProgramError("%s: %s" % (name[:100], message))
    if answer[0] == "ok" and len(answer) == 3 and type(answer[2]) is list:
        _rlhf_request.after = answer[2]
        return _rlhf_decode(answer[1], _rlhf_incoming)
    raise _RlhfWireError("malformed answer")


def _rlhf_call(target, args, kwargs):
    request = ("call", ("h", target._rlhf_id), [_rlhf_outgoing(a) for a in args], [(k, _rlhf_outgoing(v)) for k, v in kwargs.items()])
    result = _rlhf_request(request)
    # Arguments the program changed in place (a list it sorted) change here too.
    after = _rlhf_request.after
    if len(after) != len(args):
        raise _RlhfWireError("malformed answer")
    for original, new in zip(args, after):
        if new is None or type(original) not in (list, dict, set, bytearray):
            continue
        new = _rlhf_decode(new, _rlhf_incoming)
        if type(new) is not type(original):
            raise _RlhfWireError("an argument changed type")
        if type(original) in (list, bytearray):
            original[:] = new
        else:
            original.clear()
            original.update(new)
    return result


def _rlhf_special(target, name, *args):
    return _rlhf_request(("special", ("h", target._rlhf_id), name, [_rlhf_outgoing(a) for a in args]))


def _rlhf_text(target, kind):
    text = _rlhf_request(("repr", ("h", target._rlhf_id), kind))
    if type(text) is not str:
        raise _RlhfWireError("repr is not a str")
    return text


def _rlhf_tests_main(argv):
    workdir, seccomp = argv[1], argv[2] == "1"
    source = _rlhf_read_source()
    try:
        # Not dumpable: where both processes share a user, the program cannot open /proc/<pid>/fd
        # or /proc/<pid>/mem of this one (PR_SET_DUMPABLE = 4).
        import ctypes

        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)
    except Exception:
        pass
    if argv[3] == "1":
        _rlhf_guard(workdir, seccomp)
    status = 1
    try:
        hello = _rlhf_receive(_RLHF_ANSWERS)
        if type(hello) is tuple and len(hello) == 2 and hello[0] == "error" and type(hello[1]) is str:
            raise ProgramError(hello[1])
        if type(hello) is not tuple or len(hello) != 2 or hello[0] != "ready" or type(hello[1]) is not list:
            raise _RlhfWireError("malformed greeting")
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        for item in hello[1]:
            if type(item) is not tuple or len(item) != 2 or type(item[0]) is not str:
                raise _RlhfWireError("malformed name")
            try:
                namespace[item[0]] = _rlhf_decode(item[1], _rlhf_incoming)
            except _RlhfWireError:
                pass
        exec(compile(source, "tests.py", "exec"), namespace)
        status = 0
    except MemoryError:
        os.write(2, b"\nMemoryError in the tests\n")
    except SystemExit as e:
        os.write(2, ("\nSystemExit(%r) before the tests finished\n" % (e.code,)).encode())
    except BaseException:
        _rlhf_report_exception()
    _rlhf_flush()
    if status == 0:
        os.write(_RLHF_VERDICT, b"passed\n")
    os._exit(status)


_rlhf_tests_main(sys.argv)
