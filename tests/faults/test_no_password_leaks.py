"""No password anywhere: every node, command, picture and page, run against a Redis that wants one.

A server with ``requirepass`` (and an ACL user with a password of its own, full of the
characters URLs make awkward) runs the whole of mdflow: pumps, outlets, writers, dead
letters, pub/sub listeners, publishers, scanners with analyzer and cache, collectors and
their manager, nodes that fail (a wrong password), nodes whose Redis dies mid-flow, every
CLI command (once with a wrong password), every picture and the web dashboard.

Everything they say is captured: every log record of every logger at DEBUG with its
traceback, stdout/stderr, every ``status()``, every picture's text and rendered bytes,
every key mdflow wrote into Redis, every HTTP response (headers and body). None of it may
contain a password, plain or URL-encoded. The coverage (what was scanned, how much) is
printed at the end of the module.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import http.client
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus

import pytest
import redis
from click.testing import CliRunner
from helpers import finish, wait_for
from streamz import Stream

import mdflow
from mdflow.analyzers import HighLowOfDay
from mdflow.cli.main import cli
from mdflow.collectors import (
    CollectorManager,
    SimulatedExchange,
    SimulatedExchangeCollector,
    published_status,
)
from mdflow.errors import MdflowError
from mdflow.reservoir import RedisServer, free_port, mask_text, mask_url

pytestmark = [pytest.mark.fault, pytest.mark.slow]

SECRET = "pw-Zq7xK9-leak-canary"  # requirepass: the default user's password
USER2 = "canary"
SECRET2 = "acl/Zq7@xK9:canary+2&x"  # an ACL user's: '/', '@', ':', '+', '&' all need care in URLs
WRONG = "wrong-Zq7xK9-canary"  # a password the server refuses
FEED_SECRET = "feed-Zq7xK9-canary"  # the credentials of a collector's websocket URL
SECRETS = (SECRET, SECRET2, WRONG, FEED_SECRET)


def _forms(secret: str) -> set[str]:
    """A secret as it may appear: plain, URL-encoded (path or query style), base64 in HTTP auth."""
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret)}
    forms.add(base64.b64encode(f"feeduser:{secret}".encode()).decode())
    return forms


NEEDLES = sorted(set().union(*(_forms(s) for s in SECRETS)))


# -- what was said, and where -------------------------------------------------------------


@dataclass
class Haystack:
    """Every text mdflow produced in one test, by source; leaks found as they come in."""

    sizes: collections.Counter = field(default_factory=collections.Counter)
    counts: collections.Counter = field(default_factory=collections.Counter)
    leaks: list[str] = field(default_factory=list)
    covered: list[str] = field(default_factory=list)
    levels: collections.Counter = field(default_factory=collections.Counter)  # log records

    def add(self, source: str, value: object, what: str | None = None) -> None:
        if isinstance(value, (bytes, bytearray)):
            data = bytes(value)
        else:
            data = (value if isinstance(value, str) else repr(value)).encode("utf-8", "replace")
        self.sizes[source] += len(data)
        self.counts[source] += 1
        if what:
            self.covered.append(what)
        for needle in NEEDLES:
            at = data.find(needle.encode())
            if at >= 0:
                excerpt = data[max(0, at - 120) : at + 60].decode("utf-8", "replace")
                self.leaks.append(f"{source} ({what or '-'}): {needle!r} in …{excerpt}…")

    def merge(self, other: Haystack) -> None:
        self.sizes.update(other.sizes)
        self.counts.update(other.counts)
        self.leaks.extend(other.leaks)
        self.covered.extend(other.covered)
        self.levels.update(other.levels)


class _Records(logging.Handler):
    """Every record of every logger, formatted with its traceback."""

    def __init__(self, hay: Haystack) -> None:
        super().__init__(logging.DEBUG)
        self.hay = hay
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s [%(threadName)s] %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception as exc:  # noqa: BLE001 - a record that cannot format is a finding too
            text = f"unformattable record {record.msg!r} {record.args!r}: {exc!r}"
        self.hay.levels[record.levelname] += 1
        self.hay.add("log", text)


@contextlib.contextmanager
def _everything_logged(hay: Haystack) -> Iterator[None]:
    """DEBUG on every logger (existing ones included), one handler on the root."""
    root = logging.getLogger()
    loggers = [root] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.disabled = False
        if logger is not root:
            logger.setLevel(logging.NOTSET)
    root.setLevel(logging.DEBUG)
    handler = _Records(hay)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled


TOTAL = Haystack()


@pytest.fixture
def hay(capfd) -> Iterator[Haystack]:
    """This test's haystack: logs and the captured stdout/stderr are added; no leak allowed."""
    own = Haystack()
    with _everything_logged(own):
        yield own
    out, err = capfd.readouterr()
    own.add("stdout/stderr", out + err)
    TOTAL.merge(own)
    assert not own.leaks, "passwords leaked:\n" + "\n".join(own.leaks[:30])


