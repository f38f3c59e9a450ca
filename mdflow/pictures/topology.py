"""The topology of one or more streamz graphs, as plain data: nodes, Redis keys and edges.

:func:`topology` walks every node connected to the ones given (upstream and
downstream) and returns a :class:`Topology`: a JSON-ready dict with

* ``nodes``: ``{id: {"kind", "name", "label", "shape", "fill", "mdflow", ...}}``,
  where Redis streams, channels and cache keys are nodes of their own
  ("reservoirs", ids ``stream:<name>``, ``channel:<name>``, ``cache:<key>``),
  so ``to_redis("a")`` → [stream a] → ``from_redis("a")`` is one picture even
  when writer and reader run in different processes;
* ``edges``: ``{"src", "dst", "kind"}`` with kind ``flow`` (streamz), ``write``
  (node → reservoir) or ``read`` (reservoir → node, with the group).

With ``status=True`` every mdflow node carries its ``status`` and an
``overlay`` (health, rate, short text; see :mod:`.health`) and each outlet's
read edge its lag, pending and fill.

Examples
--------
>>> from streamz import Stream
>>> source = Stream()
>>> _ = source.map(str).sink(print)
>>> [n["name"] for n in topology(source)["nodes"].values()]
['Stream', 'map<str>', 'sink<print>']
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from streamz import Stream

from .describe import KINDS, describe
from .dot import topology_to_dot
from .health import Sampler, fill_bar, fill_colour, node_status, overlay
from .mermaid import topology_to_mermaid
from .render import RenderUnavailable, render, svg_for_html

__all__ = ["Topology", "connected_nodes", "topology"]


class Topology(dict):
    """A topology as a plain dict (``nodes``, ``edges``), with ways to show it.

    ``to_dot()``, ``to_mermaid()``, ``svg()`` and inline display in Jupyter.
    """

    def to_json(self) -> str:
        return json.dumps(self, default=str, separators=(",", ":"))

    def to_dot(self, title: str | None = None) -> str:
        return topology_to_dot(self, title)

    def to_mermaid(self) -> str:
        return topology_to_mermaid(self)

    def svg(self) -> str:
        """The picture as inline SVG text (rendered with pip-installed Graphviz if need be)."""
        return svg_for_html(render(self.to_dot(), "svg"))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        names = [str(n.get("name", i)) for i, n in self["nodes"].items()]
        text = f"Topology of {len(names)} nodes: " + ", ".join(names[:8])
        bundle = {"text/plain": text + (", ..." if len(names) > 8 else "")}
        try:
            bundle["image/svg+xml"] = self.svg()
        except RenderUnavailable as exc:
            bundle["text/plain"] += f"\n(no picture: {exc})"
        return bundle


def connected_nodes(nodes: Stream | Iterable[Stream]) -> list[Stream]:
    """Every node connected to ``nodes`` (upstream or downstream), in discovery order."""
    start = [nodes] if isinstance(nodes, Stream) else list(nodes)
    seen: dict[int, Stream] = {}
    queue = list(start)
    while queue:
        node = queue.pop(0)
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        queue.extend(u for u in node.upstreams if u is not None)
        queue.extend(d for d in node.downstreams if d is not None)
    return list(seen.values())


def topology(
    nodes: Stream | Iterable[Stream],
    status: bool = False,
    prefix: str = "",
    sampler: Sampler | None = None,
) -> Topology:
    """The whole connected graph of ``nodes`` as a :class:`Topology`.

    Parameters
    ----------
    nodes : Stream or iterable of Stream
        Any node(s) of the graph(s).
    status : bool
        Add each mdflow node's ``status()`` and its overlay (health, rate, text).
    prefix : str
        Prepended to node ids (reservoir ids are not prefixed: they are shared).
    sampler : Sampler, optional
        Where previous counter samples are kept (rates are differences).
    """
    ordered = connected_nodes(nodes)
    ids = {id(node): f"{prefix}n{i}" for i, node in enumerate(ordered)}
    out = Topology(nodes={}, edges=[])
    for node in ordered:
        view = describe(node)
        entry: dict[str, Any] = {
            "kind": view.kind,
            "name": view.name,
            "label": view.label,
            "shape": view.shape,
            "fill": view.fill,
            "mdflow": view.mdflow,
        }
        if view.redis:
            entry["redis"] = view.redis
        here = ids[id(node)]
        out["nodes"][here] = entry
        state = node_status(node) if (status and view.mdflow) else None
        if state is not None:
            entry["status"] = state
            entry["overlay"] = overlay(node, view.kind, state, sampler)
        for down in node.downstreams:
            if down is not None and id(down) in ids:
                out["edges"].append({"src": here, "dst": ids[id(down)], "kind": "flow"})
        for link in view.links:
            rid = f"{link.kind}:{link.name}"
            shape, fill, _ = KINDS[link.kind]
            out["nodes"].setdefault(
                rid,
                {
                    "kind": link.kind,
                    "name": link.name,
                    "label": [link.name],
                    "shape": shape,
                    "fill": fill,
                    "mdflow": False,
                    "reservoir": True,
                },
            )
            if link.direction == "write":
                out["edges"].append({"src": here, "dst": rid, "kind": "write"})
                continue
            edge: dict[str, Any] = {"src": rid, "dst": here, "kind": "read"}
            if link.group:
                edge["group"] = link.group
            if state is not None and view.kind == "outlet":
                edge.update(_read_fill(state, link.name))
            out["edges"].append(edge)
    return out


def _read_fill(state: dict[str, Any], topic: str) -> dict[str, Any]:
    """Lag, pending and fill of the edge from a stream to its outlet."""
    per_topic = (state.get("by_topic") or {}).get(topic) or {}
    lag = per_topic.get("lag", state.get("lag"))
    pending = per_topic.get("pending", state.get("pending"))
    max_inflight = state.get("max_inflight") or 0
    if lag is None and pending is None:
        return {}
    fraction = min(1.0, ((lag or 0) + (pending or 0)) / max_inflight) if max_inflight else 0.0
    return {
        "lag": lag,
        "pending": pending,
        "fill": fraction,
        "colour": fill_colour(fraction),
        "text": f"lag {lag or 0:,} · pending {pending or 0:,} {fill_bar(fraction)}",
    }
