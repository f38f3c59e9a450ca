"""mdflow msgpack: plain msgpack plus extension types that round-trip Python exactly.

This is the ``"msgpack"`` codec's object format (see :mod:`mdflow.codecs` for
how it is framed in stream entries and pub/sub messages, and the README's
"Wire format" for the ext-type table). Scalars beyond JSON (big ints,
Decimal, datetimes with their time zone, tuples in hashable places,
registered market-data records) are handled here; numpy and pandas objects
in :mod:`mdflow.codecs.pandas_ext`, imported the first time one is met. Decoding never
unpickles or evaluates anything.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import re
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, Protocol, cast
from zoneinfo import ZoneInfo

import msgpack

from ..errors import DecodeError, EncodeError, describe

__all__ = [
    "EXT_BIGINT",
    "EXT_DATE",
    "EXT_DATETIME",
    "EXT_DECIMAL",
    "EXT_NP_ARRAY",
    "EXT_NP_SCALAR",
    "EXT_PD_DATAFRAME",
    "EXT_PD_INDEX",
    "EXT_PD_NA",
    "EXT_PD_NAT",
    "EXT_PD_PERIOD",
    "EXT_PD_SERIES",
    "EXT_PD_TIMEDELTA",
    "EXT_PD_TIMESTAMP",
    "EXT_RECORD",
    "EXT_TIME",
    "EXT_TIMEDELTA",
    "EXT_TUPLE",
    "ArrayTypes",
    "pack",
    "tz_from_spec",
    "tz_spec",
    "unpack",
    "use_array_types",
]

EXT_BIGINT = 1  # ASCII decimal digits
EXT_DECIMAL = 2  # ASCII str(Decimal)
EXT_DATETIME = 3  # [year, month, day, hour, minute, second, microsecond, fold, tz]
EXT_DATE = 4  # [year, month, day]
EXT_TIME = 5  # [hour, minute, second, microsecond, fold, tz]
EXT_TIMEDELTA = 6  # [days, seconds, microseconds]
EXT_TUPLE = 7  # array; a tuple in a hashable place (dict key, pandas name)
EXT_NP_SCALAR = 8  # numpy scalar
EXT_NP_ARRAY = 9  # numpy ndarray
EXT_PD_TIMESTAMP = 10
EXT_PD_TIMEDELTA = 11
EXT_PD_NAT = 12
EXT_PD_NA = 13
EXT_PD_PERIOD = 14
EXT_PD_INDEX = 15
EXT_PD_SERIES = 16
EXT_PD_DATAFRAME = 17
EXT_RECORD = 18  # [tag, state]: a registered mdflow data type (MarketDataPoint, OHLCV)

_SUPPORTED = (
    "None, bool, int, float, str, bytes, list, tuple, dict, datetime/date/time/"
    "timedelta, Decimal, numpy scalars and arrays, pandas Timestamp/Timedelta/"
    "Period/NaT/NA/Index/Series/DataFrame"
)
_INT_TEXT = re.compile(r"-?[0-9]+")
_INT64_MIN = -(1 << 63)
_UINT64_MAX = (1 << 64) - 1


# --- errors raised inside the codec ------------------------------------------------------------
class _TupleSeen(Exception):
    """A tuple was met on the fast path; pack again on the slow path."""


class _Invalid(ValueError):
    """Bytes that are msgpack but not a valid mdflow value (message is the reason)."""


def _unsupported(
    obj: object, hint: str = "convert it to one of these (e.g. str(obj) or a dict of its fields)"
) -> EncodeError:
    return EncodeError(
        f"cannot encode {describe(obj)} with codec 'msgpack'; supported: {_SUPPORTED}; hint: {hint}"
    )


# --- packing -----------------------------------------------------------------------------------
_ENCODERS: dict[type, Callable[[Any], Any]] = {}
_PACKERS: list[msgpack.Packer] = []  # a pool: pack() is re-entrant (ext payloads nest)


def _new_packer(default: Callable[[Any], Any]) -> msgpack.Packer:
    return msgpack.Packer(default=default, use_bin_type=True, strict_types=True, datetime=False)


def _pack(obj: object) -> bytes:
    """Pack without wrapping errors (used for nested ext payloads)."""
    try:
        packer = _PACKERS.pop()
    except IndexError:
        packer = _new_packer(_default)
    try:
        return packer.pack(obj)
    except _TupleSeen:
        # Tuples travel as arrays, but a tuple used as a dict key must come back
        # hashable: rewrite the tree so that such keys become EXT_TUPLE.
        return _new_packer(_default_lenient).pack(_rewrite(obj))
    finally:
        if len(_PACKERS) < 32:
            _PACKERS.append(packer)


def pack(obj: object) -> bytes:
    """Serialise ``obj`` with mdflow's msgpack dialect.

    Parameters
    ----------
    obj : object
        JSON-like data, bytes, big ints, Decimal, datetime/date/time/timedelta,
        numpy scalars and arrays, or pandas objects.

    Returns
    -------
    bytes

    Raises
    ------
    EncodeError
        If ``obj`` holds something the codec cannot carry (the message names it).

    Notes
    -----
    Tuples are written as msgpack arrays and decode as lists, except where a
    hashable value is needed (dict keys, pandas names), where they stay tuples.
    Subclasses of dict/list/str/int/float and bytearray decode as their base type.
    """
    try:
        return _pack(obj)
    except EncodeError:
        raise
    except RecursionError:
        raise EncodeError(
            f"cannot encode {describe(obj)} with codec 'msgpack': nested too "
            "deeply or it contains itself"
        ) from None
    except (TypeError, ValueError, OverflowError) as exc:
        if "recursion" in str(exc):
            raise EncodeError(
                f"cannot encode {describe(obj)} with codec 'msgpack': nested "
                "too deeply or it contains itself"
            ) from None
        raise EncodeError(f"cannot encode {describe(obj)} with codec 'msgpack': {exc}") from exc


def _default(obj: object) -> object:
    encoder = _ENCODERS.get(type(obj))
    if encoder is None:
        encoder = _find_encoder(type(obj), obj)
    return encoder(obj)


def _default_lenient(obj: object) -> object:
    if isinstance(obj, tuple):
        return list(obj)
    return _default(obj)


def _raise_tuple(obj: object) -> object:
    raise _TupleSeen


class _Frozen:
    """Marks a tuple that must decode as a tuple (it sits in a hashable place)."""

    __slots__ = ("items",)

    def __init__(self, items: tuple[object, ...]) -> None:
        self.items = items


def _freeze(value: object) -> object:
    """Wrap ``value`` (a name or key) so that tuples inside it stay tuples."""
    return _Frozen(value) if isinstance(value, tuple) else value


def _enc_frozen(obj: _Frozen) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_TUPLE, _pack([_freeze(item) for item in obj.items]))


def _rewrite(obj: object) -> object:
    if isinstance(obj, dict):
        return {_freeze(k): _rewrite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rewrite(v) for v in obj]
    return obj


def _enc_int(obj: int) -> object:
    value = int(obj)
    if _INT64_MIN <= value <= _UINT64_MAX:
        return value
    return msgpack.ExtType(EXT_BIGINT, str(value).encode("ascii"))


def tz_spec(tz: _dt.tzinfo | None) -> object:
    """Encode a time zone: None, an IANA key, or ``[offset_microseconds, name]``."""
    if tz is None:
        return None
    if isinstance(tz, ZoneInfo) and tz.key:
        return tz.key
    if isinstance(tz, _dt.timezone):
        offset = tz.utcoffset(None)
        name = tz.tzname(None)
        default_name = _dt.timezone(offset).tzname(None)
        return [offset // _dt.timedelta(microseconds=1), None if name == default_name else name]
    zone = getattr(tz, "zone", None)
    if isinstance(zone, str) and type(tz).__module__.startswith("pytz"):
        return zone  # decodes as zoneinfo.ZoneInfo(zone)
    raise EncodeError(
        f"cannot encode time zone {describe(tz)} with codec 'msgpack'; supported: "
        "zoneinfo.ZoneInfo, datetime.timezone, pytz zones; hint: use "
        "zoneinfo.ZoneInfo('Area/City') or datetime.timezone(offset)"
    )


def tz_from_spec(spec: object) -> _dt.tzinfo | None:
    """Inverse of :func:`tz_spec`."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return ZoneInfo(spec)
    if isinstance(spec, list) and len(spec) == 2 and type(spec[0]) is int:
        offset = _dt.timedelta(microseconds=spec[0])
        if spec[1] is None:
            return _dt.timezone(offset)
        if isinstance(spec[1], str):
            return _dt.timezone(offset, spec[1])
    raise _Invalid(f"bad time zone {describe(spec)}")


