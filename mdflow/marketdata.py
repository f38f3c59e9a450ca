"""The market-data records collectors emit: :class:`MarketDataPoint` and :class:`OHLCV`.

Both are frozen dataclasses that validate themselves on construction and
raise :class:`~mdflow.errors.ValidationError` naming the field and the value
that broke a rule. Timestamps are always timezone-aware UTC ``datetime``:

* an aware ``datetime`` in another zone is converted to UTC;
* an ``int``/``float`` is read as seconds since the epoch (UTC);
* an ISO-8601 ``str`` must carry an offset (``...Z`` or ``+02:00``);
* a *naive* ``datetime`` (or ISO string without offset) is rejected: guessing
  its zone silently shifts data by hours.

Wire format
-----------
Each class has a short stable tag (``__mdflow_type__``), an
``__mdflow_encode__()`` returning plain values (str, int, Decimal, datetime,
dict, list; enums as their str value) and a classmethod
``__mdflow_decode__(state)`` that rebuilds an equal object. The codecs look
classes up by tag in :data:`WIRE_TYPES`.

Examples
--------
>>> from datetime import datetime, timezone
>>> t = datetime(2024, 1, 2, 3, 4, tzinfo=timezone.utc)
>>> candle = OHLCV("BTC-USDT", "1m", t, "100", "101.5", "99", "101", "3.25")
>>> candle.high
Decimal('101.5')
>>> OHLCV.__mdflow_decode__(candle.__mdflow_encode__()) == candle
True
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from .errors import ValidationError, describe

__all__ = ["OHLCV", "TIMEFRAMES", "WIRE_TYPES", "DataType", "MarketDataPoint", "to_utc"]

#: Candle timeframes OHLCV accepts.
TIMEFRAMES: tuple[str, ...] = (
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "12h",
    "1d",
    "1w",
)


class DataType(str, enum.Enum):
    """Kinds of market data a collector can subscribe to.

    Examples
    --------
    >>> DataType("trade")
    <DataType.TRADE: 'trade'>
    >>> DataType.TICKER.value
    'ticker'
    """

    TICKER = "ticker"
    TRADE = "trade"
    ORDERBOOK = "orderbook"
    CANDLE = "candle"
    BALANCE = "balance"

    def __str__(self) -> str:
        return self.value


def to_utc(value: Any, field_name: str = "timestamp", owner: str = "record") -> datetime:
    """Return ``value`` as an aware UTC ``datetime`` (see the module docs for the rules).

    Examples
    --------
    >>> to_utc(0)
    datetime.datetime(1970, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)
    >>> to_utc("2024-01-01T02:00:00+02:00").isoformat()
    '2024-01-01T00:00:00+00:00'
    """
    where = f"{owner}.{field_name}"
    if isinstance(value, datetime):
        if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
            msg = (
                f"{where} must be timezone-aware; got naive {value.isoformat()!r}. "
                "Use datetime.now(timezone.utc) or .replace(tzinfo=timezone.utc) if it is UTC."
            )
            raise ValidationError(msg, field=field_name, value=value)
        if type(value) is not datetime and hasattr(value, "to_pydatetime"):
            value = value.to_pydatetime()  # pandas.Timestamp -> plain datetime, equal on the wire
        return value.astimezone(timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            msg = f"{where} must be a finite number of epoch seconds; got {describe(value)}"
            raise ValidationError(msg, field=field_name, value=value)
        return datetime.fromtimestamp(value, tz=timezone.utc)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            msg = f"{where} must be an ISO-8601 time like '2024-01-01T00:00:00Z'; got {value!r}"
            raise ValidationError(msg, field=field_name, value=value) from None
        return to_utc(parsed, field_name, owner)
    msg = (
        f"{where} must be an aware datetime, epoch seconds or an ISO-8601 str; "
        f"got {describe(value)}"
    )
    raise ValidationError(msg, field=field_name, value=value)


def _text(value: Any, field_name: str, owner: str) -> str:
    if not isinstance(value, str) or not value.strip():
        msg = f"{owner}.{field_name} must be a non-empty str; got {describe(value)}"
        raise ValidationError(msg, field=field_name, value=value)
    return value


def _decimal(value: Any, field_name: str, owner: str) -> Decimal:
    """To ``Decimal`` via ``str``: ``0.1`` becomes ``Decimal('0.1')``, not the binary value."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, float, str)):
        msg = f"{owner}.{field_name} must be a number or a numeric str; got {describe(value)}"
        raise ValidationError(msg, field=field_name, value=value)
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        msg = f"{owner}.{field_name} must be a number or a numeric str; got {describe(value)}"
        raise ValidationError(msg, field=field_name, value=value) from None
    if not number.is_finite():
        msg = f"{owner}.{field_name} must be finite; got {describe(value)}"
        raise ValidationError(msg, field=field_name, value=value)
    return number


