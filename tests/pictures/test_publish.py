"""Every running graph publishes its topology and live status to Redis (``mdflow:topology:*``).

Real graphs on real Redis servers; every wait polls with a deadline.
"""

from __future__ import annotations

import json
import logging

import pytest
import redis
from helpers import wait_for
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream
from tornado.ioloop import IOLoop

from mdflow.collectors import SimulatedExchange
from mdflow.nodes import lifecycle
from mdflow.pictures import publish
from mdflow.reservoir import free_port


def published(conn: redis.Redis, topic: str) -> dict[str, tuple[str, dict]]:
    """The published graphs that touch stream ``topic``, by the kind of their source."""
    found = {}
    for key in conn.scan_iter(match=publish.PATTERN, count=1000):
        raw = conn.get(key)
        if raw is None:
            continue
        doc = json.loads(raw)
        nodes = doc["topology"]["nodes"]
        if f"stream:{topic}" not in nodes:
            continue
        for node in nodes.values():
            if node["kind"] in ("engine", "outlet", "collector"):
                found[node["kind"]] = (key.decode(), doc)
    return found


def node_of(doc: dict, kind: str) -> dict:
    (node,) = [n for n in doc["topology"]["nodes"].values() if n["kind"] == kind]
    return node


def test_running_graph_publishes_its_topology_and_real_counts(redis_url, rdb, prefix):
    topic = prefix + "a"

    async def body():
        pump = Stream.engine(
            topic, lambda: {"n": 1}, push_interval=0.02, redis_url=redis_url, asynchronous=True
        )
        outlet = Stream.from_redis(
            topic, group="g", start_id="0", redis_url=redis_url, asynchronous=True
        )
        received = outlet.map(lambda x: x).sink_to_list()
        pump.start()
        outlet.start()
        graphs = await async_wait_for(
            lambda: (lambda f: f if {"engine", "outlet"} <= set(f) else None)(
                published(rdb, topic)
            ),
            timeout=15,
            interval=0.1,
            message="both graphs published",
        )
        key, doc = graphs["outlet"]
        ttl = rdb.pttl(key)
        assert 0 < ttl <= 5000
        assert key == publish.KEY.format(graph_id=doc["id"])
        assert doc["version"] == 1 and doc["pid"] > 0 and doc["host"] and doc["program"]
        assert doc["redis"] == redis_url and doc["time"] >= doc["started"]
        nodes = doc["topology"]["nodes"]
        assert nodes[f"stream:{topic}"]["reservoir"] is True
        assert all(i.startswith(doc["id"] + "/") for i in nodes if not i.startswith("stream:"))
        kinds = sorted(n["kind"] for n in nodes.values())
        assert kinds == ["outlet", "sink", "stream", "transform"]
        read = [e for e in doc["topology"]["edges"] if e["kind"] == "read"]
        assert read[0]["src"] == f"stream:{topic}" and read[0]["group"] == "g"
        assert graphs["engine"][1]["id"] != doc["id"]

        await async_wait_for(lambda: len(received) >= 5, timeout=15)
        await stop_and_wait(pump)
        written = pump.status()["written"]
        await async_wait_for(lambda: outlet.status()["acked"] == written, timeout=15)
        await stop_and_wait(outlet)

        def final():
            found = published(rdb, topic).get("outlet")
            if found is None:
                return None
            state = node_of(found[1], "outlet")["status"]
            return state if state["state"] == "stopped" else None

        status = await async_wait_for(
            final, timeout=15, interval=0.1, message="the last publication"
        )
        assert status["acked"] == len(received) == written == rdb.xlen(topic)
        return key

    key = run(body)
    # no more publications after the last one: the key expires by its TTL
    wait_for(lambda: not rdb.exists(key), timeout=15, message="the key to expire")


def test_no_password_is_published(redis_factory):
    server = redis_factory(extra_args=("--requirepass", "s3cretpw"))
    url = f"redis://:s3cretpw@127.0.0.1:{server.port}/0"
    conn = redis.Redis.from_url(url)
    topic = "pw"

    async def body():
        pump = Stream.engine(topic, push_interval=0.05, redis_url=url, asynchronous=True)
        pump.start()
        found = await async_wait_for(
            lambda: published(conn, topic).get("engine"), timeout=15, interval=0.1
        )
        await stop_and_wait(pump)
        return found

    try:
        key, doc = run(body)
        raw = conn.get(key)
        assert raw is None or b"s3cretpw" not in raw
        assert "s3cretpw" not in json.dumps(doc)
        masked = f"redis://:***@127.0.0.1:{server.port}/0"
        assert doc["redis"] == masked and node_of(doc, "engine")["redis"] == masked
    finally:
        conn.close()


