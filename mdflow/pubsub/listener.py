"""Redis pub/sub subscriptions: ``from_pubsub`` listens and emits what it hears.

Pub/sub is the fast, fire-and-forget side of the reservoir. It is
**at-most-once**: a message published while no subscriber is connected (or
while a subscriber is reconnecting) is gone. Put a Redis stream in front
(``Stream.from_redis``) when a lost message is not acceptable.

Subscriptions use a dedicated connection per node and reads that wait for
data: an idle channel costs nothing and the first message after a silence is
delivered as fast as the rest (no sleep back-off); ``stop()`` interrupts an
idle read, so it is prompt. A lost connection is re-established with
backoff and every subscription is renewed (counted as ``reconnects`` /
``restarts`` in ``status()``). A connection that stays open but goes silent
(a stalled network) is found by PINGs: after ``3 x socket_timeout`` of silence
(15 s by default; the URL's ``?socket_timeout=`` sets it) the node PINGs, and
reconnects when no answer comes within ``socket_timeout``. Publishing and
caching live in :mod:`mdflow.pubsub.publish`.

Examples
--------
>>> from streamz import Stream
>>> ticks = Stream.from_pubsub(["quotes", "trades:*"], meta=True)     # doctest: +SKIP
>>> ticks.map(lambda r: r.data).to_cache("last-tick", ttl=60)        # doctest: +SKIP
>>> ticks.start()                                                    # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import Any, ClassVar, overload

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from streamz import Stream

from ..checks import check_flag, check_names
from ..codecs import check_codec, decode_message
from ..errors import ConfigError, DecodeError
from ..nodes import NodeStatus, SupervisedSource, node_name
from ..record import Record
from ..reservoir import mask_text, new_client
from ..reservoir import redis_url as resolve_url
from ..reservoir.connection import SOCKET_TIMEOUT, socket_timeout_of
from ..reservoir.fatal import with_command

__all__ = ["PubSubSource", "check_message_codec", "from_pubsub", "is_pattern"]

logger = logging.getLogger(__name__)

_GLOB = frozenset("*?[")
# redis-py >= 8 exempts blocking pub/sub reads from socket_timeout; older versions apply it,
# which would end every silence longer than it: there the subscription gets no socket timeout
# (the subscribe deadline and the PING watchdog bound every wait instead).
_READS_EXEMPT = int(redis.__version__.split(".")[0]) >= 8
_CHECKS = 3  # watchdog checks per liveness interval
_CHANNELS_EXAMPLE = "'quotes' or ['quotes', 'trades:*'] (glob characters make a pattern)."


# --- argument checks -----------------------------------------------------------------------
def is_pattern(name: str) -> bool:
    """True if ``name`` contains glob characters (``*``, ``?``, ``[``): a PSUBSCRIBE pattern.

    Examples
    --------
    >>> is_pattern("quotes:*"), is_pattern("quotes:BTC")
    (True, False)
    """
    return not _GLOB.isdisjoint(name)


def check_message_codec(codec: Any, where: str, allow_auto: bool) -> str:
    """A codec for pub/sub payloads and cache values: like ``check_codec``, without "fields"."""
    codec = check_codec(codec, allow_auto=allow_auto, where=where)
    if codec == "fields":
        names = "'auto', 'msgpack' or 'json'" if allow_auto else "'msgpack' or 'json'"
        msg = (
            f"{where}: parameter 'codec' must be {names} for pub/sub messages and cache "
            "values; got 'fields' (which is for stream entries)"
        )
        raise ConfigError(msg)
    return codec


def _text(raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    return raw.decode("utf-8", errors="backslashreplace")


def _uncancel() -> None:
    """Forget a cancellation this task handled itself (Python >= 3.11 counts them)."""
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):
        task.uncancel()


def note(status: NodeStatus, counter: str, exc: BaseException) -> None:
    """Count ``exc`` under ``counter`` (not ``errors``) and remember it as the last error."""
    status.incr(counter)
    status.last_error = mask_text(f"{type(exc).__name__}: {exc}")
    status.last_error_at = time.time()


# --- subscribing ---------------------------------------------------------------------------
class PubSubSource(SupervisedSource):
    """A supervised source holding one subscription (channels and patterns).

    Subclasses implement ``async _on_message(channel, pattern, data)`` (the
    raw bytes of the message; :meth:`_name` turns a channel into text) and may
    override ``_after_subscribe()``.

    Reads block until data arrives (no per-read timer: the hot path costs what
    a raw ``listen()`` costs); ``stop()`` interrupts an idle read. A
    watchdog PINGs a connection that has been silent for
    ``liveness_interval`` seconds and reconnects if no answer comes within
    another interval, so a half-open or stalled connection cannot go
    unnoticed; subscribing must be confirmed within one interval too.
    """

    _backoff_cap = 2.0
    #: Seconds of silence before the connection is PINGed, and that the PONG may take. None
    #: (the default): PING after 3 x the socket timeout (15 s), give up after 1 x (see
    #: :data:`mdflow.reservoir.connection.SOCKET_TIMEOUT`; the URL's ?socket_timeout= sets it).
    liveness_interval: float | None = None

    def _init_subscriptions(
        self, channels: Any, where: str, param: str, redis_url: str | None
    ) -> None:
        names = check_names(channels, where, param, _CHANNELS_EXAMPLE)
        self.channels = names
        self._plain = [n for n in names if not is_pattern(n)]
        self._patterns = [n for n in names if is_pattern(n)]
        self._url = resolve_url(redis_url)
        self._conn: redis.asyncio.Redis | None = None
        self._pubsub: Any = None
        self._names: dict[bytes, str] = {}
        self._early: list[dict] = []  # messages that arrived while subscribing
        self._reading = False  # blocked in a read that stop() / the watchdog may interrupt
        self._interrupted = False
        self._stale = False
        self._seen = 0  # replies read: the watchdog's sign of life (no clock calls)
        self._seen_at_check = -1
        self._silent_checks = 0  # watchdog checks in a row that saw no reply
        self._pinged = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._ping_task: asyncio.Future | None = None
        self._silence = 3 * SOCKET_TIMEOUT  # seconds before a PING (see liveness_interval)
        self._answer_within = SOCKET_TIMEOUT  # seconds the PONG may take

    def stop(self, grace: float | None = None) -> None:
        """Stop listening; an idle read is interrupted, so this takes effect at once."""
        was_running = not self.stopped
        super().stop(grace)
        if was_running:
            self.loop.add_callback(self._interrupt_read)

    def _interrupt_read(self) -> None:
        if self._reading and self._task is not None and not self._task.done():
            self._interrupted = True
            self._task.cancel()

    async def _setup(self) -> None:
        await self._unsubscribe()
        # No retries inside redis-py: a lost connection must surface here, so it is counted,
        # backed off and followed by a fresh subscription. The watchdog replaces redis-py's
        # health checks, which cost clock calls on every message.
        self._conn = new_client(
            self._url, retry=AsyncRetry(NoBackoff(), 0), health_check_interval=0
        )
        if self.liveness_interval:
            self._silence = self._answer_within = self.liveness_interval
        else:
            self._answer_within = socket_timeout_of(self._conn) or SOCKET_TIMEOUT
            self._silence = 3 * self._answer_within
        if not _READS_EXEMPT:
            self._conn.connection_pool.connection_kwargs["socket_timeout"] = None
        self._pubsub = self._conn.pubsub()
        deadline = max(self._silence, 1.0)
        try:
            # a connection that stalls while subscribing would leave no read to time out
            await asyncio.wait_for(self._subscribe(), deadline)
        except asyncio.TimeoutError:
            msg = (
                f"Redis did not confirm the subscription to {', '.join(self.channels)} "
                f"within {deadline:g}s"
            )
            raise redis.TimeoutError(msg) from None
        if self._status.state == "reconnecting":
            self._status.incr("restarts")
            logger.info("%s: subscribed again to %s", node_name(self), ", ".join(self.channels))
        self._seen_at_check, self._pinged, self._stale = self._seen, False, False
        self._silent_checks = 0
        self._watchdog = asyncio.get_running_loop().call_later(
            self._silence / _CHECKS, self._check_alive
        )
        await self._after_subscribe()

    async def _subscribe(self) -> None:
        try:
            if self._plain:
                await self._pubsub.subscribe(*self._plain)
            if self._patterns:
                await self._pubsub.psubscribe(*self._patterns)
            await self._confirmed()
        except redis.exceptions.NoPermissionError as exc:  # Redis does not say which channel
            command = "SUBSCRIBE" if self._plain else "PSUBSCRIBE"
            raise with_command(exc, (command, *self.channels)) from exc

    async def _confirmed(self) -> None:
        """Wait until Redis confirmed every subscription: "running" then means "listening".

        Messages that arrive in between are kept for the first cycle.
        """
        expected = len(self._plain) + len(self._patterns)
        while expected and not self.stopped:
            message = await self._pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            if message["type"] in ("subscribe", "psubscribe"):
                expected -= 1
            elif message["type"] in ("message", "pmessage"):
                self._early.append(message)

    async def _after_subscribe(self) -> None:
        """Called once the subscriptions are confirmed (messages queue up meanwhile)."""

    async def _cycle(self) -> None:
        # One cycle runs until stop(): the per-message path stays free of supervision overhead.
        generation = self._generation
        pubsub = self._pubsub
        counts = self._status.counts
        while self._early and not self.stopped:
            message = self._early.pop(0)
            counts["received"] += 1
            await self._on_message(message["channel"], message["pattern"], message["data"])
        while not self.stopped and generation == self._generation:
            self._reading = True
            try:
                message = await pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                if not self._interrupted:
                    raise
                self._interrupted = False
                _uncancel()
                if self._stale:
                    self._stale = False
                    msg = (
                        f"no answer to PING within {self._answer_within:g}s on the "
                        f"subscription to {', '.join(self.channels)}, silent for "
                        f"{self._silence:g}s before"
                    )
                    raise redis.TimeoutError(msg) from None
                return
            finally:
                self._reading = False
            self._seen += 1
            if message is None or message["type"] not in ("message", "pmessage"):
                continue
            counts["received"] += 1
            if self._backoff.failures:
                self._backoff.reset()
            await self._on_message(message["channel"], message["pattern"], message["data"])

    @overload
    def _name(self, raw: bytes) -> str: ...
    @overload
    def _name(self, raw: bytes | None) -> str | None: ...
    def _name(self, raw: bytes | None) -> str | None:
        """A channel (or pattern) as text, decoded once per name; None stays None."""
        if raw is None:
            return None
        name = self._names.get(raw)
        if name is None:
            name = self._names[raw] = _text(raw)
        return name

    def _check_alive(self) -> None:
        """Watchdog: PING a connection silent for ``liveness_interval``; give it up if the
        PING is still unanswered after the socket timeout (or the interval, if one is set).

        It looks every third of the interval, so a silence is found between 1 and 4/3
        intervals after it began (a counter of replies read, not a clock, tells silence).
        """
        if self._pubsub is None or self.stopped:
            return
        delay = self._silence / _CHECKS
        if not self._reading or self._seen != self._seen_at_check:
            # data flowed, or the reader is busy with the graph: silence is not the connection's
            self._seen_at_check, self._pinged, self._silent_checks = self._seen, False, 0
        elif not self._pinged:
            self._silent_checks += 1
            if self._silent_checks >= _CHECKS:
                self._pinged = True
                self._ping_task = asyncio.ensure_future(self._ping(self._pubsub))
                delay = self._answer_within
        else:
            logger.warning(
                "%s: no answer to PING within %.3gs (silent for %.3gs before); reconnecting",
                node_name(self),
                self._answer_within,
                self._silence,
            )
            self._stale = True
            self._interrupt_read()
            return
        self._watchdog = asyncio.get_running_loop().call_later(delay, self._check_alive)

    async def _ping(self, pubsub: Any) -> None:
        try:
            await pubsub.ping()
        except Exception as exc:  # noqa: BLE001 - the reader sees the same failure and reconnects
            logger.debug(
                "%s: PING on the subscription failed: %s", node_name(self), mask_text(str(exc))
            )

    async def _on_message(self, channel: bytes, pattern: bytes | None, data: bytes) -> None:
        raise NotImplementedError

    async def _teardown(self) -> None:
        await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._early.clear()
        pubsub, conn = self._pubsub, self._conn
        self._pubsub = self._conn = None
        try:
            if pubsub is not None:
                await pubsub.aclose()
            if conn is not None:
                await conn.aclose()
        except Exception as exc:  # noqa: BLE001 - the connection is being dropped anyway
            logger.debug(
                "%s: closing the subscription of %s: %s",
                node_name(self),
                ", ".join(self.channels),
                mask_text(str(exc)),
            )

    async def _emit_safely(self, x: Any, channel: bytes) -> bool:
        """Emit and wait; a failing graph is logged and counted, never fatal (at-most-once)."""
        try:
            # the common case, a synchronous graph, returns no futures: no extra coroutines
            futures = self._emit(x)
            if futures:
                await self._wait_for_graph(futures)
        except asyncio.CancelledError:
            if not self.stopped:
                raise
            _uncancel()  # stop() gave up waiting on a blocked graph: nothing to acknowledge
            return False
        except Exception as exc:
            self._status.error(exc)
            logger.error(
                "%s: the graph failed on a message from channel %r; message dropped",
                node_name(self),
                self._name(channel),
                exc_info=exc,
            )
            return False
        self._status.counts["emitted"] += 1
        return True

    async def _wait_for_graph(self, futures: Sequence[Awaitable[Any]]) -> None:
        # as SupervisedSource.emit_and_wait, for futures already handed back by _emit
        self._waiting_on_graph = True
        try:
            pending = [asyncio.ensure_future(f) for f in futures]
            await asyncio.wait(pending)
            for future in pending:
                exc = future.exception()
                if exc is not None:
                    raise exc
        finally:
            self._waiting_on_graph = False


@Stream.register_api(staticmethod)
class from_pubsub(PubSubSource):
    """Listen on Redis pub/sub channels and emit each message, decoded.

    Delivery is at-most-once: messages published while this node is not
    connected are lost. After a connection loss the node resubscribes by
    itself, with backoff (``reconnects`` and ``restarts`` in ``status()``).
    Each message is emitted and awaited, so a slow graph slows the reader
    (Redis buffers for it, up to its ``client-output-buffer-limit pubsub``).

    Parameters
    ----------
    channels : str or list of str
        Channel names; names with glob characters (``*``, ``?``, ``[``) are
        pattern subscriptions (PSUBSCRIBE).
    start : bool
        Start listening at once.
    codec : {"auto", "msgpack", "json"}
        How payloads are decoded. ``"auto"``: mdflow msgpack frames come back
        as the exact object; UTF-8 text that looks like JSON is parsed as
        JSON; other text is a ``str``; anything else stays ``bytes``.
    meta : bool
        Emit :class:`mdflow.Record` (``topic`` = channel, ``pattern``, ``data``)
        instead of the bare payload.
    redis_url : str, optional
        Where Redis is (see :func:`mdflow.redis_url`).

    Examples
    --------
    >>> from streamz import Stream
    >>> source = Stream.from_pubsub(["quotes", "alerts:*"], meta=True)  # doctest: +SKIP
    >>> source.sink(lambda r: print(r.topic, r.data))                   # doctest: +SKIP
    >>> source.start()                                                  # doctest: +SKIP
    >>> source.status()["emitted"]                                      # doctest: +SKIP
    12
    """

    _graphviz_shape = "doubleoctagon"
    _counters = ("received", "emitted", "decoding_errors", "errors", "reconnects", "restarts")
    str_list: ClassVar[list[str]] = ["_label"]

    def __init__(
        self,
        channels: str | Sequence[str],
        start: bool = False,
        codec: str = "auto",
        meta: bool = False,
        redis_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        where = "from_pubsub"
        self._init_subscriptions(channels, where, "channels", redis_url)
        self.codec = check_message_codec(codec, where, allow_auto=True)
        self.meta = check_flag(meta, where, "meta")
        self._label = ", ".join(self.channels)
        super().__init__(start=False, **kwargs)
        if check_flag(start, type(self).__name__, "start"):
            self.start()

    async def _on_message(self, channel: bytes, pattern: bytes | None, data: bytes) -> None:
        try:
            payload = decode_message(data, self.codec)
        except DecodeError as exc:
            exc = exc.at(self._name(channel))
            note(self._status, "decoding_errors", exc)
            logger.error("%s: %s; message dropped", node_name(self), exc)
            return
        if self.meta:
            payload = Record(self._name(channel), payload, pattern=self._name(pattern))
        await self._emit_safely(payload, channel)

    def status(self) -> dict[str, Any]:
        """State; counts received/emitted/decoding_errors/errors/reconnects/restarts."""
        return self._status.as_dict(channels=list(self.channels))
