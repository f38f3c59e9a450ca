"""The outlet: ``Stream.from_redis`` drains Redis streams through a consumer group.

Delivery is at-least-once and exact about acknowledgement: an entry is XACKed
only when every downstream branch has finished with it. Two paths, chosen per
graph and re-chosen whenever a node is added or removed:

* **plain** — every node downstream finishes an element within its emit
  (``map``, ``filter``, ``sink``...; :func:`mdflow.nodes.downstreams.finishes_in_emit`):
  the entry is done when ``_emit`` returned and its futures are; the finished
  entries of one read are acknowledged together, with no per-element bookkeeping;
* **counted** — a node may hold elements (buffers, windows, ``zip``, writers...):
  every entry is emitted with a streamz ``RefCounter`` in its metadata, the source
  holds a reference of its own across the awaited emit, and the entry is XACKed
  when the count reaches zero (holding nodes keep their references while they
  hold the element; async nodes are awaited).

Acks are idempotent and batched (:class:`Acker`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, ClassVar

import redis
import redis.asyncio
from redis.typing import KeyT, StreamIdT
from streamz import RefCounter, Stream

from ..checks import check_flag, check_positive, check_stream_id, check_text, check_topic
from ..codecs import check_codec, decode_entry
from ..errors import ConfigError, DecodeError, describe
from ..nodes import SupervisedSource, node_name
from ..nodes.downstreams import finishes_in_emit, graph_version
from ..nodes.status import sampled_level, sampled_note
from ..record import Record
from ..reservoir import client, fatal_reason, is_auth_failure, mask_text
from ..reservoir import redis_url as resolve_url
from ..reservoir.pipelines import send_commands_async
from .acks import Acker
from .claims import claim_abandoned, keep_fresh
from .deadletter import DeadLetters, Letter
from .replies import Fields, claimed_entries, count, raw_read_reply, read_reply, text

__all__ = ["default_consumer_name", "from_redis"]

logger = logging.getLogger(__name__)

_RETRY_CAP = 5.0  # seconds: the longest wait before a retry (unless retry_delay is longer)
_METRICS_EVERY = 1.0
_STALL_WARNING = 10.0


class _Ref(RefCounter):
    """A RefCounter that runs its callback at once instead of on the next loop turn.

    The callback only queues the ack (the XACK itself is batched), so running it
    synchronously is safe and saves one loop hop per entry.
    """

    def release(self, n: int = 1) -> None:
        self.count -= n
        if self.count <= 0 and self.cb is not None:
            self.cb()


def default_consumer_name() -> str:
    """``host:program`` — stable across restarts, so a restarted process replays its backlog."""
    program = os.path.splitext(os.path.basename(sys.argv[0] or "python"))[0] or "python"
    return f"{socket.gethostname()}:{program}"


@dataclass(slots=True)
class _Entry:
    topic: str
    id: str
    fields: Fields
    deliveries: int
    failed: bool = False
    retry_at: float = 0.0
    ids: Sequence[tuple[str, str]] = ()  # batch mode: every (topic, id) in the batch
    error: str = ""  # why the last delivery failed, named in the dead letter if it comes to that


@Stream.register_api(staticmethod)
class from_redis(SupervisedSource):
    """Outlet: read Redis streams through a consumer group and emit each entry.

    Parameters
    ----------
    topics : str or list of str
        The stream(s) to read.
    group : str
        Consumer group; created (with MKSTREAM) if missing, reused if it exists.
    consumer : str, optional
        Consumer name in the group; default ``host:program`` (see
        :func:`default_consumer_name`). Give each of several concurrent
        consumers of one group its own name.
    start : bool
        Start reading at once.
    start_id : str or datetime
        Where a *new* group starts: ``"$"`` (only new entries), ``"0"`` (everything), an
        entry id, or a point in time (a ``datetime`` or an ISO-8601 string such as
        ``"2026-11-25T09:30:00Z"``: every entry written at or after it).
    batch_size : int
        Entries per XREADGROUP.
    block : float
        Seconds one XREADGROUP BLOCK waits for new data (also bounds how long ``stop()`` takes).
    claim_idle : float
        Entries that *another* consumer has left idle this long are claimed (it died or
        stopped without finishing them), and so are this consumer's own pending entries
        that this outlet does not hold (a read whose reply was lost with its connection, or
        that reached Redis late over a stalled network). Entries this outlet still holds (a
        long window, a slow sink) are kept fresh every ``claim_idle / 3`` s, so no live
        consumer takes them, however long they are held. Must exceed the longest pause of a
        live process.
    max_deliveries : int
        An entry delivered more often than this goes to the dead-letter stream. Only real
        deliveries count: a read, a retry after a failure, a claim from a dead consumer.
        Its reason names the last failure: ``delivered 6 times, more than
        max_deliveries=5; last error: KeyError: 'px'``. An entry that does not decode is
        dead-lettered at once, with the :class:`~mdflow.errors.DecodeError` as its reason.
    retry_delay : float
        Seconds before an entry whose processing failed is retried; doubles with each
        delivery, capped at ``max(5, retry_delay)``.
    dead_letter : str
        Dead-letter stream name; ``{topic}`` is replaced by the source stream.
    max_inflight : int
        Most entries this outlet has in the graph or waiting for their XACK. Reading
        pauses at this many. Must exceed what windows and buffers downstream hold at once.
    max_retrying : int
        Most entries waiting for a retry after their processing failed. They do not take
        ``max_inflight`` slots, so a burst of entries your function rejects (poison) does
        not slow the good ones; only their ids are kept (each retry reads the entry again
        with XCLAIM). Reading pauses at this many: lower it to throttle a graph whose
        every entry fails (a service it calls is down) instead of running its entries
        through ``max_deliveries`` into the dead-letter stream.
    meta : bool
        Emit :class:`mdflow.Record` (topic, id, data, deliveries) instead of the payload.
    codec : {"auto", "msgpack", "json", "fields"}
        How entries are decoded; ``"auto"`` also reads foreign plain-field entries.
    batch : bool
        Emit one list per read (all entries of one XREADGROUP), acked as a unit.
    redis_url : str, optional
        Where Redis is (see :func:`mdflow.redis_url`).

    Examples
    --------
    >>> from streamz import Stream
    >>> source = Stream.from_redis("quotes", group="analytics")     # doctest: +SKIP
    >>> source.map(lambda q: q["px"]).sink(print)                   # doctest: +SKIP
    >>> source.start()                                              # doctest: +SKIP
    """

    _counters = (
        "read",
        "emitted",
        "acked",
        "dead_lettered",
        "failed",
        "claimed",
        "errors",
        "reconnects",
    )
    str_list: ClassVar[list[str]] = ["topics", "group", "consumer"]

    def __init__(
        self,
        topics: str | Sequence[str],
        group: str = "mdflow",
        consumer: str | None = None,
        start: bool = False,
        start_id: str | datetime = "$",
        batch_size: int = 100,
        block: float = 0.5,
        claim_idle: float = 60.0,
        max_deliveries: int = 5,
        retry_delay: float = 0.2,
        dead_letter: str = "{topic}:dead",
        max_inflight: int = 1000,
        max_retrying: int = 10_000,
        meta: bool = False,
        codec: str = "auto",
        batch: bool = False,
        redis_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        where = "from_redis"
        if isinstance(topics, str):
            topics = [topics]
        if not isinstance(topics, (list, tuple)) or not topics:
            msg = (
                f"{where}: topics must be a str or a non-empty list of str; got {describe(topics)}"
            )
            raise ConfigError(msg)
        self.topics = [check_topic(t, where, "topics[]") for t in topics]
        self.group = check_text(group, where, "group", "a consumer group")
        self.consumer = (
            default_consumer_name()
            if consumer is None
            else check_text(consumer, where, "consumer", "a consumer in the group")
        )
        self.start_id = check_stream_id(start_id, where, "start_id")
        self.batch_size = check_positive(batch_size, where, "batch_size", integer=True)
        self.block = check_positive(block, where, "block")
        self.claim_idle = check_positive(claim_idle, where, "claim_idle")
        self.max_deliveries = check_positive(max_deliveries, where, "max_deliveries", integer=True)
        self.retry_delay = check_positive(retry_delay, where, "retry_delay")
        self.max_inflight = check_positive(max_inflight, where, "max_inflight", integer=True)
        self.max_retrying = check_positive(max_retrying, where, "max_retrying", integer=True)
        if not isinstance(dead_letter, str) or not dead_letter:
            msg = (
                f"{where}: dead_letter must be a stream name (may use {{topic}}); "
                f"got {describe(dead_letter)}"
            )
            raise ConfigError(msg)
        self.dead_letter = dead_letter
        self.meta = check_flag(meta, where, "meta")
        self.batch = check_flag(batch, where, "batch")
        self.codec = check_codec(codec, allow_auto=True, where=where)
        self._url = resolve_url(redis_url)
        self._label = ",".join(self.topics)
        # Every entry this outlet owns until it is acked or dead-lettered, with the time it was
        # last read or kept fresh: those waiting for a retry (max_retrying bounds them) and
        # the others (max_inflight bounds them).
        self._held: dict[tuple[str, str], float] = {}
        # The delivery of each entry now in the graph (a batch: under its first entry's key).
        self._inflight: dict[tuple[str, str], _Entry] = {}
        # Entries waiting for a retry, without their fields (XCLAIM reads them again).
        self._retry: dict[tuple[str, str], _Entry] = {}
        self._undecodable = 0  # entries that did not decode (their log lines are sampled)
        self._plain = False  # does every node downstream finish elements within the emit?
        self._plain_version = -1  # the graph_version() that _plain was decided at
        self._capacity = asyncio.Event()
        self._paused_since: float | None = None
        self._history_done: set[str] = set()
        self._history_from: dict[str, str] = {}
        self._had_group: set[str] = set()  # topics whose group this outlet created or found
        self._next_claim = 0.0
        self._metrics_task: asyncio.Future[None] | None = None
        self._metrics: dict[str, Any] = {
            "pending": None,
            "lag": None,
            "last_id": None,
            "by_topic": {},
        }
        super().__init__(start=False, **kwargs)
        self._acker = Acker(self._url, self.group, node_name(self), self._status)
        self._dead = DeadLetters(self._url, self.group, self.consumer, dead_letter, self._status)
        if check_flag(start, type(self).__name__, "start"):
            self.start()

    # --- lifecycle -------------------------------------------------------------------------
    async def _setup(self) -> None:
        conn = client(self._url)
        for topic in self.topics:
            # A group this outlet had and Redis no longer has was lost with Redis' data (a
            # restart without persistence): recreate it at 0, like a NOGROUP read does. At
            # start_id ("$" by default) it would skip what was written since the restart.
            lost = topic in self._had_group
            if await self._create_group(conn, topic, "0" if lost else self.start_id) and lost:
                logger.warning(
                    "%s: consumer group %r on %r vanished (Redis lost its data?); "
                    "recreated it at 0",
                    node_name(self),
                    self.group,
                    topic,
                )
            self._had_group.add(topic)
        # At start, and after a reconnect (a read whose reply was lost with the connection
        # left entries in our pending list that we never saw), replay our own pending entries.
        self._history_done.clear()
        self._history_from = dict.fromkeys(self.topics, "0")

    async def _create_group(self, conn: redis.asyncio.Redis, topic: str, start_id: str) -> bool:
        """Create the group (and the stream) unless it exists; True if it was created."""
        try:
            await conn.xgroup_create(topic, self.group, id=start_id, mkstream=True)
            logger.info(
                "%s: created consumer group %r on %r at %s",
                node_name(self),
                self.group,
                topic,
                start_id,
            )
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    async def _teardown(self) -> None:
        # Reading has stopped: let the entries in the graph finish (up to stop_grace seconds;
        # what does not finish stays pending and is replayed next run), then flush the acks.
        deadline = time.monotonic() + self.stop_grace
        while self._inflight and time.monotonic() < deadline:
            self._capacity.clear()
            try:
                await asyncio.wait_for(self._capacity.wait(), timeout=0.05)
            except asyncio.TimeoutError:
                pass
        if self._inflight:  # (a window holds its last elements: normal for a plain stop())
            logger.log(
                logging.WARNING if self.stop_grace > 0 else logging.INFO,
                "%s: %d entr%s still in the graph after %.1fs; left pending for replay",
                node_name(self),
                len(self._inflight),
                "y" if len(self._inflight) == 1 else "ies",
                self.stop_grace,
            )
        await self._dead.drain(timeout=5)
        await self._acker.drain(timeout=5)

    # --- the loop --------------------------------------------------------------------------
    async def _cycle(self) -> None:
        now = time.monotonic()
        if self._metrics_task is None or self._metrics_task.done():
            self._metrics_task = asyncio.ensure_future(self._housekeeping_loop())
        try:
            await self._read_cycle(now)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # Redis lost the group (restarted without persistence, or someone deleted it):
            # recreate it from the beginning of what the stream holds: at-least-once.
            logger.warning(
                "%s: consumer group %r vanished; recreating it at 0", node_name(self), self.group
            )
            conn = client(self._url)
            for topic in self.topics:
                await self._create_group(conn, topic, "0")

    async def _read_cycle(self, now: float) -> None:
        """Retries that are due, claims, then one read. (A retry's XCLAIM and a claim's
        XPENDING answer NOGROUP too when the group is gone: :meth:`_cycle` recreates it.)"""
        if self._retry:
            await self._retry_failed(now)  # (never gated: they were held already)
        if self._free() <= 0:
            await self._wait_for_room(now)
            return
        self._paused_since = None
        if now >= self._next_claim:
            self._next_claim = now + min(self.claim_idle / 2, 5.0)
            await self._claim_abandoned()
        if len(self._history_done) < len(self.topics):
            await self._read_history()
        else:
            await self._read_new()

    async def _wait_for_room(self, now: float) -> None:
        """Reading is paused: wait until an entry is acked, or a retry or ``stop()`` is due."""
        if self._paused_since is None:
            self._paused_since = now
        due = min((e.retry_at for e in self._retry.values()), default=now + self.block)
        self._capacity.clear()
        try:
            await asyncio.wait_for(
                self._capacity.wait(), timeout=max(0.001, min(self.block, 1.0, due - now))
            )
        except asyncio.TimeoutError:
            pass
        finally:
            self._status.waited += time.monotonic() - now
        paused = time.monotonic() - self._paused_since
        if paused >= _STALL_WARNING and now - self._paused_since < _STALL_WARNING:
            if len(self._retry) >= self.max_retrying:
                logger.warning(
                    "%s: %d entries wait for a retry (max_retrying=%d) for %.0fs; reading "
                    "is paused until they succeed or go to the dead-letter stream. "
                    "Last error: %s",
                    node_name(self),
                    len(self._retry),
                    self.max_retrying,
                    paused,
                    self._status.last_error,
                )
            else:
                logger.warning(
                    "%s: %d entries held (max_inflight=%d) for %.0fs; reading is paused. "
                    "If a window/buffer downstream holds more elements than max_inflight, "
                    "raise max_inflight.",
                    node_name(self),
                    self._busy(),
                    self.max_inflight,
                    paused,
                )

    def _busy(self) -> int:
        """Entries held in the graph or for their XACK (not those waiting for a retry)."""
        return len(self._held) - len(self._retry)

    def _free(self) -> int:
        """How many more entries reads and claims may take: within both bounds, so that
        ``held <= max_inflight + max_retrying`` at all times (reading pauses at 0)."""
        return min(self.max_inflight - self._busy(), self.max_retrying - len(self._retry))

    def _room(self) -> int:
        return max(1, min(self.batch_size, self._free()))

    async def _read_history(self) -> None:
        """Re-read this consumer's own pending entries (left by an earlier run)."""
        conn = client(self._url)
        topics = [t for t in self.topics if t not in self._history_done]
        streams: dict[KeyT, StreamIdT] = {t: self._history_from[t] for t in topics}
        reply = read_reply(
            await conn.xreadgroup(self.group, self.consumer, streams, count=self._room())
        )
        entries = []
        for topic, items in reply:
            fresh = [(i.decode(), f) for i, f in items if not self._known(topic, i.decode())]
            if not items:
                self._history_done.add(topic)
                continue
            self._history_from[topic] = items[-1][0].decode()
            counts = await self._delivery_counts(topic, [i for i, _ in fresh])
            entries += [_Entry(topic, i, f or {}, counts.get(i, 1)) for i, f in fresh]
        for topic in topics:
            if not any(t == topic for t, _ in reply):
                self._history_done.add(topic)
        if entries:
            logger.info(
                "%s: replaying %d pending entr%s from an earlier run",
                node_name(self),
                len(entries),
                "y" if len(entries) == 1 else "ies",
            )
        await self._process(entries)

    def _known(self, topic: str, entry_id: str) -> bool:
        """Does this outlet hold the entry already (in the graph, for a retry, for an ack)?"""
        return (topic, entry_id) in self._held

    async def _read_new(self) -> None:
        # (raw replies, no redis-py response callback: one dict per entry, built here)
        command: list[str | int] = [
            "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self._room(),
            "BLOCK", int(self.block * 1000), "STREAMS", *self.topics, *[">"] * len(self.topics),
        ]  # fmt: skip
        [reply] = await send_commands_async(client(self._url), [command], block=self.block)
        if isinstance(reply, Exception):
            raise reply
        entries = [
            _Entry(topic, entry_id.decode(), _fields(flat), 1)
            for topic, items in raw_read_reply(reply)
            for entry_id, flat in items
        ]
        await self._process(entries)

    async def _delivery_counts(self, topic: str, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        conn = client(self._url)
        rows = await conn.xpending_range(
            topic,
            self.group,
            min=min(ids, key=_id_key),
            max=max(ids, key=_id_key),
            count=len(ids) + 1000,
            consumername=self.consumer,
        )
        return {text(r["message_id"]): count(r["times_delivered"]) for r in rows}

    async def _claim_abandoned(self) -> None:
        """Claim entries another consumer left idle longer than ``claim_idle`` (see claims)."""
        conn = client(self._url)
        min_idle = int(self.claim_idle * 1000)
        for topic in self.topics:
            room = self._free()
            if room <= 0:
                return
            mine = [i for t, i in self._held if t == topic]
            claimed = await claim_abandoned(
                conn, topic, self.group, self.consumer, min_idle, min(room, self.batch_size), mine
            )
            if not claimed:
                continue
            self._status.incr("claimed", len(claimed))
            logger.info(
                "%s: claimed %d abandoned entr%s from %r (left by %s)",
                node_name(self),
                len(claimed),
                "y" if len(claimed) == 1 else "ies",
                topic,
                ", ".join(sorted({c.previous_owner for c in claimed})),
            )
            await self._process([_Entry(topic, c.id, c.fields, c.deliveries) for c in claimed])

    async def _retry_failed(self, now: float) -> None:
        due = [e for e in self._retry.values() if e.retry_at <= now]
        if not due:
            return
        conn = client(self._url)
        by_topic: dict[str, list[_Entry]] = {}
        for entry in due:
            by_topic.setdefault(entry.topic, []).append(entry)
        for topic, entries in by_topic.items():
            claimed = await conn.xclaim(
                topic, self.group, self.consumer, 0, [e.id for e in entries]
            )
            # Out of the retry list only now: an XCLAIM that failed (Redis away, the group
            # lost) leaves them there to try again, instead of holding their slots forever.
            for entry in entries:
                if self._retry.get((topic, entry.id)) is entry:
                    del self._retry[(topic, entry.id)]
            present = dict(claimed_entries(claimed))
            again = []
            for entry in entries:
                fields = present.get(entry.id)
                if fields is not None:
                    again.append(_Entry(topic, entry.id, fields, entry.deliveries + 1))
                    again[-1].error = entry.error  # named in the dead letter if it comes to that
                else:
                    self._release((topic, entry.id))
                    logger.warning(
                        "%s: entry %s of %r was trimmed (or its group lost) before it could be "
                        "retried",
                        node_name(self),
                        entry.id,
                        topic,
                    )
            await self._process(again)

    # --- processing ------------------------------------------------------------------------
    async def _process(self, entries: list[_Entry]) -> None:
        if not entries:
            return
        self._status.incr("read", len(entries))
        self._metrics["last_id"] = entries[-1].id
        now = time.monotonic()
        for entry in entries:
            self._held[(entry.topic, entry.id)] = now
        good = []
        for entry in entries:
            if entry.deliveries > self.max_deliveries:
                reason = (
                    f"delivered {entry.deliveries} times, more than "
                    f"max_deliveries={self.max_deliveries}"
                )
                if entry.error:
                    reason += f"; last error: {entry.error}"
                self._bury(entry, reason)
                continue
            try:
                payload = decode_entry(
                    entry.fields, self.codec, source=entry.topic, entry_id=entry.id
                )
            except DecodeError as exc:
                self._undecodable += 1
                logger.log(
                    sampled_level(self._undecodable, logging.ERROR),
                    "%s: %s; sending it to the dead-letter stream%s",
                    node_name(self),
                    exc,
                    sampled_note(self._undecodable),
                )
                self._bury(entry, str(exc))
                continue
            if self.meta:
                payload = Record(entry.topic, payload, entry.id, entry.deliveries)
            good.append((entry, payload))
        if self.batch and good:
            head = good[0][0]
            unit = _Entry(
                head.topic,
                head.id,
                head.fields,
                head.deliveries,
                ids=[(e.topic, e.id) for e, _ in good],
            )
            await self._emit_all([(unit, [p for _, p in good])])
        else:
            await self._emit_all(good)

    def _bury(self, entry: _Entry, reason: str) -> None:
        """Send the entry to the dead-letter stream; it is held until it is there (the letters
        of one read are written together, in the background)."""
        letter = Letter(entry.topic, entry.id, entry.fields, reason, entry.deliveries)
        self._dead.submit(letter, partial(self._buried, entry))

    def _buried(self, entry: _Entry, error: BaseException | None) -> None:
        if error is None:
            self._release((entry.topic, entry.id))
            return
        if fatal_reason(error) is not None:  # an ACL, WRONGTYPE: no dead letter will ever go
            self.fail(error)
            return
        self._status.error(error)
        logger.error(
            "%s: cannot move entry %s of %r to dead-letter stream %r: %s; it stays pending "
            "and is retried",
            node_name(self),
            entry.id,
            entry.topic,
            self._dead.stream_for(entry.topic),
            mask_text(str(error)),
        )
        self._schedule_retry(entry)

    async def _emit_all(self, units: list[tuple[_Entry, Any]]) -> None:
        """Emit each unit (an entry, or a batch), by the plain path when the graph allows it.

        Plain path: when every node downstream finishes with an element within its emit
        (``map``, ``filter``, ``sink``...; see :func:`finishes_in_emit`), an element is
        done once ``_emit`` returned and its futures are: no reference counting, and the
        finished entries of one read are acknowledged together. Otherwise (a node may
        hold elements) each element carries a reference counter (:meth:`_emit_one`).
        The choice is re-made whenever a node is added or removed anywhere
        (:func:`graph_version`), also during an emit.
        """
        finished: list[tuple[str, str]] = []
        emitted = 0
        try:
            for entry, payload in units:
                version = graph_version()
                if version != self._plain_version:
                    self._plain = finishes_in_emit(self)
                    self._plain_version = version
                if not self._plain:
                    await self._emit_one(entry, payload)
                    continue
                try:
                    futures = self._emit(payload)
                except Exception as exc:  # noqa: BLE001 - raised by user code: no ack, retry
                    self._fail(entry, exc)
                    continue
                emitted += 1
                if graph_version() != version and not finishes_in_emit(self):
                    self._deliver_again(entry)  # a node that holds elements came in meanwhile
                    continue
                if futures:  # async work (a sink of an async function): wait for it
                    self._status.incr("emitted", emitted)
                    emitted = 0
                    self._inflight[(entry.topic, entry.id)] = entry
                    await self.wait_for_graph(futures, partial(self._plain_done, entry))
                    continue
                finished.extend(entry.ids or [(entry.topic, entry.id)])
        finally:  # (also when stop() interrupts a wait: what finished is acknowledged)
            if emitted:
                self._status.incr("emitted", emitted)
            if finished:
                self._acker.ack_many(finished, partial(self._acked_many, finished))

    def _plain_done(self, entry: _Entry, error: BaseException | None) -> None:
        if error is not None:
            self._fail(entry, error)
        else:
            self._finished(entry)

    def _deliver_again(self, entry: _Entry) -> None:
        """The graph changed during the emit: the entry may be held by a new node that
        counts no reference for it. Deliver it again, by the exact path (at-least-once)."""
        logger.info(
            "%s: the graph changed while entry %s of %r was in it; it is delivered again",
            node_name(self),
            entry.id,
            entry.topic,
        )
        self._schedule_retry(entry, now=True)

    async def _emit_one(self, entry: _Entry, payload: Any) -> None:
        self._inflight[(entry.topic, entry.id)] = entry
        # The source's own reference, held until the graph's async work on the element is done
        # (the futures of this emit); mdflow.nodes.exact holds every other element's.
        ref = _Ref(initial=1, cb=partial(self._finished, entry), loop=self.loop)
        fail = partial(self._fail, entry)

        def finished(error: BaseException | None) -> None:
            if error is not None:
                fail(error)
            ref.release()

        try:
            await self.emit_and_wait(payload, [{"ref": ref, "fail": fail}], finished=finished)
            self._status.incr("emitted")
        except asyncio.CancelledError:
            raise  # stop() interrupted the wait; `finished` runs when the graph is done
        except Exception as exc:  # noqa: BLE001 - raised by user code: log, do not ack, retry
            fail(exc)
            ref.release()

    def _fail(self, entry: _Entry, exc: BaseException) -> None:
        """Processing failed (raised here, or reported later by an async node): no ack, retry."""
        if entry.failed:
            return
        if is_auth_failure(exc):  # a to_redis downstream's password was refused: stop
            # (per-element errors such as WRONGTYPE of a computed topic are retried and
            # dead-lettered like any other failure)
            entry.failed = True
            key = (entry.topic, entry.id)
            if self._inflight.get(key) is entry:
                del self._inflight[key]
            self.fail(exc)
            return
        entry.failed = True
        entry.error = _why(exc)
        self._status.incr("failed")
        self._status.error(exc)
        failures = self._status.counts["failed"]
        logger.log(
            sampled_level(failures, logging.ERROR),
            "%s: processing entry %s of %r failed (delivery %d of %d); it will be redelivered%s",
            node_name(self),
            entry.id,
            entry.topic,
            entry.deliveries,
            self.max_deliveries,
            sampled_note(failures),
            exc_info=exc,
        )
        key = (entry.topic, entry.id)
        if self._inflight.get(key) is entry:
            del self._inflight[key]
        self._schedule_retry(entry)

    def _schedule_retry(self, entry: _Entry, now: bool = False) -> None:
        """Deliver the entry (each entry of a batch) again: after a backoff, or ``now``."""
        cap = max(_RETRY_CAP, self.retry_delay)
        delay = 0.0 if now else min(cap, self.retry_delay * 2 ** (entry.deliveries - 1))
        retry_at = time.monotonic() + delay
        # Still held, out of max_inflight's count; ids only: XCLAIM reads the data again.
        for topic, entry_id in entry.ids or [(entry.topic, entry.id)]:
            waiting = _Entry(topic, entry_id, {}, entry.deliveries, error=entry.error)
            waiting.retry_at = retry_at
            self._retry[(topic, entry_id)] = waiting
        self._capacity.set()  # (its max_inflight slot is free)

    def _finished(self, entry: _Entry) -> None:
        """RefCounter callback: every branch is done with the entry. Idempotent.

        Bound to the entry object, not its id: a late callback from a failed
        delivery must never acknowledge the retry that replaced it.
        """
        key = (entry.topic, entry.id)
        if self._inflight.get(key) is not entry:
            return
        del self._inflight[key]
        if entry.failed:
            return
        for topic, entry_id in entry.ids or [key]:
            acked = self._acker.ack(topic, entry_id)
            acked.add_done_callback(partial(self._acked, (topic, entry_id)))

    def _acked(self, key: tuple[str, str], _: asyncio.Future[Any]) -> None:
        """The XACK is done (or failed for good, logged by the Acker): the slot is free."""
        if key not in self._retry:
            self._release(key)

    def _acked_many(self, keys: list[tuple[str, str]], _: BaseException | None) -> None:
        held, retry = self._held, self._retry
        for key in keys:
            if key not in retry:
                held.pop(key, None)
        self._capacity.set()

    def _release(self, key: tuple[str, str]) -> None:
        """The outlet no longer owns the entry: it was acked, dead-lettered or trimmed."""
        self._held.pop(key, None)
        self._capacity.set()

    # --- status ----------------------------------------------------------------------------
    async def _housekeeping_loop(self) -> None:
        """Independently of a read loop that may be paused or busy: keep held entries fresh
        (every ``claim_idle / 3`` s at most, so no live consumer claims them) and refresh
        pending/lag (every second)."""
        tick = min(_METRICS_EVERY, self.claim_idle / 3)
        next_metrics = 0.0
        while not self.stopped:
            try:
                await self._keep_held_fresh()
                if time.monotonic() >= next_metrics:
                    next_metrics = time.monotonic() + _METRICS_EVERY
                    await self._refresh_metrics()
            except Exception as exc:  # noqa: BLE001 - best effort; the reader reports Redis errors
                logger.debug("%s: housekeeping failed: %s", node_name(self), exc)
            await asyncio.sleep(tick)

    async def _keep_held_fresh(self) -> None:
        now = time.monotonic()
        stale = now - self.claim_idle / 3
        by_topic: dict[str, list[str]] = {}
        for (topic, entry_id), touched in list(self._held.items()):
            if touched <= stale:
                by_topic.setdefault(topic, []).append(entry_id)
        conn = client(self._url)
        for topic, ids in by_topic.items():
            await keep_fresh(conn, topic, self.group, self.consumer, ids)
            for entry_id in ids:
                if (topic, entry_id) in self._held:
                    self._held[(topic, entry_id)] = now

    async def _refresh_metrics(self) -> None:
        conn = client(self._url)
        by_topic: dict[str, dict[str, int]] = {}
        for topic in self.topics:
            groups = await conn.xinfo_groups(topic)
            info = next((g for g in groups if g["name"].decode() == self.group), None)
            if info is None:
                continue
            if info.get("lag") is not None:
                lag = int(info["lag"])
            else:  # Redis < 7 reports no lag: count what is after last-delivered
                last = info["last-delivered-id"].decode()
                after = await conn.xrange(topic, min="(" + last, count=10_000)
                lag = len(after or ())  # XRANGE answers [] for nothing; None is in the hint only
            by_topic[topic] = {"pending": int(info.get("pending", 0)), "lag": lag}
        self._metrics["pending"] = sum(t["pending"] for t in by_topic.values())
        self._metrics["lag"] = sum(t["lag"] for t in by_topic.values())
        self._metrics["by_topic"] = by_topic

    def status(self) -> dict[str, Any]:
        """State; counts read/emitted/acked/dead_lettered/failed/claimed/errors/reconnects;
        ``inflight`` (entries in the graph), ``held`` (all this outlet has not acked yet:
        in the graph, waiting for a retry or an XACK), ``retrying`` (waiting for a retry;
        ``held - retrying`` is what ``max_inflight`` bounds), ``max_retrying``, group
        ``pending`` and ``lag`` (refreshed every second; also ``by_topic``), ``last_id``,
        ``max_inflight``, ``waited`` (seconds spent waiting on the graph) and ``ack_path``:
        ``"plain"`` when every node downstream finishes an element within its emit
        (acknowledged without reference counting), ``"counted"`` when a node may hold
        elements, ``None`` before the first element."""
        return self._status.as_dict(
            topics=list(self.topics),
            group=self.group,
            consumer=self.consumer,
            max_inflight=self.max_inflight,
            max_retrying=self.max_retrying,
            inflight=sum(len(e.ids) or 1 for e in self._inflight.values()),
            held=len(self._held),
            retrying=len(self._retry),
            ack_path=None if self._plain_version < 0 else "plain" if self._plain else "counted",
            **self._metrics,
        )


def _fields(flat: list[bytes] | None) -> dict[bytes, bytes]:
    """An entry's flat ``[field, value, ...]`` reply as a dict (``{}`` for a deleted one)."""
    if not flat:
        return {}
    pairs = iter(flat)
    return dict(zip(pairs, pairs, strict=False))


def _why(exc: BaseException) -> str:
    """An exception in a few words, for a dead letter's reason (passwords masked)."""
    text = mask_text(f"{type(exc).__name__}: {exc}")
    return text if len(text) <= 300 else text[:297] + "..."


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
