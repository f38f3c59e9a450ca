"""How mdflow turns Python objects into Redis stream entries and pub/sub payloads.

Three codecs are available wherever a node takes ``codec=``:

``"msgpack"`` (the default)
    mdflow's msgpack dialect: plain msgpack for JSON-like data, plus extension
    types so that ints beyond 64 bits, :class:`~decimal.Decimal`, datetimes
    (with their time zone), numpy scalars and arrays, and pandas objects
    (``Timestamp``, ``Index``, ``Series``, ``DataFrame`` ...) round trip
    exactly. A stream entry holds one field, ``mdflow.msgpack``; a pub/sub
    message starts with the 4-byte marker ``b"\\xc1MDF"``.
``"json"``
    UTF-8 JSON text, readable by anything. A stream entry holds one field,
    ``mdflow.json``; a pub/sub message is the JSON text itself.
``"fields"``
    A flat mapping written as ordinary Redis fields (``XADD s * sym BTC px
    1.5``), for ``redis-cli`` and clients in other languages. Values are text
    when read back.

Decoding with ``codec="auto"`` recognises all three, and treats any other
stream entry (e.g. one written by ``redis-cli``) as plain fields. Decoding
never unpickles or evaluates anything; bad bytes raise
:class:`~mdflow.errors.DecodeError` naming the stream and entry.

The wire format is documented for other languages in the README
("Wire format").

Examples
--------
>>> from mdflow.codecs import encode_entry, decode_entry, pack, unpack
>>> fields = encode_entry({"sym": "BTC", "px": 1.5})
>>> list(fields)
['mdflow.msgpack']
>>> decode_entry(fields)
{'sym': 'BTC', 'px': 1.5}
>>> decode_entry({b"sym": b"BTC", b"px": b"1.5"})      # written by redis-cli
{'sym': 'BTC', 'px': '1.5'}
>>> encode_entry({"sym": "BTC", "px": 1.5}, codec="fields")
{'sym': b'BTC', 'px': b'1.5'}
>>> import datetime, decimal
>>> unpack(pack({"t": datetime.date(2024, 1, 2), "d": decimal.Decimal("1.10")}))
{'t': datetime.date(2024, 1, 2), 'd': Decimal('1.10')}
>>> unpack(pack((1, 2)))      # tuples travel as msgpack arrays
[1, 2]
"""

from __future__ import annotations

import datetime as _dt
import decimal
import json
import numbers
import re
from collections.abc import Mapping
from typing import Any, Callable
from zoneinfo import ZoneInfo

import msgpack

from .errors import ConfigError, DecodeError, EncodeError, describe

__all__ = [
    "CODECS",
    "MAGIC",
    "check_codec",
    "decode_entry",
    "decode_message",
    "encode_entry",
    "encode_message",
    "pack",
    "unpack",
]

CODECS = ("msgpack", "json", "fields")
"""The codecs an encoder accepts; decoders also accept ``"auto"``."""

MAGIC = b"\xc1MDF"
"""Prefix of a msgpack pub/sub message (0xc1 is unused by msgpack and invalid UTF-8)."""

MSGPACK_FIELD = "mdflow.msgpack"
JSON_FIELD = "mdflow.json"
_RESERVED = (MSGPACK_FIELD, JSON_FIELD)

# msgpack extension type codes (the documented contract; never renumber).
EXT_BIGINT = 1       # ASCII decimal digits
EXT_DECIMAL = 2      # ASCII str(Decimal)
EXT_DATETIME = 3     # [year, month, day, hour, minute, second, microsecond, fold, tz]
EXT_DATE = 4         # [year, month, day]
EXT_TIME = 5         # [hour, minute, second, microsecond, fold, tz]
EXT_TIMEDELTA = 6    # [days, seconds, microseconds]
EXT_TUPLE = 7        # array; a tuple in a hashable place (dict key, pandas name)
EXT_NP_SCALAR = 8    # numpy scalar
EXT_NP_ARRAY = 9     # numpy ndarray
EXT_PD_TIMESTAMP = 10
EXT_PD_TIMEDELTA = 11
EXT_PD_NAT = 12
EXT_PD_NA = 13
EXT_PD_PERIOD = 14
EXT_PD_INDEX = 15
EXT_PD_SERIES = 16
EXT_PD_DATAFRAME = 17
EXT_RECORD = 18      # [tag, state]: a registered mdflow data type (MarketDataPoint, OHLCV)

