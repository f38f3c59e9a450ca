"""Run pipelines in scripts and services: keep pumping, stop cleanly, fail loudly.

* :func:`run` starts the sources of the given pipelines and blocks until they
  all stop, or until SIGINT/SIGTERM; then it stops them gracefully. A node that
  failed for good (refused password, ACL, bad ``start_id``, ``WRONGTYPE``)
  ends the run with :class:`~mdflow.NodeFailed`.
* :class:`Runner` is the same as an object: a context manager for services
  that do other work meanwhile, and what ``mdflow run`` drives.
* A script that only calls ``.start()`` keeps running too: when the main
  module ends while mdflow sources still run, the interpreter waits for them
  (as for a non-daemon thread) until they stop or SIGINT/SIGTERM arrives.
  ``MDFLOW_KEEP_ALIVE=0`` turns that off; a REPL or a Jupyter kernel that exits, and a
  script that ended with an exception, are never kept alive.

A graceful stop: every source stops reading; elements already in the graph get
``grace`` seconds to finish (what does not finish stays pending in Redis and
is replayed by the next run); acknowledgements and writes are flushed. A
second Ctrl-C exits at once.

Examples
--------
>>> from streamz import Stream
>>> import mdflow
>>> pump = Stream.engine("ticks", push_interval=0.1)          # doctest: +SKIP
>>> mdflow.run(pump)                    # until Ctrl-C / SIGTERM  # doctest: +SKIP
>>> with mdflow.Runner(pump) as runner:                        # doctest: +SKIP
...     do_other_work()
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from types import FrameType, TracebackType
from typing import Any

from streamz import Stream

from ..errors import ConfigError, NodeFailed, describe
from .lifecycle import on_source_started
from .status import node_name

__all__ = ["Runner", "run", "running_sources"]

logger = logging.getLogger(__name__)

#: States in which a source's loop has ended (SupervisedSource and collector states).
ENDED = frozenset({"stopped", "failed", "error"})
FAILED = frozenset({"failed", "error"})
_STOP_SLACK = 10.0  # seconds beyond `grace` a source may take to flush and end its loop

_started: weakref.WeakSet[Stream] = weakref.WeakSet()
_keep_alive_registered = False
_registry_lock = threading.Lock()


def _is_source(node: Stream) -> bool:
    """An mdflow source: it has its own loop to start and stop (SupervisedSource, collector)."""
    return (
        callable(getattr(node, "start", None))
        and callable(getattr(node, "stop", None))
        and callable(getattr(node, "status", None))
        and hasattr(node, "stopped")
        and type(node).__module__.startswith("mdflow.")
    )


def _state(node: Stream) -> str:
    try:
        return str(node.status().get("state", "stopped"))
    except Exception as exc:  # noqa: BLE001 - a status that raises must not end the run
        logger.debug("%s: status() raised %r", node_name(node), exc)
        return "running"


def _failure(node: Stream) -> str:
    status = node.status()
    return str(status.get("failure") or status.get("last_error") or status.get("state"))


def sources_of(nodes: Iterable[Stream]) -> list[Stream]:
    """Every mdflow source in the graphs the given nodes belong to, in a stable order.

    Examples
    --------
    >>> from streamz import Stream
    >>> sources_of([Stream().map(str)])
    []
    """
    seen: set[int] = set()
    found: list[Stream] = []
    todo = list(nodes)
    while todo:
        node = todo.pop(0)
        if id(node) in seen:
            continue
        seen.add(id(node))
        if _is_source(node):
            found.append(node)
        todo.extend(n for n in node.upstreams if n is not None)
        todo.extend(n for n in node.downstreams if n is not None)
    return found


def _loop_alive(node: Stream) -> bool:
    """Is the node's event loop still running (not closed, not ended with asyncio.run)?"""
    loop = getattr(getattr(node, "loop", None), "asyncio_loop", None)
    return loop is not None and loop.is_running() and not loop.is_closed()


def running_sources() -> list[Stream]:
    """mdflow sources started in this process that have not stopped, on a loop still running.

    Examples
    --------
    >>> isinstance(running_sources(), list)
    True
    """
    return [n for n in list(_started) if not getattr(n, "stopped", True) and _loop_alive(n)]


