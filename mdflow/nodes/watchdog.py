"""Blocked-loop watchdog: name the node whose synchronous work stalls an event loop.

Every mdflow source of a process shares its event loop with the other sources
and graphs started on it. A synchronous ``map`` that takes a second (a blocking
HTTP call, a big computation) holds the whole loop for that second: no other
source reads, no timer fires, and nothing says so. This module watches each
loop that runs an mdflow source and says so, once per episode::

    map<parse_quote>: a synchronous call blocked the event loop for 1.23s (in
    parse_quote at app.py:42); other sources on this loop (from_redis<trades>)
    could not run meanwhile. Make it non-blocking: use an async function with
    .map_async(...) (or await loop.run_in_executor(None, func, x) inside it) ...

How, at no cost per element:

* a *heartbeat* on the loop (a timer every 0.1 s) notes when the next beat is
  due; it runs while at least one mdflow source on that loop is running;
* a daemon *watchdog thread* per loop wakes when a beat is overdue by more
  than the threshold and samples the loop thread's stack once
  (``sys._current_frames``); the innermost frame that belongs to a streamz
  node (its ``self``, or the node's ``func``) names the culprit;
* when the loop resumes, the heartbeat logs one warning for the episode and
  adds it to the node's counters (:func:`loop_blocks`). Repeats from the same
  place are logged at most once a minute, with the count of episodes since.

``MDFLOW_BLOCKED_LOOP_WARNING`` sets the threshold in seconds (default 0.5;
``0`` turns the watchdog off); it is read when a source starts.

Examples
--------
>>> blocked_loop_threshold()            # MDFLOW_BLOCKED_LOOP_WARNING unset
0.5
>>> from streamz import Stream
>>> loop_blocks(Stream().map(len))     # a node that never blocked its loop
{'blocked_loop_s': 0.0, 'blocked_loop_episodes': 0}
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import os
import sys
import sysconfig
import threading
import time
import weakref
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

import streamz
import tornado
from streamz import Stream

from .lifecycle import on_source_started
from .status import node_name

__all__ = [
    "BLOCKED_LOOP_ENV",
    "DEFAULT_THRESHOLD",
    "blocked_loop_threshold",
    "loop_blocks",
    "watch",
]

logger = logging.getLogger(__name__)

#: Environment variable: seconds a loop may be blocked before a warning; ``0`` disables.
BLOCKED_LOOP_ENV = "MDFLOW_BLOCKED_LOOP_WARNING"
#: Threshold (s) when :data:`BLOCKED_LOOP_ENV` is unset.
DEFAULT_THRESHOLD = 0.5
#: Seconds between two heartbeats (at most; a quarter of the threshold if that is smaller).
HEARTBEAT = 0.1
#: Seconds between two warnings for the same node or place (episodes in between are counted).
REPEAT_INTERVAL = 60.0
# The watchdog thread wakes at least this often, so it ends promptly with its loop.
_POLL = 0.2
_MAX_FRAMES = 200
_MAX_NAMED_SOURCES = 5

# Code that is not the user's: a sample's "where" is the innermost frame outside these.
_LIBRARY_DIRS = tuple(
    {
        os.path.normcase(os.path.realpath(p)) + os.sep
        for p in (
            *(sysconfig.get_paths().get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")),
            os.path.dirname(streamz.__file__),
            os.path.dirname(tornado.__file__),
            os.path.dirname(os.path.dirname(__file__)),  # mdflow itself
        )
        if p
    }
)
# Where a loop thread is between callbacks, not blocked: a sample landing here is discarded.
_LOOP_FILES = tuple(
    os.path.normcase(os.path.realpath(p))
    for p in (
        __file__,
        sys.modules["selectors"].__file__ or "",
        sys.modules["asyncio.base_events"].__file__ or "",
        sys.modules["asyncio.events"].__file__ or "",
    )
)


def blocked_loop_threshold() -> float:
    """Seconds a loop may be blocked before a warning (``0``: never), from the environment.

    Reads :data:`BLOCKED_LOOP_ENV`; an unreadable value is logged and the
    default (0.5 s) is used.

    Examples
    --------
    >>> import os
    >>> os.environ["MDFLOW_BLOCKED_LOOP_WARNING"] = "2"
    >>> blocked_loop_threshold()
    2.0
    >>> del os.environ["MDFLOW_BLOCKED_LOOP_WARNING"]
    """
    raw = os.environ.get(BLOCKED_LOOP_ENV, "").strip()
    if not raw:
        return DEFAULT_THRESHOLD
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        logger.warning(
            "%s must be a number of seconds >= 0 (0 turns the warning off); got %r: using %s",
            BLOCKED_LOOP_ENV,
            raw,
            DEFAULT_THRESHOLD,
        )
        return DEFAULT_THRESHOLD
    return value


# --- counters -------------------------------------------------------------------------------
_counters_lock = threading.Lock()
_counters: weakref.WeakKeyDictionary[Stream, list[float]] = weakref.WeakKeyDictionary()


def loop_blocks(node: Stream) -> dict[str, float | int]:
    """How often, and how long in all, ``node`` blocked its event loop.

    Parameters
    ----------
    node : streamz.Stream
        Any node of a graph fed by an mdflow source.

    Returns
    -------
    dict
        ``blocked_loop_s`` (seconds, summed over episodes) and
        ``blocked_loop_episodes`` (episodes longer than the threshold).

    Examples
    --------
    >>> from streamz import Stream
    >>> loop_blocks(Stream())
    {'blocked_loop_s': 0.0, 'blocked_loop_episodes': 0}
    """
    with _counters_lock:
        seconds, episodes = _counters.get(node, (0.0, 0))
    return {"blocked_loop_s": round(seconds, 3), "blocked_loop_episodes": int(episodes)}


def _count(node: Stream, seconds: float) -> None:
    with _counters_lock:
        entry = _counters.setdefault(node, [0.0, 0])
        entry[0] += seconds
        entry[1] += 1


# --- the hook -------------------------------------------------------------------------------
_watches_lock = threading.Lock()
_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWatch] = (
    weakref.WeakKeyDictionary()
)


def watch(node: Stream) -> None:
    """Watch the loop of the source ``node`` that just started (the hook every source calls).

    Safe from any thread: the work is handed to the node's loop.

    Parameters
    ----------
    node : streamz.Stream
        A started source; its graph is searched for the culprit of a block.

    Examples
    --------
    >>> from streamz import Stream
    >>> watch(Stream.engine("quotes", redis_url="redis://localhost:6379/0"))  # doctest: +SKIP
    """
    threshold = blocked_loop_threshold()
    loop = getattr(node, "loop", None)
    if threshold <= 0 or loop is None:
        return
    loop.add_callback(_adopt, weakref.ref(node), threshold)


def _adopt(ref: weakref.ref[Stream], threshold: float) -> None:
    """On the node's loop: remember the source; start this loop's heartbeat if it is not on."""
    node = ref()
    if node is None:
        return
    loop = asyncio.get_running_loop()
    with _watches_lock:
        state = _watches.get(loop)
        if state is None:
            state = _watches[loop] = _LoopWatch(loop)
    state.threshold = threshold
    state.sources[id(node)] = ref
    state.start()


# --- one loop's watch -----------------------------------------------------------------------
@dataclass
class _Frame:
    code: CodeType
    line: int
    node: Stream | None  # the frame's ``self``, if it is a streamz node


@dataclass
class _Repeat:
    last: float  # monotonic time of the last warning
    episodes: int = 0  # since then, not warned about
    seconds: float = 0.0


_repeats_lock = threading.Lock()
_node_repeats: weakref.WeakKeyDictionary[Stream, _Repeat] = weakref.WeakKeyDictionary()
_place_repeats: dict[str, _Repeat] = {}


class _LoopWatch:
    """Heartbeat (on the loop) and watchdog thread (off it) of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop_ref = weakref.ref(loop)
        self.threshold = DEFAULT_THRESHOLD
        self.sources: dict[int, weakref.ref[Stream]] = {}
        self.lock = threading.Lock()  # between the heartbeat and the watchdog thread
        self.wake = threading.Event()
        self.active = False
        self.beat = 0
        self.due = 0.0  # monotonic time the next heartbeat is due
        self.cpu = 0.0  # the loop thread's CPU time at the last heartbeat
        self.thread_id = 0
        self.sample: list[_Frame] | None = None  # taken during the current stall
        self.paused = False  # the loop stopped running since the last heartbeat
        # Bumped by each start(): a heartbeat of an earlier run ends quietly. (No handle is
        # kept: a TimerHandle refers to its loop, and the loop is the key this state lives
        # under in a WeakKeyDictionary.)
        self.run = 0
        self.thread: threading.Thread | None = None

    @property
    def interval(self) -> float:
        return min(HEARTBEAT, self.threshold / 4)

    # --- on the loop ----------------------------------------------------------------------
    def start(self) -> None:
        if not self.active:
            self.wake.clear()
            self.active = True
            self.run += 1
            self._schedule()
        self._ensure_thread()

    def stop(self) -> None:
        self.active = False
        self.wake.set()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        with self.lock:
            self.beat += 1
            self.due = time.monotonic() + self.interval
            self.cpu = time.thread_time()
            self.thread_id = threading.get_ident()
            self.sample = None
            self.paused = False
        loop.call_later(self.interval, self._heartbeat, self.run)

    def _ensure_thread(self) -> None:
        if self.thread is None or not self.thread.is_alive():
            self.thread = threading.Thread(
                target=_watchdog, args=(self,), name=f"mdflow-watchdog-{id(self):x}", daemon=True
            )
            self.thread.start()

    def _heartbeat(self, run: int) -> None:
        if not self.active or run != self.run:
            return
        now = time.monotonic()
        with self.lock:
            late = now - self.due
            sample, paused, cpu = self.sample, self.paused, time.thread_time() - self.cpu
        running = self._running_sources()
        if late >= self.threshold and not paused:
            try:
                self._report(late, sample, cpu, running)
            except Exception:  # a diagnostic must never break the loop
                logger.exception("the blocked-loop watchdog failed to report a block")
        if not running:
            self.stop()  # nothing of ours on this loop any more; a new start begins again
            return
        self._schedule()
        self._ensure_thread()

    def _running_sources(self) -> list[Stream]:
        alive = []
        for key, ref in list(self.sources.items()):
            node = ref()
            if node is None:
                del self.sources[key]
            elif not getattr(node, "stopped", True):
                alive.append(node)
        return alive

    # --- off the loop (the watchdog thread) -----------------------------------------------
    def check(self) -> float:
        """Sample the loop thread's stack if the heartbeat is overdue; seconds until next look."""
        with self.lock:
            late = time.monotonic() - self.due
            if late < self.threshold:
                return self.threshold - late
            if self.sample is None:
                frame = sys._current_frames().get(self.thread_id)
                if frame is not None:
                    sample = _snapshot(frame)
                    del frame
                    if sample and not _between_callbacks(sample[0].code):
                        self.sample = sample
        return _POLL

    # --- the warning ----------------------------------------------------------------------
    def _report(
        self, late: float, sample: list[_Frame] | None, cpu: float, running: list[Stream]
    ) -> None:
        if sample is None and cpu < late / 2:
            # Neither seen blocked nor busy: the process was suspended or starved, not blocked.
            logger.debug("event loop %.2fs late while idle (process suspended?)", late)
            return
        nodes = _graph_nodes([n for r in self.sources.values() if (n := r()) is not None])
        culprit, where = _culprit(sample or [], nodes)
        if culprit is not None:
            _count(culprit, late)
            with _repeats_lock:
                repeat = _node_repeats.get(culprit)
                if repeat is None:
                    repeat = _node_repeats[culprit] = _Repeat(last=-math.inf)
        else:
            key = where or "?"
            with _repeats_lock:
                if key not in _place_repeats and len(_place_repeats) >= 1000:
                    _place_repeats.clear()
                repeat = _place_repeats.setdefault(key, _Repeat(last=-math.inf))
        now = time.monotonic()
        if now - repeat.last < REPEAT_INTERVAL:
            repeat.episodes += 1
            repeat.seconds += late
            return
        since = ""
        if repeat.episodes:
            since = (
                f" ({repeat.episodes} more episode(s), {repeat.seconds:.2f}s in all, "
                f"since the last warning {now - repeat.last:.0f}s ago)"
            )
        repeat.last, repeat.episodes, repeat.seconds = now, 0, 0.0
        logger.warning(
            _message(culprit, where, late, running, since),
            extra={"mdflow_node": _label(culprit) if culprit is not None else where},
        )