_SUPPORTED = ("None, bool, int, float, str, bytes, list, tuple, dict, datetime/date/time/"
              "timedelta, Decimal, numpy scalars and arrays, pandas Timestamp/Timedelta/"
              "Period/NaT/NA/Index/Series/DataFrame")
_INT_TEXT = re.compile(r"-?[0-9]+")
_INT64_MIN = -(1 << 63)
_UINT64_MAX = (1 << 64) - 1


# --- errors raised inside the codec ------------------------------------------------------------
class _TupleSeen(Exception):
    """A tuple was met on the fast path; pack again on the slow path."""


class _Invalid(ValueError):
    """Bytes that are msgpack but not a valid mdflow value (message is the reason)."""


def _unsupported(obj: object, hint: str = "convert it to one of these (e.g. str(obj) or a "
                 "dict of its fields)") -> EncodeError:
    return EncodeError(f"cannot encode {describe(obj)} with codec 'msgpack'; "
                       f"supported: {_SUPPORTED}; hint: {hint}")


# --- packing -----------------------------------------------------------------------------------
_ENCODERS: dict[type, Callable[[Any], Any]] = {}
_PACKERS: list[msgpack.Packer] = []  # a pool: pack() is re-entrant (ext payloads nest)


def _new_packer(default: Callable[[Any], Any]) -> msgpack.Packer:
    return msgpack.Packer(default=default, use_bin_type=True, strict_types=True,
                          datetime=False)


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
        raise EncodeError(f"cannot encode {describe(obj)} with codec 'msgpack': nested too "
                          "deeply or it contains itself") from None
    except (TypeError, ValueError, OverflowError) as exc:
        if "recursion" in str(exc):
            raise EncodeError(f"cannot encode {describe(obj)} with codec 'msgpack': nested "
                              "too deeply or it contains itself") from None
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

    def __init__(self, items: tuple):
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
    raise EncodeError(f"cannot encode time zone {describe(tz)} with codec 'msgpack'; supported: "
                      "zoneinfo.ZoneInfo, datetime.timezone, pytz zones; hint: use "
                      "zoneinfo.ZoneInfo('Area/City') or datetime.timezone(offset)")


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
    return msgpack.ExtType(EXT_DATETIME, _pack(
        [d.year, d.month, d.day, d.hour, d.minute, d.second, d.microsecond, d.fold,
         tz_spec(d.tzinfo)]))


def _enc_date(d: _dt.date) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_DATE, _pack([d.year, d.month, d.day]))


def _enc_time(t: _dt.time) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_TIME, _pack(
        [t.hour, t.minute, t.second, t.microsecond, t.fold, tz_spec(t.tzinfo)]))


def _enc_timedelta(t: _dt.timedelta) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_TIMEDELTA, _pack([t.days, t.seconds, t.microseconds]))


def _enc_decimal(d: decimal.Decimal) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_DECIMAL, str(d).encode("ascii"))


_ENCODERS.update({
    int: _enc_int,  # only called for ints beyond 64 bits
    tuple: _raise_tuple,
    _Frozen: _enc_frozen,
    _dt.datetime: _enc_datetime,
    _dt.date: _enc_date,
    _dt.time: _enc_time,
    _dt.timedelta: _enc_timedelta,
    decimal.Decimal: _enc_decimal,
})

_frames = None


def _load_frames():
    """Import the numpy/pandas half of the codec on first use (pandas is slow to import)."""
    global _frames
    if _frames is None:
        from . import _frames as frames

        _ENCODERS.update(frames.ENCODERS)
        _DECODERS.update(frames.DECODERS)
        _frames = frames
    return _frames


def _enc_record(obj: Any) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_RECORD, _pack([obj.__mdflow_type__, obj.__mdflow_encode__()]))


