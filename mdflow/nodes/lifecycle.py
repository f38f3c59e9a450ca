"""Lifecycle hooks: let other rooms hear when a source starts, without importing them here.

Every mdflow source (:class:`~mdflow.nodes.SupervisedSource` and
``Stream.collector``) calls :func:`source_started` from its ``start()``;
whoever registered with :func:`on_source_started` is called with the node.
A hook that raises is logged with the node's name and never stops the
source. Hooks run on the thread that called ``start()``: they must be quick
(hand real work to the node's loop with ``node.loop.add_callback``).

Examples
--------
>>> seen = []
>>> hook = on_source_started(seen.append)
>>> from streamz import Stream
>>> node = Stream()
>>> source_started(node)
>>> seen == [node]
True
>>> remove_source_started(hook)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from streamz import Stream

from .status import node_name

__all__ = ["on_source_started", "remove_source_started", "source_started"]

logger = logging.getLogger(__name__)

SourceHook = Callable[[Stream], None]

_started_hooks: list[SourceHook] = []


def on_source_started(callback: SourceHook) -> SourceHook:
    """Call ``callback(node)`` whenever an mdflow source starts (once per callback).

    Parameters
    ----------
    callback : callable
        Takes the source node; its return value is ignored.

    Returns
    -------
    callable
        ``callback`` itself, so this works as a decorator.

    Examples
    --------
    >>> @on_source_started
    ... def announce(node):
    ...     pass
    >>> remove_source_started(announce)
    """
    if callback not in _started_hooks:
        _started_hooks.append(callback)
    return callback


def remove_source_started(callback: SourceHook) -> None:
    """Forget a callback registered with :func:`on_source_started` (no-op if unknown).

    Examples
    --------
    >>> remove_source_started(print)
    """
    if callback in _started_hooks:
        _started_hooks.remove(callback)


def source_started(node: Stream) -> None:
    """Tell every registered hook that ``node`` started (errors are logged, never raised).

    Examples
    --------
    >>> from streamz import Stream
    >>> source_started(Stream())    # no hook registered: nothing happens
    """
    for callback in list(_started_hooks):
        try:
            callback(node)
        except Exception:  # a hook must never break a source's start()
            logger.exception("%s: source-started hook %r failed", node_name(node), callback)
