"""What every mdflow node shares, whichever part of the water model it belongs to.

* :mod:`.status` — :class:`NodeStatus` (state, counters, last error) and ``node_name``;
* :mod:`.emit` — awaited emits (backpressure) and failure reports to sources;
* :mod:`.source` — :class:`SupervisedSource`, a source whose loop survives failures;
* :mod:`.batching` — :class:`Batcher`: the writes of one loop turn in one round trip;
* :mod:`.pipelined` — :class:`PipelinedSink`: a sink that holds each element until
  Redis confirmed its write;
* :mod:`.exact` and :mod:`.exact_nodes` — exact acknowledgement for any streamz graph:
  a ``Stream._emit`` that holds references while downstream work goes on, and
  corrected loops for the streamz nodes that stall or swallow failures. Importing
  this room installs them;
* :mod:`.watchdog` — warns, naming the node, when synchronous work blocks an
  event loop (``loop_blocks(node)``: its counters). Importing this room starts it.

It may import :mod:`mdflow.reservoir`, ``mdflow.errors`` and ``mdflow.checks``;
the rooms that build nodes (streams, pubsub, collectors) import it.
"""

from __future__ import annotations

from .batching import BatchedWriter, Batcher
from .emit import emit_and_wait, first_error, on_current_loop, report_failure
from .exact import exact_emit, install
from .pipelined import MAX_OUTSTANDING_WRITES, PipelinedSink
from .source import SupervisedSource
from .status import NodeStatus, node_name
from .watchdog import loop_blocks

__all__ = [
    "MAX_OUTSTANDING_WRITES",
    "BatchedWriter",
    "Batcher",
    "NodeStatus",
    "PipelinedSink",
    "SupervisedSource",
    "emit_and_wait",
    "exact_emit",
    "first_error",
    "loop_blocks",
    "node_name",
    "on_current_loop",
    "report_failure",
]

install()