def _dec_record(data: bytes) -> object:
    from .marketdata import WIRE_TYPES  # only registered classes are ever built

    item = _unpack(data)
    if type(item) is not list or len(item) != 2 or item[0] not in WIRE_TYPES:
        raise _Invalid(f"bad or unknown mdflow record {describe(item)}; known: {sorted(WIRE_TYPES)}")
    try:
        return WIRE_TYPES[item[0]].__mdflow_decode__(item[1])
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
            (tuple, _raise_tuple), (int, _enc_int), (float, float),
            (str, str.__str__), (bytes, bytes), (bytearray, bytes), (memoryview, bytes),
            (dict, dict), (list, list), (_dt.datetime, _enc_datetime), (_dt.date, _enc_date),
            (_dt.time, _enc_time), (_dt.timedelta, _enc_timedelta),
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
def _check_ints(values: list, n: int, what: str) -> list:
    if type(values) is not list or len(values) != n or any(type(v) is not int for v in values):
        raise _Invalid(f"bad {what} {describe(values)}")
    return values


def _dec_bigint(data: bytes) -> int:
    text = data.decode("ascii")
    if not _INT_TEXT.fullmatch(text):
        raise _Invalid(f"bad big int {describe(data)}")
    return int(text)


_DECIMAL_TEXT = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|Inf(?:inity)?|s?NaN\d*)",
                           re.IGNORECASE | re.ASCII)


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


def _dec_tuple(data: bytes) -> tuple:
    items = _unpack(data)
    if type(items) is not list:
        raise _Invalid(f"bad tuple {describe(items)}")
    return tuple(items)


def _lazy_frames(code: int) -> Callable[[bytes], object]:
    def decode(data: bytes) -> object:
        return _load_frames().DECODERS[code](data)
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


def _unpack(data: bytes) -> object:
    """Unpack without wrapping errors (used for nested ext payloads)."""
    return _unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_hook, timestamp=3)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, _Invalid):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:197] + "..."


def unpack(data: bytes) -> object:
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
        raise DecodeError(f"not valid mdflow msgpack: {_reason(exc)}") from exc


# --- codec names -------------------------------------------------------------------------------
def check_codec(codec: object, *, allow_auto: bool, where: str) -> str:
    """Validate a ``codec=`` argument and return it.

    Parameters
    ----------
    codec : object
        What the caller passed.
    allow_auto : bool
        Whether ``"auto"`` is allowed (decoders only).
    where : str
        The function or node being configured, named in the error.

    Raises
    ------
    ConfigError
        If ``codec`` is not one of the allowed names (also a ``ValueError``).
    """
    allowed = (("auto",) if allow_auto else ()) + CODECS
    if isinstance(codec, str) and codec in allowed:
        return codec
    hint = ""
    if isinstance(codec, str) and codec.strip().lower() in allowed:
        hint = f"; hint: use {codec.strip().lower()!r}"
    names = ", ".join(repr(name) for name in allowed)
    raise ConfigError(f"{where}: parameter 'codec' must be one of {names}; "
                      f"got {describe(codec)}{hint}")


# --- JSON and plain fields ---------------------------------------------------------------------
def _json_default(obj: object) -> object:
    raise EncodeError(f"cannot encode {describe(obj)} with codec 'json'; JSON carries dict, list, "
                      "str, int, float, bool and None; hint: use codec='msgpack'")


def _to_json(obj: object) -> bytes:
    try:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False,
                          default=_json_default).encode("utf-8")
    except EncodeError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        raise EncodeError(f"cannot encode {describe(obj)} with codec 'json': {exc}; "
                          "hint: use codec='msgpack'") from None


def _field_value(key: object, value: object) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EncodeError(f"cannot encode field {key!r} = {describe(value)} with codec "
                              f"'fields': {exc}") from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    is_numpy = type(value).__module__ == "numpy"
    if not isinstance(value, bool) and isinstance(value, numbers.Integral) and (
            isinstance(value, int) or is_numpy):
        return str(int(value)).encode("ascii")
    if isinstance(value, float) or (is_numpy and isinstance(value, numbers.Real)):
        return repr(float(value)).encode("ascii")
    raise EncodeError(f"cannot encode field {key!r} = {describe(value)} with codec 'fields'; "
                      "field values must be str, bytes, int or float (not bool, None or "
                      "nested data); hint: convert it with str(), or use codec='json' or "
                      "codec='msgpack'")


