"""Fuzzing kit for mdflow's decoders: seeds, mutations, and a tripwire on code execution.

* :func:`seed_values` — valid values of every kind the codecs carry (records, market data,
  numpy, pandas, datetimes...), and :func:`seed_frames` their mdflow msgpack encodings;
* :func:`mutate` — flip, insert, delete, truncate and splice bytes, or (more often) parse
  a frame into a tree, ext payloads included, change one node and pack it again, so the
  mutations reach the ext decoders deep inside a DataFrame instead of dying at the first
  byte. Interesting values are injected: dtype names that read files or import modules,
  huge shapes, pickles, ext codes other libraries use for pickled objects;
* :func:`tripwire` — while active, unpickling (``pickle``, ``_pickle``, numpy, pandas),
  ``eval``, ``exec``, ``marshal.loads``, ``os.system`` and ``subprocess`` are recorded and
  refused (a ``BaseException``, so no ``except Exception`` in a decoder can hide it), and
  every file opened is recorded (only time-zone files may be).

Mutations draw their choices through a ``draw(lo, hi)`` callable: hypothesis'
``data.draw(st.integers(lo, hi))`` (shrinkable) or ``random.Random.randint``.
"""

from __future__ import annotations

import _pickle
import builtins
import contextlib
import datetime as dt
import decimal
import io
import marshal
import os
import pickle
import subprocess
import sys
import zoneinfo
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import numpy as np
import pandas as pd

from mdflow.codecs import pack
from mdflow.marketdata import OHLCV, MarketDataPoint

Draw = Callable[[int, int], int]


# --- seeds ---------------------------------------------------------------------------------------
class _Boom:
    """Unpickling this calls ``eval`` (caught by the tripwire)."""

    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


PICKLE_EVAL = pickle.dumps(_Boom())
PICKLE_SYSTEM = b"cos\nsystem\n(S'true'\ntR."  # protocol 0: os.system('true')
PICKLE_ARRAY = pickle.dumps(np.array([{"a": 1}], dtype=object))  # what np.save writes for |O
PICKLES = (PICKLE_EVAL, PICKLE_SYSTEM, PICKLE_ARRAY, pickle.dumps(pd.DataFrame({"a": [1]})))


def seed_values() -> list[Any]:
    """One valid value of each kind mdflow's msgpack carries."""
    tz = zoneinfo.ZoneInfo("America/New_York")
    frame = pd.DataFrame(
        {
            "i8": np.arange(4, dtype="int8"),
            "f": [1.5, np.nan, 3.0, 4.0],
            "c": np.arange(4) + 1j,
            "b": [True, False, True, False],
            "m8": pd.to_timedelta(np.arange(4), unit="s"),
            "ts": pd.date_range("2024-01-01", periods=4, freq="D"),
            "utc": pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC"),
            "cat": pd.Categorical(["lo", "hi", "lo", None], categories=["lo", "hi"]),
            "s": pd.array(["a", None, "c", "d"], dtype="str"),
            "string": pd.array(["a", None, "x\x00y", "d"], dtype="string"),
            "Int64": pd.array([1, None, 3, 4], dtype="Int64"),
            "boolean": pd.array([True, None, False, True], dtype="boolean"),
            "obj": pd.Series([1, "x", None, b"b"], dtype=object),
            "period": pd.period_range("2024-01", periods=4, freq="M"),
            "interval": pd.interval_range(0, 4),
        },
        index=pd.Index(["w", "x", "y", "z"], name="k"),
    )
    multi = pd.DataFrame(
        np.arange(6.0).reshape(2, 3),
        columns=pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)]),
        index=pd.date_range("2024-01-01", periods=2, freq="min", tz=tz),
    )
    return [
        {"sym": "BTC", "px": 1.5, "qty": 3, "n": 7},
        {"nested": [{"a": [1, 2, {"b": None}]}, True, -1.25e300], "raw": b"\x00\xff"},
        {(1, "x"): "tuple key", 2**70: -(2**80), "d": decimal.Decimal("-1.10e-3")},
        [dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=tz), dt.date(2024, 2, 29)],
        [dt.time(23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=-3), "BRT"))],
        [dt.timedelta(days=-1, microseconds=5), dt.datetime(2024, 1, 1)],
        MarketDataPoint(
            "okx", "BTC-USDT", 1_700_000_000, "ticker", {"price": decimal.Decimal("1")}
        ),
        OHLCV("ETH-USDT", "5m", "2024-03-01T10:05:00Z", 10, 12, 9.5, 11, "0", 3),
        np.float32(0.1),
        np.datetime64("2024-01-02T03:04:05.123456789", "ns"),
        np.str_("text"),
        np.bytes_(b"by"),
        np.arange(6, dtype="<i4").reshape(2, 3),
        np.array(["ab", "c"]),
        np.array([1, "x", None], dtype=object),
        np.array([], dtype="<M8[ns]"),
        pd.Timestamp("2024-01-02 03:04:05.123456789", tz="Europe/London"),
        pd.Timedelta("1 days 00:00:01"),
        pd.Period("2024-01", freq="M"),
        pd.NaT,
        pd.NA,
        pd.RangeIndex(0, 10, 2, name="r"),
        pd.MultiIndex.from_arrays([["a", "b"], [1, 2]], names=["l", ("t", 1)]),
        pd.date_range("2024-01-01", periods=3, freq="D", name="d"),
        pd.CategoricalIndex(["a", "b", "a"]),
        pd.interval_range(0, 3),
        pd.period_range("2024-01", periods=2, freq="Q"),
        pd.Series([1.5, None], index=["a", "b"], name="s", dtype="Float64"),
        pd.Series(pd.Categorical(["x", "y"], ordered=True)),
        pd.Series(["a", "b"], dtype="string"),
        frame,
        multi,
        pd.DataFrame({"a": [1, 2], "a2": [3, 4]}).set_axis(["a", "a"], axis=1),  # duplicate labels
        pd.DataFrame(),
    ]