def _enc_datetime(d: _dt.datetime) -> msgpack.ExtType:
    return msgpack.ExtType(
        EXT_DATETIME,
        _pack(
            [
                d.year,
                d.month,
                d.day,
                d.hour,
                d.minute,
                d.second,
                d.microsecond,
                d.fold,
                tz_spec(d.tzinfo),
            ]
        ),
    )


def _enc_date(d: _dt.date) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_DATE, _pack([d.year, d.month, d.day]))


def _enc_time(t: _dt.time) -> msgpack.ExtType:
    return msgpack.ExtType(
        EXT_TIME, _pack([t.hour, t.minute, t.second, t.microsecond, t.fold, tz_spec(t.tzinfo)])
    )


def _enc_timedelta(t: _dt.timedelta) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_TIMEDELTA, _pack([t.days, t.seconds, t.microseconds]))


def _enc_decimal(d: decimal.Decimal) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_DECIMAL, str(d).encode("ascii"))


_ENCODERS.update(
    {
        int: _enc_int,  # only called for ints beyond 64 bits
        tuple: _raise_tuple,
        _Frozen: _enc_frozen,
        _dt.datetime: _enc_datetime,
        _dt.date: _enc_date,
        _dt.time: _enc_time,
        _dt.timedelta: _enc_timedelta,
        decimal.Decimal: _enc_decimal,
    }
)


