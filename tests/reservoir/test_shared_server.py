"""The shared server: detached, reused, shared by processes, stopped only when asked.

Every test works in a short directory of its own under /tmp (unix socket paths must
stay under 100 characters) and stops whatever it started, even when it fails.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import redis
from helpers import wait_for

from mdflow.errors import ConfigError
from mdflow.reservoir import RedisServer, free_port
from mdflow.reservoir.processes import pid_alive
from mdflow.reservoir.shared import (
    SharedServer,
    default_server_dir,
    shared_server_status,
    start_shared_server,
    stop_shared_server,
)


def run_python(code: str, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_start_reuse_status_stop(server_dir):
    server = start_shared_server(server_dir)
    assert server.started and server.running
    assert server.url == f"unix://{server_dir}/redis.sock?db=0"
    again = start_shared_server(server_dir)
    assert (again.pid, again.started) == (server.pid, False)

    client = redis.Redis.from_url(server.url)
    client.set("k1", "v")
    client.set("k2", "v")
    client.close()
    status = shared_server_status(server_dir)
    assert status.running and not status.stale
    assert (status.pid, status.url, status.keys) == (server.pid, server.url, 2)
    assert status.version and status.used_memory and status.uptime_s is not None

    assert stop_shared_server(server_dir) is True
    assert not server.running
    assert not os.path.exists(os.path.join(server_dir, "server.json"))
    assert stop_shared_server(server_dir) is False
    assert shared_server_status(server_dir).running is False


def test_data_survives_a_restart(server_dir):
    server = start_shared_server(server_dir)
    client = redis.Redis.from_url(server.url)
    client.xadd("kept", {"a": "1"})
    client.close()
    assert server.stop()
    restarted = start_shared_server(server_dir)
    assert restarted.started and restarted.pid != server.pid
    client = redis.Redis.from_url(restarted.url)
    assert client.xlen("kept") == 1
    client.close()


def test_tcp_port(server_dir):
    port = free_port()
    server = start_shared_server(server_dir, port=port)
    assert server.url == f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(server.url)
    assert client.ping()
    client.close()
    client = redis.Redis.from_url(server.socket_url)  # the socket is always there too
    assert client.ping()
    client.close()
    with pytest.raises(ConfigError, match=f"already running in {server_dir} on port {port}"):
        start_shared_server(server_dir, port=free_port())


def test_process_sharing_outlives_its_starter(server_dir, isolated_env):
    """A starts the server, B shares it; A exits; B keeps working; C sees everything."""
    env = dict(isolated_env, MDFLOW_EMBEDDED_DIR=server_dir)
    code = """
        import sys, redis, mdflow
        from mdflow.reservoir.urls import embedded_server
        name = sys.argv[1]
        client = redis.Redis.from_url(mdflow.redis_url())
        client.set(name, "before")
        server = embedded_server()
        print(server.pid, server.started, flush=True)
        sys.stdin.readline()                     # go on when the test says so
        client.set(name + ":after", "1")
        print(client.get("a"), client.get(name + ":after"), flush=True)
    """
    a = run_python(code, env, "a")
    b = None
    try:
        a_pid, a_started = a.stdout.readline().split()
        assert a_started == "True", a.stderr.read() if a.poll() is not None else a_pid
        b = run_python(code, env, "b")
        b_pid, b_started = b.stdout.readline().split()
        assert (b_pid, b_started) == (a_pid, "False")

        a.stdin.write("\n")  # A (the starter) finishes and exits
        a.stdin.flush()
        assert a.wait(timeout=60) == 0, a.stderr.read()
        assert pid_alive(int(a_pid)), "the shared server died with the process that started it"

        b.stdin.write("\n")  # B writes and reads after its starter is gone
        b.stdin.flush()
        assert b.stdout.readline().split() == ["b'before'", "b'1'"]
        assert b.wait(timeout=60) == 0, b.stderr.read()

        c = subprocess.run(
            [
                sys.executable,
                "-c",
                "import redis, mdflow; r = redis.Redis.from_url(mdflow.redis_url()); "
                "print(r.get('a'), r.get('a:after'), r.get('b'), r.get('b:after'))",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert c.returncode == 0, c.stderr
        assert c.stdout.split() == ["b'before'", "b'1'", "b'before'", "b'1'"]
        assert shared_server_status(server_dir).pid == int(a_pid)
    finally:
        for process in (a, b):
            if process is not None:
                process.kill()
                process.communicate()


def test_two_processes_starting_at_once_get_one_server(server_dir, isolated_env):
    go = os.path.join(server_dir, "go")
    code = f"""
        import os, time
        from mdflow.reservoir.shared import start_shared_server
        while not os.path.exists({go!r}):
            time.sleep(0.005)
        server = start_shared_server({server_dir!r})
        print(server.pid, server.started)
    """
    starters = [run_python(code, isolated_env) for _ in range(2)]
    try:
        with open(go, "w"):
            pass
        outputs = [p.communicate(timeout=60) for p in starters]
    finally:
        for p in starters:
            p.kill()
            p.communicate()
    assert all(p.returncode == 0 for p in starters), outputs
    results = sorted(out.split()[1] for out, _ in outputs)
    pids = {out.split()[0] for out, _ in outputs}
    assert len(pids) == 1 and results == ["False", "True"], outputs


def test_stale_record_after_a_crash_is_recovered(server_dir):
    server = start_shared_server(server_dir)
    os.kill(server.pid, signal.SIGKILL)
    wait_for(lambda: not pid_alive(server.pid), message="the killed server to be gone")
    status = shared_server_status(server_dir)
    assert not status.running and status.stale
    again = start_shared_server(server_dir)
    assert again.started and again.pid != server.pid
    client = redis.Redis.from_url(again.url)
    assert client.ping()
    client.close()


def test_stale_pidfile_and_socket_left_by_a_dead_process(server_dir):
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(os.path.join(server_dir, "server.json"), "w") as f:
        f.write(
            f'{{"directory": "{server_dir}", "pid": {dead.pid}, "port": 0, '
            f'"socket": "{server_dir}/redis.sock", "url": "unix://{server_dir}/redis.sock?db=0"}}'
        )
    with open(os.path.join(server_dir, "redis.pid"), "w") as f:
        f.write(f"{dead.pid}\n")
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(os.path.join(server_dir, "redis.sock"))  # a socket file nobody listens on
    leftover.close()
    assert shared_server_status(server_dir).stale
    assert stop_shared_server(server_dir) is False  # nothing to stop; the record is cleared
    assert not os.path.exists(os.path.join(server_dir, "server.json"))

    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(os.path.join(server_dir, "redis.sock"))
    leftover.close()
    server = start_shared_server(server_dir)
    assert server.started
    client = redis.Redis.from_url(server.url)
    assert client.ping()
    client.close()


def test_a_server_without_a_record_is_adopted(server_dir):
    """A redis-server already on DIR/redis.sock (e.g. started by an older mdflow) is reused."""
    legacy = RedisServer(
        port=0, unixsocket=os.path.join(server_dir, "redis.sock"), directory=server_dir
    )
    legacy.start()
    try:
        assert legacy.process is not None
        server = start_shared_server(server_dir)
        assert (server.pid, server.started) == (legacy.process.pid, False)
        assert shared_server_status(server_dir).running
        assert stop_shared_server(server_dir)
        assert legacy.process.wait(timeout=30) == 0
    finally:
        legacy.stop()


def test_default_server_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MDFLOW_EMBEDDED_DIR", "/tmp/some-mdflow-dir")
    assert default_server_dir() == "/tmp/some-mdflow-dir"
    monkeypatch.delenv("MDFLOW_EMBEDDED_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_server_dir() == str(tmp_path / "mdflow" / "server")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_server_dir() == str(tmp_path / "home" / ".cache" / "mdflow" / "server")


def test_directory_too_long_for_a_socket(tmp_path):
    with pytest.raises(ConfigError, match="too long for a unix socket path"):
        start_shared_server(tmp_path / ("x" * 100))


def test_directory_that_is_a_file(server_dir):
    path = os.path.join(server_dir, "file")
    with open(path, "w"):
        pass
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        start_shared_server(path)


@pytest.mark.parametrize("port", [0, 70000, "6379", True])
def test_bad_port_value(server_dir, port):
    with pytest.raises(ConfigError, match=r"port must be an int in 1\.\.65535"):
        start_shared_server(server_dir, port=port)


def test_port_in_use(server_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is not available"):
            start_shared_server(server_dir, port=port)
    assert not shared_server_status(server_dir).running


def test_attached_server_stops_with_its_owner(server_dir):
    server = start_shared_server(server_dir, detach=False)
    try:
        assert isinstance(server, SharedServer) and server.process is not None
        with pytest.raises(ConfigError, match="already running"):
            start_shared_server(server_dir, detach=False)
        assert stop_shared_server(server_dir)
        assert server.wait() == 0
    finally:
        if server.process is not None and server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def test_status_of_an_empty_directory(server_dir):
    status = shared_server_status(os.path.join(server_dir, "nothing"))
    assert (status.running, status.stale, status.pid) == (False, False, None)
    assert stop_shared_server(os.path.join(server_dir, "nothing")) is False