def seed_frames() -> list[bytes]:
    """The mdflow msgpack encoding of each seed value."""
    return [pack(v) for v in seed_values()]


def seed_json() -> list[bytes]:
    """JSON texts like the ones feeds send (the simulated exchange's frames and more)."""
    return [
        b'{"type": "ticker", "symbol": "BTC-USDT", "ts": 1700000000000, "price": "42000.10",'
        b' "bid": "41995.90", "ask": "42004.30", "volume": "12.3456"}',
        b'{"type": "trade", "symbol": "BTC-USDT", "ts": 1700000000001, "id": 17,'
        b' "price": "42000.10", "qty": "0.0123", "side": "buy"}',
        b'{"type": "candle", "symbol": "BTC-USDT", "ts": 1700000040000, "timeframe": "1m",'
        b' "open": "1", "high": "2", "low": "0.5", "close": "1.5", "volume": "3", "trades": 12,'
        b' "closed": false}',
        b'{"type": "subscribed", "symbols": ["BTC-USDT"], "channels": ["ticker"]}',
        b'[1, 2.5, -3e10, "x", null, true, {"a": [{}]}]',
    ]


# --- interesting values ---------------------------------------------------------------------------
INTERESTING_INTS = (
    0,
    1,
    -1,
    2,
    255,
    2**31,
    2**53 + 1,
    2**62,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    10**9,
)
INTERESTING_STRS = (
    "",
    "\x00",
    "a" * 300,
    # numpy / pandas dtype names: object dtypes, odd units, zero-size items, names that make
    # pandas read a file (dateutil time zones) or import a module (pyarrow)
    "|O",
    "O",
    "object",
    "<M8",
    "<M8[D]",
    "<m8[Y]",
    "<M8[ps]",
    "|V0",
    "V8",
    "<U0",
    "|S0",
    "|S3",
    "<f2",
    ">i8",
    "<c16",
    "[('a', '<i4')]",
    "i4,i4",
    "(2,)i4",
    "datetime64[ns, dateutil//etc/passwd]",
    "datetime64[ns, /etc/passwd]",
    "datetime64[ns, UTC]",
    "period[dateutil//etc/passwd]",
    "string[pyarrow]",
    "string[python]",
    "str",
    "string",
    "category",
    "Int64",
    "UInt8",
    "Float64",
    "boolean",
    "period[M]",
    "period[15min]",
    "interval[int64, right]",
    "Sparse[int]",
    # array/index spec tags
    "np",
    "obj",
    "strj",
    "dttz",
    "cat",
    "masked",
    "period",
    "interval",
    "range",
    "multi",
    "index",
    "nd",
    "col",
    "left",
    "U",
    "S",
    # units, zones, record tags
    "ns",
    "us",
    "D",
    "M",
    "UTC",
    "Europe/London",
    "posixrules",
    "zone.tab",
    "../../../../etc/passwd",
    "/etc/passwd",
    "dateutil//etc/passwd",
    "mdp",
    "ohlcv",
    "1m",
    "__import__('os').system('true')",
    "builtins.eval",
)
INTERESTING_BYTES = (b"", b"\x00" * 8, b"\xff" * 8, np.arange(4).tobytes(), *PICKLES)
INTERESTING_LISTS: tuple[list[Any], ...] = (
    [],
    [0],
    [2**62, 2**62],
    [10**9],
    [2**40, 0],
    [-1],
    [0] * 65,
    [1, 1],
)