class Runner:
    """Start pipelines, wait for them, stop them gracefully (see the module docstring).

    Parameters
    ----------
    *nodes : streamz.Stream or list of them
        Any node of each pipeline; their graphs' mdflow sources are run.
    grace : float
        Seconds elements already in the graph get to finish when stopping.

    Examples
    --------
    >>> with Runner(pump, grace=5) as runner:                    # doctest: +SKIP
    ...     runner.wait(timeout=60)
    """

    def __init__(self, *nodes: Stream | Iterable[Stream], grace: float = 10.0):
        flat: list[Stream] = []
        for item in nodes:
            if isinstance(item, Stream):
                flat.append(item)
            elif isinstance(item, (list, tuple, set)):
                flat.extend(item)
            else:
                msg = f"run: nodes must be streamz nodes or lists of them; got {describe(item)}"
                raise ConfigError(msg)
        bad = [n for n in flat if not isinstance(n, Stream)]
        if bad:
            msg = f"run: nodes must be streamz nodes; got {describe(bad[0])}"
            raise ConfigError(msg)
        if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace < 0:
            msg = f"run: grace must be a number of seconds >= 0; got {describe(grace)}"
            raise ConfigError(msg)
        self.grace = float(grace)
        self.sources = sources_of(flat)
        if not self.sources:
            msg = (
                "run: no mdflow source (engine, from_redis, from_pubsub, scanner, collector) "
                f"in the graph of {', '.join(node_name(n) for n in flat) or 'no nodes'}; "
                "give a node of a pipeline that has one"
            )
            raise ConfigError(msg)
        self._signals = 0
        self._stopping = False

    # --- state -----------------------------------------------------------------------------
    def status(self) -> dict[str, dict[str, Any]]:
        """``{source name: its status()}`` for every source."""
        return {node_name(s): s.status() for s in self.sources}

    @property
    def done(self) -> bool:
        """True when every source's loop has ended (stopped or failed)."""
        return all(getattr(s, "stopped", True) and _state(s) in ENDED for s in self.sources)

    def failures(self) -> dict[str, str]:
        """``{source name: reason}`` for every source that failed for good."""
        return {node_name(s): _failure(s) for s in self.sources if _state(s) in FAILED}

    # --- control ---------------------------------------------------------------------------
    def start(self) -> Runner:
        """Start every source that is not running (no-op for the others)."""
        for source in self.sources:
            if source.stopped:
                source.start()
        return self

    def stop(self, grace: float | None = None, timeout: float | None = None) -> bool:
        """Stop gracefully; wait until every source's loop ended. False if one did not.

        Parameters
        ----------
        grace : float, optional
            Seconds in-flight elements get to finish (default: the runner's ``grace``).
        timeout : float, optional
            How long to wait for the loops to end (default: ``grace`` + 10 s).
        """
        grace = self.grace if grace is None else grace
        self._stopping = True
        for source in self.sources:
            try:
                source.stop(grace=grace)
            except TypeError:  # a source whose stop() takes no grace (collectors)
                source.stop()
        ended = self.wait(grace + _STOP_SLACK if timeout is None else timeout)
        if not ended:
            logger.warning(
                "mdflow: %s did not stop within %.0fs",
                ", ".join(node_name(s) for s in self.sources if _state(s) not in ENDED),
                grace + _STOP_SLACK if timeout is None else timeout,
            )
        return ended

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every source ended, a source failed, or ``timeout``; True if all ended.

        A failed source stops the others (gracefully) before this returns.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            if self.failures() and not self._stopping:
                self.stop()
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def run(self, on_tick: Callable[[Runner], None] | None = None, every: float = 1.0) -> None:
        """Start, block until the sources stop or SIGINT/SIGTERM, stop gracefully.

        Parameters
        ----------
        on_tick : callable, optional
            Called with the runner about every ``every`` seconds while it runs, and once
            after the stop (e.g. to show live status).
        every : float
            Seconds between ``on_tick`` calls.

        Raises
        ------
        NodeFailed
            A source failed for good (its reason is in the message).
        """
        _refuse_inside_running_loop()
        self.start()
        next_tick = time.monotonic() + every
        with self._signal_handlers():
            while not self._signals and not self.done:
                if self.failures():
                    break
                if on_tick is not None and time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + every
                    on_tick(self)
                time.sleep(0.05)
            self.stop()
        if on_tick is not None:
            on_tick(self)
        failures = self.failures()
        if failures:
            raise NodeFailed(failures)

    def __enter__(self) -> Runner:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- signals ---------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.warning(
                "mdflow: %s received; stopping gracefully (up to %.0fs; again to exit at once)",
                signal.Signals(signum).name,
                self.grace,
            )
            for source in self.sources:  # stop reading now; run() waits for the rest
                try:
                    source.stop(grace=self.grace)
                except TypeError:
                    source.stop()
        else:
            logger.warning("mdflow: second %s; exiting at once", signal.Signals(signum).name)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)

    def _signal_handlers(self) -> _SignalHandlers:
        return _SignalHandlers(self._on_signal)