def _watchdog(state: _LoopWatch) -> None:
    """The watchdog thread: ends when its loop closes, stops running, or has no source left."""
    try:
        while state.active:
            loop = state.loop_ref()
            if loop is None or loop.is_closed():
                return
            if not loop.is_running():
                # Between run_until_complete() calls: not blocked. The next heartbeat restarts us.
                state.paused = True
                return
            del loop
            wait = state.check()
            state.wake.wait(min(max(wait, 0.01), _POLL))
    finally:
        with state.lock:
            state.sample = None  # its nodes refer to the loop, the key the state lives under


# --- reading a sample -----------------------------------------------------------------------
def _snapshot(frame: FrameType | None) -> list[_Frame]:
    """The stack, innermost first, with each frame's ``self`` if it is a streamz node."""
    out: list[_Frame] = []
    while frame is not None and len(out) < _MAX_FRAMES:
        out.append(_Frame(frame.f_code, frame.f_lineno or 0, _self_node(frame)))
        frame = frame.f_back
    return out


def _self_node(frame: FrameType) -> Stream | None:
    code = frame.f_code
    if not code.co_argcount or code.co_varnames[0] != "self":
        return None
    try:
        obj = frame.f_locals.get("self")
    except Exception:  # noqa: BLE001 - a frame that cannot show its locals is no node
        return None
    return obj if isinstance(obj, Stream) else None


