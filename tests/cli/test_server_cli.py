"""``mdflow server``: start/status/stop through the installed entry point, on real servers.

Every test works in a short directory of its own under /tmp and stops the server it
started, even when it fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import redis

from mdflow.reservoir import free_port
from mdflow.reservoir.processes import pid_alive
from mdflow.reservoir.shared import shared_server_status


def mdflow_server(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mdflow.cli", "server", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_start_status_stop(server_dir, isolated_env):
    started = mdflow_server("--dir", server_dir, env=isolated_env)  # bare: start
    assert started.returncode == 0, started.stderr
    url = f"unix://{server_dir}/redis.sock?db=0"
    assert f"mdflow server: started in {server_dir}" in started.stdout
    assert f"url: {url}" in started.stdout
    assert f"export MDFLOW_EMBEDDED_DIR={server_dir}\n" in started.stdout
    assert f"export MDFLOW_REDIS_URL='{url}'\n" in started.stdout
    status = shared_server_status(server_dir)
    assert status.running, "mdflow server returned but left no server running"

    # the line it prints is all a script needs to share it
    script = subprocess.run(
        [
            sys.executable,
            "-c",
            "import mdflow, redis; r = redis.Redis.from_url(mdflow.redis_url()); "
            "r.set('shared', 'yes'); print(mdflow.redis_url())",
        ],
        env=dict(isolated_env, MDFLOW_EMBEDDED_DIR=server_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert script.returncode == 0, script.stderr
    assert script.stdout.strip() == url

    again = mdflow_server("start", "--dir", server_dir, env=isolated_env)
    assert again.returncode == 0, again.stderr
    assert f"already running in {server_dir} (pid {status.pid}," in again.stdout

    text = mdflow_server("status", "--dir", server_dir, env=isolated_env)
    assert text.returncode == 0, text.stderr
    assert f"mdflow server in {server_dir}: running" in text.stdout
    assert f"pid      {status.pid}" in text.stdout
    assert "keys     1" in text.stdout

    as_json = mdflow_server("--dir", server_dir, "status", "--json", env=isolated_env)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert (data["running"], data["pid"], data["url"], data["keys"]) == (True, status.pid, url, 1)
    assert data["version"] and data["used_memory"] > 0 and data["uptime_s"] >= 0

    stopped = mdflow_server("stop", "--dir", server_dir, env=isolated_env)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == f"mdflow server: stopped the server in {server_dir}"
    assert not shared_server_status(server_dir).running

    nothing = mdflow_server("stop", "--dir", server_dir, env=isolated_env)
    assert nothing.returncode == 1
    assert nothing.stderr == f"mdflow server stop: no server is running in {server_dir}\n"
    down = mdflow_server("status", "--dir", server_dir, "--json", env=isolated_env)
    assert down.returncode == 1
    assert json.loads(down.stdout)["running"] is False


def test_default_dir_comes_from_mdflow_embedded_dir(server_dir, isolated_env):
    env = dict(isolated_env, MDFLOW_EMBEDDED_DIR=server_dir)
    started = mdflow_server("start", "--json", env=env)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["directory"] == server_dir
    assert mdflow_server("status", env=env).returncode == 0
    assert mdflow_server("stop", env=env).returncode == 0


def test_tcp_port(server_dir, isolated_env):
    port = free_port()
    started = mdflow_server("--dir", server_dir, "--port", str(port), env=isolated_env)
    assert started.returncode == 0, started.stderr
    url = f"redis://127.0.0.1:{port}/0"
    assert f"export MDFLOW_REDIS_URL={url}\n" in started.stdout
    client = redis.Redis.from_url(url)
    assert client.ping()
    client.close()


def one_error_line(result: subprocess.CompletedProcess, starts: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith(starts), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_bad_dir(server_dir, isolated_env):
    a_file = os.path.join(server_dir, "file")
    with open(a_file, "w"):
        pass
    result = mdflow_server("--dir", a_file, env=isolated_env)
    one_error_line(result, f"mdflow server: the server directory '{a_file}' exists and is not")
    too_long = os.path.join(server_dir, "x" * 100)
    result = mdflow_server("start", "--dir", too_long, env=isolated_env)
    one_error_line(result, "mdflow server start: the server directory is too long for a unix")


def test_port_in_use(server_dir, isolated_env):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = mdflow_server("--dir", server_dir, "--port", str(port), env=isolated_env)
    one_error_line(result, f"mdflow server: port {port} on 127.0.0.1 is not available")
    assert not shared_server_status(server_dir).running


def test_bad_port_is_a_usage_error(server_dir, isolated_env):
    result = mdflow_server("--dir", server_dir, "--port", "70000", env=isolated_env)
    assert result.returncode == 2
    assert "--port" in result.stderr


def read_until(process: subprocess.Popen, last_line: str) -> str:
    """Read ``process``'s stdout up to ``last_line`` (it blocks; the test's timeout guards it)."""
    lines = []
    while not lines or lines[-1] != last_line:
        line = process.stdout.readline()
        assert line, f"the process ended early: {''.join(lines)} {process.communicate()}"
        lines.append(line)
    return "".join(lines)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_foreground_until_a_signal(server_dir, isolated_env, sig):
    process = subprocess.Popen(
        [sys.executable, "-m", "mdflow.cli", "server", "--dir", server_dir, "--foreground"],
        env=isolated_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        head = read_until(process, "running in the foreground: Ctrl-C stops it\n")
        pid = shared_server_status(server_dir).pid
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
        out = head + out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert out.endswith(f"mdflow server: stopped the server in {server_dir}\n")
    assert not shared_server_status(server_dir).running
    assert pid is not None and not pid_alive(pid)


def test_foreground_stopped_by_another_process(server_dir, isolated_env):
    process = subprocess.Popen(
        [sys.executable, "-m", "mdflow.cli", "server", "--dir", server_dir, "--foreground"],
        env=isolated_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        read_until(process, "running in the foreground: Ctrl-C stops it\n")
        busy = mdflow_server("start", "--dir", server_dir, "--foreground", env=isolated_env)
        one_error_line(busy, f"mdflow server start: a server is already running in {server_dir}")
        assert mdflow_server("stop", "--dir", server_dir, env=isolated_env).returncode == 0
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert out.endswith(f"the server in {server_dir} was stopped by another process\n")
