"""CollectorManager: supervising several collectors, enable/disable/restart, status in Redis."""

from __future__ import annotations

import json
import socket

import pytest
import redis.asyncio
from streamtools import async_wait_for, run
from streamz import Stream
from tornado.ioloop import IOLoop

from mdflow.collectors import (
    CollectorManager,
    CollectorState,
    SimulatedExchange,
    SimulatedExchangeCollector,
    published_status,
)
from mdflow.errors import ConfigError


def node_for(coll, **kwargs):
    """A collector node on the test's own loop (a Source given no loop= picks a background one)."""
    options = dict(heartbeat_interval=0.05, max_silence=2.0, backoff=(0.02, 0.1))
    options.update(kwargs)
    node = Stream.collector(coll, asynchronous=True, loop=IOLoop.current(), **options)
    node.sink(lambda point: None)
    return node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stat(manager: CollectorManager, key: str):
    return manager.get_status()["statistics"][key]


def fast_manager(name="desk", **kwargs) -> CollectorManager:
    return CollectorManager(name, global_health_check_interval=0.05, restart_delay=0.2, **kwargs)


def test_failed_collectors_are_listed_and_restarted_until_they_recover():
    port = free_port()  # nobody listens here yet

    async def body():
        async with SimulatedExchange("BTC-USDT", interval=0.01) as good_ex:
            manager = fast_manager()
            manager.add_collector(node_for(good_ex.collector()), name="good")
            bad = SimulatedExchangeCollector(f"ws://127.0.0.1:{port}", "BTC-USDT")
            manager.add_collector(node_for(bad, max_restarts=1), name="bad")
            await manager.start()

            def failed_snapshot():
                status = manager.get_status()
                return status if status["failed_collectors"] == ["bad"] else None

            failed_status = await async_wait_for(failed_snapshot, message="bad to fail")
            await async_wait_for(lambda: manager.get_running_collectors() == ["good"])
            await async_wait_for(
                lambda: stat(manager, "restarts_performed") >= 1, message="a restart by the manager"
            )
            async with SimulatedExchange("BTC-USDT", interval=0.01, port=port):
                await async_wait_for(
                    lambda: sorted(manager.get_running_collectors()) == ["bad", "good"],
                    timeout=10,
                    message="bad to recover",
                )
                recovered = manager.get_collector_status("bad")
                await manager.stop()
            return failed_status, recovered, manager

    failed_status, recovered, manager = run(body)
    assert failed_status["failed_collectors"] == ["bad"]
    assert failed_status["statistics"]["failed_collectors"] == 1
    assert failed_status["collectors"]["bad"]["status"] == "failed"
    assert recovered["status"] == "running" and recovered["manager_restarts"] >= 1
    assert all(s["status"] == "stopped" for s in manager.get_status()["collectors"].values())
    assert manager.get_status()["running"] is False


def test_enable_disable_restart_remove():
    async def body():
        async with SimulatedExchange("BTC-USDT", interval=0.01) as ex:
            manager = fast_manager()
            node = node_for(ex.collector())
            assert manager.add_collector(node, name="sim", enabled=False) == "sim"
            with pytest.raises(ConfigError, match="already managed"):
                manager.add_collector(node_for(ex.collector()), name="sim")
            await manager.start()
            checks = stat(manager, "health_checks")
            await async_wait_for(lambda: stat(manager, "health_checks") >= checks + 3)
            assert node.state is CollectorState.STOPPED, "disabled collectors are not started"

            assert manager.enable_collector("sim")
            await async_wait_for(lambda: manager.get_running_collectors() == ["sim"])

            assert manager.disable_collector("sim")
            await async_wait_for(lambda: node.state is CollectorState.STOPPED)
            assert not await manager.restart_collector("sim"), "disabled: enable it instead"
            checks = stat(manager, "health_checks")
            await async_wait_for(lambda: stat(manager, "health_checks") >= checks + 5)
            assert node.state is CollectorState.STOPPED, "disabled collectors are left alone"
            assert manager.get_collector_status("sim")["enabled"] is False

            assert manager.enable_collector("sim")
            await async_wait_for(lambda: node.state is CollectorState.RUNNING)
            connections = ex.stats["connections_total"]
            assert await manager.restart_collector("sim")
            await async_wait_for(
                lambda: (
                    ex.stats["connections_total"] > connections
                    and node.state is CollectorState.RUNNING
                ),
                message="reconnect",
            )
            assert node.status()["statistics"]["restarts"] == 1
            assert await manager.restart_all_collectors() == {"sim": True}

            assert not await manager.restart_collector("nope")
            assert not manager.enable_collector("nope") and not manager.disable_collector("nope")
            assert manager.get_collector_status("nope") is None
            assert manager.remove_collector("sim") and not manager.remove_collector("sim")
            assert manager.list_collectors() == []
            await async_wait_for(lambda: node.state is CollectorState.STOPPED)
            await manager.stop()

    run(body)


