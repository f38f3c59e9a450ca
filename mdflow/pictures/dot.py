"""A topology (see :mod:`.topology`) as Graphviz DOT text (no renderer needed).

Nodes get their kind's shape and fill; labels are the node's name, then its
parameters, then (with status) a dot and a short text, as Node-RED draws
under every node; the fill is tinted and the border coloured by health.
(Plain labels, not HTML-like ones: the pip-installed Graphviz has no expat.) Reservoirs (streams,
channels, cache keys) are drawn in their own colours; writes are dashed
edges into them, reads solid edges out of them, labelled with the group and,
with status, the lag/pending fill. Every node's SVG element gets the id
``node-<id>`` and the classes ``mdflow-node kind-<kind> health-<health>``, so
a page can find it.

Examples
--------
>>> topo = {"nodes": {"n0": {"kind": "transform", "label": ["map<str>"], "shape": "box"}},
...         "edges": []}
>>> 'label="map<str>"' in topology_to_dot(topo)
True
"""

from __future__ import annotations

from typing import Any

from .health import COLOURS

__all__ = ["FONT", "TINTS", "topology_to_dot"]

#: One family: Graphviz sizes nodes from its metrics (it has a table for DejaVu Sans; a
#: list of families would fall back to Times and text would overflow). SVG for browsers
#: names fallbacks of the same width (see ``render.svg_for_html``).
FONT = "DejaVu Sans"

#: Light fills by health (the border carries the strong colour).
TINTS = {"ok": "#e8f5e9", "lagging": "#fff8e1", "failing": "#ffebee", "stopped": "#eeeeee"}

_EDGE_STYLE = {
    "flow": 'color="#424242"',
    "write": 'color="#1565c0" style=dashed arrowhead=normal',
    "read": 'color="#1565c0"',
    "dead": 'color="#c62828" style=dashed',
}


def topology_to_dot(topo: dict[str, Any], title: str | None = None) -> str:
    """DOT text for a topology dict (see :mod:`.topology`)."""
    lines = [
        "digraph mdflow {",
        f'  graph [rankdir=LR fontname="{FONT}" bgcolor=white pad=0.2 nodesep=0.35 ranksep=0.5'
        + (f' label="{_quote(title)}" labelloc=t fontsize=12' if title else "")
        + "]",
        f'  node [fontname="{FONT}" fontsize=10 style="filled" margin="0.15,0.06"]',
        f'  edge [fontname="{FONT}" fontsize=9 arrowsize=0.7]',
    ]
    for node_id, node in topo["nodes"].items():
        lines.append(f"  {_node(node_id, node)}")
    for edge in topo["edges"]:
        lines.append(f"  {_edge(edge)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _node(node_id: str, node: dict[str, Any]) -> str:
    lines = [str(line) for line in node.get("label") or [node.get("name", node_id)]]
    if node.get("reservoir") and node.get("info"):
        lines += [str(i) for i in node["info"]]
    extra = node.get("overlay")
    health = "none"
    colour, fill, penwidth = "#616161", node.get("fill", "white"), 1.0
    if extra:
        health = extra["health"]
        colour, fill, penwidth = COLOURS.get(health, colour), TINTS.get(health, fill), 2.5
        lines.append(f"● {extra.get('text', '')}")
    label = "\\n".join(_quote(line) for line in lines)
    style = {"box": "filled,rounded", "rect": "filled,dashed"}.get(node.get("shape", ""), "filled")
    classes = f"mdflow-node kind-{node.get('kind', 'other')} health-{health}"
    return (
        f'"{_quote(node_id)}" [id="node-{_quote(node_id)}" class="{classes}" '
        f'shape={node.get("shape", "ellipse")} style="{style}" '
        f'fillcolor="{fill}" color="{colour}" penwidth={penwidth} label="{label}"]'
    )


def _edge(edge: dict[str, Any]) -> str:
    attrs = [_EDGE_STYLE.get(edge["kind"], "")]
    label = []
    if edge.get("group"):
        label.append(f"group {edge['group']}")
    if edge.get("text"):
        label.append(edge["text"])
    if edge.get("colour"):
        attrs = [f'color="{edge["colour"]}" penwidth={1.5 + 3 * edge.get("fill", 0):.1f}']
    if label:
        text = "\\n".join(_quote(part) for part in label)
        attrs.append(f'label="{text}"')
    return f'"{_quote(edge["src"])}" -> "{_quote(edge["dst"])}" [{" ".join(a for a in attrs if a)}]'