class Ext:
    """An ext value in a parsed tree: ``body`` is a tree (``raw`` False) or bytes."""

    __slots__ = ("body", "code", "raw")

    def __init__(self, code: int, body: Any, raw: bool):
        self.code, self.body, self.raw = code, body, raw

    def __repr__(self) -> str:
        return f"Ext({self.code}, {self.body!r}{', raw' if self.raw else ''})"


class Map(list):
    """A msgpack map as (key, value) pairs (keys may be anything, even unhashable)."""


def interesting(draw: Draw) -> Any:
    kind = draw(0, 9)
    if kind <= 2:
        return INTERESTING_STRS[draw(0, len(INTERESTING_STRS) - 1)]
    if kind == 3:
        return INTERESTING_INTS[draw(0, len(INTERESTING_INTS) - 1)]
    if kind == 4:
        return INTERESTING_BYTES[draw(0, len(INTERESTING_BYTES) - 1)]
    if kind == 5:
        return list(INTERESTING_LISTS[draw(0, len(INTERESTING_LISTS) - 1)])
    if kind == 6:
        return [float("nan"), float("inf"), -0.0, 1e308, None, True, False][draw(0, 6)]
    if kind == 7:  # an ext code from anywhere: mdflow's, msgpack's timestamp, other libraries'
        code = draw(-128, 127)
        return Ext(code, PICKLES[draw(0, len(PICKLES) - 1)], raw=True)
    if kind == 8:  # how other libraries carry numpy arrays: with a pickle for object dtype
        return Map(
            [
                (b"nd", True),
                (b"type", "|O"),
                (b"kind", b"O"),
                (b"shape", [1]),
                (b"data", PICKLE_EVAL),
            ]
        )
    return Ext(draw(8, 9), ["|O", [1], PICKLE_EVAL], raw=False)  # mdflow's ndarray, with a pickle


