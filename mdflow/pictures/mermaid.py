"""A topology (see :mod:`.topology`) as Mermaid flowchart text (GitHub, GitLab and docs render it).

Each node kind gets the nearest Mermaid shape (streams are cylinders,
channels hexagons, cache keys subroutines...), writes into Redis are dotted
arrows, reads are labelled with their group. Status adds the short text to
the label and colours the node by health (``classDef``).

Examples
--------
>>> topo = {"nodes": {"n0": {"kind": "source", "label": ["Stream"]},
...                    "n1": {"kind": "transform", "label": ["map<str>"]}},
...         "edges": [{"src": "n0", "dst": "n1", "kind": "flow"}]}
>>> print(topology_to_mermaid(topo))
flowchart LR
  n0(["Stream"])
  n1["map&lt;str&gt;"]
  n0 --> n1
"""

from __future__ import annotations

import html
import re
import zlib
from typing import Any

from .health import COLOURS

__all__ = ["topology_to_mermaid"]

# (open, close) of the Mermaid shape for each node kind.
_SHAPES = {
    "stream": ("[(", ")]"),
    "channel": ("{{", "}}"),
    "cache": ("[[", "]]"),
    "engine": ("[/", "\\]"),
    "outlet": ("[\\", "/]"),
    "writer": ("[\\", "/]"),
    "pubsub": ("[/", "/]"),
    "scanner": ("{{", "}}"),
    "scan": ("{{", "}}"),
    "collector": ("((", "))"),
    "publisher": (">", "]"),
    "cacher": (">", "]"),
    "source": ("([", "])"),
    "transform": ("[", "]"),
    "filter": ("{", "}"),
    "window": ("[(", ")]"),
    "timer": ("{{", "}}"),
    "join": ("{", "}"),
    "async": ("[/", "/]"),
    "sink": ("[[", "]]"),
    "group": ("[\\", "/]"),
    "other": ("(", ")"),
}
# Windows are not storage: give them the rounded box instead of the cylinder.
_SHAPES["window"] = ("(", ")")


def _id(node_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_]", "_", node_id)
    if safe == node_id:
        return safe
    return f"{safe}_{zlib.crc32(node_id.encode()):08x}"  # "p*" and "p_" stay apart


def _text(text: Any) -> str:
    return html.escape(str(text)).replace('"', "#quot;")


def topology_to_mermaid(topo: dict[str, Any]) -> str:
    """Mermaid text for a topology dict (see :mod:`.topology`)."""
    lines = ["flowchart LR"]
    classes: dict[str, list[str]] = {}
    for node_id, node in topo["nodes"].items():
        opening, closing = _SHAPES.get(node.get("kind", "other"), ("(", ")"))
        label = [_text(line) for line in node.get("label") or [node_id]]
        extra = node.get("overlay")
        if extra:
            label.append(f"● {_text(extra.get('text', ''))}")
            classes.setdefault(extra["health"], []).append(_id(node_id))
        lines.append(f'  {_id(node_id)}{opening}"{"<br/>".join(label)}"{closing}')
    for edge in topo["edges"]:
        arrow = "-.->" if edge["kind"] in ("write", "dead") else "-->"
        words = [w for w in (edge.get("group") and f"group {edge['group']}", edge.get("text")) if w]
        middle = f'|"{_text(" · ".join(words))}"|' if words else ""
        lines.append(f"  {_id(edge['src'])} {arrow}{middle} {_id(edge['dst'])}")
    for health, members in classes.items():
        lines.append(f"  classDef {health} stroke:{COLOURS[health]},stroke-width:3px")
        lines.append(f"  class {','.join(members)} {health}")
    return "\n".join(lines)
