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

This room is the wire format: :mod:`.framing` (entries and messages, the
public API), :mod:`.msgpack_ext` (the msgpack dialect and its ext types) and
:mod:`.pandas_ext` (numpy/pandas ext types, loaded on first use). It may
import ``mdflow.errors`` and ``mdflow.marketdata`` (registered record types),
nothing else of mdflow.

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

from .framing import (  # noqa: F401 - the field names are part of the documented wire format
    CODECS,
    JSON_FIELD,
    MAGIC,
    MSGPACK_FIELD,
    check_codec,
    decode_entry,
    decode_message,
    encode_entry,
    encode_message,
)
from .msgpack_ext import (  # noqa: F401 - EXT_* are part of the documented wire format
    EXT_BIGINT,
    EXT_DATE,
    EXT_DATETIME,
    EXT_DECIMAL,
    EXT_NP_ARRAY,
    EXT_NP_SCALAR,
    EXT_PD_DATAFRAME,
    EXT_PD_INDEX,
    EXT_PD_NA,
    EXT_PD_NAT,
    EXT_PD_PERIOD,
    EXT_PD_SERIES,
    EXT_PD_TIMEDELTA,
    EXT_PD_TIMESTAMP,
    EXT_RECORD,
    EXT_TIME,
    EXT_TIMEDELTA,
    EXT_TUPLE,
    pack,
    unpack,
)

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
