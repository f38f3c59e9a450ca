"""Dashboard exposure: loopback unless told otherwise, and nothing it serves writes to Redis.

* ``mdflow dashboard --host <not loopback>`` is refused (exit 2, one clear line) before any
  connection is made, unless ``--allow-remote`` is given (the library's own refusal is
  tested in tests/pictures/test_web.py);
* every route answers GET and HEAD only: other methods get 405 with ``Allow: GET, HEAD``,
  unknown paths 404, all with the security headers;
* a user whose ACL allows reads only (the ``inspector`` line) is enough for the dashboard;
  one missing a command it needs gets one line that names the command;
* ``mdflow dashboard`` (in a process of its own) and ``serve_dashboard(node)`` (what
  ``mdflow run --dashboard`` serves, in this process) talk to Redis over TCP, while a
  pipeline in this process, over the unix socket, writes entries and its status keys.
  ``MONITOR`` records every command; those of TCP clients are the dashboard's, and none
  of them may be a write (COMMAND INFO flags ``write`` / ``may_replicate``, ACL category
  ``@write``, or a script). Fetching the page, the snapshot, the assets and the event
  stream, and trying every other method on every route meanwhile, must not change that.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
from click.testing import CliRunner
from helpers import wait_for
from streamz import Stream

import mdflow
from mdflow.cli.main import cli
from mdflow.reservoir import RedisServer, free_port

pytestmark = [pytest.mark.fault, pytest.mark.slow]

ROUTES = ("/", "/static/dashboard.js", "/static/dashboard.css", "/snapshot.json", "/events")
OTHER_METHODS = ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")
# what a read-only viewer may send; anything else is reported even when Redis calls it a read
# commands whose first argument is a subcommand (the others': a key, kept out of the report)
CONTAINERS = {"client", "xinfo", "xgroup", "config", "memory", "object", "command", "script",
              "function", "acl", "pubsub", "slowlog", "latency", "cluster", "module"}  # fmt: skip
READ_COMMANDS = {
    "auth", "hello", "select", "ping", "client", "info", "time", "command",
    "scan", "type", "exists", "ttl", "pttl", "get", "mget", "hget", "hgetall", "hlen",
    "lrange", "llen", "xlen", "xrange", "xrevrange", "xinfo", "xpending", "memory", "dbsize",
}  # fmt: skip


# -- the CLI refuses a host other machines can reach -------------------------------------


def test_cli_refuses_a_non_loopback_host_before_touching_redis(isolated_env):
    unreachable = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: not even tried
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "mdflow.cli",
            "dashboard",
            "--host",
            "0.0.0.0",
            "--url",
            unreachable,
        ],
        capture_output=True,
        text=True,
        env=isolated_env,
        timeout=120,
    )
    assert process.returncode == 2, process.stderr
    assert process.stdout == ""
    line = process.stderr.strip()
    assert "\n" not in line and "Traceback" not in line, line
    assert line.startswith("mdflow dashboard: --host '0.0.0.0' is not a loopback address")
    assert "no authentication" in line and "--allow-remote" in line
    assert "unreachable" not in line  # refused before any connection

    runner = CliRunner()
    for host in ("::", "", "192.0.2.10", "example.com", "127.1", "0"):
        result = runner.invoke(
            cli, ["dashboard", "--host", host, "--port", "0", "--url", unreachable]
        )
        assert result.exit_code == 2, (host, result.output)
        assert "is not a loopback address" in result.stderr and "--allow-remote" in result.stderr
    # allowed: the next thing checked is the URL (a bad one here: exit 1, nothing served)
    result = runner.invoke(
        cli, ["dashboard", "--host", "0.0.0.0", "--allow-remote", "--url", "http://nowhere/0"]
    )
    assert result.exit_code == 1, result.output
    assert "redis_url must start with redis://" in result.stderr
    assert "warning: --host '0.0.0.0' with --allow-remote" in result.stderr
    assert "is not a loopback address" not in result.stderr
    # the pipeline runner's dashboard has no --host at all: always loopback
    help_text = runner.invoke(cli, ["run", "--help"]).output
    assert "--dashboard" in help_text and "--host" not in help_text


# -- the dashboard reads, and only reads ------------------------------------------------


class Monitor:
    """Every command the server runs (MONITOR on a connection of its own, over the socket)."""

    _LINE = re.compile(r"^\+?(?P<time>[\d.]+) \[(?P<db>\d+) (?P<client>[^\]]+)\] (?P<args>.*)$")
    _ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')

    def __init__(self, unixsocket: str) -> None:
        self.lines: list[tuple[str, list[str]]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(unixsocket)
        self._sock.settimeout(0.2)
        self._sock.sendall(b"MONITOR\r\n")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="monitor", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            buffer += chunk
            *complete, buffer = buffer.split(b"\r\n")
            for raw in complete:
                found = self._LINE.match(raw.decode("utf-8", "replace"))
                if found:
                    args = [a.lower() for a in self._ARG.findall(found["args"])[:2]]
                    self.lines.append((found["client"], args))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sock.close()

    def by_transport(self) -> dict[str, list[list[str]]]:
        out: dict[str, list[list[str]]] = collections.defaultdict(list)
        for client, args in list(self.lines):
            kind = "unix" if client.startswith("unix") else "lua" if client == "lua" else "tcp"
            out[kind].append(args)
        return out


def _name(args: list[str]) -> tuple[str, str]:
    """(command, subcommand or '')."""
    sub = args[1] if len(args) > 1 and args[0] in CONTAINERS else ""
    return args[0], sub


def _writes(conn: redis.Redis, commands: set[tuple[str, str]]) -> dict[str, list[str]]:
    """Which of ``commands`` (name, first argument) change data, and why."""
    found: dict[str, list[str]] = {}
    for name, sub in sorted(commands):
        info = None
        if sub:  # Redis >= 7 describes subcommands (XINFO|STREAM, CLIENT|SETNAME) themselves
            try:
                info = conn.execute_command("COMMAND", "INFO", f"{name}|{sub}")[f"{name}|{sub}"]
            except (redis.ResponseError, TypeError, KeyError):  # 6.2 knows no 'name|sub'
                info = None
        if info is None:
            info = conn.execute_command("COMMAND", "INFO", name).get(name)
        why = []
        if info is None:
            why.append("unknown to COMMAND INFO")
        else:
            flags = {str(f) for f in info.get("flags", [])}
            why += sorted(flags & {"write", "may_replicate"})
            categories = {str(c) for c in info.get("acl_categories", [])}
            why += sorted(categories & {"@write", "@scripting"})
        if name in ("publish", "spublish"):
            why.append("publishes")
        if name not in READ_COMMANDS:
            why.append("not in the read allow-list")
        if why:
            found[f"{name} {sub}".strip()] = why
    return found


@pytest.fixture
def two_doors() -> Iterator[RedisServer]:
    """A server on TCP (for the dashboard) and a unix socket (for everybody else)."""
    directory = tempfile.mkdtemp(prefix="mdf-exp-", dir="/tmp")
    server = RedisServer(port=free_port(), unixsocket=os.path.join(directory, "redis.sock"))
    try:
        yield server.start()
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


def _request(port: int, method: str, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        body = b'{"op": "delete"}' if method in ("POST", "PUT", "PATCH") else None
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def _events(port: int, count: int) -> list[dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/events")
        response = conn.getresponse()
        assert response.status == 200
        snapshots: list[dict] = []
        while len(snapshots) < count:
            line = response.readline().decode("utf-8")
            if not line:
                break
            if line.startswith("data: "):
                snapshots.append(json.loads(line[6:]))
        return snapshots
    finally:
        conn.close()


def test_every_route_answers_get_and_head_only(two_doors, isolated_env):
    """Through the command: other methods get 405 and Allow, unknown paths 404."""
    process = subprocess.Popen(
        [*(sys.executable, "-m", "mdflow.cli", "dashboard", "--port", "0"), "--url", two_doors.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=isolated_env,
    )
    try:
        port = _port_of(process)
        for path in ROUTES:
            for method in OTHER_METHODS:
                status, headers, _ = _request(port, method, path)
                assert status == 405, (method, path, status)
                assert headers["Allow"] == "GET, HEAD"
                assert "default-src 'self'" in headers["Content-Security-Policy"]
            status, headers, body = _request(port, "HEAD", path)
            assert (status, body) == (200, b""), (path, status)
        for path in ("/admin", "/static/dashboard.html", "/snapshot.json/x", "/../etc/passwd"):
            assert _request(port, "GET", path)[0] == 404, path
            assert _request(port, "POST", path)[0] == 405, path
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err


def _port_of(process: subprocess.Popen) -> int:
    assert process.stdout is not None
    seen = []
    for _ in range(50):
        line = process.stdout.readline()
        seen.append(line)
        found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if found:
            return int(found.group(1))
        if not line:
            break
    pytest.fail(f"no dashboard URL on stdout: {seen}")


@contextlib.contextmanager
def _dashboard(kind: str, url: str, node: Stream, env: dict) -> Iterator[int]:
    """The dashboard of ``url``: ``mdflow dashboard`` in a process, or ``node``'s, in this one."""
    if kind == "in-process":  # what `mdflow run --dashboard` serves: the node's own graph
        server = mdflow.serve_dashboard(node, port=0, redis_url=url, interval=0.2)
        try:
            yield server.port
        finally:
            server.stop()
        return
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "mdflow.cli", "dashboard", "--port", "0"),
            *("--interval", "0.2", "--url", url),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield _port_of(process)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    finally:
        if process.returncode is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("kind", ["command", "in-process"])