@pytest.fixture(scope="module", autouse=True)
def _coverage_report(request) -> Iterator[None]:
    yield
    lines = [
        "no-password-leaks coverage:",
        f"  log records: {sum(TOTAL.levels.values())} ({dict(TOTAL.levels)})",
        *(
            f"  {source}: {TOTAL.counts[source]} item(s), {TOTAL.sizes[source]:,} bytes"
            for source in sorted(TOTAL.sizes)
        ),
        f"  total scanned: {sum(TOTAL.sizes.values()):,} bytes for {len(NEEDLES)} needle(s)",
        f"  covered: {', '.join(sorted(set(TOTAL.covered)))}",
        f"  leaks: {len(TOTAL.leaks)}",
    ]
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)
    path = os.environ.get("MDFLOW_LEAK_REPORT")  # for the notes: the figures as a file
    if path:
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")


# -- the servers --------------------------------------------------------------------------


@dataclass
class Locked:
    server: RedisServer
    url: str  # redis://:SECRET@host:port/0
    acl_url: str  # redis://canary:<SECRET2 encoded>@host:port/0
    query_url: str  # redis://host:port/0?password=SECRET
    unix_url: str  # unix:///...sock?db=0&password=SECRET
    admin: redis.Redis


def _userinfo(url: str, userinfo: str) -> str:
    return url.replace("redis://", f"redis://{userinfo}@", 1)


@pytest.fixture(scope="module")
def locked() -> Iterator[Locked]:
    directory = tempfile.mkdtemp(prefix="mdf-pw-", dir="/tmp")
    sock = os.path.join(directory, "redis.sock")
    # both TCP (most nodes) and a unix socket (for unix://...?password=)
    server = RedisServer(port=free_port(), unixsocket=sock, extra_args=("--requirepass", SECRET))
    server.start()
    admin = redis.Redis.from_url(_userinfo(server.url, f":{SECRET}"))
    try:
        admin.execute_command("ACL", "SETUSER", USER2, "on", f">{SECRET2}", "~*", "&*", "+@all")
        yield Locked(
            server=server,
            url=_userinfo(server.url, f":{SECRET}"),
            acl_url=_userinfo(server.url, f"{USER2}:{quote(SECRET2, safe='')}"),
            query_url=f"{server.url}?password={SECRET}",
            unix_url=f"unix://{sock}?db=0&password={SECRET}",
            admin=admin,
        )
    finally:
        admin.close()
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


def dump_redis(hay: Haystack, conn: redis.Redis, where: str) -> int:
    """Every key's value (by type), stream entries, groups, consumers and client names."""
    keys = 0
    for key in conn.scan_iter(count=1000):
        keys += 1
        kind = conn.type(key).decode()
        hay.add("redis keys", key)
        if kind == "string":
            hay.add("redis keys", conn.get(key))
        elif kind == "hash":
            hay.add("redis keys", repr(conn.hgetall(key)))
        elif kind == "list":
            hay.add("redis keys", repr(conn.lrange(key, 0, -1)))
        elif kind == "set":
            hay.add("redis keys", repr(conn.smembers(key)))
        elif kind == "zset":
            hay.add("redis keys", repr(conn.zrange(key, 0, -1, withscores=True)))
        elif kind == "stream":
            hay.add("redis keys", repr(conn.xrange(key)))
            for group in conn.xinfo_groups(key):
                hay.add("redis keys", repr(group))
                hay.add("redis keys", repr(conn.xinfo_consumers(key, group["name"])))
    hay.add("redis keys", repr(conn.client_list()), f"redis keys+clients ({where})")
    return keys


# -- waiting ------------------------------------------------------------------------------


def _state(node: Stream) -> str:
    return str(node.status()["state"])


def _note_node(hay: Haystack, node: Stream, what: str) -> None:
    """What a node says about itself: status, repr, str, label, description."""
    from mdflow.pictures.describe import describe

    if hasattr(node, "status"):
        hay.add("status()", repr(node.status()), f"status {what}")
    hay.add("repr/str", repr(node) + "\n" + str(node), f"repr {what}")
    hay.add("repr/str", repr(getattr(node, "str_list", None)))
    hay.add("repr/str", repr(describe(node)))