def _encode_fields(obj: object) -> dict[str, bytes]:
    if not isinstance(obj, Mapping):
        raise EncodeError(f"cannot encode {describe(obj)} with codec 'fields': it needs a flat "
                          "mapping of str to str/bytes/int/float; hint: use codec='msgpack'")
    if not obj:
        raise EncodeError("cannot encode an empty mapping with codec 'fields': a stream entry "
                          "needs at least one field; hint: add a field or use codec='msgpack'")
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise EncodeError(f"cannot encode field name {describe(key)} with codec 'fields': "
                              "field names must be str; hint: use codec='msgpack'")
        out[key] = _field_value(key, value)
    if len(out) == 1 and next(iter(out)) in _RESERVED:
        raise EncodeError(f"cannot encode a lone field named {next(iter(out))!r} with codec "
                          "'fields': that name marks an mdflow-encoded entry; hint: rename it")
    return out


def encode_entry(obj: object, codec: str = "msgpack") -> dict[str, bytes]:
    """Turn ``obj`` into the fields of a Redis stream entry (for ``XADD``).

    Parameters
    ----------
    obj : object
        The value to write.
    codec : {"msgpack", "json", "fields"}
        ``"msgpack"``: one field ``mdflow.msgpack`` = :func:`pack` (obj);
        ``"json"``: one field ``mdflow.json`` = UTF-8 JSON; ``"fields"``: ``obj``
        (a flat mapping of str to str/bytes/int/float) as plain fields.

    Returns
    -------
    dict of str to bytes

    Raises
    ------
    EncodeError
        If the codec cannot carry ``obj``.
    ConfigError
        If ``codec`` is not a codec name.
    """
    if codec == "msgpack":
        return {MSGPACK_FIELD: pack(obj)}
    if codec == "json":
        return {JSON_FIELD: _to_json(obj)}
    if codec == "fields":
        return _encode_fields(obj)
    check_codec(codec, allow_auto=False, where="encode_entry")
    raise AssertionError("unreachable")  # pragma: no cover


