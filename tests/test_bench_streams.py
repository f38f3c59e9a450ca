"""Smoke test: the streams benchmark runs and ends with its JSON line (no timing asserted)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).parent.parent / "benchmarks" / "bench_streams.py"


@pytest.mark.slow
def test_bench_streams_quick_prints_json(isolated_env):
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "-n", "1000"],
        env=isolated_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "streams"
    for key in (
        "raw_consume_per_s",
        "mdflow_consume_per_s",
        "mdflow_batch_consume_per_s",
        "seed_consume_per_s",
        "raw_produce_per_s",
        "mdflow_produce_per_s",
        "mdflow_p99_ms_1000",
        "raw_p99_ms_10000",
        "consume_mdflow_vs_raw",
    ):
        assert figures[key] > 0