def _between_callbacks(code: CodeType) -> bool:
    return os.path.normcase(os.path.realpath(code.co_filename)) in _LOOP_FILES


def _graph_nodes(sources: list[Stream]) -> list[Stream]:
    seen: dict[int, Stream] = {}
    todo = list(sources)
    while todo:
        node = todo.pop()
        if id(node) in seen or not isinstance(node, Stream):
            continue
        seen[id(node)] = node
        todo.extend(node.upstreams)
        todo.extend(node.downstreams)
    return list(seen.values())


def _code_of(func: Any) -> CodeType | None:
    while isinstance(func, functools.partial):
        func = func.func
    func = getattr(func, "__func__", func)  # bound methods
    code = getattr(func, "__code__", None)
    if code is None and callable(func):
        code = getattr(type(func).__call__, "__code__", None)
    return code if isinstance(code, CodeType) else None


def _culprit(sample: list[_Frame], nodes: list[Stream]) -> tuple[Stream | None, str | None]:
    """The innermost node on the stack (by ``self`` or by its ``func``), and the user's place."""
    by_code: dict[CodeType, Stream] = {}
    for node in nodes:
        code = _code_of(getattr(node, "func", None))
        if code is not None:
            by_code.setdefault(code, node)
    culprit = None
    for frame in sample:
        culprit = frame.node or by_code.get(frame.code)
        if culprit is not None:
            break
    user = next((f for f in sample if not _is_library(f.code.co_filename)), None)
    place = user or (sample[0] if sample else None)
    where = None
    if place is not None:
        name = getattr(place.code, "co_qualname", place.code.co_name)
        where = f"{name} at {_short_path(place.code.co_filename)}:{place.line}"
    return culprit, where