class ArrayTypes(NamedTuple):
    """The numpy/pandas half of the format (:mod:`mdflow.codecs.pandas_ext`)."""

    encoders: dict[type, Callable[[Any], Any]]
    decoders: dict[int, Callable[[bytes], object]]
    find_encoder: Callable[[type], Callable[[Any], Any] | None]


_array_loader: Callable[[], ArrayTypes] | None = None
_array_types: ArrayTypes | None = None


def use_array_types(loader: Callable[[], ArrayTypes]) -> None:
    """Install the function that imports the numpy/pandas ext types on first use.

    The numpy/pandas half builds on this module, so this module cannot import
    it; :mod:`mdflow.codecs.framing` (above both) connects them. pandas is slow
    to import, so it is loaded only when a numpy/pandas object is met.
    """
    global _array_loader
    _array_loader = loader


def _load_frames() -> ArrayTypes:
    global _array_types
    if _array_types is None:
        if _array_loader is None:
            raise _Invalid("numpy/pandas ext types are not installed (import mdflow.codecs)")
        types = _array_loader()
        _ENCODERS.update(types.encoders)
        _DECODERS.update(types.decoders)
        _array_types = types
    return _array_types


class _Record(Protocol):
    """A registered mdflow data type (see :data:`mdflow.marketdata.WIRE_TYPES`)."""

    __mdflow_type__: ClassVar[str]

    def __mdflow_encode__(self) -> object: ...

    @classmethod
    def __mdflow_decode__(cls, state: Any) -> object: ...


def _enc_record(obj: _Record) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_RECORD, _pack([obj.__mdflow_type__, obj.__mdflow_encode__()]))


def _dec_record(data: bytes) -> object:
    from ..marketdata import WIRE_TYPES  # only registered classes are ever built

    item = _unpack(data)
    if type(item) is not list or len(item) != 2 or item[0] not in WIRE_TYPES:
        raise _Invalid(
            f"bad or unknown mdflow record {describe(item)}; known: {sorted(WIRE_TYPES)}"
        )
    # WIRE_TYPES is declared as dict[str, type]; every class in it implements _Record.
    record_type = cast("type[_Record]", WIRE_TYPES[item[0]])
    try:
        return record_type.__mdflow_decode__(item[1])
    except (TypeError, ValueError, KeyError) as exc:
        raise _Invalid(f"invalid {item[0]} record: {exc}") from exc


def _find_encoder(cls: type, obj: object) -> Callable[[Any], Any]:
    encoder: Callable[[Any], Any] | None = None
    if isinstance(getattr(cls, "__mdflow_type__", None), str):
        encoder = _enc_record
    if cls.__module__.partition(".")[0] in ("numpy", "pandas"):
        frames = _load_frames()
        encoder = _ENCODERS.get(cls) or frames.find_encoder(cls)
    if encoder is None:
        for base, enc in (
            (tuple, _raise_tuple),
            (int, _enc_int),
            (float, float),
            (str, str.__str__),
            (bytes, bytes),
            (bytearray, bytes),
            (memoryview, bytes),
            (dict, dict),
            (list, list),
            (_dt.datetime, _enc_datetime),
            (_dt.date, _enc_date),
            (_dt.time, _enc_time),
            (_dt.timedelta, _enc_timedelta),
            (decimal.Decimal, _enc_decimal),
        ):
            if issubclass(cls, base):
                encoder = enc
                break
    if encoder is None:
        if isinstance(obj, (set, frozenset)):
            raise _unsupported(obj, "convert it to a list, e.g. sorted(obj)")
        raise _unsupported(obj)
    _ENCODERS[cls] = encoder
    return encoder


# --- unpacking ---------------------------------------------------------------------------------
def _check_ints(values: object, n: int, what: str) -> list[int]:
    if type(values) is not list or len(values) != n or any(type(v) is not int for v in values):
        raise _Invalid(f"bad {what} {describe(values)}")
    return values


def _dec_bigint(data: bytes) -> int:
    text = data.decode("ascii")
    if not _INT_TEXT.fullmatch(text):
        raise _Invalid(f"bad big int {describe(data)}")
    return int(text)


_DECIMAL_TEXT = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|Inf(?:inity)?|s?NaN\d*)",
    re.IGNORECASE | re.ASCII,
)


