"""Market-data ticks as the shipped analyzers read them: :func:`parse_tick`.

The shipped analyzers read market-data *ticks*: mappings with

==========  ========================================================  ==========
field       meaning                                                   required
==========  ========================================================  ==========
``symbol``  instrument, e.g. ``"BTC-USD"``                            yes
``price``   last price (number, or a numeric str as JSON publishers   yes
            often send)
``volume``  traded quantity of this tick (number or numeric str)      no (0)
``ts``      epoch seconds (ms/µs/ns are recognised by magnitude) or   no (now)
            an ISO-8601 str
==========  ========================================================  ==========

A message that is not such a tick raises :class:`~mdflow.DecodeError`
(counted as a decoding error by the scanner).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..errors import DecodeError, describe
from ..record import Record

__all__ = ["Tick", "parse_tick"]


@dataclass(frozen=True, slots=True)
class Tick:
    """One trade or quote of one symbol: price, volume and epoch seconds."""

    symbol: str
    price: float
    volume: float
    ts: float


def _number(value: Any, field: str, data: Any) -> float:
    try:
        number = float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError) as exc:
        msg = (
            f"tick field {field!r} must be a number or a numeric str; got {describe(value)} "
            f"in {describe(data)}"
        )
        raise DecodeError(msg) from exc
    if not math.isfinite(number) or isinstance(value, bool):
        msg = f"tick field {field!r} must be a finite number; got {describe(value)}"
        raise DecodeError(msg)
    return number


def _timestamp(value: Any, data: Any) -> float:
    if value is None:
        return time.time()
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError as exc:
                msg = f"tick field 'ts' must be epoch seconds or ISO-8601; got {describe(value)}"
                raise DecodeError(msg) from exc
    ts = _number(value, "ts", data)
    while ts > 1e11:  # milliseconds, microseconds or nanoseconds since the epoch
        ts /= 1000.0
    return ts


def parse_tick(data: Any) -> Tick:
    """Read a tick from a decoded message (a mapping, or a Record holding one).

    Examples
    --------
    >>> parse_tick({"symbol": "BTC-USD", "price": "101.5", "volume": 2, "ts": 1700000000000})
    Tick(symbol='BTC-USD', price=101.5, volume=2.0, ts=1700000000.0)
    """
    if isinstance(data, Record):
        data = data.data
    if not isinstance(data, Mapping):
        msg = (
            f"expected a tick like {{'symbol': 'BTC-USD', 'price': 101.5, 'volume': 3.2}}; "
            f"got {describe(data)}"
        )
        raise DecodeError(msg)
    symbol = data.get("symbol")
    if isinstance(symbol, bytes):
        symbol = symbol.decode("utf-8", errors="backslashreplace")
    if not isinstance(symbol, str) or not symbol:
        msg = (
            f"tick field 'symbol' must be a non-empty str; got {describe(symbol)} "
            f"in {describe(data)}"
        )
        raise DecodeError(msg)
    if data.get("price") is None:
        msg = f"tick has no 'price'; got {describe(data)}"
        raise DecodeError(msg)
    price = _number(data["price"], "price", data)
    if price <= 0:
        msg = f"tick field 'price' must be positive; got {describe(data['price'])} for {symbol}"
        raise DecodeError(msg)
    raw_volume = data.get("volume")
    volume = 0.0 if raw_volume is None else _number(raw_volume, "volume", data)
    return Tick(symbol, price, volume, _timestamp(data.get("ts"), data))
