"""Stream.collector over real sockets: flow, silence, backoff, FAILED, garbage, drops, pollers."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from decimal import Decimal

import pytest
import redis.asyncio
from helpers import wait_for
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream
from tornado.ioloop import IOLoop

from mdflow.collectors import (
    Collector,
    CollectorState,
    PollingCollector,
    SimulatedExchange,
    SimulatedExchangeCollector,
    WebSocketCollector,
)
from mdflow.errors import ConfigError
from mdflow.marketdata import OHLCV, DataType, MarketDataPoint

FAST = dict(heartbeat_interval=0.05, max_silence=2.0, backoff=(0.02, 0.2))


def node_for(coll, **kwargs):
    """A collector node on the test's own loop (a Source given no loop= picks a background one)."""
    options = {**FAST, **kwargs}
    return Stream.collector(coll, asynchronous=True, loop=IOLoop.current(), **options)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats(node) -> dict:
    return node.status()["statistics"]


def tickers(out, symbol=None):
    return [
        p
        for p in out
        if isinstance(p, MarketDataPoint)
        and p.data_type is DataType.TICKER
        and (symbol is None or p.symbol == symbol)
    ]


# --- normal flow -------------------------------------------------------------------------------


def test_points_trades_and_candles_flow_to_a_sink():
    async def body():
        async with SimulatedExchange(["BTC-USDT", "ETH-USDT"], interval=0.01) as ex:
            node = node_for(ex.collector())
            out = node.sink_to_list()
            prices = (
                node.filter(lambda p: getattr(p, "data_type", None) == "ticker")
                .map(lambda p: (p.symbol, p.data["price"]))
                .sink_to_list()
            )
            node.start()
            await async_wait_for(lambda: len(tickers(out, "ETH-USDT")) >= 5, message="tickers")
            status, health = node.get_status(), node.get_health_status()
            await stop_and_wait(node)
            return out, prices, status, health

    out, prices, status, health = run(body)
    kinds = {p.data_type for p in out if isinstance(p, MarketDataPoint)}
    assert kinds == {DataType.TICKER, DataType.TRADE}
    candles = [p for p in out if isinstance(p, OHLCV)]
    assert candles and all(c.timeframe == "1m" and c.low <= c.close <= c.high for c in candles)
    assert {p.symbol for p in out} == {"BTC-USDT", "ETH-USDT"}
    assert all(isinstance(px, Decimal) for _, px in prices)
    assert all(
        p.exchange == "simulated" and p.timestamp.tzinfo is not None
        for p in out
        if isinstance(p, MarketDataPoint)
    )
    assert status["status"] == "running" and health["is_healthy"] and health["issues"] == []
    s = status["statistics"]
    assert s["messages_received"] >= s["messages_processed"] >= 10
    assert s["points_emitted"] >= 10 and s["errors"] == 0 and s["restarts"] == 0


def test_status_dicts_have_the_documented_fields():
    async def body():
        async with SimulatedExchange("BTC-USDT", interval=0.01) as ex:
            node = node_for(ex.collector(data_types=["ticker"]), stream_name="sim-btc")
            node.sink(lambda p: None)
            before = node.status()
            node.start()
            await async_wait_for(lambda: stats(node)["points_emitted"] >= 3)
            during = node.get_status()
            health = node.get_health_status()
            await stop_and_wait(node)
            return before, during, health, node.status()

    before, during, health, after = run(body)
    assert before["status"] == CollectorState.STOPPED == "stopped"
    assert not before["should_be_running"]
    for key in (
        "name",
        "exchange",
        "status",
        "should_be_running",
        "symbols",
        "data_types",
        "auto_restart",
        "health",
        "statistics",
        "backoff",
    ):
        assert key in during, key
    assert during["name"] == "sim-btc" and during["symbols"] == ["BTC-USDT"]
    assert during["data_types"] == ["ticker"] and during["auto_restart"] is True
    assert set(during["health"]) >= {
        "time_since_heartbeat",
        "time_since_data",
        "max_silence_duration",
    }
    assert during["health"]["time_since_heartbeat"] < 2
    for key in (
        "messages_received",
        "messages_processed",
        "errors",
        "restarts",
        "uptime_seconds",
        "reconnect_attempts",
        "last_message_time",
        "connection_uptime",
        "last_error",
        "last_restart_time",
    ):
        assert key in during["statistics"], key
    assert during["statistics"]["uptime_seconds"] > 0
    assert set(health) >= {
        "is_healthy",
        "issues",
        "status",
        "last_heartbeat",
        "last_data_received",
        "should_be_running",
        "is_running",
    }
    assert after["status"] == "stopped" and after["should_be_running"] is False