def _stop(*nodes: Stream) -> None:
    for node in nodes:
        with contextlib.suppress(Exception):
            node.stop()
    for node in nodes:
        wait_for(lambda n=node: _state(n) in ("stopped", "failed"), timeout=30, message="stopped")


# -- streams ------------------------------------------------------------------------------


def test_stream_nodes_and_dead_letters(locked, prefix, hay):
    """engine -> from_redis -> map -> to_redis, a poison entry dead-lettered, four URL forms."""
    inp, out = f"{prefix}in", f"{prefix}out"
    count = iter(range(10**6))
    pump = Stream.engine(inp, lambda: {"i": next(count)}, push_interval=0.02, redis_url=locked.url)

    def poison(data: dict) -> dict:
        if data["i"] == 3:  # the user's own error mentions where it was going (with a password)
            raise ValueError(f"poison entry {data['i']} for {locked.url}")
        return data

    outlet = Stream.from_redis(
        inp,
        group="g",
        start_id="0",
        block=0.1,
        max_deliveries=2,
        retry_delay=0.05,
        redis_url=locked.acl_url,
    )
    mapped = outlet.map(poison)
    writer = mapped.to_redis(out, redis_url=locked.query_url)
    side = mapped.to_redis(f"{prefix}side", redis_url=locked.unix_url)
    pump.start()
    outlet.start()
    try:
        wait_for(lambda: outlet.status()["dead_lettered"] >= 1, timeout=30, message="dead letter")
        wait_for(lambda: locked.admin.xlen(out) >= 20, timeout=30, message="20 written")
        for node, what in (
            (pump, "engine"),
            (outlet, "from_redis"),
            (writer, "to_redis"),
            (side, "to_redis unix"),
            (mapped, "map"),
        ):
            _note_node(hay, node, what)
    finally:
        _stop(pump, outlet)
    for node in (pump, outlet, writer, side):
        _note_node(hay, node, "stopped")
    letters = mdflow.list_dead_letters(inp, redis_url=locked.url)
    assert letters
    hay.add("dead letters", repr(letters), "list_dead_letters")
    dump_redis(hay, locked.admin, "streams")


# -- pub/sub ------------------------------------------------------------------------------


def test_pubsub_listener_publisher_scanner_and_cache(locked, prefix, hay):
    channel = f"{prefix}ticks:BTC"
    listener = Stream.from_pubsub(f"{prefix}ticks:*", redis_url=locked.query_url)
    seen = listener.sink_to_list()
    analyzer = HighLowOfDay(key_prefix=f"{prefix}hod", publish_key=f"{prefix}hod:alerts")
    scanner = Stream.scanner(f"{prefix}ticks:*", analyzer, redis_url=locked.acl_url)
    alerts = scanner.sink_to_list()
    cached = scanner.map(lambda r: r.data).to_cache(f"{prefix}last", redis_url=locked.unix_url)
    listener.start()
    scanner.start()
    publisher = Stream()
    pub = publisher.to_pubsub(channel, codec="json", redis_url=locked.url)
    try:
        wait_for(lambda: {_state(listener), _state(scanner)} == {"running"}, timeout=30)
        for price in (100, 101, 99.5, 102):
            publisher.emit({"symbol": "BTC", "price": price, "volume": 1.0})
        wait_for(lambda: len(seen) >= 4 and len(alerts) >= 3, timeout=30, message="alerts")
        for node, what in (
            (listener, "from_pubsub"),
            (scanner, "scanner"),
            (pub, "to_pubsub"),
            (cached, "to_cache"),
        ):
            _note_node(hay, node, what)
    finally:
        _stop(listener, scanner)
    hay.add("status()", repr(alerts))
    dump_redis(hay, locked.admin, "pubsub")


# -- collectors ---------------------------------------------------------------------------


