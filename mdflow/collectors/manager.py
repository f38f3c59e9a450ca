"""Supervise many collector nodes: enable/disable, restart the failed, publish status to Redis.

Each ``Stream.collector`` node already reconnects by itself; the manager is
the second line. Every ``global_health_check_interval`` seconds it looks at
every *enabled* collector and restarts those that are ``FAILED`` or
``ERROR``, stuck ``UNHEALTHY``, or whose heartbeat stopped, once they have
been so for ``restart_delay`` seconds. Collectors the node is already
restarting (``RESTARTING``) are left to it.

Status in Redis
---------------
With ``redis_url`` (or ``publish_status=True``) each check also writes a
snapshot to the hash ``mdflow:collectors:{name}``: one field per collector
holding :meth:`CollectorManager.get_collector_status` as JSON (its
:meth:`~mdflow.collectors.node.collector.get_status` dict plus ``"enabled"``,
``"manager_restarts"`` and the health ``"issues"``), and ``updated_at``
(ISO-8601 UTC). The key expires after ``max(60, 10 * global_health_check_interval)``
seconds without an update, so a dead manager's snapshot disappears. :func:`published_status`
reads it back from any process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any

import redis.asyncio
from redis.typing import EncodableT, FieldT

from ..checks import check_flag, check_seconds
from ..errors import ConfigError, describe
from ..reservoir import CONNECTION_ERRORS, db, mask_text, new_client
from ..reservoir import redis_url as resolve_url
from .collector import CollectorState
from .node import collector as CollectorNode

__all__ = ["STATUS_KEY", "CollectorManager", "published_status"]

logger = logging.getLogger(__name__)

#: Redis hash the manager named ``name`` publishes to.
STATUS_KEY = "mdflow:collectors:{name}"
_RESERVED = ("updated_at",)
_NEEDS_HELP = (CollectorState.FAILED, CollectorState.ERROR, CollectorState.UNHEALTHY)


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class _Entry:
    def __init__(self, node: CollectorNode, enabled: bool) -> None:
        self.node = node
        self.enabled = enabled
        self.trouble_since: float | None = None  # monotonic time it was first seen needing help
        self.restarts = 0


class CollectorManager:
    """Run a set of ``Stream.collector`` nodes and restart the ones that fail.

    Parameters
    ----------
    name : str
        Names the manager in logs and its Redis status key.
    global_health_check_interval : float
        Seconds between health checks.
    restart_delay : float
        How long a collector must stay failed/unhealthy before the manager restarts it.
    redis_url : str, optional
        Publish status snapshots to this Redis (implies ``publish_status``).
    publish_status : bool, optional
        Publish to Redis; with no ``redis_url`` the usual resolution applies
        (``MDFLOW_REDIS_URL``, ``REDIS_URL``, embedded server).

    Examples
    --------
    >>> from streamz import Stream
    >>> from mdflow.collectors import CollectorManager, SimulatedExchange
    >>> async def main():                                          # doctest: +SKIP
    ...     async with SimulatedExchange(["BTC-USDT"]) as ex:
    ...         manager = CollectorManager("desk", global_health_check_interval=5)
    ...         node = Stream.collector(ex.collector(), asynchronous=True)
    ...         node.sink(print)
    ...         manager.add_collector(node, name="sim")
    ...         await manager.start()
    ...         await asyncio.sleep(10)
    ...         print(manager.get_status()["statistics"])
    ...         await manager.stop()
    """

    def __init__(
        self,
        name: str = "collector_manager",
        global_health_check_interval: float = 10.0,
        restart_delay: float = 5.0,
        redis_url: str | None = None,
        publish_status: bool | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            msg = f"CollectorManager: name must be a non-empty str; got {describe(name)}"
            raise ConfigError(msg)
        self.name = name
        where = "CollectorManager"
        self.global_health_check_interval = check_seconds(
            global_health_check_interval, where, "global_health_check_interval"
        )
        self.restart_delay = check_seconds(restart_delay, where, "restart_delay")
        publish = redis_url is not None if publish_status is None else publish_status
        self.publish_status = check_flag(publish, where, "publish_status")
        self._url = resolve_url(redis_url) if self.publish_status else None
        self.status_key = STATUS_KEY.format(name=name)
        self._entries: dict[str, _Entry] = {}
        # the health loop and the event that asks it to end: made and dropped together
        self._health: tuple[asyncio.Task[None], asyncio.Event] | None = None
        self._redis: redis.asyncio.Redis | None = None
        self._started: tuple[float, float] | None = None
        self._stats = {"restarts_performed": 0, "health_checks": 0, "publish_errors": 0}

    # --- membership -------------------------------------------------------------------------
    def add_collector(
        self, node: CollectorNode, name: str | None = None, enabled: bool = True
    ) -> str:
        """Supervise ``node`` under ``name`` (default: stream name, else exchange); return the name.

        When the manager is running and ``enabled`` is true the node is started.
        """
        if not isinstance(node, CollectorNode):
            msg = (
                "CollectorManager.add_collector: expected a Stream.collector(...) node; "
                f"got {describe(node)}"
            )
            raise ConfigError(msg)
        name = name if name is not None else (node.name or node.collector.name)
        if not isinstance(name, str) or not name or name in _RESERVED:
            msg = (
                f"CollectorManager.add_collector: name must be a non-empty str other than "
                f"{_RESERVED}; got {describe(name)}"
            )
            raise ConfigError(msg)
        if name in self._entries:
            msg = (
                f"CollectorManager.add_collector: a collector named {name!r} is already "
                f"managed by {self.name!r}; pass name=... to tell them apart"
            )
            raise ConfigError(msg)
        self._entries[name] = _Entry(
            node, check_flag(enabled, "CollectorManager.add_collector", "enabled")
        )
        if enabled and self.running:
            node.start()
        logger.info(
            "%s: added collector %r (%s)", self.name, name, "enabled" if enabled else "disabled"
        )
        return name

    def remove_collector(self, name: str) -> bool:
        """Stop and forget a collector; False if there is none by that name."""
        entry = self._entries.pop(name, None)
        if entry is None:
            return False
        entry.node.stop()
        logger.info("%s: removed collector %r", self.name, name)
        return True

    def enable_collector(self, name: str) -> bool:
        """Mark a collector enabled and start it if the manager runs; False if unknown."""
        entry = self._entries.get(name)
        if entry is None:
            return False
        entry.enabled = True
        entry.trouble_since = None
        if self.running:
            entry.node.start()
        return True

    def disable_collector(self, name: str) -> bool:
        """Stop a collector and keep it stopped (no health restarts); False if unknown."""
        entry = self._entries.get(name)
        if entry is None:
            return False
        entry.enabled = False
        entry.trouble_since = None
        entry.node.stop()
        return True

    # --- lifecycle --------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._health is not None and not self._health[0].done()

    async def start(self) -> bool:
        """Start every enabled collector and the health-check loop (on the running loop)."""
        if self.running:
            return True
        self._started = (time.time(), time.monotonic())
        if self.publish_status:
            self._redis = new_client(self._url)
        for entry in self._entries.values():
            if entry.enabled:
                entry.node.start()
        stopping = asyncio.Event()
        self._health = (asyncio.ensure_future(self._health_loop(stopping)), stopping)
        logger.info("%s: started with %d collector(s)", self.name, len(self._entries))
        return True

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the health loop and every collector; wait (up to ``timeout``) until they stopped."""
        health, self._health = self._health, None
        if health is not None:
            task, stopping = health
            # Ask, don't cancel: redis-py's asyncio client can swallow a CancelledError that
            # lands mid-command, which would leave the loop running forever.
            stopping.set()
            await asyncio.wait({task}, timeout=timeout)
            if not task.done():
                logger.warning(
                    "%s: health loop did not stop within %gs; cancelling it", self.name, timeout
                )
                task.cancel()
        for entry in self._entries.values():
            entry.node.stop()
        deadline = time.monotonic() + timeout
        while any(e.node.state is not CollectorState.STOPPED for e in self._entries.values()):
            if time.monotonic() > deadline:
                late = [
                    n
                    for n, e in self._entries.items()
                    if e.node.state is not CollectorState.STOPPED
                ]
                logger.warning(
                    "%s: collectors %s did not stop within %gs", self.name, late, timeout
                )
                break
            await asyncio.sleep(0.02)
        # Take the client before the last publish: a concurrent stop() must not see it any more
        # (it would publish on, or close, a client this call is closing).
        conn, self._redis = self._redis, None
        if conn is not None:
            await self._publish(conn)
            await conn.aclose()
        self._started = None
        logger.info("%s: stopped", self.name)

    async def restart_collector(self, name: str) -> bool:
        """Restart one collector now (reconnect, forgetting its failures).

        False if there is no such collector or it is disabled (enable it instead).
        """
        entry = self._entries.get(name)
        if entry is None or not entry.enabled:
            return False
        self._restart(name, entry, "requested")
        return True

    async def restart_all_collectors(self) -> dict[str, bool]:
        """Restart every enabled collector; ``{name: restarted}``."""
        return {name: await self.restart_collector(name) for name in list(self._entries)}

    async def check_health(self) -> None:
        """Run one health check now (the loop does this every interval)."""
        self._stats["health_checks"] += 1
        now = time.monotonic()
        for name, entry in list(self._entries.items()):
            if not entry.enabled:
                continue
            node = entry.node
            health = node.get_health_status()
            state = node.state
            stuck = state in _NEEDS_HELP or (
                not health["is_healthy"]
                and state
                not in (CollectorState.RESTARTING, CollectorState.STARTING, CollectorState.STOPPING)
            )
            if not node.should_be_running and state is CollectorState.STOPPED:
                stuck = False  # stopped by hand: not ours to overrule (enable_collector starts it)
            if not stuck:
                entry.trouble_since = None
                continue
            if entry.trouble_since is None:
                entry.trouble_since = now
                logger.warning(
                    "%s: collector %r needs help (%s): %s",
                    self.name,
                    name,
                    state.value,
                    "; ".join(health["issues"]) or state.value,
                )
            if now - entry.trouble_since >= self.restart_delay:
                self._restart(name, entry, "; ".join(health["issues"]) or state.value)
        if self._redis is not None:
            await self._publish(self._redis)

    def _restart(self, name: str, entry: _Entry, why: str) -> None:
        logger.warning("%s: restarting collector %r (%s)", self.name, name, mask_text(why))
        entry.trouble_since = None
        entry.restarts += 1
        self._stats["restarts_performed"] += 1
        entry.node.restart()

    async def _health_loop(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                await self.check_health()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.error("%s: health check failed", self.name, exc_info=exc)
            with contextlib.suppress(asyncio.TimeoutError):  # timing out = time for the next check
                await asyncio.wait_for(stopping.wait(), self.global_health_check_interval)

    async def _publish(self, conn: redis.asyncio.Redis) -> None:
        # The same view as get_collector_status: a remote reader sees the manager's restarts
        # and the health issues too (a status alone does not say "heartbeat stale").
        fields: dict[FieldT, EncodableT] = {
            name: json.dumps(self._collector_status(entry)) for name, entry in self._entries.items()
        }
        fields["updated_at"] = _now_iso()
        # Each publish replaces the whole hash (DEL + HSET in one MULTI/EXEC): the hash is
        # exactly this snapshot, whatever became of earlier publishes (failed, retried, or
        # still on their way), so a removed collector is gone after the next one. (Deleting
        # removed names once, with HDEL, left them there for good whenever a write that
        # still carried the name landed after that HDEL.)
        try:
            async with conn.pipeline(transaction=True) as pipe:
                pipe.delete(self.status_key)
                pipe.hset(self.status_key, mapping=fields)
                pipe.expire(self.status_key, int(max(60, 10 * self.global_health_check_interval)))
                await pipe.execute()
        except CONNECTION_ERRORS as exc:
            self._stats["publish_errors"] += 1
            logger.warning(
                "%s: cannot publish status to %s: %s",
                self.name,
                self.status_key,
                mask_text(str(exc)),
            )

    # --- status -----------------------------------------------------------------------------
    def get_collector_status(self, name: str) -> dict[str, Any] | None:
        """One collector's ``get_status()`` plus ``enabled``, ``manager_restarts`` and ``issues``.

        ``issues`` is the list from its ``get_health_status()`` (empty when healthy);
        None if there is no collector by that name.
        """
        entry = self._entries.get(name)
        return None if entry is None else self._collector_status(entry)

    @staticmethod
    def _collector_status(entry: _Entry) -> dict[str, Any]:
        return {
            **entry.node.get_status(),
            "enabled": entry.enabled,
            "manager_restarts": entry.restarts,
            "issues": entry.node.get_health_status()["issues"],
        }

    def list_collectors(self) -> list[str]:
        """Names of all managed collectors."""
        return list(self._entries)

    def get_running_collectors(self) -> list[str]:
        """Names of collectors in state RUNNING."""
        return [n for n, e in self._entries.items() if e.node.state is CollectorState.RUNNING]

    def get_failed_collectors(self) -> list[str]:
        """Names of collectors in state FAILED or ERROR."""
        return [
            n
            for n, e in self._entries.items()
            if e.node.state in (CollectorState.FAILED, CollectorState.ERROR)
        ]

    def get_status(self) -> dict[str, Any]:
        """The manager and all its collectors, as plain JSON-ready values."""
        collectors = {n: self.get_collector_status(n) for n in self._entries}
        running, failed = self.get_running_collectors(), self.get_failed_collectors()
        enabled = [n for n, e in self._entries.items() if e.enabled]
        uptime = round(time.monotonic() - self._started[1], 3) if self._started else 0.0
        return {
            "manager": self.name,
            "running": self.running,
            "status_key": self.status_key if self.publish_status else None,
            "total_collectors": len(self._entries),
            "enabled_collectors": enabled,
            "running_collectors": running,
            "failed_collectors": failed,
            "statistics": {
                "total_collectors": len(self._entries),
                "enabled_collectors": len(enabled),
                "running_collectors": len(running),
                "failed_collectors": len(failed),
                "uptime_seconds": uptime,
                **self._stats,
            },
            "collectors": collectors,
            "updated_at": _now_iso(),
        }


def published_status(name: str, redis_url: str | None = None) -> dict[str, Any]:
    """Read what the manager ``name`` published: ``{collector: status, ..., "updated_at": str}``.

    Synchronous (for the CLI and notebooks); ``{}`` if nothing was published
    or the snapshot expired.

    Examples
    --------
    >>> published_status("desk")["sim"]["status"]                  # doctest: +SKIP
    'running'
    """
    database = db(redis_url)
    try:
        raw = database.hgetall(STATUS_KEY.format(name=name))
    finally:
        database.close()
    out: dict[str, Any] = {}
    for key, value in raw.items():
        field, text = key.decode(), value.decode()
        out[field] = text if field in _RESERVED else json.loads(text)
    return out