def _data_type(value: Any, owner: str) -> DataType:
    try:
        return DataType(value)
    except ValueError:
        choices = ", ".join(repr(d.value) for d in DataType)
        msg = f"{owner}.data_type must be one of {choices}; got {describe(value)}"
        raise ValidationError(msg, field="data_type", value=value) from None


def _state(state: Any, cls: type, keys: tuple[str, ...]) -> dict:
    if not isinstance(state, Mapping):
        msg = f"cannot decode {cls.__name__}: expected a mapping; got {describe(state)}"
        raise ValidationError(msg, field=None, value=state)
    missing = [k for k in keys if k not in state]
    if missing:
        msg = f"cannot decode {cls.__name__}: missing {', '.join(missing)} in {sorted(state)}"
        raise ValidationError(msg, field=missing[0], value=state)
    return dict(state)


@dataclass(frozen=True)
class MarketDataPoint:
    """One normalized observation from an exchange: a ticker, a trade, a book, a balance.

    Parameters
    ----------
    exchange : str
        Where it came from (``"okx"``, ``"simulated"``...).
    symbol : str
        The instrument (``"BTC-USDT"``).
    timestamp : datetime, int, float or str
        When it happened; stored as an aware UTC ``datetime`` (naive times are rejected).
    data_type : DataType or str
        What kind of data this is.
    data : mapping
        The payload (copied into a plain ``dict``). For the codecs to carry it,
        its values should be plain: str, int, float, Decimal, bool, None,
        datetime, lists and dicts of those.

    Examples
    --------
    >>> from decimal import Decimal
    >>> p = MarketDataPoint("simulated", "BTC-USDT", 1_700_000_000, "ticker",
    ...                     {"price": Decimal("42000.5")})
    >>> p.data_type, p.timestamp.isoformat()
    (<DataType.TICKER: 'ticker'>, '2023-11-14T22:13:20+00:00')
    >>> MarketDataPoint.__mdflow_decode__(p.__mdflow_encode__()) == p
    True
    """

    __mdflow_type__: ClassVar[str] = "mdp"

    exchange: str
    symbol: str
    timestamp: datetime
    data_type: DataType
    data: dict = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        owner = "MarketDataPoint"
        _text(self.exchange, "exchange", owner)
        _text(self.symbol, "symbol", owner)
        object.__setattr__(self, "timestamp", to_utc(self.timestamp, "timestamp", owner))
        object.__setattr__(self, "data_type", _data_type(self.data_type, owner))
        if not isinstance(self.data, Mapping):
            msg = f"{owner}.data must be a mapping (dict); got {describe(self.data)}"
            raise ValidationError(msg, field="data", value=self.data)
        object.__setattr__(self, "data", dict(self.data))

    def __mdflow_encode__(self) -> dict[str, Any]:
        """Plain values for the codecs (the data type as its str value)."""
        return {
            "exchange": self.exchange,
            "symbol": self.symbol,
            "timestamp": self.timestamp,
            "data_type": self.data_type.value,
            "data": dict(self.data),
        }

    @classmethod
    def __mdflow_decode__(cls, state: Mapping[str, Any]) -> MarketDataPoint:
        """Rebuild a point from what :meth:`__mdflow_encode__` returned."""
        s = _state(state, cls, ("exchange", "symbol", "timestamp", "data_type", "data"))
        return cls(s["exchange"], s["symbol"], s["timestamp"], s["data_type"], s["data"])