def test_collector_and_manager_with_published_status(locked, prefix, hay):
    """A collector whose feed URL carries credentials, its manager publishing to Redis."""
    from tornado.ioloop import IOLoop

    name = f"{prefix}desk"

    async def body() -> dict:
        async with SimulatedExchange("BTC-USDT", interval=0.02) as ex:
            feed = ex.url.replace("ws://", f"ws://feeduser:{FEED_SECRET}@")
            node = Stream.collector(
                SimulatedExchangeCollector(feed, "BTC-USDT", ["ticker"]),
                asynchronous=True,
                loop=IOLoop.current(),
                heartbeat_interval=0.05,
                max_silence=2.0,
                backoff=(0.02, 0.1),
            )
            writer = node.map(lambda p: {"px": str(p.data["price"])}).to_redis(
                f"{prefix}ticks", redis_url=locked.acl_url
            )
            manager = CollectorManager(
                name, global_health_check_interval=0.05, restart_delay=0.2, redis_url=locked.url
            )
            manager.add_collector(node, name="sim")
            await manager.start()
            for _ in range(600):
                if locked.admin.xlen(f"{prefix}ticks") >= 5:
                    break
                await asyncio.sleep(0.02)
            ex.drop_connections()  # the collector reconnects: its errors are logged
            for _ in range(600):
                if (
                    node.get_status()["statistics"]["restarts"] >= 1
                    and node.state.value == "running"
                ):
                    break
                await asyncio.sleep(0.02)
            hay.add("status()", repr(node.get_status()), "collector get_status")
            hay.add("status()", repr(node.get_health_status()), "collector health")
            hay.add("status()", repr(manager.get_status()), "manager get_status")
            hay.add("repr/str", repr(node) + repr(manager) + repr(writer))
            for _ in range(600):  # published at every check
                status = published_status(name, locked.url)
                if status.get("sim", {}).get("status") == "running":
                    break
                await asyncio.sleep(0.02)
            await manager.stop()
            return status

    from streamtools import run

    status = run(body, timeout=90)
    assert status["sim"]["status"] == "running", status
    hay.add("status()", repr(status), "published_status")
    dump_redis(hay, locked.admin, "collectors")


# -- failures -----------------------------------------------------------------------------


async def _ping(url: str) -> None:
    conn = mdflow.client(url)
    try:
        await conn.ping()
    finally:
        await conn.aclose()


def test_wrong_password_and_bad_urls(locked, prefix, hay):
    """Nodes that fail for good, errors raised at once, URLs that do not even parse."""
    wrong = _userinfo(locked.server.url, f":{WRONG}")
    wrong_acl = _userinfo(locked.server.url, f"{USER2}:{quote(WRONG, safe='')}")
    nodes = {
        "engine": Stream.engine(f"{prefix}in", push_interval=0.05, redis_url=wrong),
        "from_redis": Stream.from_redis(f"{prefix}in", block=0.1, redis_url=wrong_acl),
        "from_pubsub": Stream.from_pubsub(
            f"{prefix}c", redis_url=f"{locked.server.url}?password={WRONG}"
        ),
        "scanner": Stream.scanner(f"{prefix}c", HighLowOfDay(), redis_url=wrong),
    }
    for node in nodes.values():
        node.start()
    try:
        for what, node in nodes.items():
            wait_for(lambda n=node: _state(n) == "failed", timeout=30, message=f"{what} failed")
            _note_node(hay, node, f"failed {what}")
    finally:
        _stop(*nodes.values())
    with pytest.raises(mdflow.NodeFailed) as failed:
        mdflow.run(Stream.from_redis(f"{prefix}in", block=0.1, redis_url=wrong), grace=1)
    hay.add(
        "exceptions",
        repr(failed.value) + str(failed.value) + repr(failed.value.failures),
        "NodeFailed",
    )

    writer_source = Stream()
    writer = writer_source.to_redis(f"{prefix}w", redis_url=wrong)
    with contextlib.suppress(Exception):
        writer_source.emit({"a": 1})
        writer.wait_written(5)
    _note_node(hay, writer, "failed to_redis")

    raw_url = f"redis://{USER2}:{SECRET2}@127.0.0.1:{locked.server.port}/0"  # not URL-encoded
    attempts = {
        "db(wrong)": lambda: mdflow.db(wrong).ping(),
        "client(wrong)": lambda: asyncio.run(_ping(wrong)),
        "inspect(wrong)": lambda: mdflow.inspect(wrong),
        "redis_url(raw)": lambda: mdflow.redis_url(raw_url),
        "redis_url(http)": lambda: mdflow.redis_url(f"http://u:{SECRET}@h/0"),
        "from_redis(raw)": lambda: Stream.from_redis("x", redis_url=raw_url),
        "list_dead_letters(wrong)": lambda: mdflow.list_dead_letters("x", redis_url=wrong),
        "published_status(wrong)": lambda: published_status("x", wrong),
    }
    for what, attempt in attempts.items():
        try:
            result = attempt()
        except Exception as exc:  # noqa: BLE001 - whatever it raises is looked at
            hay.add("exceptions", f"{type(exc).__name__}: {exc!s} {exc!r} {exc.args!r}", what)
            if exc.__cause__ is not None:
                hay.add("exceptions", repr(exc.__cause__))
            assert isinstance(exc, (MdflowError, ValueError)), (what, exc)
            if what == "redis_url(raw)":  # '/' in the password: the URL breaks, and says why
                assert "percent-encoded" in str(exc), exc
        else:
            hay.add("exceptions", repr(result), what)