def test_a_collector_stuck_unhealthy_is_restarted_by_the_manager():
    async def body():
        async with SimulatedExchange("BTC-USDT", interval=0.01) as ex:
            manager = fast_manager()
            # auto_restart off: the node only marks itself UNHEALTHY; the manager acts
            node = node_for(ex.collector(), auto_restart=False, max_silence=0.3)
            manager.add_collector(node, name="quiet")
            await manager.start()
            await async_wait_for(lambda: node.state is CollectorState.RUNNING)
            ex.stall(1.0)
            await async_wait_for(lambda: node.state is CollectorState.UNHEALTHY, timeout=3)
            health = node.get_health_status()
            await async_wait_for(lambda: stat(manager, "restarts_performed") >= 1, timeout=5)
            await async_wait_for(lambda: node.state is CollectorState.RUNNING, timeout=10)
            await manager.stop()
            return health

    health = run(body)
    assert not health["is_healthy"] and "no data for" in health["issues"][0]


def test_status_snapshot_is_published_to_redis(redis_url, rdb, prefix):
    name = prefix + "mgr"
    key = f"mdflow:collectors:{name}"

    async def body():
        # Reads on the loop go through an asyncio client: a synchronous call would stop the
        # very loop the manager publishes from for as long as it waits.
        conn = redis.asyncio.Redis.from_url(redis_url)

        async def published(field):
            return json.loads(await conn.hget(key, field) or "{}")

        async def sim_running():
            return (await published("sim")).get("status") == "running"

        async def spare_gone():
            return not await conn.hexists(key, "spare")

        try:
            async with SimulatedExchange("BTC-USDT", interval=0.01) as ex:
                manager = fast_manager(name, redis_url=redis_url)
                assert manager.publish_status and manager.status_key == key
                manager.add_collector(node_for(ex.collector()), name="sim")
                manager.add_collector(node_for(ex.collector()), name="spare")
                await manager.start()
                try:
                    await async_wait_for(sim_running, 30, message="published running status")
                    assert (await published("spare"))["manager_restarts"] == 0
                    manager.remove_collector("spare")
                    await async_wait_for(spare_gone, 30, message="spare removed")
                    # a write still carrying "spare" that lands late (a retried or cancelled
                    # publish) is undone by the next publish: each one replaces the whole hash
                    await conn.hset(key, "spare", json.dumps({"status": "running"}))
                    await async_wait_for(spare_gone, 30, message="late spare removed")
                finally:
                    await manager.stop()
        finally:
            await conn.aclose()

    run(body)
    fields = rdb.hgetall(key)
    assert set(fields) == {b"sim", b"updated_at"}
    sim = json.loads(fields[b"sim"])
    assert sim["status"] == "stopped" and sim["enabled"] is True and "statistics" in sim
    assert sim["manager_restarts"] == 0 and sim["issues"] == []
    assert 0 < rdb.ttl(key) <= 60
    snapshot = published_status(name, redis_url)
    assert snapshot["sim"]["exchange"] == "simulated" and snapshot["updated_at"].endswith("+00:00")
    assert published_status(prefix + "nobody", redis_url) == {}


def test_a_manager_restarted_without_a_collector_drops_it_from_redis(redis_url, prefix):
    """The snapshot is the running manager's view, not what earlier processes left there."""
    name = prefix + "desk"
    key = f"mdflow:collectors:{name}"

    async def body():
        conn = redis.asyncio.Redis.from_url(redis_url)

        async def fields():
            return {f.decode() for f in await conn.hkeys(key)}

        try:
            async with SimulatedExchange("BTC-USDT", interval=0.01) as ex:
                old = fast_manager(name, redis_url=redis_url)  # the process before a redeploy
                old.add_collector(node_for(ex.collector()), name="okx")
                old.add_collector(node_for(ex.collector()), name="retired")
                await old.start()
                await old.stop()
                before = await fields()
                new = fast_manager(name, redis_url=redis_url)
                new.add_collector(node_for(ex.collector()), name="okx")
                await new.start()
                try:
                    await async_wait_for(
                        lambda: stat(new, "health_checks") >= 2, message="a publish"
                    )
                    after = await fields()
                finally:
                    await new.stop()
                return before, after
        finally:
            await conn.aclose()

    before, after = run(body)
    assert before == {"okx", "retired", "updated_at"}
    assert after == {"okx", "updated_at"}, "a collector no manager runs any more is not shown"


def test_manager_status_and_configuration_errors():
    manager = CollectorManager("ops")
    status = manager.get_status()
    assert status["manager"] == "ops" and status["running"] is False
    assert status["total_collectors"] == 0 and status["collectors"] == {}
    assert set(status["statistics"]) >= {
        "restarts_performed",
        "failed_collectors",
        "running_collectors",
        "health_checks",
        "uptime_seconds",
    }
    assert status["status_key"] is None
    with pytest.raises(ConfigError, match=r"restart_delay must be a positive number .*got 0"):
        CollectorManager("ops", restart_delay=0)
    with pytest.raises(ConfigError, match=r"name must be a non-empty str; got '' \(str\)"):
        CollectorManager("")
    with pytest.raises(ConfigError, match=r"expected a Stream.collector\(...\) node; got 42"):
        manager.add_collector(42)
