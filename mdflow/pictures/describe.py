"""What one node is, for a picture: its kind, shape, label lines and the Redis keys it touches.

:func:`describe` turns any streamz node (mdflow's or streamz's own) into a
:class:`NodeView`: plain data, no rendering. Every node kind has its own
shape; labels carry the parameters that matter (topic, group, consumer,
channels, analyzer, exchange, window sizes); URLs are masked.

Examples
--------
>>> from streamz import Stream
>>> view = describe(Stream().sliding_window(3))
>>> view.kind, view.shape, view.label
('window', 'rect', ['sliding_window', 'n=3'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streamz import Stream
from streamz.sinks import Sink
from streamz.sources import Source

from ..analyzers.base import analyzer_label
from ..reservoir import mask_text, mask_url

__all__ = ["KINDS", "Link", "NodeView", "describe", "func_name"]

#: Every node kind: (Graphviz shape, fill colour, what it is).
KINDS: dict[str, tuple[str, str, str]] = {
    "engine": ("box3d", "#e3f2fd", "pump: calls a function, writes a Redis stream"),
    "outlet": ("tab", "#e3f2fd", "outlet: reads a Redis stream through a consumer group"),
    "pubsub": ("trapezium", "#ede7f6", "listens on pub/sub channels"),
    "scanner": ("doubleoctagon", "#ede7f6", "listens on pub/sub, runs an analyzer"),
    "collector": ("tripleoctagon", "#fff3e0", "brings an outside feed in"),
    "source": ("ellipse", "#f5f5f5", "a streamz source or entry point"),
    "scan": ("octagon", "#ede7f6", "runs an analyzer on every element"),
    "writer": ("rarrow", "#e3f2fd", "writes a Redis stream"),
    "publisher": ("rpromoter", "#ede7f6", "publishes on a pub/sub channel"),
    "cacher": ("note", "#ede7f6", "writes cache keys"),
    "transform": ("box", "white", "changes each element"),
    "filter": ("invtrapezium", "white", "lets some elements through"),
    "window": ("rect", "#fffde7", "holds elements and emits them together"),
    "timer": ("hexagon", "#fffde7", "holds elements for a time"),
    "join": ("Mdiamond", "#fffde7", "joins several upstreams"),
    "async": ("parallelogram", "#fffde7", "works on elements asynchronously (or on Dask)"),
    "sink": ("component", "#f1f8e9", "the end of a branch"),
    "stream": ("cylinder", "#bbdefb", "a Redis stream"),
    "channel": ("cds", "#d1c4e9", "a Redis pub/sub channel (or pattern)"),
    "cache": ("folder", "#d1c4e9", "Redis cache keys"),
    "group": ("house", "#eeeeee", "a consumer group seen in Redis (no live graph)"),
    "other": ("ellipse", "white", "any other node"),
}

_STREAMZ_KINDS = {
    "map": "transform",
    "starmap": "transform",
    "accumulate": "transform",
    "pluck": "transform",
    "flatten": "transform",
    "slice": "filter",
    "filter": "filter",
    "unique": "filter",
    "sliding_window": "window",
    "partition": "window",
    "partition_unique": "window",
    "collect": "window",
    "buffer": "window",
    "latest": "window",
    "timed_window": "timer",
    "timed_window_unique": "timer",
    "delay": "timer",
    "rate_limit": "timer",
    "zip": "join",
    "zip_latest": "join",
    "combine_latest": "join",
    "union": "join",
    "map_async": "async",
    "scatter": "async",
    "gather": "async",
    "sink": "sink",
    "sink_to_list": "sink",
    "sink_to_textfile": "sink",
    "to_kafka": "sink",
}

# streamz parameters worth a label line, per class name (window sizes, intervals, ...).
_PARAMETERS = {
    "sliding_window": ("n", "return_partial"),
    "partition": ("n", "timeout"),
    "partition_unique": ("n",),
    "timed_window": ("interval",),
    "timed_window_unique": ("interval",),
    "delay": ("interval",),
    "rate_limit": ("interval",),
    "unique": ("maxsize",),
    "slice": ("start", "end", "step"),
    "pluck": ("pick",),
    "latest": (),
}


@dataclass
class Link:
    """A Redis key a node reads or writes: ``kind`` is stream, channel or cache."""

    kind: str
    name: str
    direction: str  # "read" or "write"
    group: str | None = None


@dataclass
class NodeView:
    """One node of a picture, as plain data."""

    kind: str
    name: str
    label: list[str]
    shape: str
    fill: str
    mdflow: bool = False
    links: list[Link] = field(default_factory=list)
    redis: str | None = None


def func_name(func: Any) -> str:
    """A short name for a function: ``upper``, ``Quotes.parse``, ``lambda``."""
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if name is None:
        name = type(func).__name__
    return str(name).replace(".<locals>", "").replace("<lambda>", "lambda")


def describe(node: Stream) -> NodeView:
    """Describe ``node`` for a picture (see the module docs)."""
    method = type(node).__name__
    for describer in (_mdflow_view, _streamz_view):
        view = describer(node, method)
        if view is not None:
            if getattr(node, "name", None):
                view.label.insert(1, f"name={node.name}")
            view.label = [mask_text(line) for line in view.label]
            return view
    raise AssertionError("unreachable")  # pragma: no cover - _streamz_view always answers


def _view(kind: str, label: list[str], **kw: Any) -> NodeView:
    shape, fill, _ = KINDS[kind]
    return NodeView(kind=kind, name=label[0], label=label, shape=shape, fill=fill, **kw)


def _mdflow_view(node: Stream, method: str) -> NodeView | None:
    module = type(node).__module__
    if not module.startswith("mdflow."):
        return None
    url = getattr(node, "_url", None)
    where = mask_url(url) if url else None
    common: dict[str, Any] = {"mdflow": True, "redis": where}
    if method == "from_redis":
        label = [f"from_redis<{node._label}>", f"group={node.group}"]
        label.append(f"consumer={node.consumer}")
        label.append(f"max_inflight={node.max_inflight}")
        links = [Link("stream", t, "read", node.group) for t in node.topics]
        return _view("outlet", label, links=links, **common)
    if method == "engine":
        label = [f"engine<{node.topic}>", f"func={func_name(node.func)}"]
        label.append(f"every {node.push_interval:g}s")
        return _view("engine", label, links=[Link("stream", node.topic, "write")], **common)
    if method == "to_redis":
        label = [f"to_redis<{node.topic}>"]
        if node.maxlen:
            label.append(f"maxlen={node.maxlen}")
        return _view("writer", label, links=[Link("stream", node.topic, "write")], **common)
    if method == "to_pubsub":
        links = [Link("channel", node.channel, "write")]
        return _view("publisher", [f"to_pubsub<{node.channel}>"], links=links, **common)
    if method == "to_cache":
        label = [f"to_cache<{node.key}>"]
        if node.ttl:
            label.append(f"ttl={node.ttl}s")
        return _view("cacher", label, links=[Link("cache", node.key, "write")], **common)
    if method == "scanner":
        label = [
            f"scanner<{analyzer_label(node.analyzer)}>",
            "channels=" + ", ".join(node.channels),
        ]
        links = [Link("channel", c, "read") for c in node.channels]
        return _view("scanner", label, links=links, **common)
    if method == "from_pubsub":
        label = [f"from_pubsub<{node._label}>"]
        links = [Link("channel", c, "read") for c in node.channels]
        return _view("pubsub", label, links=links, **common)
    if method == "scan":
        return _view("scan", [f"scan<{analyzer_label(node.analyzer)}>"], **common)
    if method == "collector":
        feed = node.collector
        label = [f"collector<{node._label}>", f"exchange={feed.exchange}"]
        symbols = list(getattr(feed, "symbols", []) or [])
        if symbols:
            shown = ", ".join(symbols[:3]) + (f" +{len(symbols) - 3}" if len(symbols) > 3 else "")
            label.append(f"symbols={shown}")
        return _view("collector", label, mdflow=True)
    return None


def _streamz_view(node: Stream, method: str) -> NodeView:
    kind = _STREAMZ_KINDS.get(method)
    if kind is None:
        if isinstance(node, Source) or (not node.upstreams and type(node) is Stream):
            kind = "source"
        elif isinstance(node, Sink):
            kind = "sink"
        else:
            kind = "other"
    label = [method]
    func = getattr(node, "func", None) or getattr(node, "predicate", None)
    if func is not None and callable(func):
        label[0] = f"{method}<{func_name(func)}>"
    for attr in _PARAMETERS.get(method, ("n", "interval")):
        value = getattr(node, attr, None)
        if value is not None and value is not False and not callable(value):
            label.append(f"{attr}={value}")
    if method == "buffer":
        label.append(f"n={node.queue.maxsize}")
    return _view(kind, label)