def test_the_dashboard_sends_no_write_command(kind, two_doors, prefix, isolated_env):
    assert two_doors.unixsocket is not None
    unix_url = f"unix://{two_doors.unixsocket}?db=0"
    tcp_url = two_doors.url  # the dashboard's door, and nobody else's
    # the pipeline side: entries, a consumer group, status keys (all writes, over the socket)
    pump = Stream.engine(f"{prefix}in", lambda: {"px": 1.0}, push_interval=0.05, redis_url=unix_url)
    outlet = Stream.from_redis(
        f"{prefix}in", group="g", start_id="0", block=0.1, redis_url=unix_url
    )
    outlet.map(lambda x: x).to_redis(f"{prefix}out", redis_url=unix_url)
    monitor = Monitor(two_doors.unixsocket)
    pump.start()
    outlet.start()
    try:
        with redis.Redis.from_url(unix_url) as conn:
            wait_for(lambda: list(conn.scan_iter("mdflow:topology:*")), timeout=30)
        with _dashboard(kind, tcp_url, outlet, isolated_env) as port:
            for path in ROUTES[:-1]:
                assert _request(port, "GET", path)[0] == 200, path
            for path in ROUTES:  # attempts to change something: refused, nothing reaches Redis
                for method in OTHER_METHODS:
                    assert _request(port, method, path)[0] == 405
            snapshots = _events(port, 15)  # about three seconds of refreshes
            assert len(snapshots) == 15
            shown = {node["name"] for snap in snapshots for node in snap["nodes"]}
            assert any(f"{prefix}in" in name for name in shown), shown  # it read the pipeline
            assert any(s["name"] == f"{prefix}in" for s in snapshots[-1]["streams"])
    finally:
        pump.stop()
        outlet.stop()
        monitor.stop()
    seen = monitor.by_transport()
    dashboard = {_name(args) for args in seen["tcp"] if args}
    pipeline = {_name(args) for args in seen["unix"] if args}
    assert dashboard, "MONITOR saw nothing from the dashboard"
    assert not seen["lua"], seen["lua"][:10]  # no script ran (they would show as 'lua')
    with redis.Redis.from_url(unix_url) as conn:
        assert {"set", "xadd"} <= {name for name, _ in pipeline}  # MONITOR does see writes...
        assert _writes(conn, {("set", ""), ("xadd", "")})  # ...and they are classified so
        writes = _writes(conn, dashboard)
    print(
        f"dashboard ({kind}): {len(seen['tcp'])} commands over TCP, "
        f"distinct: {sorted(' '.join(c).strip() for c in dashboard)}; "
        f"pipeline: {len(seen['unix'])} commands over the socket"
    )
    assert not writes, f"the dashboard sent commands that write: {writes}"


