"""Inline display in Jupyter: every streamz node shows its graph as SVG.

:func:`install` gives :class:`streamz.Stream` a ``_repr_mimebundle_`` (the
picture of the node's whole graph with live status, and the text form) and
replaces streamz's ``_ipython_display_`` with one that shows that picture
(followed by streamz's live-value widget when ipywidgets is installed), so a
node as a cell's result is a picture, not ``'<sink: print>'``.

Examples
--------
>>> from streamz import Stream
>>> bundle = mimebundle(Stream().map(str))          # doctest: +SKIP
>>> sorted(bundle)                                  # doctest: +SKIP
['image/svg+xml', 'text/plain']
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from streamz import Stream

from .render import RenderUnavailable, render, svg_for_html
from .topology import Topology, topology

__all__ = ["install", "mimebundle"]

logger = logging.getLogger(__name__)

_streamz_ipython_display = getattr(Stream, "_ipython_display_", None)


def mimebundle(obj: Stream | Topology, status: bool = True) -> dict[str, str]:
    """``{"image/svg+xml": ..., "text/plain": ...}`` for a node's graph or a topology."""
    if isinstance(obj, Topology):
        return obj._repr_mimebundle_()
    topo = topology(obj, status=status)
    names = [n.get("name", i) for i, n in topo["nodes"].items()]
    text = f"{len(names)} nodes: " + ", ".join(str(n) for n in names[:8])
    if len(names) > 8:
        text += ", ..."
    text = f"{obj!s} ({text})"
    bundle = {"text/plain": text}
    try:
        bundle["image/svg+xml"] = svg_for_html(render(topo.to_dot(), "svg"))
    except RenderUnavailable as exc:
        bundle["text/plain"] += f"\n(no picture: {exc})"
    return bundle


def _repr_mimebundle_(self: Stream, include: Any = None, exclude: Any = None) -> dict[str, str]:
    return mimebundle(self)


def _ipython_display_(self: Stream, **kwargs: Any) -> None:
    from IPython.display import display

    display(mimebundle(self), raw=True)
    if importlib.util.find_spec("ipywidgets") is None:
        return  # streamz's live-value widget needs ipywidgets
    if _streamz_ipython_display is not None:
        _streamz_ipython_display(self, **kwargs)


def install() -> None:
    """Make every streamz node display as a picture in Jupyter (idempotent)."""
    Stream._repr_mimebundle_ = _repr_mimebundle_
    Stream._ipython_display_ = _ipython_display_