class _SignalHandlers:
    """Install SIGINT/SIGTERM handlers for a ``with`` block (main thread only)."""

    def __init__(self, handler: Any):
        self.handler = handler
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals can only be handled in the main thread: the caller stops us
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self.handler)

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _refuse_inside_running_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    msg = (
        "run() blocks until the pipeline stops, so it cannot be called inside a running event "
        "loop (Jupyter, asyncio code): call node.start() there instead"
    )
    raise ConfigError(msg)


def run(*nodes: Stream | Iterable[Stream], grace: float = 10.0) -> None:
    """Run pipelines until their sources stop or SIGINT/SIGTERM; then stop gracefully.

    Parameters
    ----------
    *nodes : streamz.Stream or list of them
        Any node of each pipeline (its mdflow sources are started).
    grace : float
        Seconds elements already in the graph get to finish when stopping; what does
        not finish stays pending in Redis and is replayed by the next run.

    Raises
    ------
    NodeFailed
        A source failed for good (e.g. the password was refused).
    ConfigError
        No mdflow source in the given graphs, or called inside a running event loop.

    Examples
    --------
    >>> from streamz import Stream
    >>> import mdflow
    >>> pump = Stream.engine("ticks", push_interval=0.1)          # doctest: +SKIP
    >>> mdflow.run(pump)                                          # doctest: +SKIP
    """
    Runner(*nodes, grace=grace).run()


# --- scripts that end with .start() -------------------------------------------------------------
def _remember(node: Stream) -> None:
    global _keep_alive_registered
    _started.add(node)
    with _registry_lock:
        if _keep_alive_registered:
            return
        _keep_alive_registered = True
    # threading's own exit hooks run when the main module has finished, before non-daemon
    # threads are joined and before concurrent.futures refuses new work: exactly where a
    # script that started sources must wait for them (atexit would run too late).
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(_keep_alive_at_exit)
    else:  # pragma: no cover - not CPython
        import atexit

        atexit.register(_keep_alive_at_exit)


def _interactive() -> bool:
    """A REPL (``python -i``, the prompt) or a Jupyter/IPython kernel, not a script."""
    return bool(hasattr(sys, "ps1") or sys.flags.interactive or "ipykernel" in sys.modules)


def _keep_alive_at_exit() -> None:
    try:
        sources = running_sources()
        if not sources or os.environ.get("MDFLOW_KEEP_ALIVE", "1").strip() == "0":
            return
        if _interactive():  # a REPL or a Jupyter kernel is leaving: let it
            return
        if threading.current_thread() is not threading.main_thread():
            return
        runner = Runner(*sources)
        if getattr(sys, "last_value", None) is not None:
            # the script ended with an uncaught exception: do not keep it alive; flush and go
            runner.stop(grace=min(runner.grace, 5.0))
            return
        logger.warning(
            "mdflow: the script ended while %d source(s) run (%s); they keep running until "
            "they stop or Ctrl-C / SIGTERM",
            len(sources),
            ", ".join(node_name(s) for s in sources),
        )
        try:
            runner.run()
        except NodeFailed as exc:
            logger.error("mdflow: %s", exc)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
    except Exception:  # an exit hook must never hang or crash the interpreter's shutdown
        logger.exception("mdflow: keeping the script's sources running failed")


on_source_started(_remember)
