"""The live dashboard: its HTTP routes without a browser, and the page in a real headless one.

The browser test drives Debian's ``chromium`` through ``chromedriver`` with Selenium. It
is skipped when they are not on PATH, unless ``MDFLOW_REQUIRE_BROWSER=1`` (CI sets it):
then their absence fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import re
import shutil
import socket
import struct
import time
from collections.abc import Iterator

import pytest
from helpers import wait_for
from streamtools import run
from tornado.httpclient import AsyncHTTPClient

from mdflow.pictures import web, web_routes
from mdflow.pictures.web import HEADLESS_CHROMIUM_FLAGS, DashboardServer, serve_in_thread

SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="320" height="120" viewBox="0 0 320 120">'
    '<g id="node-n1" class="node"><rect x="10" y="10" width="140" height="40" rx="6" '
    'fill="#e8f5e9" stroke="#2e7d32"/><text x="20" y="35">from_redis&lt;ticks&gt;</text></g>'
    '<g id="node-n2" class="node"><rect x="170" y="70" width="140" height="40" rx="6" '
    'fill="#ffebee" stroke="#c62828"/><text x="180" y="95">sink</text></g></svg>'
)


class CountingProvider:
    """A provider whose counters grow on every call, like a live graph's."""

    def __init__(self, errors: list[str] | None = None) -> None:
        self.calls = 0
        self.errors = errors or []

    async def __call__(self) -> dict:
        self.calls += 1
        n = self.calls
        return {
            "time": time.time(),
            "title": "mdflow · 127.0.0.1:6379/0",
            "svg": SVG,
            "nodes": [
                {
                    "id": "n1",
                    "name": "from_redis<ticks>",
                    "kind": "outlet",
                    "state": "running",
                    "health": "ok",
                    "rate": 800.0 + n,
                    "counts": {"read": 100 * n, "acked": 100 * n - 2, "errors": 0},
                    "text": f"{800 + n}/s · lag 3",
                },
                {
                    "id": "n2",
                    "name": "sink",
                    "kind": "sink",
                    "state": "failing",
                    "health": "failing",
                    "rate": 0.0,
                    "counts": {"read": n, "errors": n},
                    "text": "ZeroDivisionError",
                },
            ],
            "streams": [
                {
                    "name": "ticks",
                    "length": 1000 + n,
                    "last_id": f"1764068000123-{n}",
                    "groups": [
                        {"name": "g", "lag": 3, "pending": 5, "consumers": 1},
                        {"name": "audit", "lag": 0, "pending": 0, "consumers": 2},
                    ],
                    "dead_letters": 2,
                },
                {"name": "quiet", "length": 0, "last_id": "0-0", "groups": [], "dead_letters": 0},
            ],
            "graphs": [{"id": "vm:1234:ab12", "host": "vm", "pid": 1234, "nodes": 2, "age": 0.4}],
            "errors": list(self.errors),
        }


@contextlib.contextmanager
def serving(provider, **kwargs) -> Iterator[DashboardServer]:
    server = serve_in_thread(provider, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def get(server: DashboardServer, path: str, headers: dict | None = None):
    """(status, headers, body) of one GET, on a connection closed afterwards."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def read_events(server: DashboardServer, count: int, timeout: float = 10.0) -> list[str]:
    """The first ``count`` events (``data:`` payloads and ``: ping`` comments) of /events."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request("GET", "/events")
        response = conn.getresponse()
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events: list[str] = []
        deadline = time.monotonic() + timeout
        while len(events) < count and time.monotonic() < deadline:
            line = response.readline().decode("utf-8").rstrip("\n")
            if line.startswith("data: "):
                events.append(line[len("data: ") :])
            elif line.startswith(":"):
                events.append(line)
        return events
    finally:
        conn.close()


# -- without a browser ------------------------------------------------------------------


def test_page_and_assets_have_security_headers_and_nothing_external():
    provider = CountingProvider()
    with serving(provider, title='<b>"ops"</b>', interval=0.5) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/"
        status, headers, page = get(server, "/")
        assert status == 200
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "http" not in csp and "*" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "Server" not in headers
        text = page.decode("utf-8")
        assert "&lt;b&gt;&quot;ops&quot;&lt;/b&gt;" in text and '<b>"ops"' not in text
        assert 'data-interval="0.5"' in text
        for element in ("age", "picture", "nodes", "streams", "errors"):
            assert f'id="{element}"' in text
        assert "{{" not in text
        bodies = {"/": text}
        for asset, kind in [("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")]:
            status, headers, body = get(server, f"/static/{asset}")
            assert status == 200 and headers["Content-Type"].startswith(kind)
            assert headers["X-Content-Type-Options"] == "nosniff"
            bodies[asset] = body.decode("utf-8")
        for name, body in bodies.items():
            # No address of another host anywhere: the page works offline. The only URL
            # is the SVG namespace, which is a name, not something fetched.
            urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.\w+", body))
            assert urls <= {"http://www.w3.org"}, f"{name} refers to {urls}"
        assert get(server, "/static/web.py")[0] == 404
        assert get(server, "/../web.py")[0] in (400, 404)


def test_page_files_are_package_data():
    import importlib.resources

    folder = importlib.resources.files("mdflow.pictures") / "static"
    for name in ("dashboard.html", "dashboard.js", "dashboard.css"):
        assert (folder / name).is_file()


def test_snapshot_json_is_the_providers_snapshot():
    provider = CountingProvider(errors=["a warning"])
    with serving(provider, interval=60) as server:
        status, headers, body = get(server, "/snapshot.json")
        assert status == 200
        assert headers["Content-Type"] == "application/json; charset=utf-8"
        assert headers["Cache-Control"] == "no-store"
        snapshot = json.loads(body)
        expected = provider.calls  # the snapshot taken at start (interval=60: not retaken)
        assert expected == 1
        assert snapshot["nodes"][0]["counts"]["read"] == 100
        assert snapshot["svg"] == SVG and snapshot["errors"] == ["a warning"]
        assert set(snapshot) == {"time", "title", "svg", "nodes", "streams", "graphs", "errors"}


def test_events_deliver_changing_snapshots_and_disconnects_quietly(caplog):
    caplog.set_level(logging.DEBUG)
    provider = CountingProvider()
    with serving(provider, interval=0.1) as server:
        events = read_events(server, 3)
        assert len(events) == 3
        snapshots = [json.loads(e) for e in events]
        times = [s["time"] for s in snapshots]
        reads = [s["nodes"][0]["counts"]["read"] for s in snapshots]
        assert times == sorted(times) and len(set(times)) == 3
        assert reads == sorted(reads) and len(set(reads)) == 3
        wait_for(lambda: server.clients == 0, message="the server to notice the disconnect")
        # Without a page, the provider is left alone.
        calls = provider.calls
        time.sleep(0.4)
        assert provider.calls == calls
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]