def _dec_decimal(data: bytes) -> decimal.Decimal:
    text = data.decode("ascii")
    if not _DECIMAL_TEXT.fullmatch(text):
        raise _Invalid(f"bad Decimal {describe(data)}")
    return decimal.Decimal(text)


def _dec_datetime(data: bytes) -> _dt.datetime:
    parts = _unpack(data)
    if type(parts) is not list or len(parts) != 9:
        raise _Invalid(f"bad datetime {describe(parts)}")
    y, mo, d, h, mi, s, us, fold = _check_ints(parts[:8], 8, "datetime")
    return _dt.datetime(y, mo, d, h, mi, s, us, tz_from_spec(parts[8]), fold=fold)


def _dec_date(data: bytes) -> _dt.date:
    return _dt.date(*_check_ints(_unpack(data), 3, "date"))


def _dec_time(data: bytes) -> _dt.time:
    parts = _unpack(data)
    if type(parts) is not list or len(parts) != 6:
        raise _Invalid(f"bad time {describe(parts)}")
    h, mi, s, us, fold = _check_ints(parts[:5], 5, "time")
    return _dt.time(h, mi, s, us, tz_from_spec(parts[5]), fold=fold)


def _dec_timedelta(data: bytes) -> _dt.timedelta:
    days, seconds, micro = _check_ints(_unpack(data), 3, "timedelta")
    return _dt.timedelta(days, seconds, micro)


def _dec_tuple(data: bytes) -> tuple[Any, ...]:
    items = _unpack(data)
    if type(items) is not list:
        raise _Invalid(f"bad tuple {describe(items)}")
    return tuple(items)


def _lazy_frames(code: int) -> Callable[[bytes], object]:
    def decode(data: bytes) -> object:
        return _load_frames().decoders[code](data)

    return decode


_DECODERS: dict[int, Callable[[bytes], object]] = {
    EXT_BIGINT: _dec_bigint,
    EXT_DECIMAL: _dec_decimal,
    EXT_DATETIME: _dec_datetime,
    EXT_DATE: _dec_date,
    EXT_TIME: _dec_time,
    EXT_TIMEDELTA: _dec_timedelta,
    EXT_TUPLE: _dec_tuple,
    EXT_RECORD: _dec_record,
    **{code: _lazy_frames(code) for code in range(EXT_NP_SCALAR, EXT_PD_DATAFRAME + 1)},
}


def _ext_hook(code: int, data: bytes) -> object:
    decoder = _DECODERS.get(code)
    if decoder is None:
        raise _Invalid(f"unknown ext type {code}")
    return decoder(data)


_unpackb = msgpack.unpackb


def _unpack(data: bytes | bytearray | memoryview) -> object:
    """Unpack without wrapping errors (used for nested ext payloads)."""
    return _unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook, timestamp=3)


_TOO_LONG = re.compile(r"-?\d+ exceeds max_(map|array|str|bin|ext)_len\(\d+\)")


def _reason(exc: BaseException, data: object = None) -> str:
    """Why ``data`` did not unpack, in words (msgpack's own messages are terse)."""
    size = f"{len(data)} bytes" if isinstance(data, (bytes, bytearray, memoryview)) else "data"
    if isinstance(exc, _Invalid):
        text = str(exc)
    elif isinstance(exc, UnicodeDecodeError):
        text = f"text that is not {exc.encoding} ({exc.reason} at byte {exc.start} of a str)"
    elif isinstance(exc, msgpack.FormatError):  # (its message is empty)
        text = f"a byte that starts no msgpack value (FormatError; {size} in all)"
    elif isinstance(exc, msgpack.ExtraData):
        text = f"trailing bytes after a complete value (ExtraData; {size} in all)"
    elif str(exc) == "Unpack failed: incomplete input":
        text = "no data (empty)" if size == "0 bytes" else f"truncated: {size} end inside a value"
    elif _TOO_LONG.fullmatch(str(exc)):
        text = f"truncated or corrupt: a declared length runs past the end of its {size} ({exc})"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:197] + "..."


def unpack(data: bytes | bytearray | memoryview) -> object:
    """Inverse of :func:`pack`.

    Plain msgpack from other languages decodes too (maps, arrays, str, bin,
    numbers, nil; the msgpack timestamp extension as a UTC ``datetime``).

    Raises
    ------
    DecodeError
        If ``data`` is not valid mdflow msgpack (corrupt, truncated, trailing
        bytes, an unknown ext code, or an ext payload that does not parse).
    """
    try:
        return _unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook, timestamp=3)
    except Exception as exc:  # untrusted bytes: any failure is a DecodeError
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(f"expected bytes, got {describe(data)}") from None
        raise DecodeError(f"not valid mdflow msgpack: {_reason(exc, data)}") from exc
