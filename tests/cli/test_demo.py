"""``mdflow demo`` through the console entry point, on the test server."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import path_without


def test_demo_runs_and_accounts_for_every_entry(redis_url, isolated_env, tmp_path):
    picture = tmp_path / "topology.png"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mdflow.cli",
            "demo",
            "--seconds",
            "2",
            "--redis-url",
            redis_url,
            "--picture",
            str(picture),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**isolated_env, "PATH": path_without("dot", shim_root=str(tmp_path))},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ticks written" in result.stdout  # live progress
    summary = json.loads(result.stdout.strip().splitlines()[-1])["demo"]
    assert summary["produced"] > 100
    assert summary["acked"] + summary["in_windows_at_exit"] + summary["lag"] >= summary["produced"]
    assert summary["dead_lettered"] == 0
    assert summary["latency_p99_ms"] > 0
    assert summary["vwap_entries_written"] > 0
    assert summary["candles_received"] > 0  # the collector branch
    assert summary["collector"]["messages_processed"] > 0
    # Written with pip alone: `dot` is hidden from PATH, the pip-installed renderer draws it.
    assert summary["picture"] == str(picture)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