def test_events_ping_when_quiet():
    with serving(CountingProvider(), interval=30, ping_interval=0.1) as server:
        events = read_events(server, 3)
        assert json.loads(events[0])["nodes"][0]["id"] == "n1"
        assert events[1:] == [": ping", ": ping"]


def test_provider_failure_is_shown_logged_once_and_survived(caplog):
    calls = 0

    async def provider() -> dict:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"time": 1.0, "nodes": [{"id": "n1"}], "errors": []}
        raise ConnectionError("Redis unreachable at redis://127.0.0.1:1")

    with serving(provider, interval=0.05) as server:
        events = [json.loads(e) for e in read_events(server, 4)]
        status, _, body = get(server, "/snapshot.json")
        assert status == 200
        failed = json.loads(body)
        for snapshot in (events[-1], failed):
            # The last good snapshot, with its own (old) time, and the failure beside it.
            assert snapshot["time"] == 1.0 and snapshot["nodes"] == [{"id": "n1"}]
            assert snapshot["errors"] == [
                "snapshot provider failed: ConnectionError: Redis unreachable at redis://127.0.0.1:1"
            ]
        assert get(server, "/")[0] == 200
        assert calls >= 4
    warnings = [
        r for r in caplog.records if r.name == web.__name__ and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1 and "Redis unreachable" in warnings[0].getMessage()


def test_provider_failure_before_any_snapshot_and_bad_values(caplog):
    async def wrong() -> dict:
        return 42  # type: ignore[return-value]

    with serving(wrong, interval=60, title="ops") as server:
        snapshot = json.loads(get(server, "/snapshot.json")[2])
        assert snapshot["errors"] == [
            "snapshot provider failed: TypeError: snapshot provider returned int, not a dict"
        ]
        assert snapshot["nodes"] == [] and snapshot["title"] == "ops"

    async def nan() -> dict:
        return {"time": 2.0, "nodes": [{"id": "n", "rate": float("nan")}]}

    with serving(nan, interval=60) as server:
        snapshot = json.loads(get(server, "/snapshot.json")[2])  # strict JSON: NaN is null
        assert snapshot["nodes"][0]["rate"] is None and "errors" not in snapshot


def test_slow_pages_get_a_bounded_queue():
    async def body():
        client = web_routes.Client(maxlen=3)
        for i in range(10):
            client.push(str(i))
        assert list(client.queue) == ["7", "8", "9"] and client.dropped == 7

    run(body)


def test_non_loopback_host_is_refused_unless_allowed():
    with pytest.raises(ValueError, match="allow_remote"):
        DashboardServer(CountingProvider(), host="0.0.0.0")
    with pytest.raises(ValueError, match="allow_remote"):
        DashboardServer(CountingProvider(), host="example.com")
    DashboardServer(CountingProvider(), host="0.0.0.0", allow_remote=True)  # not started
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert web._is_loopback(host), host


def test_other_host_headers_are_refused():
    with serving(CountingProvider()) as server:
        assert get(server, "/", {"Host": "attacker.example:80"})[0] == 403
        assert get(server, "/snapshot.json", {"Host": f"localhost:{server.port}"})[0] == 200


def test_stop_releases_the_port_and_ends_streams():
    with serving(CountingProvider(), interval=0.1) as server:
        port = server.port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/events")
        response = conn.getresponse()
        assert response.readline().startswith(b"retry:")
        wait_for(lambda: server.clients == 1, message="the page to connect")
        server.stop()
        assert server._thread is not None and not server._thread.is_alive()
        response.read()  # the stream ends rather than hanging
        conn.close()
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
            pass
    with serving(CountingProvider(), port=port) as again:
        assert again.port == port and get(again, "/")[0] == 200
    server.stop()  # a second stop is harmless


def test_start_on_the_running_loop():
    with pytest.raises(RuntimeError, match="serve_in_thread"):
        DashboardServer(CountingProvider()).start()

    async def body():
        provider = CountingProvider()
        server = DashboardServer(provider, interval=0.05).start()
        client = AsyncHTTPClient(force_instance=True)
        chunks: list[bytes] = []
        try:
            page = await client.fetch(server.url)
            assert page.code == 200 and b'id="picture"' in page.body
            snapshot = json.loads((await client.fetch(server.url + "snapshot.json")).body)
            assert snapshot["nodes"][0]["id"] == "n1"

            def more() -> bool:
                return b"".join(chunks).count(b"data: ") >= 3

            stream = asyncio.ensure_future(
                client.fetch(
                    server.url + "events", streaming_callback=chunks.append, raise_error=False
                )
            )
            deadline = time.monotonic() + 10
            while not more() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert more()
            server.stop()  # ends the stream: the fetch completes
            await asyncio.wait_for(stream, 10)
            await server.wait_closed()
        finally:
            client.close()
            server.stop()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", server.port)

    run(body)


# -- in a real browser ------------------------------------------------------------------


def _browser_or_skip() -> tuple[str, str]:
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    missing = [
        name for name, path in [("chromium", chromium), ("chromedriver", driver)] if not path
    ]
    try:
        import selenium  # noqa: F401 - only: is it installed?
    except ImportError:
        missing.append("selenium (the dev extra)")
    if missing:
        reason = (
            f"{' and '.join(missing)} not found "
            "(Debian: apt-get install chromium chromium-driver; pip install -e '.[dev]')"
        )
        if os.environ.get("MDFLOW_REQUIRE_BROWSER") == "1":
            pytest.fail(f"MDFLOW_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    assert chromium and driver
    return chromium, driver


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.slow
def test_page_shows_live_numbers_in_a_headless_browser(tmp_path, monkeypatch, caplog):
    chromium, driver_path = _browser_or_skip()
    caplog.set_level(logging.WARNING)
    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager go online
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        *HEADLESS_CHROMIUM_FLAGS,
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=driver_path, log_output=str(tmp_path / "chromedriver.log"))

    provider = CountingProvider(errors=["Redis unreachable at redis://127.0.0.1:1"])
    read = '#nodes tr[data-id="n1"] [data-field="counts.read"]'
    with serving(provider, interval=0.25) as server:
        driver = webdriver.Chrome(service=service, options=options)
        try:
            driver.get(server.url)
            wait = WebDriverWait(driver, 15, poll_frequency=0.05)

            def text_of(selector: str) -> str:
                return driver.execute_script(
                    "var e = document.querySelector(arguments[0]);return e ? e.textContent : '';",
                    selector,
                )

            first = wait.until(lambda d: text_of(read))
            changed = wait.until(lambda d: (t := text_of(read)) != first and t)
            assert int(changed.replace(",", "")) > int(first.replace(",", ""))

            # The picture, the tables, the header and the errors.
            assert driver.execute_script(
                "return !!document.querySelector('#picture svg g#node-n1')"
            )
            assert text_of('#nodes tr[data-id="n1"] td.name') == "from_redis<ticks>"
            assert driver.execute_script(
                "return document.querySelector('#nodes tr[data-id=\"n2\"] .dot')"
                ".classList.contains('h-failing')"
            )
            lag = '#streams tr[data-id="ticks"] tr[data-id="g"] [data-field="lag"]'
            assert text_of(lag) == "3"
            dead = '#streams tr[data-id="ticks"] [data-field="dead_letters"]'
            assert driver.execute_script(
                "return document.querySelector(arguments[0]).classList.contains('bad')", dead
            )
            assert "Redis unreachable" in text_of("#errors")
            assert text_of("#age").endswith("ago")
            assert wait.until(
                lambda d: d.execute_script(
                    "return document.getElementById('dot').classList.contains('live')"
                )
            )
            stamp = float(
                driver.find_element("tag name", "body").get_attribute("data-snapshot-time")
            )
            assert abs(stamp - time.time()) < 30

            shot = tmp_path / "dashboard.png"
            assert driver.save_screenshot(str(shot))
            data = shot.read_bytes()
            width, height = _png_size(data)
            assert width >= 800 and height >= 600
            assert len(data) > 20_000, "the screenshot looks blank"

            problems = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            assert problems == [], problems  # e.g. a CSP violation or a script error
        finally:
            driver.quit()
        # The browser went away: the server noticed, quietly.
        wait_for(lambda: server.clients == 0, message="the server to notice the browser left")
    noisy = [r for r in caplog.records if r.name.startswith(("tornado", "mdflow"))]
    assert noisy == [], [r.getMessage() for r in noisy]
