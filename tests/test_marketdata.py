"""MarketDataPoint and OHLCV: validation, UTC timestamps, wire round-trips."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdflow.errors import ValidationError
from mdflow.marketdata import OHLCV, TIMEFRAMES, WIRE_TYPES, DataType, MarketDataPoint, to_utc

T0 = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def candle(**overrides):
    fields = dict(
        symbol="BTC-USDT",
        timeframe="1m",
        timestamp=T0,
        open="100",
        high="105",
        low="95",
        close="101",
        volume="2.5",
    )
    fields.update(overrides)
    return OHLCV(**fields)


def plain(value) -> bool:
    """True if ``value`` only holds what the codecs promise to carry."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain(v) for v in value)
    if isinstance(value, Enum):
        return False  # enums travel as their str value
    return value is None or isinstance(value, (str, int, float, Decimal, datetime, bool))


# --- DataType / timestamps ---------------------------------------------------------------------


def test_data_type_values():
    assert [d.value for d in DataType] == ["ticker", "trade", "orderbook", "candle", "balance"]
    assert DataType("candle") is DataType.CANDLE


def test_other_timezones_are_converted_to_utc():
    tokyo = timezone(timedelta(hours=9))
    point = MarketDataPoint("x", "BTC", datetime(2024, 1, 1, 9, 0, tzinfo=tokyo), "ticker", {})
    assert point.timestamp == datetime(2024, 1, 1, 0, 0, tzinfo=timezone.utc)
    assert point.timestamp.tzinfo is timezone.utc


def test_epoch_seconds_and_iso_strings_are_utc():
    assert to_utc(1_700_000_000) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=timezone.utc)
    assert to_utc("2024-01-02T03:04:05Z") == T0
    assert to_utc("2024-01-02T05:04:05+02:00") == T0


def test_naive_timestamps_are_rejected_with_a_hint():
    with pytest.raises(ValidationError, match=r"must be timezone-aware; got naive .2024-01-01"):
        MarketDataPoint("x", "BTC", datetime(2024, 1, 1), "ticker", {})
    with pytest.raises(ValidationError, match="timezone-aware"):
        OHLCV("BTC", "1m", "2024-01-01T00:00:00", 1, 1, 1, 1, 0)
    with pytest.raises(ValidationError, match=r"timestamp must be .*got \[1\] \(list\)"):
        to_utc([1])


def test_market_data_point_validation():
    with pytest.raises(ValidationError, match=r"data_type must be one of .*got 'quote'") as info:
        MarketDataPoint("x", "BTC", T0, "quote", {})
    assert info.value.field == "data_type" and info.value.value == "quote"
    with pytest.raises(ValidationError, match=r"symbol must be a non-empty str; got '' \(str\)"):
        MarketDataPoint("x", "", T0, "ticker", {})
    with pytest.raises(ValidationError, match=r"data must be a mapping"):
        MarketDataPoint("x", "BTC", T0, "ticker", [1, 2])


def test_market_data_point_is_frozen_hashable_and_compares_by_value():
    a = MarketDataPoint("x", "BTC", T0, DataType.TRADE, {"px": Decimal("1.5")})
    b = MarketDataPoint("x", "BTC", T0, "trade", {"px": Decimal("1.5")})
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.symbol = "ETH"


# --- OHLCV validation ----------------------------------------------------------------------------


def test_prices_become_decimals_via_str():
    c = candle(open=100, high=105.1, low="95.25", close=Decimal("101"), volume=0.1)
    assert c.high == Decimal("105.1") and c.volume == Decimal("0.1")
    assert all(
        isinstance(getattr(c, f), Decimal) for f in ("open", "high", "low", "close", "volume")
    )