def _is_library(filename: str) -> bool:
    if filename.startswith("<"):
        return True  # <frozen ...>, <string>
    return os.path.normcase(os.path.realpath(filename)).startswith(_LIBRARY_DIRS)


def _short_path(filename: str) -> str:
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive (Windows)
        return filename
    return filename if relative.startswith(os.pardir) else relative


# --- the message ----------------------------------------------------------------------------
def _func_label(func: Any) -> str | None:
    while isinstance(func, functools.partial):
        func = func.func
    if func is None:
        return None
    name = getattr(func, "__name__", None) or type(func).__name__
    if name == "<lambda>":
        code = _code_of(func)
        where = f" at {os.path.basename(code.co_filename)}:{code.co_firstlineno}" if code else ""
        return f"lambda{where}"
    return str(name)


def _label(node: Stream) -> str:
    """``map<parse_quote>``: the node's name, with its function's for map/filter/sink."""
    label = node_name(node)
    func = _func_label(getattr(node, "func", None))
    return f"{label}<{func}>" if func and "<" not in label else label


def _upstream_sources(node: Stream) -> set[int]:
    seen: set[int] = set()
    roots: set[int] = set()
    todo = [node]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        ups = [u for u in current.upstreams if isinstance(u, Stream)]
        if not ups:
            roots.add(id(current))
        todo.extend(ups)
    return roots


def _advice(node: Stream | None) -> str:
    func = getattr(node, "func", None)
    kind = type(node).__name__ if node is not None else ""
    if func is not None and inspect.iscoroutinefunction(func):
        return (
            "Its function is async but makes a synchronous call: await "
            "loop.run_in_executor(None, blocking_call, ...) for that call, or use an async library"
        )
    if kind in ("map", "starmap"):
        return (
            "Make it non-blocking: use an async function with .map_async(...) "
            "(or await loop.run_in_executor(None, func, x) inside it)"
        )
    if kind == "sink":
        return (
            "Make it non-blocking: give .sink(...) an async function that awaits "
            "loop.run_in_executor(None, func, x) (async sinks are awaited)"
        )
    return (
        "Make it non-blocking: run the slow call in an executor "
        "(await loop.run_in_executor(None, func, x)) from an async function, "
        "e.g. with .map_async(...)"
    )


def _message(
    culprit: Stream | None, where: str | None, late: float, running: list[Stream], since: str
) -> str:
    if culprit is not None:
        who = _label(culprit)
        mine = _upstream_sources(culprit)
        others = [s for s in running if id(s) not in mine]
        place = f" (in {where})" if where else ""
    else:
        who = where or "unknown code (it held the interpreter lock, so it could not be sampled)"
        others = running
        place = ""
    if others:
        names = [node_name(s) for s in others[:_MAX_NAMED_SOURCES]]
        if len(others) > _MAX_NAMED_SOURCES:
            names.append(f"{len(others) - _MAX_NAMED_SOURCES} more")
        stalled = f"other sources on this loop ({', '.join(names)}) could not run meanwhile"
    else:
        stalled = "nothing else on this loop (timers, reads, other tasks) could run meanwhile"
    return (
        f"{who}: a synchronous call blocked the event loop for {late:.2f}s{place}; {stalled}. "
        f"{_advice(culprit)}.{since} Set {BLOCKED_LOOP_ENV}=seconds to change when this "
        "is logged (0: never)."
    )


on_source_started(watch)
