"""Argument checks: one message shape, raised at construction, before any I/O.

The first half tries bad arguments on the real nodes as a user would (the
holes found by trying them on purpose); the second checks the helpers.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from streamz import Stream

import mdflow  # noqa: F401 - registers the nodes
from mdflow.analyzers import HighLowOfDay
from mdflow.checks import (
    check_callable,
    check_flag,
    check_keywords,
    check_names,
    check_positive,
    check_seconds,
    check_stream_id,
    check_text,
)
from mdflow.collectors import SimulatedExchangeCollector
from mdflow.errors import ConfigError

NAN, INF = float("nan"), float("inf")


def _from_redis(url, **kwargs):
    return Stream.from_redis("t", redis_url=url, **kwargs)


def _engine(url, **kwargs):
    return Stream.engine("t", redis_url=url, **kwargs)


def _to_redis(url, **kwargs):
    return Stream().to_redis("t", redis_url=url, **kwargs)


def _from_pubsub(url, **kwargs):
    return Stream.from_pubsub("c", redis_url=url, **kwargs)


def _scanner(url, **kwargs):
    return Stream.scanner("c", HighLowOfDay(), redis_url=url, **kwargs)


def _scan(url, **kwargs):
    return Stream().scan(HighLowOfDay(), redis_url=url, **kwargs)


def _to_cache(url, **kwargs):
    return Stream().to_cache("k", redis_url=url, **kwargs)


def _collector(url, **kwargs):
    return Stream.collector(
        SimulatedExchangeCollector("ws://127.0.0.1:1/ws", symbols=["BTC-USDT"]), **kwargs
    )


CASES = [
    # (build, kwargs, the message users read)
    (
        _from_redis,
        {"consumer": 0},
        r"^from_redis: consumer must be a non-empty str naming a consumer in the group; "
        r"got 0 \(int\)$",
    ),
    (_from_redis, {"consumer": ""}, r"^from_redis: consumer must be .*; got '' \(str\)$"),
    (
        _from_redis,
        {"group": ""},
        r"^from_redis: group must be a non-empty str naming a consumer group; got '' \(str\)$",
    ),
    (
        _from_redis,
        {"start_id": "latest"},
        r"^from_redis: start_id must be '\$', '0', an entry id, a datetime or an ISO-8601 time; "
        r"got 'latest' \(str\)",
    ),
    (_from_redis, {"start_id": "yesterday"}, r"start_id must be .*; got 'yesterday' \(str\)"),
    (_from_redis, {"start_id": "12-x"}, r"start_id must be .*; got '12-x' \(str\)"),
    (
        _from_redis,
        {"block": NAN},
        r"^from_redis: block must be a positive number; got nan \(float\)$",
    ),
    (
        _from_redis,
        {"block": INF},
        r"^from_redis: block must be a positive number; got inf \(float\)$",
    ),
    (
        _from_redis,
        {"claim_idle": NAN},
        r"^from_redis: claim_idle must be a positive number; got nan",
    ),
    (_from_redis, {"batch_size": 2.5}, r"^from_redis: batch_size must be a positive int; got 2.5"),
    (
        _from_redis,
        {"meta": "false"},
        r"^from_redis: meta must be True or False; got 'false' \(str\)$",
    ),
    (_from_redis, {"batch": "no"}, r"^from_redis: batch must be True or False; got 'no' \(str\)$"),
    (_from_redis, {"start": "false"}, r"^from_redis: start must be True or False; got 'false'"),
    (
        _from_redis,
        {"grup": "g"},
        r"^from_redis: unexpected keyword argument 'grup'; did you mean 'group'\?$",
    ),
    (
        _engine,
        {"func": lambda x: x},
        r"^engine: func must be a callable taking no arguments; got <function .*it requires 1 "
        r"argument\(s\): x$",
    ),
    (_engine, {"asyncflag": "no"}, r"^engine: asyncflag must be True or False; got 'no' \(str\)$"),
    (_engine, {"start": "no"}, r"^engine: start must be True or False; got 'no' \(str\)$"),
    (
        _engine,
        {"push_interval": NAN},
        r"^engine: push_interval must be a positive number of seconds",
    ),
    (
        _engine,
        {"push_intervl": 1},
        r"^engine: unexpected keyword argument 'push_intervl'; did you "
        r"mean 'push_interval'\?$",
    ),
    (
        _to_redis,
        {"approximate": "false"},
        r"^to_redis: approximate must be True or False; got 'false'",
    ),
    (
        _to_redis,
        {"max_len": 10},
        r"^to_redis: unexpected keyword argument 'max_len'; did you mean "
        r"'maxlen'\?$",
    ),
    (_from_pubsub, {"meta": "no"}, r"^from_pubsub: meta must be True or False; got 'no' \(str\)$"),
    (_from_pubsub, {"start": "yes"}, r"^from_pubsub: start must be True or False; got 'yes'"),
    (_scanner, {"start": "false"}, r"^scanner: start must be True or False; got 'false'"),
    (
        _scanner,
        {"codex": "json"},
        r"^scanner: unexpected keyword argument 'codex'; did you mean "
        r"'codec'\?$",
    ),
    (
        _scan,
        {"codex": "json"},
        r"^scan: unexpected keyword argument 'codex'; did you mean 'codec'\?$",
    ),
    (_to_cache, {"tll": 5}, r"^to_cache: unexpected keyword argument 'tll'; did you mean 'ttl'\?$"),
    (
        _collector,
        {"auto_restart": "false"},
        r"^collector: auto_restart must be True or False; got 'false' \(str\)$",
    ),
    (
        _collector,
        {"max_silense": 5},
        r"^collector: unexpected keyword argument 'max_silense'; did "
        r"you mean 'max_silence'\?$",
    ),
]


@pytest.mark.parametrize(
    ("build", "kwargs", "message"),
    CASES,
    ids=[f"{b.__name__[1:]}-{next(iter(k))}={k[next(iter(k))]!r}" for b, k, _ in CASES],
)
def test_bad_arguments_fail_at_construction(redis_url, build, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build(redis_url, **kwargs)


def test_good_arguments_still_work(redis_url):
    node = _from_redis(
        redis_url,
        consumer="worker-1",
        start_id="1700000000000-0",
        meta=np.True_,
        batch=0,
        block=0.1,
        claim_idle=30,
        stream_name="outlet",
    )
    assert (node.consumer, node.start_id, node.meta, node.batch) == (
        "worker-1",
        "1700000000000-0",
        True,
        False,
    )
    assert node.name == "outlet"  # streamz's own keywords pass through
    assert _from_redis(redis_url).consumer  # None still means the default name
    assert _engine(redis_url, func=lambda x=1: x, asyncflag=True).asyncflag is True
    assert _engine(redis_url, func=print).func is print  # a builtin: signature not checked


# --- the helpers ------------------------------------------------------------------------------
def test_check_text():
    assert check_text("x", "node", "p") == "x"
    with pytest.raises(
        ConfigError, match=r"^node: p must be a non-empty str; got None \(NoneType\)$"
    ):
        check_text(None, "node", "p")
    with pytest.raises(
        ConfigError, match=r"^node: p must be a non-empty str naming a thing; got b'x'"
    ):
        check_text(b"x", "node", "p", "a thing")


def test_check_names():
    assert check_names("a", "node", "channels") == ["a"]
    assert check_names(("a", "b", "a"), "node", "channels") == ["a", "b"]
    with pytest.raises(
        ConfigError,
        match=r"^node: channels must be a str or a list of str; got "
        r"\[\] \(list\)\. Example: 'x'$",
    ):
        check_names([], "node", "channels", "'x'")
    with pytest.raises(
        ConfigError,
        match=r"^node: every entry of channels must be a non-empty str; "
        r"got 3 \(int\)$",
    ):
        check_names(["a", 3], "node", "channels")


@pytest.mark.parametrize("value", [0, -1, NAN, INF, -INF, True, "1", None])
def test_check_positive_refuses(value):
    with pytest.raises(ConfigError, match=r"^node: p must be a positive number; got "):
        check_positive(value, "node", "p")


def test_check_positive_accepts():
    assert check_positive(1e-9, "node", "p") == 1e-9
    assert check_positive(3, "node", "p", integer=True) == 3
    assert check_positive(None, "node", "p", allow_none=True) is None
    with pytest.raises(ConfigError, match=r"must be a positive int or None; got 1.5"):
        check_positive(1.5, "node", "p", integer=True, allow_none=True)


def test_check_seconds():
    assert check_seconds(2, "node", "p") == 2.0
    for bad in (0, NAN, INF, False):
        with pytest.raises(
            ConfigError, match=r"^node: p must be a positive number of seconds; got"
        ):
            check_seconds(bad, "node", "p")


def test_check_flag():
    assert [check_flag(v, "n", "p") for v in (True, False, 1, 0, np.True_, np.False_)] == [
        True,
        False,
        True,
        False,
        True,
        False,
    ]
    for bad in ("false", "no", "", None, 2, 1.0, math.nan):
        with pytest.raises(ConfigError, match=r"^n: p must be True or False; got "):
            check_flag(bad, "n", "p")


def test_check_callable():
    assert check_callable(lambda: 1, "n", "func", 0, "taking no arguments")
    assert check_callable(lambda *args: 1, "n", "func", 0, "taking no arguments")
    assert check_callable(lambda x, y=2: 1, "n", "parse", 1, "taking one message")
    with pytest.raises(
        ConfigError, match=r"^n: func must be a callable taking no arguments; got 3"
    ):
        check_callable(3, "n", "func", 0, "taking no arguments")
    with pytest.raises(ConfigError, match=r"it does not accept 1 argument\(s\)$"):
        check_callable(lambda: 1, "n", "parse", 1, "taking one message")


@pytest.mark.parametrize("good", ["$", "0", "0-0", "1700000000000", "1700000000000-12"])
def test_check_stream_id_accepts(good):
    assert check_stream_id(good, "n", "start_id") == good


@pytest.mark.parametrize("bad", ["", "latest", "yesterday", ">", "-1", "1-", "1-2-3", 0, None])
def test_check_stream_id_refuses(bad):
    with pytest.raises(ConfigError, match=r"^n: start_id must be '\$', '0', an entry id, a "):
        check_stream_id(bad, "n", "start_id")


def test_check_stream_id_turns_a_time_into_the_id_just_before_it():
    from datetime import datetime, timedelta, timezone

    moment = datetime(2026, 11, 25, 9, 30, tzinfo=timezone.utc)
    ms = int(moment.timestamp() * 1000)
    expected = f"{ms - 1}-{2**64 - 1}"
    assert check_stream_id(moment, "n", "start_id") == expected
    assert check_stream_id("2026-11-25T09:30:00Z", "n", "start_id") == expected
    assert check_stream_id("2026-11-25T10:30:00+01:00", "n", "start_id") == expected
    local = moment.astimezone().replace(tzinfo=None)  # naive: local time
    assert check_stream_id(local, "n", "start_id") == expected
    assert check_stream_id(moment - timedelta(days=30000), "n", "start_id") == "0"


def test_check_keywords():
    check_keywords({"stream_name": "x", "asynchronous": True}, "n", ["group"])
    with pytest.raises(ConfigError, match=r"^n: unexpected keyword argument 'zzz'; it accepts "):
        check_keywords({"zzz": 1}, "n", ["group"])
