"""The built-in analyzers, tick parsing and the analyzer registry."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from importlib.metadata import EntryPoint
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from streamtools import run

from mdflow import analyzers
from mdflow.analyzers import (
    Analyzer,
    AnalyzerResult,
    Cache,
    HighLowOfDay,
    PriceVolumeSpike,
    get_analyzer,
    parse_tick,
)
from mdflow.codecs import encode_message
from mdflow.errors import ConfigError, DecodeError
from mdflow.record import Record

NY = ZoneInfo("America/New_York")


def feed(analyzer, ticks):
    """Run ticks through ``analyzer``; return every result."""

    async def go():
        out = []
        for tick in ticks:
            out += await analyzer.analyze(tick) or []
        return out

    return asyncio.run(go())


def at(*args, tz=timezone.utc) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


# --- ticks ---------------------------------------------------------------------------------
def test_ticks_accept_str_numbers_and_common_timestamps():
    from_json = {"symbol": "BTC-USD", "price": "101.5", "volume": "3.2", "ts": "1700000000"}
    assert parse_tick(from_json) == analyzers.Tick("BTC-USD", 101.5, 3.2, 1700000000.0)

    def ts(value):
        return parse_tick({"symbol": "X", "price": 1, "ts": value}).ts

    assert ts(1_700_000_000_123) == pytest.approx(1_700_000_000.123)  # milliseconds
    assert ts(1_700_000_000_000_000_000) == pytest.approx(1.7e9)  # nanoseconds
    assert ts("2024-01-02T03:04:05Z") == at(2024, 1, 2, 3, 4, 5)
    assert parse_tick(Record("ticks", {"symbol": "X", "price": 2})).volume == 0.0
    before = time.time()
    assert parse_tick({"symbol": "X", "price": 2}).ts >= before


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ("just text", r"expected a tick like .* got 'just text' \(str\)"),
        ({"price": 1}, r"'symbol' must be a non-empty str; got None"),
        ({"symbol": "X"}, r"tick has no 'price'"),
        ({"symbol": "X", "price": "abc"}, r"'price' must be a number or a numeric str; got 'abc'"),
        ({"symbol": "X", "price": -1}, r"'price' must be positive"),
        ({"symbol": "X", "price": float("nan")}, r"'price' must be a finite number"),
        ({"symbol": "X", "price": 1, "ts": "yesterday"}, r"'ts' must be epoch seconds or ISO-8601"),
    ],
)
def test_bad_ticks_raise_decode_errors(data, match):
    with pytest.raises(DecodeError, match=match):
        parse_tick(data)


# --- high / low of day ---------------------------------------------------------------------
def test_high_low_of_day_alerts_on_new_extremes_only():
    hod = HighLowOfDay(key_prefix="hod", publish_key="hod:alerts", list_max=5)
    now = time.time()
    ticks = [{"symbol": "BTC", "price": p, "ts": now} for p in (100, 101, 100.5, 101, 99, 102)]
    ticks.insert(2, {"symbol": "ETH", "price": "5", "ts": now})
    results = feed(hod, ticks)
    assert [(r.data["symbol"], r.data["kind"], r.data["price"]) for r in results] == [
        ("BTC", "open", 100),
        ("BTC", "high", 101),
        ("ETH", "open", 5.0),
        ("BTC", "low", 99),
        ("BTC", "high", 102),
    ]
    last = results[-1]
    assert last.data["previous"] == 101 and (last.data["high"], last.data["low"]) == (102, 99)
    assert (last.cache_key, last.cache_list_max, last.publish_key) == ("hod:BTC", 5, "hod:alerts")
    assert results[0].publish_key is None, "opening a range is cached, not published"
    assert 0 < last.cache_ttl <= 86400, "expires at the end of the (UTC) day"


def test_trading_day_follows_time_zone_day_end_and_dst():
    hod = HighLowOfDay(tz="America/New_York", day_end="20:00")
    day, ends = hod.trading_day(at(2024, 3, 5, 10, 0, tz=NY))
    assert day.isoformat() == "2024-03-05" and ends == at(2024, 3, 5, 20, 0, tz=NY)
    day, ends = hod.trading_day(at(2024, 3, 5, 20, 30, tz=NY))  # after-hours: next session
    assert day.isoformat() == "2024-03-06" and ends == at(2024, 3, 6, 20, 0, tz=NY)
    _, ends = hod.trading_day(at(2024, 3, 10, 12, 0, tz=NY))  # the day DST starts
    assert ends == at(2024, 3, 11, 0, 0)  # 20:00 EDT is 00:00 UTC
    midnight = HighLowOfDay()
    day, ends = midnight.trading_day(at(2024, 3, 5, 23, 59))
    assert day.isoformat() == "2024-03-05" and ends == at(2024, 3, 6)


def test_a_new_day_opens_a_new_range_and_late_ticks_are_ignored():
    hod = HighLowOfDay()
    day1, day2 = at(2024, 3, 5, 12), at(2024, 3, 6, 12)
    kinds = [
        r.data["kind"]
        for r in feed(
            hod,
            [
                {"symbol": "X", "price": 10, "ts": day1},
                {"symbol": "X", "price": 12, "ts": day1},
                {"symbol": "X", "price": 11, "ts": day2},
                {"symbol": "X", "price": 50, "ts": day1},
                {"symbol": "X", "price": 10.5, "ts": day2},
            ],
        )
    ]
    assert kinds == ["open", "high", "open", "low"]
    assert hod.ranges["X"][1:] == [11, 10.5]


def test_min_change_pct_ignores_tiny_new_extremes():
    hod = HighLowOfDay(min_change_pct=1.0)
    prices = [100, 100.5, 101.2, 101.5, 100.1]
    kinds = [r.data["kind"] for r in feed(hod, [{"symbol": "X", "price": p} for p in prices])]
    assert kinds == ["open", "high"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=0.01, max_value=1e6), min_size=1, max_size=40))
def test_high_low_tracks_the_running_extremes(prices):
    hod = HighLowOfDay()
    now = time.time()
    results = feed(hod, [{"symbol": "S", "price": p, "ts": now} for p in prices])
    assert hod.ranges["S"][1:] == [max(prices), min(prices)]
    new_highs = sum(1 for i, p in enumerate(prices) if i and p > max(prices[:i]))
    assert sum(r.data["kind"] == "high" for r in results) == new_highs


def test_rehydrate_restores_todays_ranges_from_the_cache(redis_url, rdb, prefix):
    hod = HighLowOfDay(key_prefix=prefix + "hod")
    today, _ = hod.trading_day(time.time())
    alert = {
        "symbol": "BTC",
        "kind": "high",
        "price": 105,
        "high": 105,
        "low": 95,
        "day": today.isoformat(),
    }
    rdb.lpush(prefix + "hod:BTC", encode_message({**alert, "high": 101}), encode_message(alert))
    rdb.lpush(prefix + "hod:OLD", encode_message({**alert, "symbol": "OLD", "day": "2000-01-01"}))
    rdb.set(prefix + "hod:not-a-list", "x")
    rdb.lpush(prefix + "hod:JUNK", "garbage")

    run(lambda: hod.rehydrate(Cache(redis_url)))
    assert hod.ranges == {"BTC": [today, 105.0, 95.0]}
    assert feed(hod, [{"symbol": "BTC", "price": 100}]) == []


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"tz": "Mars/Olympus"}, r"option tz must be an IANA time zone"),
        ({"day_end": "8pm"}, r"option day_end must be a local time 'HH:MM'"),
        ({"list_max": 0}, r"option list_max must be a positive int; got 0"),
        ({"min_change_pct": -1}, r"option min_change_pct must be a number >= 0"),
        ({"publish_key": ""}, r"option publish_key must be a non-empty str"),
        ({"colour": "red"}, r"unknown option\(s\) colour; known options are day_end, key_prefix"),
    ],
)
def test_high_low_options_are_checked(options, match):
    with pytest.raises(ConfigError, match=match):
        HighLowOfDay(**options)


# --- spikes --------------------------------------------------------------------------------
def test_price_moves_alert_once_and_restart_the_window():
    spike = PriceVolumeSpike(
        window=10,
        min_periods=3,
        price_move_pct=5,
        volume_factor=None,
        key_prefix="sp",
        publish_key="sp:alerts",
        ttl=600,
    )
    prices = [100, 101, 100, 106, 107, 107, 107, 100, 100]
    results = feed(spike, [{"symbol": "X", "price": p} for p in prices])
    assert [(r.data["kind"], r.data["price"]) for r in results] == [
        ("price_up", 106),
        ("price_down", 100),
    ]
    assert results[0].data["reference"] == 100 and results[0].data["change_pct"] == pytest.approx(6)
    assert results[1].data["change_pct"] == pytest.approx(100 / 107 * 100 - 100)
    first = results[0]
    assert (first.cache_key, first.cache_ttl, first.publish_key) == ("sp:X", 600, "sp:alerts")


def test_volume_bursts_alert_against_the_rolling_mean():
    spike = PriceVolumeSpike(window=4, min_periods=4, price_move_pct=None, volume_factor=3)
    volumes = [1, 2, 1, 2, 9, 2, 1, "30"]
    results = feed(spike, [{"symbol": "X", "price": 10, "volume": v} for v in volumes])
    assert [r.data["volume"] for r in results] == [9, 30]
    assert results[0].data["ratio"] == pytest.approx(9 / 1.5)


def test_time_windows_forget_old_ticks():
    spike = PriceVolumeSpike(window_seconds=10, min_periods=2, price_move_pct=5, volume_factor=None)
    ticks = [(0, 100), (1, 100), (30, 104), (31, 104), (32, 110)]
    results = feed(spike, [{"symbol": "X", "price": p, "ts": 1e9 + t} for t, p in ticks])
    assert [(r.data["price"], r.data["reference"]) for r in results] == [(110, 104)]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"price_move_pct": None, "volume_factor": None}, r"both None: nothing would alert"),
        ({"window": 3, "min_periods": 5}, r"min_periods \(5\) cannot exceed window \(3\)"),
        ({"window": 2.5}, r"option window must be a positive int; got 2.5"),
        ({"volume_factor": -1}, r"option volume_factor must be a positive number or None"),
    ],
)
def test_spike_options_are_checked(options, match):
    with pytest.raises(ConfigError, match=match):
        PriceVolumeSpike(**options)


# --- registry ------------------------------------------------------------------------------
class Custom(Analyzer):
    defaults: ClassVar[dict[str, Any] | None] = {"level": 1}

    async def analyze(self, data):
        return [AnalyzerResult(data)]


def _not_an_analyzer(**options):
    return object()


def test_get_analyzer_finds_builtins_then_entry_points(monkeypatch):
    assert isinstance(get_analyzer("high_low_of_day", tz="UTC"), HighLowOfDay)
    assert get_analyzer("spike", window=7).options["window"] == 7
    group = analyzers.GROUP
    found = [
        EntryPoint("custom", f"{__name__}:Custom", group),
        EntryPoint("wrong", f"{__name__}:_not_an_analyzer", group),
        EntryPoint("broken", "no_such_module_here:Thing", group),
    ]
    monkeypatch.setattr(
        analyzers.registry, "entry_points", lambda group: [ep for ep in found if ep.group == group]
    )
    custom = get_analyzer("custom", level=3)
    assert isinstance(custom, Custom) and custom.options == {"level": 3}
    assert analyzers.analyzer_names() == ["broken", "custom", "high_low_of_day", "spike", "wrong"]
    with pytest.raises(ConfigError, match=r"unknown analyzer 'nope'; known analyzers: broken, c"):
        get_analyzer("nope")
    with pytest.raises(ConfigError, match=r"'broken' \(no_such_module_here:Thing\) could not"):
        get_analyzer("broken")
    with pytest.raises(ConfigError, match=r"analyzer 'wrong' must create an mdflow.Analyzer"):
        get_analyzer("wrong")