def test_opting_out(redis_url, rdb, prefix, monkeypatch):
    def pump(topic):
        return Stream.engine(topic, push_interval=0.05, redis_url=redis_url, asynchronous=True)

    async def body():
        # started while publishing is off (in code, then by the environment): never tracked
        publish.set_publishing(False)
        hidden = pump(prefix + "off")
        hidden.start()
        publish.set_publishing(None)
        monkeypatch.setenv(publish.ENV, "0")
        assert not publish.publishing_enabled()
        hidden_too = pump(prefix + "env")
        hidden_too.start()
        monkeypatch.delenv(publish.ENV)
        # started later on the same loop: published at the first tick, with anything tracked
        shown = pump(prefix + "on")
        shown.start()
        await async_wait_for(lambda: published(rdb, prefix + "on"), timeout=15, interval=0.1)
        await stop_and_wait(hidden, hidden_too, shown)
        return published(rdb, prefix + "off"), published(rdb, prefix + "env")

    try:
        assert run(body) == ({}, {})
    finally:
        publish.set_publishing(None)


def test_collector_graph_is_published_through_its_writer(redis_url, rdb, prefix):
    topic = prefix + "ticks"

    async def body():
        async with SimulatedExchange(["BTC-USDT"], interval=0.02) as ex:
            node = Stream.collector(
                ex.collector(), asynchronous=True, loop=IOLoop.current(), max_silence=5
            )
            node.map(lambda p: {"symbol": str(p.symbol)}).to_redis(topic, redis_url=redis_url)
            node.start()
            found = await async_wait_for(
                lambda: published(rdb, topic).get("collector"), timeout=15, interval=0.1
            )
            await stop_and_wait(node)
            return found

    _, doc = run(body)
    collector = node_of(doc, "collector")["status"]
    assert "state" in collector and "points_emitted" in collector  # statistics folded in
    assert node_of(doc, "writer")["redis"] == redis_url


def test_an_unreachable_redis_is_logged_once_and_never_hurts(redis_url, rdb, prefix, caplog):
    dead_url = f"redis://:deadpw@127.0.0.1:{free_port()}/0"
    topic = prefix + "live"
    caplog.set_level(logging.DEBUG, logger="mdflow.pictures.publish")

    async def body():
        pump = Stream.engine(topic, push_interval=0.02, redis_url=redis_url, asynchronous=True)
        # a branch that never writes: its Redis is down, but the graph is published there too
        pump.filter(lambda _: False).to_redis(prefix + "never", redis_url=dead_url)
        pump.start()
        times: set[float] = set()

        def three_publications():
            found = published(rdb, topic).get("engine")
            if found is not None:
                times.add(found[1]["time"])
            return len(times) >= 3

        await async_wait_for(three_publications, timeout=20, interval=0.1)
        await stop_and_wait(pump)
        return pump.status()

    status = run(body)
    assert status["errors"] == 0 and status["written"] >= 3
    failures = [r for r in caplog.records if "cannot publish" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelno == logging.DEBUG
    assert "deadpw" not in caplog.text and "127.0.0.1" in failures[0].getMessage()


def test_a_failing_hook_never_stops_a_source(redis_url, prefix, caplog):
    def broken(node):
        raise RuntimeError("hook broke")

    lifecycle.on_source_started(broken)
    caplog.set_level(logging.ERROR, logger="mdflow.nodes.lifecycle")
    try:

        async def body():
            pump = Stream.engine(
                prefix + "s", push_interval=0.02, redis_url=redis_url, asynchronous=True
            )
            pump.start()
            await async_wait_for(lambda: pump.status()["written"] >= 2, timeout=15)
            await stop_and_wait(pump)

        run(body)
    finally:
        lifecycle.remove_source_started(broken)
    assert f"engine<{prefix}s>: source-started hook" in caplog.text
    assert "hook broke" in caplog.text


@pytest.mark.parametrize("value", ["0", "false", "off", "NO"])
def test_environment_switch(monkeypatch, value):
    monkeypatch.setenv(publish.ENV, value)
    assert not publish.publishing_enabled()
    publish.set_publishing(True)
    try:
        assert publish.publishing_enabled()  # code wins over the environment
    finally:
        publish.set_publishing(None)
