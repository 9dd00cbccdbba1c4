"""The data format between the sandbox and the judge: values as tagged JSON, encoded liberally, decoded strictly.

Standard library only: the sandbox loads this same file (sandbox.py binds it beside zygote.py), so both sides
speak one format. A value is `[tag, payload...]`:
    ["none"] ["bool", b] ["int", hex] ["float", repr] ["complex", repr] ["str", s] ["bytes", hex]
    ["list" | "tuple" | "set" | "frozenset" | "deque" | "keys" | "values", [items]]
    ["dict" | "items", [[k, v], ...]] ["fraction", hex, hex] ["decimal", str] ["range", hex, hex, hex]
A task's result document: ["loaded", [entry per cut]] or ["load_error", reason], an entry being ["ok", value]
or ["raise", reason].

`encode` runs in the sandbox, next to the completion: nothing it does is trusted, so it only has to make
correct answers of common types cross (numpy scalars, Fraction, dict views, deque). `decode_result` runs on
the trusted side and must stay bounded whatever bytes arrive: no JSON numbers at all (every number is a
string of capped length, ints in hex so that no quadratic decimal conversion runs), capped nesting, and no
container whose hashable items pile up on one hash value (ints that share a hash would otherwise make every
set or dict built from them cost quadratic time, here or in a check like `set(f(x)) == {...}`).
"""

import collections
import json
import re
import sys

MAX_DEPTH = 100
MAX_NUMBER_CHARS = 1 << 16  # an int of ~260,000 bits, read in linear time (hex)
MAX_SHARED_HASH = 16  # distinct items of one container allowed to share a hash value
REASON_CHARS = 300
_HASH_MODULUS = sys.hash_info.modulus
_HEX = re.compile(r"-?[0-9a-f]+")
_DictKeys, _DictValues, _DictItems = type({}.keys()), type({}.values()), type({}.items())


class Malformed(ValueError):
    """Bytes from the sandbox that are not a result document within the bounds."""


# ---------------------------------------------------------------- encoding (inside the sandbox)

_type, _issubclass, _isinstance = type, issubclass, isinstance  # bound before any completion runs