@pytest.mark.parametrize(
    "overrides, pattern, field",
    [
        (
            dict(high="100.5"),
            r"OHLCV\.high must be >= max\(open, close\) = 101; got 100\.5",
            "high",
        ),
        (dict(low="100.5"), r"OHLCV\.low must be <= min\(open, close\) = 100; got 100\.5", "low"),
        (dict(volume="-1"), r"OHLCV\.volume must be >= 0; got -1", "volume"),
        (dict(timeframe="7m"), r"OHLCV\.timeframe must be one of 1m, .*; got '7m'", "timeframe"),
        (
            dict(open="abc"),
            r"OHLCV\.open must be a number or a numeric str; got 'abc' \(str\)",
            "open",
        ),
        (dict(close=float("nan")), r"OHLCV\.close must be finite; got nan \(float\)", "close"),
        (dict(open=True), r"OHLCV\.open must be a number .*got True \(bool\)", "open"),
        (dict(open="-1", low="-2"), r"OHLCV\.open must be positive; got -1", "open"),
        (
            dict(trades_count=-3),
            r"OHLCV\.trades_count must be None or an int >= 0; got -3 \(int\)",
            "trades_count",
        ),
    ],
)
def test_ohlcv_errors_name_the_field_and_the_value(overrides, pattern, field):
    with pytest.raises(ValidationError, match=pattern) as info:
        candle(**overrides)
    assert info.value.field == field


def test_validation_error_is_a_value_error():
    with pytest.raises(ValueError):
        candle(high="1")


def test_known_timeframes():
    assert {"1m", "5m", "15m", "1h", "4h", "1d"} <= set(TIMEFRAMES)


# --- wire format ----------------------------------------------------------------------------------


def test_wire_registry():
    assert WIRE_TYPES == {"mdp": MarketDataPoint, "ohlcv": OHLCV}
    for tag, cls in WIRE_TYPES.items():
        assert cls.__mdflow_type__ == tag


def test_encoded_state_is_plain_and_round_trips():
    point = MarketDataPoint(
        "okx",
        "BTC-USDT",
        T0,
        DataType.TICKER,
        {"price": Decimal("42000.10"), "levels": [[1, "a"]], "at": T0},
    )
    state = point.__mdflow_encode__()
    assert plain(state) and state["data_type"] == "ticker"
    assert MarketDataPoint.__mdflow_decode__(state) == point
    c = candle(trades_count=7)
    state = c.__mdflow_encode__()
    assert plain(state)
    back = OHLCV.__mdflow_decode__(state)
    assert back == c and str(back.high) == "105" and back.trades_count == 7


def test_decode_rejects_broken_state():
    with pytest.raises(ValidationError, match="cannot decode OHLCV: missing volume"):
        OHLCV.__mdflow_decode__(
            {k: v for k, v in candle().__mdflow_encode__().items() if k != "volume"}
        )
    with pytest.raises(ValidationError, match="expected a mapping"):
        MarketDataPoint.__mdflow_decode__([1, 2])


prices = st.decimals(
    min_value=Decimal("0.000001"),
    max_value=Decimal("1e9"),
    places=6,
    allow_nan=False,
    allow_infinity=False,
)
stamps = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)
)


@settings(max_examples=150, deadline=None)
@given(
    o=prices,
    c=prices,
    up=prices,
    down=prices,
    volume=prices,
    stamp=stamps,
    timeframe=st.sampled_from(TIMEFRAMES),
    count=st.none() | st.integers(0, 10**9),
)
def test_any_valid_candle_round_trips_exactly(o, c, up, down, volume, stamp, timeframe, count):
    low = max(min(o, c) - down, Decimal("0.000001"))
    original = OHLCV("SYM", timeframe, stamp, o, max(o, c) + up, low, c, volume, count)
    back = OHLCV.__mdflow_decode__(original.__mdflow_encode__())
    assert back == original
    assert [str(getattr(back, f)) for f in ("open", "high", "low", "close", "volume")] == [
        str(getattr(original, f)) for f in ("open", "high", "low", "close", "volume")
    ]


@settings(max_examples=100, deadline=None)
@given(
    stamp=stamps,
    kind=st.sampled_from(list(DataType)),
    data=st.dictionaries(
        st.text(max_size=5), st.integers() | st.text(max_size=5) | prices, max_size=4
    ),
)
def test_any_point_round_trips_exactly(stamp, kind, data):
    original = MarketDataPoint("ex", "SYM", stamp, kind, data)
    assert MarketDataPoint.__mdflow_decode__(original.__mdflow_encode__()) == original