def test_collector_into_a_redis_stream(redis_url, rdb, prefix):
    topic = prefix + "ticks"

    async def body():
        conn = redis.asyncio.Redis.from_url(redis_url)

        async def xadd(point):
            await conn.xadd(
                topic,
                {
                    "symbol": point.symbol,
                    "price": str(point.data["price"]),
                    "ts": point.timestamp.isoformat(),
                },
            )

        try:
            async with SimulatedExchange("BTC-USDT", interval=0.01) as ex:
                node = node_for(ex.collector(data_types=["ticker"]))
                node.sink(xadd)
                node.start()
                await async_wait_for(lambda: rdb.xlen(topic) >= 10, message="10 entries")
                await stop_and_wait(node)
        finally:
            await conn.aclose()

    run(body)
    entry = rdb.xrange(topic, count=1)[0][1]
    assert entry[b"symbol"] == b"BTC-USDT" and Decimal(entry[b"price"].decode()) > 0


def test_collector_to_redis_node(redis_url, rdb, prefix):
    pytest.importorskip("mdflow.streams", reason="to_redis needs mdflow.codecs")
    topic = prefix + "ticks"

    async def body():
        async with SimulatedExchange("BTC-USDT", interval=0.01) as ex:
            node = node_for(ex.collector(data_types=["ticker"]))
            writer = node.map(
                lambda p: {"symbol": p.symbol, "price": str(p.data["price"])}
            ).to_redis(topic, redis_url=redis_url)
            node.start()
            await async_wait_for(lambda: rdb.xlen(topic) >= 10, message="10 entries")
            await stop_and_wait(node)
            await writer.flush()

    run(body)
    assert rdb.xlen(topic) >= 10


# --- faults ------------------------------------------------------------------------------------


def test_silence_is_detected_and_followed_by_a_reconnect():
    max_silence = 0.5

    async def body():
        async with SimulatedExchange("BTC-USDT", interval=0.01) as ex:
            node = node_for(ex.collector(), max_silence=max_silence, heartbeat_interval=0.1)
            out = node.sink_to_list()
            node.start()
            await async_wait_for(lambda: len(out) >= 5)
            ex.stall(1.5)
            await async_wait_for(
                lambda: stats(node)["silences"] >= 1,
                timeout=max_silence + 1,
                message="silence detected",
            )
            await async_wait_for(lambda: stats(node)["restarts"] >= 1, timeout=5)
            seen = len(out)
            await async_wait_for(
                lambda: len(out) > seen + 5 and node.state == "running",
                timeout=10,
                message="data after the stall",
            )
            status = node.status()
            await stop_and_wait(node)
            return status, ex.stats

    status, server = run(body)
    assert "DataSilence: no data for" in status["statistics"]["last_error"]
    assert server["connections_total"] >= 2, "the collector reconnected"
    assert status["statistics"]["reconnect_attempts"] == 0, "data resets the failure count"


def test_backoff_delays_grow_and_are_capped():
    cap = 0.16
    port = closed_port()

    async def body():
        coll = SimulatedExchangeCollector(f"ws://127.0.0.1:{port}", "BTC-USDT")
        node = node_for(coll, backoff=(0.01, cap), max_restarts=8)
        node.start()
        await async_wait_for(lambda: node.state == "failed", timeout=10)
        return node.status()

    status = run(body)
    history = status["backoff"]["history"]
    assert len(history) == 8 and status["backoff"]["last_delay"] == history[-1]
    ceilings = [min(cap, 0.01 * 2**i) for i in range(8)]
    assert all(c / 2 - 1e-4 <= d <= c + 1e-4 for d, c in zip(history, ceilings, strict=False)), (
        history
    )
    assert history[:5] == sorted(history[:5]), f"delays grow until the cap: {history}"
    assert max(history) <= cap + 1e-4