# --- parse / pack trees ---------------------------------------------------------------------------
def parse(data: bytes) -> Any:
    """A tree of a valid msgpack frame; ext payloads are parsed too when they are msgpack."""

    def ext(code: int, payload: bytes) -> Ext:
        if code in (1, 2):  # big int and Decimal: ASCII text
            return Ext(code, payload, raw=True)
        try:
            return Ext(code, parse(payload), raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            return Ext(code, payload, raw=True)

    return msgpack.unpackb(
        data, raw=False, strict_map_key=False, object_pairs_hook=Map, ext_hook=ext, timestamp=0
    )


def _header(n: int, fix: int, fix_max: int, b16: int, b32: int) -> bytes:
    if n <= fix_max:
        return bytes([fix | n])
    if n < 1 << 16:
        return bytes([b16]) + n.to_bytes(2, "big")
    return bytes([b32]) + n.to_bytes(4, "big")


def unparse(node: Any) -> bytes:
    """Pack a tree back into bytes (any ext code, -128..127)."""
    if isinstance(node, Map):
        out = [_header(len(node), 0x80, 15, 0xDE, 0xDF)]
        for key, value in node:
            out += [unparse(key), unparse(value)]
        return b"".join(out)
    if isinstance(node, list):
        return _header(len(node), 0x90, 15, 0xDC, 0xDD) + b"".join(unparse(v) for v in node)
    if isinstance(node, Ext):
        body = node.body if node.raw else unparse(node.body)
        n, code = len(body), node.code & 0xFF
        fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
        if n in fixed:
            return bytes([fixed[n], code]) + body
        if n < 256:
            return bytes([0xC7, n, code]) + body
        if n < 1 << 16:
            return b"\xc8" + n.to_bytes(2, "big") + bytes([code]) + body
        return b"\xc9" + n.to_bytes(4, "big") + bytes([code]) + body
    return msgpack.packb(node, use_bin_type=True, datetime=False)


def _slots(node: Any, out: list[tuple[Any, Any]]) -> None:
    """Every (container, key) where a node sits, depth first."""
    if isinstance(node, Map):
        for i, (key, value) in enumerate(node):
            out.append((node, (i, 0)))
            out.append((node, (i, 1)))
            _slots(key, out)
            _slots(value, out)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.append((node, i))
            _slots(value, out)
    elif isinstance(node, Ext):
        out.append((node, "body"))
        if not node.raw:
            _slots(node.body, out)


def _get(container: Any, key: Any) -> Any:
    if isinstance(container, Ext):
        return container.body
    if isinstance(key, tuple):
        return container[key[0]][key[1]]
    return container[key]


def _set(container: Any, key: Any, value: Any) -> None:
    if isinstance(container, Ext):
        container.body, container.raw = value, isinstance(value, bytes) and container.code in (1, 2)
        if not container.raw and isinstance(value, bytes):
            container.body = value  # a bytes body of a non-text ext is packed as bin
        return
    if isinstance(key, tuple):
        pair = list(container[key[0]])
        pair[key[1]] = value
        container[key[0]] = tuple(pair)
    else:
        container[key] = value


def _tweak(node: Any, draw: Draw) -> Any:
    """A small change of the same kind of node."""
    if isinstance(node, bool) or node is None:
        return interesting(draw)
    if isinstance(node, int):
        value = [node + 1, node - 1, -node, node * 2**32, INTERESTING_INTS[draw(0, 11)]][draw(0, 4)]
        return max(-(2**63), min(2**64 - 1, value))  # what msgpack can carry
    if isinstance(node, float):
        return [float("nan"), -node, node * 1e300, 0.0][draw(0, 3)]
    if isinstance(node, str):
        choice = draw(0, 3)
        if choice == 0 and node:
            return node[: draw(0, len(node) - 1)]
        if choice == 1:
            return node + "\x00é"
        return INTERESTING_STRS[draw(0, len(INTERESTING_STRS) - 1)]
    if isinstance(node, bytes):
        if node and draw(0, 1):
            i = draw(0, len(node) - 1)
            return node[:i] + bytes([draw(0, 255)]) + node[i + 1 :]
        return [node[: len(node) // 2], node + node, b"", *PICKLES][draw(0, 6)]
    if isinstance(node, Ext):
        choice = draw(0, 2)
        if choice == 0:
            node.code = draw(-128, 127)
        elif choice == 1:
            node.code = draw(1, 18)
        else:
            node.body, node.raw = PICKLES[draw(0, len(PICKLES) - 1)], True
        return node
    if isinstance(node, Map):
        if node and draw(0, 1):
            del node[draw(0, len(node) - 1)]
        else:
            node.append((interesting(draw), interesting(draw)))
        return node
    if isinstance(node, list):
        choice = draw(0, 3)
        if node and choice == 0:
            del node[draw(0, len(node) - 1)]
        elif node and choice == 1:
            node.append(node[draw(0, len(node) - 1)])
        elif len(node) > 1 and choice == 2:
            i, j = draw(0, len(node) - 1), draw(0, len(node) - 1)
            node[i], node[j] = node[j], node[i]
        else:
            node.append(interesting(draw))
        return node
    return interesting(draw)


def mutate_tree(frame: bytes, draw: Draw, changes: int) -> bytes:
    """Parse ``frame``, change ``changes`` nodes (or the root), pack it again."""
    tree = parse(frame)
    for _ in range(changes):
        slots: list[tuple[Any, Any]] = []
        _slots(tree, slots)
        if not slots or draw(0, 19) == 0:
            tree = _tweak(tree, draw) if draw(0, 1) else interesting(draw)
            continue
        container, key = slots[draw(0, len(slots) - 1)]
        node = _get(container, key)
        replacement = interesting(draw) if draw(0, 2) == 0 else _tweak(node, draw)
        if draw(0, 7) == 0:  # wrap it in an ext
            replacement = Ext(draw(1, 18), replacement, raw=False)
        _set(container, key, replacement)
    return unparse(tree)


def mutate_bytes(data: bytes, draw: Draw, changes: int, other: bytes = b"") -> bytes:
    """Flip, set, insert, delete, duplicate, truncate bytes; splice with ``other``."""
    blob = bytearray(data)
    for _ in range(changes):
        op = draw(0, 6)
        i = draw(0, len(blob)) if blob else 0
        if op == 0 and blob:
            blob[min(i, len(blob) - 1)] ^= 1 << draw(0, 7)
        elif op == 1 and blob:
            blob[min(i, len(blob) - 1)] = draw(0, 255)
        elif op == 2:
            blob[i:i] = bytes(draw(0, 255) for _ in range(draw(1, 4)))
        elif op == 3 and blob:
            del blob[i : i + draw(1, 8)]
        elif op == 4:
            blob[i:i] = blob[i : i + draw(1, 16)]
        elif op == 5:
            del blob[i:]
        elif other:
            j = draw(0, len(other))
            blob = blob[:i] + bytearray(other[j:])
    return bytes(blob)


def sweep(frames: list[bytes]) -> Iterator[bytes]:
    """Every seed with one node replaced, for every node and every hostile value of its kind:
    each string by each interesting string, each node by pickles, hostile ext values,
    extreme ints, huge shapes. Deterministic: what random mutation would find by luck."""
    anything: list[Any] = [
        None,
        -1,
        2**63 - 1,
        [],
        [2**62, 2**62],
        [0] * 65,
        PICKLE_EVAL,
        PICKLE_SYSTEM,
        Ext(99, PICKLE_EVAL, raw=True),
        Ext(-2, PICKLE_EVAL, raw=True),
        Ext(9, ["|O", [1], PICKLE_EVAL], raw=False),
        Ext(8, ["O", PICKLE_EVAL], raw=False),
    ]
    for frame in frames:
        count: list[tuple[Any, Any]] = []
        _slots(parse(frame), count)
        for position in range(len(count)):
            probe: list[tuple[Any, Any]] = []
            _slots(parse(frame), probe)
            node = _get(*probe[position])
            values = anything + (list(INTERESTING_STRS) if isinstance(node, str) else [])
            for value in values:
                tree = parse(frame)  # a fresh copy for each change
                slots: list[tuple[Any, Any]] = []
                _slots(tree, slots)
                _set(*slots[position], value)
                yield unparse(tree)


def mutate(frames: list[bytes], draw: Draw) -> bytes:
    """A mutant of one of ``frames``: by structure (mostly), by bytes, or both."""
    frame = frames[draw(0, len(frames) - 1)]
    how = draw(0, 9)
    if how <= 5:
        return mutate_tree(frame, draw, draw(1, 3))
    if how <= 8:
        other = frames[draw(0, len(frames) - 1)]
        return mutate_bytes(frame, draw, draw(1, 4), other)
    return mutate_bytes(mutate_tree(frame, draw, 1), draw, 1)


def mutate_json(text: bytes, draw: Draw) -> bytes:
    """A mutant of a JSON text: a value replaced (structure), or bytes changed."""
    import json

    if draw(0, 2):
        try:
            tree = json.loads(text)
        except ValueError:
            return mutate_bytes(text, draw, draw(1, 3))
        holder = [tree]
        slots: list[tuple[Any, Any]] = [(holder, 0)]

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for key in list(node):
                    slots.append((node, key))
                    walk(node[key])
            elif isinstance(node, list):
                for i, value in enumerate(node):
                    slots.append((node, i))
                    walk(value)

        walk(tree)
        for _ in range(draw(1, 3)):
            container, key = slots[draw(0, len(slots) - 1)]
            pick = draw(0, 9)
            values: list[Any] = [
                None,
                "abc",
                "NaN",
                "1e999999",
                "-0",
                "9" * 5000,
                -1,
                2**70,
                1e308,
                [],
                {},
                {"type": "trade"},
                "x" * 100,
            ]
            container[key] = values[draw(0, len(values) - 1)] if pick else interesting_json(draw)
        out = json.dumps(holder[0]).encode()
        return out if draw(0, 4) else mutate_bytes(out, draw, 1)
    return mutate_bytes(text, draw, draw(1, 4))


def interesting_json(draw: Draw) -> Any:
    value = interesting(draw)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return value
    return "[" * 2000  # (a string; deep nesting is tried by the byte mutations)


# --- tripwire -------------------------------------------------------------------------------------
class CodeExecution(BaseException):
    """Raised by the tripwire: a decoder tried to unpickle or evaluate something."""


class Tripwire:
    """What happened while the tripwire was active."""

    def __init__(self) -> None:
        self.forbidden: list[str] = []
        self.opened: list[str] = []
        self.imported: list[str] = []

    def foreign_imports(self) -> list[str]:
        """Modules imported meanwhile that are not installed code mdflow loads lazily."""
        return [m for m in self.imported if m.partition(".")[0] not in _LAZY_PACKAGES]

    def allowed_files(self, installed: bool = False) -> list[str]:
        """Opened files that are not time-zone data (should be none); with ``installed``,
        files of the Python installation are fine too (redis-py reads its version from
        its metadata when it connects)."""
        dirs = [os.path.realpath(p) for p in zoneinfo.TZPATH]
        if installed:
            dirs += [os.path.realpath(p) for p in {sys.prefix, sys.base_prefix}]
        bad = []
        for path in self.opened:
            try:
                real = os.path.realpath(path)
            except ValueError:  # a NUL in it: open() refused it
                real = path
            if not any(real.startswith(d + os.sep) for d in dirs) and "tzdata" not in real:
                bad.append(path)
        return bad


#: Packages whose modules may be imported (lazily) while decoding or rendering.
_LAZY_PACKAGES = {
    *("rich", "pandas", "numpy", "dateutil", "pytz", "tzdata", "zoneinfo", "mdflow"),
    "importlib",  # importlib.resources: how zoneinfo reads the tzdata package
}


def _importing() -> bool:
    """Is a module being imported (importlib's machinery is on the stack)?"""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("importlib"):
            return True
        frame = frame.f_back
    return False


def _refuse(trip: Tripwire, name: str, original: Any) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        if _importing():  # a lazy import of installed code (rich, pandas): not data
            return original(*args, **kwargs)
        trip.forbidden.append(f"{name}{tuple(repr(a)[:80] for a in args)}")
        raise CodeExecution(f"{name} called while decoding untrusted data")

    return refused


_TRIPPED = [
    (pickle, "loads"),
    (pickle, "load"),
    (pickle, "Unpickler"),
    (pickle, "_loads"),
    (pickle, "_load"),
    (pickle, "_Unpickler"),
    (_pickle, "loads"),
    (_pickle, "load"),
    (_pickle, "Unpickler"),
    (marshal, "loads"),
    (builtins, "eval"),
    (builtins, "exec"),
    (os, "system"),
    (os, "popen"),
    (subprocess, "Popen"),
    (np, "load"),
    (pd, "read_pickle"),
]


@contextlib.contextmanager
def tripwire() -> Iterator[Tripwire]:
    """Refuse unpickling and evaluation, record opened files, for the ``with`` body."""
    trip = Tripwire()
    saved = [(owner, name, getattr(owner, name)) for owner, name in _TRIPPED]
    try:
        from pandas.compat import pickle_compat
    except ImportError:  # pragma: no cover - other pandas versions
        pickle_compat = None
    if pickle_compat is not None:
        for name in ("loads", "load", "Unpickler"):
            if hasattr(pickle_compat, name):
                saved.append((pickle_compat, name, getattr(pickle_compat, name)))
    real_open, real_io_open = builtins.open, io.open

    def recording_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        trip.opened.append(
            os.fsdecode(file) if isinstance(file, (str, bytes, os.PathLike)) else repr(file)
        )
        return real_open(file, *args, **kwargs)

    modules = set(sys.modules)
    try:
        for owner, name, _ in saved:
            label = f"{getattr(owner, '__name__', owner)}.{name}"
            setattr(owner, name, _refuse(trip, label, getattr(owner, name)))
        builtins.open = io.open = recording_open
        yield trip
    finally:
        builtins.open, io.open = real_open, real_io_open
        for owner, name, original in saved:
            setattr(owner, name, original)
        trip.imported = sorted(set(sys.modules) - modules)
