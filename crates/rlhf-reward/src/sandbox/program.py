# rlhf sandbox, program side: runs the untrusted program, then answers the test process.
#
# argv: <work dir> <seccomp 0|1> <audit hook 0|1>; stdin: the program's source; fd 3: requests from the test
# process; fd 4: answers to it. Nothing here is trusted by anyone: the program may rewrite all
# of it. It holds no secret and decides no verdict; what it sends is decoded strictly on the
# other side. Exit status 98 is a MemoryError.
import types

_RLHF_REQUESTS, _RLHF_ANSWERS = 3, 4


def _rlhf_program_main(argv):
    workdir, seccomp = argv[1], argv[2] == "1"
    source = _rlhf_read_source()
    handles = []

    def handle(obj):
        if type(obj) is types.ModuleType:
            return ("m", obj.__name__)
        handles.append(obj)
        return ("h", len(handles) - 1, type(obj).__name__)

    def unhandle(tagged):
        if tagged[0] == "h" and len(tagged) >= 2 and type(tagged[1]) is int and 0 <= tagged[1] < len(handles):
            return handles[tagged[1]]
        raise _RlhfWireError("unknown handle")

    def encode(x):
        return _rlhf_encode(x, handle)

    if argv[3] == "1":
        _rlhf_guard(workdir, seccomp)
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        exec(compile(source, "solution.py", "exec"), namespace)
    except MemoryError:
        os.write(2, b"\nMemoryError\n")
        os._exit(98)
    except BaseException as e:
        _rlhf_report_exception()
        _rlhf_flush()
        what = "SystemExit(%r)" % (e.code,) if isinstance(e, SystemExit) else "%s: %s" % (type(e).__name__, e)
        _rlhf_send(_RLHF_ANSWERS, ("error", "the program failed before the tests ran: " + what[:2000]))
        os._exit(1)
    try:
        ready = ("ready", [(k, encode(v)) for k, v in namespace.items() if not k.startswith("__")])
    except BaseException as e:
        ready = ("error", "the program's names cannot be sent: %s" % type(e).__name__)
    _rlhf_flush()
    _rlhf_send(_RLHF_ANSWERS, ready)

    mutable = (list, dict, set, bytearray)
    while True:
        try:
            request = _rlhf_receive(_RLHF_REQUESTS)
        except _RlhfWireError:
            _rlhf_flush()
            os._exit(0)
        try:
            kind, ref = request[0], request[1]
            obj = unhandle(ref)
            if kind == "call":
                args = [_rlhf_decode(a, unhandle) for a in request[2]]
                kwargs = {k: _rlhf_decode(v, unhandle) for k, v in request[3]}
                result = obj(*args, **kwargs)
                after = [encode(a) if type(a) in mutable else None for a in args]
                answer = ("ok", encode(result), after)
            elif kind == "special":
                args = [_rlhf_decode(a, unhandle) for a in request[3]]
                method = getattr(type(obj), request[2], None)
                if method is None:
                    # As Python says it, so len()/list() on the test side behave as usual.
                    raise TypeError("%s object has no %s" % (type(obj).__name__, request[2]))
                answer = ("ok", encode(method(obj, *args)), [])
            elif kind == "get":
                answer = ("ok", encode(getattr(obj, request[2])), [])
            elif kind == "set":
                setattr(obj, request[2], _rlhf_decode(request[3], unhandle))
                answer = ("ok", None, [])
            elif kind == "list":
                answer = ("ok", encode(list(obj)), [])
            elif kind == "repr":
                answer = ("ok", repr(obj) if request[2] == "repr" else str(obj), [])
            else:
                raise _RlhfWireError("unknown request %r" % (kind,))
        except MemoryError:
            os.write(2, b"\nMemoryError\n")
            os._exit(98)
        except BaseException as e:
            try:
                message = str(e)[:2000]
            except BaseException:
                message = "(unprintable)"
            answer = ("raise", type(e).__name__, message)
        _rlhf_flush()
        _rlhf_send(_RLHF_ANSWERS, answer)


_rlhf_program_main(sys.argv)