def test_failed_after_max_restarts_and_restartable_by_hand():
    port = closed_port()

    async def body():
        coll = SimulatedExchangeCollector(f"ws://127.0.0.1:{port}", "BTC-USDT")
        node = node_for(coll, max_restarts=3)
        node.start()
        await async_wait_for(lambda: node.state == CollectorState.FAILED, timeout=10)
        failed, health = node.status(), node.get_health_status()
        async with SimulatedExchange("BTC-USDT", interval=0.01, port=port) as ex:
            out = node.sink_to_list()
            node.restart()  # by hand; a CollectorManager does the same
            await async_wait_for(lambda: len(out) >= 3 and node.state == "running", timeout=10)
            await stop_and_wait(node)
            return failed, health, node.status(), ex.stats

    failed, health, after, server = run(body)
    s = failed["statistics"]
    assert failed["status"] == "failed" and failed["is_running"] is False
    assert failed["should_be_running"] is True
    assert s["restarts"] == 3 and s["connection_errors"] == 4 and s["reconnect_attempts"] == 4
    assert "Connect" in s["last_error"] or "refused" in s["last_error"].lower()
    assert not health["is_healthy"] and "collector is failed" in health["issues"][0]
    assert after["status"] == "stopped" and server["connections_total"] >= 1


def test_garbage_is_counted_and_skipped_not_fatal():
    async def body():
        async with SimulatedExchange("BTC-USDT", interval=0.01) as ex:
            node = node_for(ex.collector())
            out = node.sink_to_list()
            node.start()
            await async_wait_for(lambda: len(out) >= 3)
            ex.send_garbage(10)
            await async_wait_for(lambda: stats(node)["parse_errors"] >= 10)
            seen = len(out)
            await async_wait_for(lambda: len(out) > seen + 5)
            status = node.status()
            await stop_and_wait(node)
            return status, ex.stats

    status, server = run(body)
    s = status["statistics"]
    assert s["parse_errors"] == 10 and s["restarts"] == 0 and s["connection_errors"] == 0
    assert status["status"] == "running" and server["connections_total"] == 1
    assert s["last_error"]  # e.g. "JSONDecodeError: ..." or "ValueError: unknown message type"


def test_dropped_connections_are_reestablished():
    async def body():
        async with SimulatedExchange("BTC-USDT", interval=0.01) as ex:
            node = node_for(ex.collector())
            out = node.sink_to_list()
            node.start()
            await async_wait_for(lambda: len(out) >= 3)
            ex.drop_connections()
            await async_wait_for(lambda: ex.stats["connections_total"] >= 2, message="reconnect")
            seen = len(out)
            await async_wait_for(lambda: len(out) > seen + 5 and node.state == "running")
            status = node.status()
            await stop_and_wait(node)
            return status

    s = run(body)["statistics"]
    assert s["restarts"] == 1 and s["connection_errors"] == 1
    assert "ConnectionClosed" in s["last_error"]


def test_without_auto_restart_a_failure_ends_in_error():
    async def body():
        async with SimulatedExchange("BTC-USDT", interval=0.01) as ex:
            node = node_for(ex.collector(), auto_restart=False)
            out = node.sink_to_list()
            node.start()
            await async_wait_for(lambda: len(out) >= 3)
            ex.drop_connections()
            await async_wait_for(lambda: node.state == CollectorState.ERROR)
            status, health = node.status(), node.get_health_status()
            node.stop()
            return status, health, node.status()

    status, health, stopped = run(body)
    assert status["statistics"]["restarts"] == 0 and status["should_be_running"]
    assert not health["is_healthy"]
    assert stopped["status"] == "stopped"


def test_stop_is_prompt_during_a_long_backoff():
    port = closed_port()

    async def body():
        coll = SimulatedExchangeCollector(f"ws://127.0.0.1:{port}", "BTC-USDT")
        node = node_for(coll, backoff=(30, 60), heartbeat_interval=1.0)
        node.start()
        await async_wait_for(lambda: node.state == "restarting")
        started = time.monotonic()
        await stop_and_wait(node, timeout=5)
        return time.monotonic() - started

    assert run(body) < 2.0


