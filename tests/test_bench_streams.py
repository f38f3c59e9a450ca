"""Smoke test: the streams benchmark runs and ends with its JSON line (no timing asserted)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).parent.parent / "benchmarks" / "bench_streams.py"


def run_bench(script: str, *args: str, env: dict) -> dict:
    """Run one benchmark; return the figures of its last (JSON) line."""
    result = subprocess.run(
        [sys.executable, str(BENCH.with_name(script)), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_bench_streams_quick_prints_json(isolated_env):
    figures = run_bench("bench_streams.py", "--quick", "-n", "1000", env=isolated_env)
    assert figures["bench"] == "streams"
    for key in (
        "raw_sync_consume_per_s",
        "consume_script_per_s",
        "consume_async_per_s",
        "batch_script_per_s",
        "raw_sync_produce_per_s",
        "produce_emit_per_s",
        "mdflow_p99_ms_1000",
        "raw_sync_p99_ms_10000",
        "consume_script_vs_sync",
        "produce_emit_vs_sync",
    ):
        assert figures[key] > 0
    assert isinstance(figures["hiredis"], bool)


@pytest.mark.slow
def test_bench_memory_quick_reports_rss(isolated_env):
    figures = run_bench("bench_memory.py", "--quick", "-n", "20000", env=isolated_env)
    assert figures["bench"] == "memory"
    assert figures["rss_min_mb"] > 0 and figures["rss_max_mb"] >= figures["rss_min_mb"]
    assert figures["flat_pct"] >= 0


@pytest.mark.slow
def test_bench_status_quick_publishes_and_prints_json(isolated_env):
    figures = run_bench("bench_status.py", "--quick", env=isolated_env)
    assert figures["bench"] == "status"
    for key in ("n", "rounds", "off_per_s", "on_per_s", "ratio", "tick_us"):
        assert figures[key] > 0
    assert len(figures["round_ratios"]) == figures["rounds"]
    assert figures["goal_ratio"] == 0.97
    assert isinstance(figures["goal_met"], bool)
    assert figures["publications"] > 0  # publishing really was on in the on runs
    assert figures["off_publications"] == 0  # and off in the off runs