def _text(value: object) -> object:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def _place(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _decode_msgpack_field(value: object) -> object:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise DecodeError(f"field {MSGPACK_FIELD!r} holds {describe(value)}, not bytes "
                          "(read it with decode_responses=False)")
    try:
        return _unpack(value)
    except Exception as exc:
        raise DecodeError(f"field {MSGPACK_FIELD!r} is not valid mdflow msgpack: "
                          f"{_reason(exc)}") from exc


def _decode_json_field(value: object) -> object:
    try:
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value).decode("utf-8")
        return json.loads(value)
    except (ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(f"field {JSON_FIELD!r} is not valid UTF-8 JSON: "
                          f"{_reason(exc)}") from exc


def decode_entry(fields: Mapping, codec: str = "auto", source: str | bytes | None = None,
                 entry_id: str | bytes | None = None) -> object:
    """Turn the fields of a stream entry back into an object.

    Parameters
    ----------
    fields : mapping
        The entry's fields as redis-py returns them (bytes or str keys and values).
    codec : {"auto", "msgpack", "json", "fields"}
        ``"auto"``: a lone ``mdflow.msgpack`` field is unpacked, a lone
        ``mdflow.json`` field is parsed, anything else is plain fields: a dict
        of str to str (a value that is not UTF-8 stays bytes). An explicit
        codec requires an entry written with it.
    source, entry_id : str or bytes, optional
        The stream and entry id, named in errors.

    Raises
    ------
    DecodeError
        If the entry is empty, malformed, or not what ``codec`` expects.
    """
    try:
        if not isinstance(fields, Mapping):
            raise DecodeError(f"expected a mapping of fields, got {describe(fields)}")
        if not fields:
            raise DecodeError("the entry has no fields")
        name = None
        if len(fields) == 1:
            key = next(iter(fields))
            name = _text(key)
            if name in _RESERVED and codec in ("auto", name[7:]):
                value = fields[key]
                if name == MSGPACK_FIELD:
                    return _decode_msgpack_field(value)
                return _decode_json_field(value)
        if codec in ("auto", "fields"):
            if name in _RESERVED:
                raise DecodeError(f"the entry is mdflow-encoded (field {name!r}), not plain "
                                  "fields; hint: use codec='auto'")
            return {_text(k): _text(v) for k, v in fields.items()}
        if codec in ("msgpack", "json"):
            found = [_text(k) for k in list(fields)[:8]]
            raise DecodeError(f"codec={codec!r} expects one field 'mdflow.{codec}', found "
                              f"fields {found}{' ...' if len(fields) > 8 else ''}")
        check_codec(codec, allow_auto=True, where="decode_entry")
        raise AssertionError("unreachable")  # pragma: no cover
    except DecodeError as exc:
        raise exc.at(_place(source), _place(entry_id)) from exc.__cause__


# --- pub/sub messages --------------------------------------------------------------------------
def encode_message(obj: object, codec: str = "msgpack") -> bytes:
    """Turn ``obj`` into a pub/sub payload.

    ``"msgpack"`` gives :data:`MAGIC` + :func:`pack` (obj); ``"json"`` gives
    UTF-8 JSON text. (``"fields"`` is for stream entries only.)

    Raises
    ------
    EncodeError
        If the codec cannot carry ``obj``.
    ConfigError
        If ``codec`` is not ``"msgpack"`` or ``"json"``.
    """
    if codec == "msgpack":
        return MAGIC + pack(obj)
    if codec == "json":
        return _to_json(obj)
    if check_codec(codec, allow_auto=False, where="encode_message") == "fields":
        raise ConfigError("encode_message: parameter 'codec' must be 'msgpack' or 'json' for "
                          "pub/sub messages; got 'fields' (which is for stream entries)")
    raise AssertionError("unreachable")  # pragma: no cover


_JSON_START = frozenset('{["-0123456789')


def _preview(data: object) -> str:
    return describe(data, limit=40)


def decode_message(data: bytes | str, codec: str = "auto", source: str | None = None) -> object:
    """Turn a pub/sub payload back into an object.

    Parameters
    ----------
    data : bytes or str
        The payload.
    codec : {"auto", "msgpack", "json"}
        ``"auto"``: a payload starting with :data:`MAGIC` is unpacked; UTF-8
        text that looks like JSON (starts with one of ``{["-0123456789`` or is
        ``true``/``false``/``null``) is parsed, falling back to the text; other
        text is returned as str; anything else as bytes, unchanged.
    source : str, optional
        The channel, named in errors.

    Raises
    ------
    DecodeError
        If an explicit codec does not match, or a msgpack payload is corrupt.
    """
    try:
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, (bytes, str)):
            raise DecodeError(f"expected bytes or str, got {describe(data)}")
        is_bytes = isinstance(data, bytes)
        if codec == "auto" or codec == "msgpack":
            if is_bytes and data.startswith(MAGIC):
                try:
                    return _unpack(data[len(MAGIC):])
                except Exception as exc:
                    raise DecodeError("message is not valid mdflow msgpack: "
                                      f"{_reason(exc)}") from exc
            if codec == "msgpack":
                raise DecodeError(f"codec='msgpack' expects a message starting with {MAGIC!r}; "
                                  f"got {_preview(data)}")
            if is_bytes:
                try:
                    data = data.decode("utf-8")
                except UnicodeDecodeError:
                    return data
            text = data.strip()
            if text and (text[0] in _JSON_START or text in ("true", "false", "null")):
                try:
                    return json.loads(text)
                except (ValueError, RecursionError):
                    return data
            return data
        if codec == "json":
            try:
                return json.loads(data.decode("utf-8") if is_bytes else data)
            except (ValueError, RecursionError) as exc:
                raise DecodeError(f"codec='json' expects UTF-8 JSON text; got {_preview(data)}: "
                                  f"{_reason(exc)}") from exc
        if check_codec(codec, allow_auto=True, where="decode_message") == "fields":
            raise ConfigError("decode_message: parameter 'codec' must be 'auto', 'msgpack' or "
                              "'json' for pub/sub messages; got 'fields'")
        raise AssertionError("unreachable")  # pragma: no cover
    except DecodeError as exc:
        raise exc.at(_place(source)) from exc.__cause__