def test_stop_before_the_loop_runs_and_start_again():
    async def body():
        async with SimulatedExchange("BTC-USDT", interval=0.01) as ex:
            node = node_for(ex.collector())
            out = node.sink_to_list()
            node.start()
            node.stop()  # before the loop even got going
            await async_wait_for(lambda: node.state == "stopped")
            for _ in range(2):  # a stopped collector can be started again
                seen = len(out)
                node.start()
                await async_wait_for(lambda seen=seen: len(out) > seen + 3)
                await stop_and_wait(node)
            return ex.stats

    assert run(body)["connections_total"] == 2


def test_slow_downstream_is_backpressure_not_silence():
    async def body():
        async with SimulatedExchange("BTC-USDT", interval=0.01) as ex:
            # close_timeout: a backpressured client reads the server's close frame late
            node = node_for(
                ex.collector(data_types=["ticker"], close_timeout=0.2),
                max_silence=0.3,
                heartbeat_interval=0.05,
            )
            done = []

            async def slow(point):
                await asyncio.sleep(0.5)
                done.append(point)

            node.sink(slow)
            node.start()
            await async_wait_for(lambda: len(done) >= 3, timeout=10)
            status = node.status()
            await stop_and_wait(node)
            return status

    s = run(body)["statistics"]
    assert s["silences"] == 0 and s["restarts"] == 0


# --- custom collectors -------------------------------------------------------------------------


class Scripted(Collector):
    """An in-memory feed: each session yields the next script, then ends or raises."""

    def __init__(self, sessions):
        super().__init__("scripted", ["AAA"], ["trade"])
        self.sessions = list(sessions)
        self.connects = self.disconnects = 0
        self.subscribed = []

    async def connect(self):
        self.connects += 1

    async def disconnect(self):
        self.disconnects += 1

    async def subscribe(self, symbols, data_types):
        self.subscribed.append((symbols, data_types))

    async def messages(self):
        script = self.sessions.pop(0) if self.sessions else []
        for item in script:
            await asyncio.sleep(0)
            if isinstance(item, Exception):
                raise item
            yield item
        await asyncio.sleep(3600)  # then stay quiet (the test stops us)

    async def parse(self, raw):  # async parse is awaited
        if raw == "bad":
            raise ValueError("bad message")
        if raw == "ack":
            return None
        return [MarketDataPoint(self.exchange, "AAA", 0, "trade", {"n": n}) for n in raw]


def test_messages_exception_restarts_and_parse_errors_do_not():
    async def body():
        coll = Scripted([[(1,), "bad", "ack", (2, 3), RuntimeError("feed bug")], [(4,)]])
        node = node_for(coll, max_silence=30)
        out = node.map(lambda p: p.data["n"]).sink_to_list()
        node.start()
        await async_wait_for(lambda: out == [1, 2, 3, 4], message=f"points, got {out}")
        status = node.status()
        await stop_and_wait(node)
        return coll, status

    coll, status = run(body)
    s = status["statistics"]
    assert s["parse_errors"] == 1 and s["restarts"] == 1 and s["connection_errors"] == 1
    assert s["messages_processed"] == 4 and s["points_emitted"] == 4
    assert coll.connects == 2 and coll.disconnects == 2
    assert coll.subscribed[0] == (["AAA"], [DataType.TRADE])


def test_downstream_errors_are_logged_not_fatal(caplog):
    async def body():
        coll = Scripted([[(1,), (2,), (3,)]])
        node = node_for(coll)
        seen = []

        def explode(p):
            seen.append(p)
            if p.data["n"] == 2:
                raise RuntimeError("sink bug")

        node.sink(explode)
        node.start()
        await async_wait_for(lambda: len(seen) == 3)
        status = node.status()
        await stop_and_wait(node)
        return status

    s = run(body)["statistics"]
    assert s["emit_errors"] == 1 and s["points_emitted"] == 2 and s["restarts"] == 0
    assert "downstream raised" in caplog.text and "collector<scripted>" in caplog.text


