"""Pictures: what a person would rather look at than read.

* :mod:`.describe` — what one node is: kind, shape, label, the Redis keys it touches.
* :mod:`.topology` — :func:`topology`, a whole graph as plain data (Redis keys as nodes).
* :mod:`.health` — live status: health colours, rates, back-pressure, edge fill.
* :mod:`.dot`, :mod:`.mermaid` — :func:`to_dot`, :func:`to_mermaid`: the graph as text.
* :mod:`.render` — DOT to SVG/PNG, with the system ``dot`` or pip-installed Graphviz (WASM).
* :mod:`.visualize` — :func:`visualize`, also behind streamz's ``Stream.visualize``.
* :mod:`.display` — inline SVG of any node in Jupyter.
* :mod:`.publish` — every running graph publishes its topology and status to Redis.
* :mod:`.inspect` — :func:`inspect`, the system view: every stream, group and live graph.
* :mod:`.web` (:mod:`.web_routes`), :mod:`.dashboard` — live dashboards: browser and Jupyter.

It may import any room below it (nodes, streams, pubsub, collectors read-only);
the package itself re-exports its public names, and the command line uses it.
Importing it puts :func:`visualize` behind ``Stream.visualize`` and the
inline picture behind Jupyter's display of a node.
"""

from __future__ import annotations

from . import display as _display
from . import visualize as _visualize
from .dashboard import Dashboard, dashboard, serve_dashboard
from .inspect import SystemView, inspect
from .publish import TopologyPublisher, set_publishing  # importing it registers the start hook
from .render import RenderUnavailable
from .topology import Topology, topology
from .visualize import Picture, to_dot, to_mermaid, visualize, write_picture

_visualize.install()
_display.install()

__all__ = [
    "Dashboard",
    "Picture",
    "RenderUnavailable",
    "SystemView",
    "Topology",
    "TopologyPublisher",
    "dashboard",
    "inspect",
    "serve_dashboard",
    "set_publishing",
    "to_dot",
    "to_mermaid",
    "topology",
    "visualize",
    "write_picture",
]
