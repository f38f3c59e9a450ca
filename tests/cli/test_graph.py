"""``mdflow graph SPEC``: a pipeline's picture without running it, through the entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

PIPELINE = """
from streamz import Stream

import mdflow

pump = Stream.engine("{prefix}ticks", lambda: {{"px": 1.0}}, push_interval=0.1)
outlet = Stream.from_redis("{prefix}ticks", group="graph-test")
outlet.map(lambda r: r["px"]).sink(print)
pipeline = [pump, outlet]


def build():
    return Stream(stream_name="built").map(str)
"""


def run_cli(*args: str, env: dict, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mdflow.cli", *args],
        capture_output=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )


@pytest.fixture
def env(isolated_env, redis_url):
    return dict(isolated_env, MDFLOW_REDIS_URL=redis_url)


@pytest.fixture
def flow(tmp_path, prefix):
    path = tmp_path / "flow.py"
    path.write_text(textwrap.dedent(PIPELINE.format(prefix=prefix)))
    return path


@pytest.mark.parametrize(
    ("suffix", "check"),
    [
        (".svg", lambda data: b"<svg" in data and b"from_redis" in data),
        (".png", lambda data: data[:8] == b"\x89PNG\r\n\x1a\n"),
        (".dot", lambda data: data.startswith(b"digraph") and b"group graph-test" in data),
        (".mmd", lambda data: data.startswith(b"flowchart LR") and b"sink" in data),
    ],
)
def test_graph_writes_each_format(flow, tmp_path, env, rdb, prefix, suffix, check):
    out = tmp_path / f"picture{suffix}"
    result = run_cli("graph", str(flow), "-o", str(out), env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert check(out.read_bytes())
    assert str(out).encode() in result.stdout
    assert rdb.exists(f"{prefix}ticks") == 0  # drawn, not run


def test_graph_prints_dot_or_mermaid_or_json_without_output(flow, env):
    dot = run_cli("graph", str(flow), env=env)
    assert dot.returncode == 0, dot.stderr.decode()
    assert dot.stdout.startswith(b"digraph mdflow {")
    assert b"engine<" in dot.stdout and b"from_redis<" in dot.stdout
    mermaid = run_cli("graph", f"{flow}:build", "--format", "mmd", env=env)
    assert mermaid.returncode == 0, mermaid.stderr.decode()
    assert mermaid.stdout.startswith(b"flowchart LR") and b"map" in mermaid.stdout
    data = run_cli("graph", str(flow), "--json", env=env)
    assert data.returncode == 0, data.stderr.decode()
    topo = json.loads(data.stdout)
    kinds = {node["kind"] for node in topo["nodes"].values()}
    assert {"engine", "outlet", "stream", "sink"} <= kinds


def test_graph_url_option_reaches_nodes_without_redis_url(flow, isolated_env, redis_url):
    # no MDFLOW_REDIS_URL: --url is what the nodes use, not the embedded server
    result = run_cli("-v", "graph", str(flow), "--redis-url", redis_url, env=isolated_env)
    assert result.returncode == 0, result.stderr.decode()
    assert b"from_redis<" in result.stdout
    assert f"using Redis at {redis_url}".encode() in result.stderr
    assert b"embedded" not in result.stderr


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, text: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("mdflow graph: ") or code == 2, err
    assert text in err


def test_graph_user_errors(flow, tmp_path, env):
    assert_one_line_error(
        run_cli("graph", str(tmp_path / "missing.py"), env=env), 1, "does not exist"
    )
    assert_one_line_error(
        run_cli("graph", f"{flow}:nope", env=env), 1, "has no attribute 'nope'; give SPEC as"
    )
    assert_one_line_error(run_cli("graph", "no_such_module_q", env=env), 1, "cannot import module")
    assert_one_line_error(
        run_cli("graph", str(flow), "-o", str(tmp_path / "x.jpg"), env=env),
        2,
        "cannot tell the picture format of",
    )
    usage = run_cli("graph", str(flow), "--format", "gif", env=env)
    assert usage.returncode == 2 and b"Traceback" not in usage.stderr
    assert b"Usage: mdflow graph" in usage.stderr
    broken = tmp_path / "broken.py"
    broken.write_text("import os\nvalue = {}\nvalue['k']\n")
    assert_one_line_error(
        run_cli("graph", str(broken), env=env), 1, "failed at broken.py:3: KeyError"
    )