def test_redis_goes_away_mid_flow(redis_factory, prefix, hay):
    """Kill a password-protected server under running nodes: reconnect warnings, then recovery."""
    server = redis_factory(extra_args=("--requirepass", SECRET))
    url = _userinfo(server.url, f":{SECRET}")
    inp = f"{prefix}in"
    pump = Stream.engine(inp, lambda: {"px": 1.0}, push_interval=0.02, redis_url=url)
    outlet = Stream.from_redis(inp, group="g", start_id="0", block=0.1, redis_url=url)
    outlet.to_redis(f"{prefix}out", redis_url=url)
    listener = Stream.from_pubsub(f"{prefix}c", redis_url=url)
    nodes = (pump, outlet, listener)
    for node in nodes:
        node.start()
    try:
        wait_for(lambda: all(_state(n) == "running" for n in nodes), timeout=30)
        wait_for(lambda: outlet.status()["acked"] >= 5, timeout=30, message="flowing")
        before = hay.levels["WARNING"] + hay.levels["ERROR"]
        server.kill()
        wait_for(
            lambda: hay.levels["WARNING"] + hay.levels["ERROR"] > before,
            timeout=30,
            message="a warning about the lost connection",
        )
        wait_for(
            lambda: all(
                n.status().get("reconnects", 0)
                or _state(n) == "reconnecting"
                or n.status().get("errors", 0)
                for n in nodes
            ),
            timeout=30,
            message="every node noticed",
        )
        for node in nodes:
            _note_node(hay, node, "reconnecting")
        server.start()
        wait_for(lambda: all(_state(n) == "running" for n in nodes), timeout=60, message="back")
        with redis.Redis.from_url(url) as conn:
            wait_for(lambda: conn.exists(f"{prefix}out"), timeout=60, message="writing again")
            for node in nodes:
                _note_node(hay, node, "recovered")
            dump_redis(hay, conn, "outage")
    finally:
        _stop(*nodes)


# -- pictures and the dashboard -----------------------------------------------------------


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, str(response.headers), response.read()
    finally:
        conn.close()


