"""``mdflow inspect``: tables and JSON of what Redis holds, through the entry point."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from helpers import wait_for


@pytest.fixture
def env(isolated_env):
    # wide enough that rich never folds a name, so the test can look for it
    return dict(isolated_env, COLUMNS="250")


@pytest.fixture
def system(rdb, prefix):
    """A stream with a group, a consumer holding one entry, and a dead-letter stream."""
    stream = f"{prefix}orders"
    for i in range(3):
        rdb.xadd(stream, {"i": str(i)})
    rdb.xgroup_create(stream, "billing", id="0")
    rdb.xreadgroup("billing", "alice", {stream: ">"}, count=1)
    rdb.xadd(f"{stream}:dead", {"i": "x"})
    return stream


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mdflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_inspect_tables_show_streams_groups_consumers_and_dead_letters(
    system, prefix, redis_url, env
):
    result = run_cli("inspect", f"{prefix}*", "--url", redis_url, env=env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for title in ("streams", "consumer groups", "consumers", "dead letters"):
        assert title in out
    assert system in out
    assert "billing" in out and "alice" in out
    assert f"{system}:dead" in out
    row = next(line for line in out.splitlines() if "billing" in line and "alice" not in line)
    cells = [c.strip() for c in row.replace("┃", "│").split("│") if c.strip()]
    # stream, group, consumers, pending, lag, last delivered
    assert cells[:5] == [system, "billing", "1", "1", "2"]


def test_inspect_json(system, prefix, redis_url, env):
    result = run_cli("inspect", f"{prefix}*", "--json", "--redis-url", redis_url, env=env)
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    streams = {s["name"]: s for s in view["streams"]}
    orders = streams[system]
    assert orders["length"] == 3
    assert orders["dead_letters"] == 1
    (group,) = orders["groups"]
    assert (group["name"], group["pending"], group["lag"]) == ("billing", 1, 2)
    assert [c["name"] for c in group["consumer_list"]] == ["alice"]
    assert streams[f"{system}:dead"]["dead_letter_of"] == system
    assert "topology" in view and "graphs" in view


def test_inspect_shows_collector_managers(rdb, prefix, redis_url, env):
    import uuid

    manager = f"cli-test-{uuid.uuid4().hex[:8]}"
    status = {"exchange": "simulated", "state": "running", "statistics": {"restarts": 0}}
    rdb.hset(
        f"mdflow:collectors:{manager}",
        mapping={"ticker-feed": json.dumps({**status, "enabled": True}), "updated_at": "now"},
    )
    try:
        result = run_cli("inspect", f"{prefix}*", "--url", redis_url, env=env)
    finally:
        rdb.delete(f"mdflow:collectors:{manager}")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if manager in line)
    assert "ticker-feed" in row and "simulated" in row and "running" in row


def test_inspect_empty_pattern(redis_url, prefix, env):
    result = run_cli("inspect", f"{prefix}nothing*", "--url", redis_url, env=env)
    assert result.returncode == 0, result.stderr
    assert "no streams match" in result.stdout


def test_inspect_watch_refreshes_until_ctrl_c(system, prefix, redis_url, env, tmp_path):
    out = tmp_path / "watch.out"
    with out.open("w") as sink:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "mdflow.cli", "inspect", f"{prefix}*", "--watch"),
                *("--interval", "0.2", "--url", redis_url),
            ],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            # in a file (not a terminal) every refresh is printed: wait for two of them
            wait_for(
                lambda: out.read_text().count("consumer groups") >= 2,
                timeout=60,
                message="two refreshes of mdflow inspect --watch",
            )
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert system in out.read_text()