def test_a_user_that_may_only_read_is_enough(redis_url, rdb, prefix):
    """The least-privilege ``inspector`` ACL line (no write command at all) runs the dashboard;
    a user missing one of its commands gets one line naming it, on the page and in the CLI."""
    rdb.xadd(f"{prefix}ticks", {"px": "1"})
    rdb.xgroup_create(f"{prefix}ticks", "g", id="0")
    reads = ["~*", "+@read", "-@dangerous", "+ping", "+client|setname"]
    users = {"inspector": [*reads, "+time"], "no-time": reads}
    names = {kind: f"{kind}{uuid.uuid4().hex[:6]}" for kind in users}
    urls = {}
    for kind, rules in users.items():
        rdb.execute_command(
            "ACL", "SETUSER", names[kind], "reset", "on", ">pw", "resetchannels", *rules
        )
        urls[kind] = redis_url.replace("redis://", f"redis://{names[kind]}:pw@")
    try:
        snapshots = {}
        for kind, url in urls.items():
            server = mdflow.serve_dashboard(
                port=0, redis_url=url, pattern=f"{prefix}*", interval=0.2
            )
            try:
                snapshots[kind] = json.loads(_request(server.port, "GET", "/snapshot.json")[2])
            finally:
                server.stop()
        result = CliRunner().invoke(cli, ["inspect", f"{prefix}*", "--url", urls["no-time"]])
    finally:
        for name in names.values():
            rdb.execute_command("ACL", "DELUSER", name)
    assert snapshots["inspector"]["errors"] == [], snapshots["inspector"]
    assert [s["name"] for s in snapshots["inspector"]["streams"]] == [f"{prefix}ticks"]
    (error,) = snapshots["no-time"]["errors"]
    assert "denied a command by ACL" in error and "'time'" in error and ":***@" in error
    assert result.exit_code == 1
    assert result.stderr.startswith("mdflow inspect: ") and "'time'" in result.stderr
    assert "Traceback" not in result.output and "pw@" not in result.output