def _events(port: int, count: int) -> tuple[str, list[str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", "/events")
        response = conn.getresponse()
        assert response.status == 200
        events: list[str] = []
        while len(events) < count:
            line = response.readline().decode("utf-8")
            if not line:
                break
            if line.startswith("data: "):
                events.append(line[6:])
        return str(response.headers), events
    finally:
        conn.close()


def fetch_dashboard(hay: Haystack, port: int, what: str, events: int = 2) -> dict:
    """The page, its assets, the snapshot and a few events; everything goes into ``hay``."""
    for path in ("/", "/static/dashboard.js", "/static/dashboard.css", "/snapshot.json"):
        status, headers, body = _get(port, path)
        assert status == 200, (path, status)
        hay.add("http", headers)
        hay.add("http", body, f"http {what} {path}")
    snapshot = json.loads(body)
    headers, payloads = _events(port, events)
    hay.add("http", headers)
    for payload in payloads:
        hay.add("http", payload, f"http {what} /events")
    assert len(payloads) == events
    return snapshot


def test_pictures_status_keys_and_dashboard(locked, prefix, hay, tmp_path):
    from mdflow.pictures.dashboard import snapshot_html
    from mdflow.pictures.topology import topology

    inp = f"{prefix}in"
    pump = Stream.engine(inp, lambda: {"px": 1.0}, push_interval=0.02, redis_url=locked.url)
    outlet = Stream.from_redis(inp, group="pics", start_id="0", block=0.1, redis_url=locked.acl_url)
    outlet.map(lambda r: r).to_redis(f"{prefix}out", redis_url=locked.query_url)
    listener = Stream.from_pubsub(f"{prefix}c", redis_url=locked.unix_url)
    listener.to_cache(f"{prefix}cache", redis_url=locked.url)
    nodes = [pump, outlet, listener]
    for node in nodes:
        node.start()
    servers = []
    try:
        wait_for(lambda: outlet.status()["acked"] >= 5, timeout=30, message="flowing")
        wait_for(
            lambda: list(locked.admin.scan_iter("mdflow:topology:*")),
            timeout=30,
            message="a status key",
        )
        # the pictures, as text and rendered
        for status in (False, True):
            hay.add("pictures", mdflow.to_dot(nodes, status=status), "to_dot")
            hay.add("pictures", mdflow.to_mermaid(nodes, status=status), "to_mermaid")
            hay.add("pictures", json.dumps(topology(nodes, status=status), default=str), "topology")
        picture = mdflow.visualize(nodes, str(tmp_path / "p.svg"), format="svg", status=True)
        hay.add("pictures", picture.data, "visualize svg")
        hay.add("pictures", (tmp_path / "p.svg").read_bytes())
        hay.add(
            "pictures",
            repr(picture) + str(picture._repr_svg_() if hasattr(picture, "_repr_svg_") else ""),
        )
        outlet.visualize(str(tmp_path / "streamz.svg"))  # streamz's own method, mdflow's picture
        hay.add("pictures", (tmp_path / "streamz.svg").read_bytes(), "Stream.visualize")
        png = mdflow.visualize(outlet, format="png", status=True)
        hay.add("pictures", png.data, "visualize png")
        hay.add(
            "pictures",
            repr(getattr(outlet, "_repr_mimebundle_", lambda **k: None)()),
            "jupyter repr",
        )
        view = mdflow.inspect(locked.url)
        hay.add("pictures", json.dumps(view, default=str), "inspect() view")
        hay.add("pictures", repr(view) + view.svg(), "inspect() svg")
        snap = view.snapshot()
        hay.add("pictures", json.dumps(snap, default=str) + snapshot_html(snap), "snapshot_html")
        dump_redis(hay, locked.admin, "status keys")
        # the web dashboard: of this graph, of the system, and of a Redis that refuses us
        for node, url, what in (
            (outlet, None, "node"),
            (None, locked.url, "system"),
            (None, _userinfo(locked.server.url, f":{WRONG}"), "wrong password"),
        ):
            server = mdflow.serve_dashboard(node, port=0, redis_url=url, interval=0.2)
            servers.append(server)
            hay.add("repr/str", repr(server))
            snapshot = fetch_dashboard(hay, server.port, f"dashboard {what}")
            if what == "wrong password":
                assert snapshot["errors"], snapshot
            else:
                assert snapshot["nodes"], snapshot
    finally:
        for server in servers:
            server.stop()
        _stop(*nodes)


# -- the command line ---------------------------------------------------------------------

GRAPH_SPEC = """
from streamz import Stream

pump = Stream.engine({inp!r}, push_interval=1, redis_url={url!r})
source = Stream.from_redis({inp!r}, group="g", redis_url={acl!r})
pipeline = [pump, source]
source.map(str).to_redis({out!r}, redis_url={query!r})
"""

RUN_SPEC = """
from streamz import Stream

pump = Stream.engine({inp!r}, lambda: {{"px": 1.0}}, push_interval=0.05)
source = Stream.from_redis({inp!r}, group="run", start_id="0", block=0.1)
source.to_redis({out!r})
pipeline = [pump, source]
"""


def _spawn(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mdflow.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )


def _read_url(process: subprocess.Popen, stream: str, seen: list[str]) -> str:
    """The dashboard's address from the first line of ``stream`` that names one."""
    pipe = getattr(process, stream)
    for _ in range(200):
        line = pipe.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if found:
            return found.group(1)
    pytest.fail(f"no dashboard URL from {process.args}: {seen}")


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def test_command_line(locked, prefix, hay, tmp_path, isolated_env):
    inp, out = f"{prefix}in", f"{prefix}out"
    wrong = _userinfo(locked.server.url, f":{WRONG}")
    run_spec = tmp_path / "run_flow.py"
    run_spec.write_text(textwrap.dedent(RUN_SPEC.format(inp=f"{prefix}run", out=f"{prefix}ran")))
    graph_spec = tmp_path / "graph_flow.py"
    graph_spec.write_text(
        textwrap.dedent(
            GRAPH_SPEC.format(
                inp=inp, out=out, url=locked.url, acl=locked.acl_url, query=locked.query_url
            )
        )
    )
    # the long-running commands, in processes of their own, all at once (they take seconds)
    processes = {
        "run": _spawn(
            "-v", "run", str(run_spec), "--url", locked.url, "--dashboard", "0", env=isolated_env
        ),
        "dashboard": _spawn(
            "-v",
            "dashboard",
            "--port",
            "0",
            "--interval",
            "0.2",
            "--url",
            locked.acl_url,
            env=isolated_env,
        ),
        "run wrong": _spawn("run", str(run_spec), "--url", wrong, env=isolated_env),
        "dashboard wrong": _spawn("dashboard", "--port", "0", "--url", wrong, env=isolated_env),
    }
    outputs: dict[str, list[str]] = {name: [] for name in processes}
    try:
        # data for the short commands: entries, a dead letter
        for i in range(5):
            locked.admin.xadd(inp, {"i": str(i)})
        outlet = Stream.from_redis(
            inp,
            group="cli",
            start_id="0",
            block=0.1,
            max_deliveries=1,
            retry_delay=0.01,
            redis_url=locked.url,
        )
        failing = outlet.map(lambda x: 1 / 0)  # held: streamz keeps downstreams weakly
        outlet.start()
        try:
            wait_for(lambda: outlet.status()["dead_lettered"] >= 5, timeout=30, message="dead")
            hay.add("repr/str", repr(failing))
        finally:
            _stop(outlet)

        runner = CliRunner()
        every_url = {
            "password": locked.url,
            "ACL user": locked.acl_url,
            "?password=": locked.query_url,
            "unix ?password=": locked.unix_url,
            "wrong password": wrong,
        }
        commands = {
            "doctor": ["doctor"],
            "doctor --json": ["doctor", "--json"],
            "inspect": ["inspect"],
            "inspect --json": ["inspect", "--json"],
            "tail": ["tail", inp, "-n", "3", "--max", "3"],
            "tail --json": ["tail", inp, "--from-start", "--max", "5", "--json"],
            "dead-letters": ["dead-letters", inp],
            "dead-letters --json": ["dead-letters", inp, "--json"],
        }
        invocations = [
            (f"{what} ({kind})", [*args, "--url", url], int(url == wrong))
            for kind, url in every_url.items()
            for what, args in commands.items()
        ]
        for n, (kind, url) in enumerate(every_url.items()):  # a group each: one reader gets it
            group = ["--group", f"tail{n}", "--from-start", "--max", "1", "--url", url]
            invocations.append((f"tail --group ({kind})", ["tail", inp, *group], int(url == wrong)))
        replay = ["dead-letters", inp, "--replay", "--yes", "--json", "--url", locked.url]
        invocations += [  # graph takes the URLs from the pipeline file (nothing connects)
            ("graph dot", ["graph", str(graph_spec)], 0),
            ("graph mmd", ["graph", str(graph_spec), "--format", "mmd"], 0),
            ("graph json", ["graph", str(graph_spec), "--json"], 0),
            ("graph svg", ["graph", str(graph_spec), "-o", str(tmp_path / "g.svg")], 0),
            ("dead-letters --replay", replay, 0),
        ]
        for label, args, code in invocations:
            result = runner.invoke(cli, ["-v", *args])
            hay.add("cli output", result.stdout + result.stderr, f"cli {label}")
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                hay.add("exceptions", repr(result.exception))
            assert result.exit_code == code, (label, result.output, result.exception)
        hay.add("pictures", (tmp_path / "g.svg").read_bytes(), "cli graph svg file")

        # the long-running ones: pages served, then stopped
        address = _read_url(processes["run"], "stderr", outputs["run"])
        wait_for(lambda: locked.admin.exists(f"{prefix}ran"), timeout=60, message="run writes")
        fetch_dashboard(hay, _port(address), "run --dashboard")
        address = _read_url(processes["dashboard"], "stdout", outputs["dashboard"])
        fetch_dashboard(hay, _port(address), "mdflow dashboard")
        for name in ("run", "dashboard"):
            processes[name].send_signal(signal.SIGTERM)
        results = {name: finish(process, timeout=90) for name, process in processes.items()}
    finally:
        for process in processes.values():
            if process.returncode is None:  # not finished: killed, its pipes closed
                process.kill()
                process.communicate()
    said = {}
    for name, (code, stdout, stderr) in results.items():
        said[name] = "".join(outputs[name]) + stdout + stderr
        hay.add("subprocess output", said[name], f"cli {name}")
        assert code == (1 if "wrong" in name else 0), (name, code, stderr)
    # what was scanned is what a person would read: masked URLs, status lines, the reasons
    assert "using Redis at redis://:***@127.0.0.1:" in said["run"], said["run"]
    assert f"from_redis<{prefix}run> stopped" in said["run"]  # the last status line
    assert "refused the credentials" in said["run wrong"]
    assert "(Redis redis://canary:***@127.0.0.1:" in said["dashboard"]
    assert "refused the credentials" in said["dashboard wrong"]
    dump_redis(hay, locked.admin, "cli")


# -- mask_url itself ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://u:pw@h:6379/0", "redis://u:***@h:6379/0"),
        ("redis://:pw@h", "redis://:***@h"),
        ("rediss://user:pw@h:6380/1", "rediss://user:***@h:6380/1"),
        ("redis://h:6379/0?password=pw&db=1", "redis://h:6379/0?password=***&db=1"),
        ("unix:///tmp/r.sock?db=0&password=pw", "unix:///tmp/r.sock?db=0&password=***"),
        ("redis://h/0?PASSWORD=pw", "redis://h/0?PASSWORD=***"),
        ("redis://u:p%40ss%2Fw@h/0", "redis://u:***@h/0"),
        # not encoded: redis-py reads the userinfo up to the last '@'
        ("redis://u:p@ss@h:6379/0", "redis://u:***@h:6379/0"),
        # what urllib.parse.quote(password) gives: '/' is kept
        ("redis://u:a%3Ab/c%40d@h/0", "redis://u:***@h/0"),
        ("redis://u:pa?ss@h", "redis://u:***@h"),
        ("redis://u:pa#ss@h", "redis://u:***@h"),
        ("redis://u@h:6379/0?password=pw", "redis://u@h:6379/0?password=***"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("unix:///run/redis.sock?db=2", "unix:///run/redis.sock?db=2"),
    ],
)
def test_mask_url_forms(url, masked):
    assert mask_url(url) == masked


def test_mask_text_in_sentences_and_reprs():
    text = (
        "from redis://u:pw1@h1/0 to 'redis://:pw2@h2:1/0', "
        '"rediss://x:p@w3@h3", unix:///s.sock?password=pw4&db=0 (redis://h4:6379/0 is fine)'
    )
    masked = mask_text(text)
    for secret in ("pw1", "pw2", "p@w3", "pw4"):
        assert secret not in masked, masked
    assert "redis://h4:6379/0 is fine" in masked
    assert masked.count("***") == 4


def test_log_records_are_masked_tracebacks_included(caplog):
    """Text mdflow did not write (a user's exception) is masked in mdflow's records only."""
    url = f"redis://u:{SECRET}@h:6379/0"
    caplog.set_level(logging.DEBUG)
    try:
        raise RuntimeError(f"cannot reach {url}")
    except RuntimeError as exc:
        error = exc
    for name in ("mdflow.streams.outlet", "streamz.core", "tornado.application", "asyncio"):
        logging.getLogger(name).error("failed on %s", url, exc_info=error)
    logging.getLogger("myapp").error("failed on %s", url)  # not ours: left alone
    mine = [r for r in caplog.records if r.name != "myapp"]
    assert len(mine) == 4
    for record in mine:
        text = logging.Formatter().format(record)
        assert SECRET not in text, text
        assert text.count("redis://u:***@h:6379/0") == 2, text  # the message and the traceback
        assert "RuntimeError: cannot reach" in text
    other = next(r for r in caplog.records if r.name == "myapp")
    assert SECRET in other.getMessage()


def test_the_dashboard_masks_whatever_its_provider_returns():
    """A provider (another process's status, a stream named after a URL...) cannot leak."""
    from mdflow.pictures.web import serve_in_thread

    url = f"redis://u:{SECRET}@h:6379/0"

    async def provider() -> dict:
        return {
            "title": url,
            "nodes": [{"id": "n1", "name": f"from_redis<{url}>", "text": f"?password={SECRET}"}],
            "streams": [{"name": url, "length": 1, "groups": []}],
            "errors": [f"Authorization: Basic {SECRET}"],
            url: url,
        }

    hay = Haystack()
    with serve_in_thread(provider, interval=0.2, title=f"board of {url}") as server:
        snapshot = fetch_dashboard(hay, server.port, "provider with passwords")
    assert not hay.leaks, hay.leaks
    assert snapshot["title"] == "redis://u:***@h:6379/0"
    TOTAL.merge(hay)
