"""What every mdflow node shares, whichever part of the water model it belongs to.

* :mod:`.status` — :class:`NodeStatus` (state, counters, last error) and ``node_name``;
* :mod:`.emit` — awaited emits (backpressure) and failure reports to sources;
* :mod:`.source` — :class:`SupervisedSource`, a source whose loop survives failures;
* :mod:`.batching` — :class:`Batcher`: the writes of one loop turn in one round trip;
  :mod:`.thread_batching` — the same for writes from threads that run no loop (a
  script's ``emit``), on a writer thread; :mod:`.flushing` — what both do when a flush fails;
* :mod:`.downstreams` — each node's downstreams listed fast, a version number of the whole
  graph, and whether a graph finishes each element within its emit (the outlet's plain path);
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
