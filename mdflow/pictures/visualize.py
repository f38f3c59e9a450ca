"""``visualize``: a picture of a graph, written or returned, with pip-installed Graphviz if need be.

:func:`visualize` is mdflow's own; :func:`install` also puts it behind
streamz's ``Stream.visualize`` (same signature: ``filename`` first, graph
attributes as keywords), so ``node.visualize()`` works on a machine without
Graphviz and a missing renderer is one line that says what to install, not a
traceback from inside streamz.

Examples
--------
>>> from streamz import Stream
>>> source = Stream()
>>> _ = source.map(str).sink(print)
>>> picture = visualize(source)                       # doctest: +SKIP
>>> picture.data[:4]                                  # doctest: +SKIP
b'<svg'
>>> visualize(source, "pipeline.png")                 # doctest: +SKIP
Picture('pipeline.png', png, 5321 bytes)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from streamz import Stream

from .dot import topology_to_dot
from .render import render, svg_for_html
from .topology import Topology, topology

__all__ = ["Picture", "install", "to_dot", "to_mermaid", "visualize", "write_picture"]

_FORMATS = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot"}


def to_dot(nodes: Stream | Iterable[Stream] | Topology, status: bool = False) -> str:
    """The whole connected graph of ``nodes`` as Graphviz DOT text.

    Parameters
    ----------
    nodes : Stream, iterable of Stream, or Topology
        Any node(s) of the graph(s), or a topology already built.
    status : bool
        Draw each mdflow node's health, rate and counts, and each outlet's lag.

    Examples
    --------
    >>> from streamz import Stream
    >>> source = Stream()
    >>> _ = source.map(str).sink(print)
    >>> 'label="map<str>"' in to_dot(source)
    True
    """
    topo = nodes if isinstance(nodes, Topology) else topology(nodes, status=status)
    return topo.to_dot()


def to_mermaid(nodes: Stream | Iterable[Stream] | Topology, status: bool = False) -> str:
    """The whole connected graph of ``nodes`` as Mermaid flowchart text.

    Examples
    --------
    >>> from streamz import Stream
    >>> source = Stream()
    >>> _ = source.map(str).sink(print)
    >>> print(to_mermaid(source))
    flowchart LR
      n0(["Stream"])
      n1["map&lt;str&gt;"]
      n2[["sink&lt;print&gt;"]]
      n0 --> n1
      n1 --> n2
    """
    topo = nodes if isinstance(nodes, Topology) else topology(nodes, status=status)
    return topo.to_mermaid()


class Picture:
    """Rendered bytes of a picture; shows itself inline in Jupyter.

    Attributes
    ----------
    data : bytes
        The SVG, PNG or DOT bytes.
    format : str
        ``"svg"``, ``"png"`` or ``"dot"``.
    filename : str or None
        Where it was written, if it was.
    """

    def __init__(self, data: bytes, format: str, filename: str | None = None):
        self.data = data
        self.format = format
        self.filename = filename

    def __repr__(self) -> str:
        where = f"{self.filename!r}, " if self.filename else ""
        return f"Picture({where}{self.format}, {len(self.data)} bytes)"

    def _repr_svg_(self) -> str | None:
        return svg_for_html(self.data) if self.format == "svg" else None

    def _repr_png_(self) -> bytes | None:
        return self.data if self.format == "png" else None


def _with_graph_attrs(dot: str, attrs: dict[str, Any]) -> str:
    if not attrs:
        return dot
    extra = " ".join(f'{key}="{value}"' for key, value in attrs.items())
    return dot.replace("digraph mdflow {", f"digraph mdflow {{\n  graph [{extra}]", 1)


def visualize(
    node: Stream | Iterable[Stream] | Topology,
    filename: str | None = None,
    format: str | None = None,
    status: bool = False,
    **graph_attrs: Any,
) -> Picture:
    """Draw the whole connected graph of ``node``; write it to ``filename`` if given.

    Parameters
    ----------
    node : Stream, iterable of Stream, or Topology
        Any node(s) of the graph(s), or a topology (e.g. from :func:`mdflow.inspect`).
    filename : str, optional
        Write the picture there; the format follows the extension
        (``.svg``, ``.png``, ``.dot``) unless ``format`` is given.
    format : str, optional
        ``"svg"`` (default without a filename), ``"png"`` or ``"dot"``.
    status : bool
        Draw live status: health colours, rates, counts, lag and pending.
    **graph_attrs
        Graphviz graph attributes, e.g. ``rankdir="TB"``.

    Returns
    -------
    Picture
        The bytes (shown inline in Jupyter).

    Raises
    ------
    RenderUnavailable
        Neither Graphviz nor the pip-installed renderer can produce the format
        (the message says what to install).
    """
    if format is None:
        ext = os.path.splitext(filename)[1].lower() if filename else ""
        format = _FORMATS.get(ext, "svg" if not filename else "png")
    topo = node if isinstance(node, Topology) else topology(node, status=status)
    dot = _with_graph_attrs(topology_to_dot(topo), graph_attrs)
    data = render(dot, format)
    if filename:
        with open(filename, "wb") as out:
            out.write(data)
    return Picture(data, format, filename)


def write_picture(nodes: list[Stream], filename: str) -> str:
    """Write one picture of every graph that ``nodes`` belong to; return ``filename``.

    Raises :class:`~.render.RenderUnavailable` if the format cannot be produced.
    """
    visualize(nodes, filename)
    return filename


def _streamz_visualize(self: Stream, filename: str = "mystream.png", **kwargs: Any) -> Any:
    """Render this node's whole graph to ``filename`` (mdflow's renderer; see mdflow.visualize).

    Works without a Graphviz installation. Returns an IPython display object
    when IPython is available (as streamz does), else None.
    """
    fmt = kwargs.pop("format", None)
    status = kwargs.pop("status", False)
    picture = visualize(self, filename, format=fmt, status=status, **kwargs)
    try:
        from IPython.display import SVG, Image
    except ImportError:
        return None
    if picture.format == "svg":
        return SVG(data=picture.data)
    if picture.format == "png":
        return Image(data=picture.data, format="png")
    return None


def install() -> None:
    """Put :func:`visualize` behind streamz's ``Stream.visualize`` (idempotent)."""
    Stream.visualize = _streamz_visualize
