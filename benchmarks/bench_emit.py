"""What exact acknowledgement costs per element: streamz's ``Stream._emit`` beside mdflow's.

Usage::

    python benchmarks/bench_emit.py            # 100k elements x 7 rounds
    python benchmarks/bench_emit.py --quick    # a smoke run

No Redis: the graph ``map -> filter -> sink`` (all synchronous, the common
case) is fed elements that carry a reference counter in their metadata, as
``from_redis`` does, first with streamz 0.6.6's own ``_emit`` and then with
:func:`mdflow.nodes.exact.exact_emit`, alternating round by round so that the
machine's drift hits both alike. Read the ratio. The last line printed is one
JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

from streamz import core

_STREAMZ_EMIT = core.Stream._emit  # before mdflow's import replaces it

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mdflow
from mdflow.nodes.exact import exact_emit


class Counter:
    """A reference counter without a callback (the ack is not what is measured)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 1

    def retain(self, n: int = 1) -> None:
        self.count += n

    def release(self, n: int = 1) -> None:
        self.count -= n


def per_element_us(emit: Callable, total: int) -> float:
    core.Stream._emit = emit
    source = core.Stream()
    source.map(lambda x: x + 1).filter(lambda x: x % 2 == 0).sink(lambda x: None)
    started = time.perf_counter()
    for n in range(total):
        source._emit(n, metadata=[{"ref": Counter()}])
    return (time.perf_counter() - started) / total * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    total, rounds = (5_000, 3) if args.quick else (100_000, 7)
    runs: dict[str, list[float]] = {"streamz": [], "mdflow": []}
    try:
        for _ in range(rounds):
            runs["streamz"].append(per_element_us(_STREAMZ_EMIT, total))
            runs["mdflow"].append(per_element_us(exact_emit, total))
    finally:
        core.Stream._emit = exact_emit
    median = {name: statistics.median(values) for name, values in runs.items()}
    print(f"mdflow {mdflow.__version__}; map -> filter -> sink, {total} elements x {rounds}")
    print(f"{'_emit':12s} {'median µs/element':>18s}")
    for name, value in median.items():
        print(f"{name:12s} {value:18.2f}")
    ratio = median["mdflow"] / median["streamz"]
    print(f"ratio mdflow/streamz {ratio:.3f}")
    figures = {"bench": "emit", "elements": total, "rounds": rounds, **median, "ratio": ratio}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