def encode(value, depth=0):
    """A built-in-typed value as tagged JSON; subclasses are read through their base type's methods."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    t = _type(value)
    if value is None:
        return ["none"]
    if t is bool:
        return ["bool", value is True]
    if _issubclass(t, int):
        return ["int", int.__format__(value, "x")]
    if _issubclass(t, float):
        return ["float", float.__repr__(value)]
    if _issubclass(t, complex):
        return ["complex", complex.__repr__(value)]
    if _issubclass(t, str):
        return ["str", str.__str__(value)]
    if _issubclass(t, (bytes, bytearray)):
        return ["bytes", bytes(value).hex()]
    if _issubclass(t, collections.deque):
        return ["deque", [encode(x, depth + 1) for x in collections.deque.__iter__(value)]]
    for base in (list, tuple, set, frozenset):
        if _issubclass(t, base):
            return [base.__name__, [encode(x, depth + 1) for x in base.__iter__(value)]]
    if _issubclass(t, dict):
        return ["dict", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]]
    if t is _DictKeys or t is _DictValues:
        return ["keys" if t is _DictKeys else "values", [encode(x, depth + 1) for x in value]]
    if t is _DictItems:
        return ["items", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value]]
    if t is range:
        return ["range", *(int.__format__(n, "x") for n in (value.start, value.stop, value.step))]
    fractions, decimal, numpy = (sys.modules.get(m) for m in ("fractions", "decimal", "numpy"))
    if fractions is not None and _issubclass(t, fractions.Fraction):
        return ["fraction", int.__format__(value.numerator, "x"), int.__format__(value.denominator, "x")]
    if decimal is not None and _issubclass(t, decimal.Decimal):
        return ["decimal", decimal.Decimal.__str__(value)]
    if numpy is not None and _issubclass(t, numpy.generic) and not _issubclass(t, numpy.void):
        item = value.item()  # np.int64 -> int, np.bool_ -> bool, ...: what `==` with a Python value compares
        if _type(item) in (bool, int, float, complex, str, bytes):
            return encode(item, depth + 1)
    raise TypeError(f"cannot return a {t.__name__!s} (only built-in data types)")


def encode_result(load_error, entries):
    """The document the sandbox sends back, as bytes."""
    doc = ["load_error", load_error] if load_error is not None else ["loaded", entries]
    return json.dumps(doc).encode()


# ---------------------------------------------------------------- decoding (on the trusted side)


def _refuse_number(text):
    raise Malformed(f"bare JSON number {text[:20]!r}")


def _number_text(x, pattern=None) -> str:
    if not isinstance(x, str) or len(x) > MAX_NUMBER_CHARS or (pattern is not None and not pattern.fullmatch(x)):
        raise Malformed(f"bad number literal {str(x)[:40]!r}")
    return x


def _int(x) -> int:
    return int(_number_text(x, _HEX), 16)


def _guard_hashes(items: list) -> None:
    """Refuse items of which too many distinct ones share a hash (the only way to make hashing quadratic)."""
    groups: dict[int, list] = {}
    for item in items:
        try:
            h = hash(item) % _HASH_MODULUS  # the residue: distinct residues never collide as dict keys here
        except TypeError:  # unhashable (a list): it can never be a set item or dict key
            continue
        group = groups.setdefault(h, [])
        if not any(g == item for g in group):
            group.append(item)
            if len(group) > MAX_SHARED_HASH:
                raise Malformed(f"more than {MAX_SHARED_HASH} distinct values share one hash")


def _items(x, depth: int) -> list:
    if not isinstance(x, list):
        raise Malformed("container payload is not a list")
    items = [decode(v, depth + 1) for v in x]
    _guard_hashes(items)
    return items


def _pairs(x, depth: int) -> list[tuple]:
    if not isinstance(x, list) or not all(isinstance(kv, list) and len(kv) == 2 for kv in x):
        raise Malformed("mapping payload is not a list of [key, value] pairs")
    keys = [decode(k, depth + 1) for k, _ in x]
    _guard_hashes(keys)
    return list(zip(keys, _items([v for _, v in x], depth)))


def decode(x, depth: int = 0):
    """Tagged JSON -> a value of a built-in type (or Fraction, Decimal, deque, a dict view), refusing all else."""
    if depth > MAX_DEPTH:
        raise Malformed("value nested too deeply")
    if not isinstance(x, list) or not x or not isinstance(x[0], str):
        raise Malformed(f"not a tagged value: {str(x)[:80]}")
    tag, args = x[0], x[1:]
    try:
        if tag == "none" and not args:
            return None
        if tag == "bool" and len(args) == 1 and isinstance(args[0], bool):
            return args[0]
        if tag == "int" and len(args) == 1:
            return _int(args[0])
        if tag == "float" and len(args) == 1:
            return float(_number_text(args[0]))
        if tag == "complex" and len(args) == 1:
            return complex(_number_text(args[0]))
        if tag == "str" and len(args) == 1 and isinstance(args[0], str):
            return args[0]
        if tag == "bytes" and len(args) == 1 and isinstance(args[0], str):
            return bytes.fromhex(args[0])
        if tag == "fraction" and len(args) == 2:
            import fractions

            return fractions.Fraction(_int(args[0]), _int(args[1]))
        if tag == "decimal" and len(args) == 1:
            import decimal

            return decimal.Decimal(_number_text(args[0]))
        if tag == "range" and len(args) == 3:
            return range(*(_int(a) for a in args))
        if len(args) == 1:
            if tag == "list":
                return _items(args[0], depth)
            if tag in ("tuple", "set", "frozenset", "deque"):
                kind = {"tuple": tuple, "set": set, "frozenset": frozenset, "deque": collections.deque}[tag]
                return kind(_items(args[0], depth))
            if tag == "keys":
                return dict.fromkeys(_items(args[0], depth)).keys()
            if tag == "values":
                return dict(enumerate(_items(args[0], depth))).values()
            if tag == "dict":
                return dict(_pairs(args[0], depth))
            if tag == "items":
                return dict(_pairs(args[0], depth)).items()
    except Malformed:
        raise
    except (ValueError, TypeError, ArithmeticError) as e:  # bad literal, unhashable key, zero denominator
        raise Malformed(f"bad {tag} value: {e}") from None
    raise Malformed(f"unknown or malformed tag {tag[:40]!r}")


def _reason(x) -> str:
    return x[:REASON_CHARS] if isinstance(x, str) else "(a reason that is not text)"


def decode_result(data: bytes, n_cuts: int) -> tuple[str | None, list[tuple[str, object]]]:
    """(load_error, [(kind, value)]) from the sandbox's bytes; Malformed for anything else, in bounded time."""
    try:
        doc = json.loads(data.decode("utf-8"), parse_int=_refuse_number, parse_float=_refuse_number,
                         parse_constant=_refuse_number)
    except Malformed:
        raise
    except (ValueError, RecursionError, MemoryError) as e:  # not UTF-8, not JSON, nested past the C stack guard
        raise Malformed(f"not a JSON document ({type(e).__name__})") from None
    if not (isinstance(doc, list) and len(doc) == 2 and doc[0] in ("loaded", "load_error")):
        raise Malformed("unexpected document")
    if doc[0] == "load_error":
        return _reason(doc[1]), []
    entries = doc[1]
    if not isinstance(entries, list) or len(entries) != n_cuts:
        raise Malformed(f"expected {n_cuts} values")
    values = []
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in ("ok", "raise")):
            raise Malformed("bad value entry")
        if entry[0] == "ok":
            values.append(("ok", decode(entry[1])))
        else:
            values.append(("raise", _reason(entry[1])))
    return None, values
