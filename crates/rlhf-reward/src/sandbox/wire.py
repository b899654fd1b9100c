# rlhf sandbox wire format, between the program process and the test process.
#
# A message is an 8-byte little-endian length and the repr() of a tagged value. The receiver
# parses it with ast.literal_eval (literals only: no code runs) and then `_rlhf_decode` accepts
# nothing but the shapes below, so what the test process holds afterwards is plain built-in data
# (or an opaque handle): its `==`, `bool`, `hash` are Python's own, never the program's.
#   None, bool, int, str, bytes      as themselves
#   ("f", hex) ("c", hex, hex)       float, complex (exact, NaN and inf included)
#   ("l", [..]) ("t", [..]) ("s", [..]) ("fs", [..]) ("ba", bytes)   list, tuple, set, frozenset, bytearray
#   ("d", [(k, v), ..])              dict, in order
#   ("h", id, type name)             any other object: it stays in the program process
#   ("m", name)                      a module
import ast
import struct

_RLHF_MAX_MESSAGE = 64 << 20
_RLHF_SCALARS = (type(None), bool, int, str, bytes)


class _RlhfWireError(Exception):
    pass


def _rlhf_read_exact(fd, n):
    parts = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise _RlhfWireError("the other sandbox process ended")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def _rlhf_send(fd, value):
    data = repr(value).encode("utf-8", "surrogatepass")
    data = struct.pack("<Q", len(data)) + data
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _rlhf_receive(fd):
    (n,) = struct.unpack("<Q", _rlhf_read_exact(fd, 8))
    if n > _RLHF_MAX_MESSAGE:
        raise _RlhfWireError("a message of %d bytes is over the limit" % n)
    try:
        return ast.literal_eval(_rlhf_read_exact(fd, n).decode("utf-8", "surrogatepass"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e:
        raise _RlhfWireError("malformed message: %s" % type(e).__name__) from None


def _rlhf_encode(x, handle):
    """`handle(obj)` names an object that does not cross as a value."""
    t = type(x)
    if t in _RLHF_SCALARS:
        return x
    if t is float:
        return ("f", x.hex())
    if t is complex:
        return ("c", x.real.hex(), x.imag.hex())
    if t is list:
        return ("l", [_rlhf_encode(v, handle) for v in x])
    if t is tuple:
        return ("t", [_rlhf_encode(v, handle) for v in x])
    if t is set:
        return ("s", [_rlhf_encode(v, handle) for v in x])
    if t is frozenset:
        return ("fs", [_rlhf_encode(v, handle) for v in x])
    if t is bytearray:
        return ("ba", bytes(x))
    if t is dict:
        return ("d", [(_rlhf_encode(k, handle), _rlhf_encode(v, handle)) for k, v in x.items()])
    return handle(x)


def _rlhf_decode(x, handle):
    """Strict: anything but the documented shapes is an error. `handle(tagged)` maps ("h", ..)."""
    t = type(x)
    if t in _RLHF_SCALARS:
        return x
    if t is not tuple or not x or type(x[0]) is not str:
        raise _RlhfWireError("unexpected %s in a message" % t.__name__)
    tag, n = x[0], len(x)
    if tag == "f" and n == 2 and type(x[1]) is str:
        return float.fromhex(x[1])
    if tag == "c" and n == 3 and type(x[1]) is str and type(x[2]) is str:
        return complex(float.fromhex(x[1]), float.fromhex(x[2]))
    if tag in ("l", "t", "s", "fs") and n == 2 and type(x[1]) is list:
        items = [_rlhf_decode(v, handle) for v in x[1]]
        return {"l": list, "t": tuple, "s": set, "fs": frozenset}[tag](items)
    if tag == "ba" and n == 2 and type(x[1]) is bytes:
        return bytearray(x[1])
    if tag == "d" and n == 2 and type(x[1]) is list:
        out = {}
        for kv in x[1]:
            if type(kv) is not tuple or len(kv) != 2:
                raise _RlhfWireError("malformed dict item")
            out[_rlhf_decode(kv[0], handle)] = _rlhf_decode(kv[1], handle)
        return out
    if tag in ("h", "m"):
        return handle(x)
    raise _RlhfWireError("unknown tag %r" % (tag,))
