"""Framing: how encoded bytes sit in a stream entry's fields or a pub/sub message.

The public encode/decode functions (re-exported by :mod:`mdflow.codecs`):
``encode_entry`` / ``decode_entry`` for stream entries, ``encode_message`` /
``decode_message`` for pub/sub payloads and cache values, ``check_codec`` for
``codec=`` arguments. The bytes themselves come from
:mod:`mdflow.codecs.msgpack_ext` (and its numpy/pandas half) or JSON.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, DecodeError, EncodeError, describe
from .msgpack_ext import ArrayTypes, _reason, _unpack, pack, use_array_types


def _array_types() -> ArrayTypes:
    from .pandas_ext import DECODERS, ENCODERS, find_encoder

    return ArrayTypes(ENCODERS, DECODERS, find_encoder)


use_array_types(_array_types)  # numpy/pandas ext types, imported on first use

__all__ = [
    "CODECS",
    "JSON_FIELD",
    "MAGIC",
    "MSGPACK_FIELD",
    "check_codec",
    "decode_entry",
    "decode_message",
    "encode_entry",
    "encode_message",
]

CODECS = ("msgpack", "json", "fields")
"""The codecs an encoder accepts; decoders also accept ``"auto"``."""

MAGIC = b"\xc1MDF"
"""Prefix of a msgpack pub/sub message (0xc1 is unused by msgpack and invalid UTF-8)."""

MSGPACK_FIELD = "mdflow.msgpack"
JSON_FIELD = "mdflow.json"
_RESERVED = (MSGPACK_FIELD, JSON_FIELD)


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
    raise ConfigError(
        f"{where}: parameter 'codec' must be one of {names}; got {describe(codec)}{hint}"
    )


# --- JSON and plain fields ---------------------------------------------------------------------
def _json_default(obj: object) -> object:
    raise EncodeError(
        f"cannot encode {describe(obj)} with codec 'json'; JSON carries dict, list, "
        "str, int, float, bool and None; hint: use codec='msgpack'"
    )


def _to_json(obj: object) -> bytes:
    try:
        return json.dumps(
            obj, separators=(",", ":"), ensure_ascii=False, default=_json_default
        ).encode("utf-8")
    except EncodeError:
        raise
    except (TypeError, ValueError, RecursionError) as exc:
        raise EncodeError(
            f"cannot encode {describe(obj)} with codec 'json': {exc}; hint: use codec='msgpack'"
        ) from None


def _field_value(key: object, value: object) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EncodeError(
                f"cannot encode field {key!r} = {describe(value)} with codec 'fields': {exc}"
            ) from None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    is_numpy = type(value).__module__ == "numpy"
    if (
        not isinstance(value, bool)
        and isinstance(value, numbers.Integral)
        and (isinstance(value, int) or is_numpy)
    ):
        return str(int(value)).encode("ascii")
    if isinstance(value, float) or (is_numpy and isinstance(value, numbers.Real)):
        return repr(float(value)).encode("ascii")
    raise EncodeError(
        f"cannot encode field {key!r} = {describe(value)} with codec 'fields'; "
        "field values must be str, bytes, int or float (not bool, None or "
        "nested data); hint: convert it with str(), or use codec='json' or "
        "codec='msgpack'"
    )


def _encode_fields(obj: object) -> dict[str, bytes]:
    if not isinstance(obj, Mapping):
        raise EncodeError(
            f"cannot encode {describe(obj)} with codec 'fields': it needs a flat "
            "mapping of str to str/bytes/int/float; hint: use codec='msgpack'"
        )
    if not obj:
        raise EncodeError(
            "cannot encode an empty mapping with codec 'fields': a stream entry "
            "needs at least one field; hint: add a field or use codec='msgpack'"
        )
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise EncodeError(
                f"cannot encode field name {describe(key)} with codec 'fields': "
                "field names must be str; hint: use codec='msgpack'"
            )
        out[key] = _field_value(key, value)
    if len(out) == 1 and next(iter(out)) in _RESERVED:
        raise EncodeError(
            f"cannot encode a lone field named {next(iter(out))!r} with codec "
            "'fields': that name marks an mdflow-encoded entry; hint: rename it"
        )
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
        raise DecodeError(
            f"field {MSGPACK_FIELD!r} holds {describe(value)}, not bytes "
            "(read it with decode_responses=False)"
        )
    try:
        return _unpack(value)
    except Exception as exc:
        raise DecodeError(
            f"field {MSGPACK_FIELD!r} is not valid mdflow msgpack: {_reason(exc, value)}"
        ) from exc


def _decode_json_field(value: object) -> object:
    try:
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value).decode("utf-8")
        if not isinstance(value, str):  # the TypeError json.loads would raise
            raise TypeError(
                f"the JSON object must be str, bytes or bytearray, not {type(value).__name__}"
            )
        return json.loads(value)
    except (ValueError, TypeError, RecursionError) as exc:
        raise DecodeError(f"field {JSON_FIELD!r} is not valid UTF-8 JSON: {_reason(exc)}") from exc


def decode_entry(
    fields: Mapping[Any, Any],
    codec: str = "auto",
    source: str | bytes | None = None,
    entry_id: str | bytes | None = None,
) -> object:
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
                raise DecodeError(
                    f"the entry is mdflow-encoded (field {name!r}), not plain "
                    "fields; hint: use codec='auto'"
                )
            return {_text(k): _text(v) for k, v in fields.items()}
        if codec in ("msgpack", "json"):
            found = [_text(k) for k in list(fields)[:8]]
            raise DecodeError(
                f"codec={codec!r} expects one field 'mdflow.{codec}', found "
                f"fields {found}{' ...' if len(fields) > 8 else ''}"
            )
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
        raise ConfigError(
            "encode_message: parameter 'codec' must be 'msgpack' or 'json' for "
            "pub/sub messages; got 'fields' (which is for stream entries)"
        )
    raise AssertionError("unreachable")  # pragma: no cover


_JSON_START = frozenset('{["-0123456789')


def _preview(data: object) -> str:
    return describe(data, limit=40)


def decode_message(
    data: bytes | bytearray | memoryview | str, codec: str = "auto", source: str | None = None
) -> object:
    """Turn a pub/sub payload back into an object.

    Parameters
    ----------
    data : bytes or str
        The payload (any bytes-like object is taken as bytes).
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
        if codec == "auto" or codec == "msgpack":
            if isinstance(data, bytes) and data.startswith(MAGIC):
                try:
                    return _unpack(data[len(MAGIC) :])
                except Exception as exc:
                    raise DecodeError(
                        f"message is not valid mdflow msgpack: {_reason(exc, data[len(MAGIC) :])}"
                    ) from exc
            if codec == "msgpack":
                raise DecodeError(
                    f"codec='msgpack' expects a message starting with {MAGIC!r}; "
                    f"got {_preview(data)}"
                )
            if isinstance(data, bytes):
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
                return json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
            except (ValueError, RecursionError) as exc:
                raise DecodeError(
                    f"codec='json' expects UTF-8 JSON text; got {_preview(data)}: {_reason(exc)}"
                ) from exc
        if check_codec(codec, allow_auto=True, where="decode_message") == "fields":
            raise ConfigError(
                "decode_message: parameter 'codec' must be 'auto', 'msgpack' or "
                "'json' for pub/sub messages; got 'fields'"
            )
        raise AssertionError("unreachable")  # pragma: no cover
    except DecodeError as exc:
        raise exc.at(_place(source)) from exc.__cause__