def test_polling_collector_runs_sync_fetch_off_the_loop_and_recovers():
    threads, calls = set(), []

    def fetch():
        threads.add(threading.current_thread().name)
        calls.append(1)
        if len(calls) == 3:
            raise ConnectionError("HTTP 503")
        return {"symbol": "BTC-USDT", "price": str(100 + len(calls))}

    def parse(result):
        return MarketDataPoint("rest", result["symbol"], time.time(), "ticker", result)

    async def body():
        node = node_for(
            PollingCollector(fetch, "BTC-USDT", interval=0.01, parse=parse, exchange="rest")
        )
        out = node.sink_to_list()
        node.start()
        await async_wait_for(lambda: len(out) >= 5)
        status = node.status()
        await stop_and_wait(node)
        return out, status, threading.current_thread().name

    out, status, loop_thread = run(body)
    assert loop_thread not in threads and all(t.startswith("poll-rest") for t in threads)
    assert status["statistics"]["restarts"] == 1
    assert "HTTP 503" in status["statistics"]["last_error"]
    assert out[0].data["price"] == "101"


def test_polling_collector_awaits_async_fetch():
    async def fetch():
        await asyncio.sleep(0)
        return MarketDataPoint("rest", "ETH-USDT", time.time(), "ticker", {"price": 1})

    async def body():
        node = node_for(PollingCollector(fetch, "ETH-USDT", interval=0.01))
        out = node.sink_to_list()
        node.start()
        await async_wait_for(lambda: len(out) >= 3)
        await stop_and_wait(node)
        return out

    assert all(p.symbol == "ETH-USDT" for p in run(body))


def test_simulated_exchange_and_collector_from_sync_code():
    ex = SimulatedExchange(["BTC-USDT"], interval=0.01)
    url = ex.start_in_thread()
    try:
        assert url.startswith("ws://127.0.0.1:")
        node = Stream.collector(ex.collector(data_types=["trade"]), heartbeat_interval=0.05)
        out = node.sink_to_list()
        node.start()  # on streamz's background IOLoop thread
        wait_for(lambda: len(out) >= 3, message="trades")
        ex.drop_connections()  # faults on command work from any thread
        wait_for(lambda: ex.stats["connections_total"] >= 2, message="reconnect")
        seen = len(out)
        wait_for(lambda: len(out) > seen, message="trades after the reconnect")
        node.stop()
        wait_for(lambda: node.status()["state"] == "stopped", message="stopped")
    finally:
        ex.stop_thread()
    assert all(p.data_type is DataType.TRADE for p in out)
    assert not ex.running


# --- configuration errors ----------------------------------------------------------------------


def test_configuration_errors_say_what_was_wrong():
    ok = SimulatedExchangeCollector("ws://127.0.0.1:1", "BTC-USDT")
    with pytest.raises(ConfigError, match=r"must be a mdflow Collector .*got 'ws://x' \(str\)"):
        Stream.collector("ws://x")
    with pytest.raises(ConfigError, match=r"max_silence must be a positive number .*got 0 \(int\)"):
        Stream.collector(ok, max_silence=0)
    with pytest.raises(ConfigError, match=r"max_restarts must be an int >= 0; got -1"):
        Stream.collector(ok, max_restarts=-1)
    with pytest.raises(ConfigError, match=r"backoff initial \(5s\) must not exceed max \(1s\)"):
        Stream.collector(ok, backoff=(5, 1))
    with pytest.raises(ConfigError, match=r"url must be a ws:// or wss:// address .*'http://x'"):
        WebSocketCollector("http://x", "BTC", parse=lambda m: None)
    with pytest.raises(ConfigError, match="give parse=f"):
        WebSocketCollector("ws://x", "BTC")
    with pytest.raises(ConfigError, match=r"symbols must be .*got \[\] \(list\)"):
        WebSocketCollector("ws://x", [], parse=lambda m: None)
    with pytest.raises(ConfigError, match=r"unknown data type 'quotes' \(str\)"):
        WebSocketCollector("ws://x", "BTC", ["quotes"], parse=lambda m: None)
    with pytest.raises(ConfigError, match=r"no \['orderbook'\] channel"):
        SimulatedExchangeCollector("ws://x", "BTC", ["orderbook"])
    with pytest.raises(ConfigError, match=r"interval must be a positive number .*got -1"):
        PollingCollector(lambda: None, "BTC", interval=-1)
    with pytest.raises(ConfigError, match=r"stall: seconds must be a positive number .*got -1"):
        SimulatedExchange("BTC-USDT").stall(-1)
    with pytest.raises(ConfigError, match=r"send_garbage: n must be an int >= 1; got 0 \(int\)"):
        SimulatedExchange("BTC-USDT").send_garbage(0)
