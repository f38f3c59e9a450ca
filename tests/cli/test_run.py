"""``mdflow run`` through the installed entry point: live status, graceful stop, failures."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import urllib.request

import pytest
import redis
from helpers import finish, wait_for

PIPELINE = """
import asyncio
from streamz import Stream

async def slow(x):
    await asyncio.sleep({delay})
    return x

source = Stream.from_redis({inp!r}, group="g", consumer="c", start_id="0", block=0.1,
                           max_inflight=20)
pipeline = source.map_async(slow).to_redis({out!r})
"""


def _write(tmp_path, **values) -> str:
    path = tmp_path / "flow.py"
    path.write_text(textwrap.dedent(PIPELINE.format(**values)))
    return str(path)


def _start(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mdflow.cli", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_shows_status_and_stops_gracefully(
    tmp_path, redis_url, rdb, prefix, isolated_env, signum
):
    inp, out, total = f"{prefix}in", f"{prefix}out", 300
    pipe = rdb.pipeline()
    for i in range(total):
        pipe.xadd(inp, {"i": str(i)})
    pipe.execute()
    spec = _write(tmp_path, delay=0.02, inp=inp, out=out)
    process = _start(spec, "--url", redis_url, "--grace", "20", env=isolated_env)
    try:
        wait_for(lambda: rdb.xlen(out) >= 30, timeout=60, message="entries processed")
        process.send_signal(signum)
        code, stdout, err = finish(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, err
    assert "Traceback" not in err
    assert f"from_redis<{inp}> stopped" in stdout  # the last status line, after the stop
    assert "acked=" in stdout
    assert "stopped cleanly" in err
    rows = rdb.xpending_range(inp, "g", min="-", max="+", count=1000)
    assert len(rows) <= 20  # at most what the outlet held when reading stopped
    group = next(g for g in rdb.xinfo_groups(inp) if g["name"] == b"g")
    acked = group["entries-read"] - len(rows) if "entries-read" in group else None
    if acked is not None:  # Redis >= 7
        assert rdb.xlen(out) >= acked


def test_run_exits_1_with_the_reason_when_a_node_fails(
    tmp_path, redis_url, rdb, prefix, isolated_env
):
    inp = f"{prefix}in"
    rdb.set(inp, "a string, not a stream")
    spec = _write(tmp_path, delay=0, inp=inp, out=f"{prefix}out")
    code, _, err = finish(_start(spec, "--url", redis_url, env=isolated_env), timeout=60)
    assert code == 1, err
    assert "WRONGTYPE" in err
    assert "Traceback" not in err
    failed = [line for line in err.splitlines() if line.startswith("mdflow run: ")]
    assert any("failed:" in line for line in failed), err


def test_run_masks_a_refused_password(tmp_path, redis_factory, prefix, isolated_env):
    server = redis_factory(extra_args=("--requirepass", "right-one"))
    spec = _write(tmp_path, delay=0, inp=f"{prefix}in", out=f"{prefix}out")
    url = server.url.replace("redis://", "redis://:wrong-one@")
    code, stdout, err = finish(_start(spec, "--url", url, env=isolated_env), timeout=60)
    assert code == 1
    assert "refused the credentials" in err
    assert "wrong-one" not in stdout + err
    assert "Traceback" not in err


def test_run_user_errors(tmp_path, isolated_env):
    code, _, err = finish(_start(str(tmp_path / "missing.py"), env=isolated_env))
    assert code == 1
    assert err.startswith("mdflow run: ")
    assert "Traceback" not in err
    empty = tmp_path / "empty.py"
    empty.write_text("from streamz import Stream\npipeline = Stream().map(str)\n")
    code, _, err = finish(_start(str(empty), env=isolated_env))
    assert code == 1
    assert "no mdflow source" in err
    code, _, err = finish(_start(env=isolated_env))
    assert code == 2
    assert "Missing argument" in err


def test_run_serves_the_dashboard(tmp_path, redis_url, prefix, isolated_env):
    spec = _write(tmp_path, delay=0, inp=f"{prefix}in", out=f"{prefix}out")
    process = _start(spec, "--url", redis_url, "--dashboard", "0", "-q", env=isolated_env)
    try:
        assert process.stderr is not None
        lines = []  # log lines (e.g. a warning) may come first
        while not any(line.startswith("dashboard: ") for line in lines) and len(lines) < 20:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
        found = [line for line in lines if line.startswith("dashboard: http://127.0.0.1:")]
        assert found, lines
        url = found[0].split("dashboard: ", 1)[1].strip()
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200
        with redis.Redis.from_url(redis_url) as conn:  # the pipeline runs: its group exists
            wait_for(lambda: conn.exists(f"{prefix}in"), timeout=30, message="the outlet's group")
        process.send_signal(signal.SIGTERM)
        code, _, err = finish(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, err