@dataclass(frozen=True)
class OHLCV:
    """One candle: open, high, low, close and volume over ``timeframe`` from ``timestamp``.

    Prices and volume are ``Decimal``; ``str``, ``int`` and ``float`` are
    converted through ``str()`` (``0.1`` becomes ``Decimal('0.1')``). The
    candle must be consistent: prices positive, ``high >= max(open, close)``,
    ``low <= min(open, close)``, ``volume >= 0``, ``trades_count`` a
    non-negative int or None, and ``timeframe`` one of :data:`TIMEFRAMES`.

    Parameters
    ----------
    symbol : str
        The instrument.
    timeframe : str
        Candle length: ``1m``, ``5m``, ``15m``, ``1h``, ``4h``, ``1d``... (see :data:`TIMEFRAMES`).
    timestamp : datetime, int, float or str
        Start of the candle, stored as aware UTC.
    open, high, low, close : Decimal, str, int or float
        Prices.
    volume : Decimal, str, int or float
        Traded quantity.
    trades_count : int, optional
        Number of trades in the candle.

    Raises
    ------
    ValidationError
        Naming the field and the value that broke a rule.

    Examples
    --------
    >>> c = OHLCV("ETH-USDT", "5m", "2024-03-01T10:05:00Z", 10, 12, 9.5, 11, "0")
    >>> c.low, c.timestamp.minute
    (Decimal('9.5'), 5)
    >>> OHLCV("ETH-USDT", "5m", 0, 10, 10.5, 9, 11, 1)
    Traceback (most recent call last):
      ...
    mdflow.errors.ValidationError: OHLCV.high must be >= max(open, close) = 11; got 10.5
    """

    __mdflow_type__: ClassVar[str] = "ohlcv"

    symbol: str
    timeframe: str
    timestamp: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades_count: int | None = None

    def __post_init__(self) -> None:
        owner = "OHLCV"
        _text(self.symbol, "symbol", owner)
        if self.timeframe not in TIMEFRAMES:
            msg = (
                f"{owner}.timeframe must be one of {', '.join(TIMEFRAMES)}; "
                f"got {describe(self.timeframe)}"
            )
            raise ValidationError(msg, field="timeframe", value=self.timeframe)
        object.__setattr__(self, "timestamp", to_utc(self.timestamp, "timestamp", owner))
        for name in ("open", "high", "low", "close", "volume"):
            object.__setattr__(self, name, _decimal(getattr(self, name), name, owner))
        for name in ("open", "high", "low", "close"):
            value = getattr(self, name)
            if value <= 0:
                msg = f"{owner}.{name} must be positive; got {value}"
                raise ValidationError(msg, field=name, value=value)
        if self.high < max(self.open, self.close):
            top = max(self.open, self.close)
            msg = f"{owner}.high must be >= max(open, close) = {top}; got {self.high}"
            raise ValidationError(msg, field="high", value=self.high)
        if self.low > min(self.open, self.close):
            bottom = min(self.open, self.close)
            msg = f"{owner}.low must be <= min(open, close) = {bottom}; got {self.low}"
            raise ValidationError(msg, field="low", value=self.low)
        if self.volume < 0:
            msg = f"{owner}.volume must be >= 0; got {self.volume}"
            raise ValidationError(msg, field="volume", value=self.volume)
        count = self.trades_count
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 0
        ):
            msg = f"{owner}.trades_count must be None or an int >= 0; got {describe(count)}"
            raise ValidationError(msg, field="trades_count", value=count)

    def __mdflow_encode__(self) -> dict[str, Any]:
        """Plain values for the codecs (prices stay ``Decimal``)."""
        return {
            "symbol": self.symbol,
            "timeframe": self.timeframe,
            "timestamp": self.timestamp,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "trades_count": self.trades_count,
        }

    @classmethod
    def __mdflow_decode__(cls, state: Mapping[str, Any]) -> OHLCV:
        """Rebuild a candle from what :meth:`__mdflow_encode__` returned."""
        s = _state(
            state,
            cls,
            ("symbol", "timeframe", "timestamp", "open", "high", "low", "close", "volume"),
        )
        return cls(
            s["symbol"],
            s["timeframe"],
            s["timestamp"],
            s["open"],
            s["high"],
            s["low"],
            s["close"],
            s["volume"],
            s.get("trades_count"),
        )


#: Wire tags -> classes, for the codecs.
WIRE_TYPES: dict[str, type] = {
    MarketDataPoint.__mdflow_type__: MarketDataPoint,
    OHLCV.__mdflow_type__: OHLCV,
}
