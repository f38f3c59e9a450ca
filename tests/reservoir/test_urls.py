"""Where Redis is: resolution order, validation, masking, the embedded server."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import pytest
import redis

import mdflow
from mdflow.errors import ConfigError, MdflowError
from mdflow.reservoir import urls
from mdflow.reservoir.shared import SharedServer, shared_server_status, stop_shared_server


def test_explicit_argument_wins(monkeypatch):
    monkeypatch.setenv("MDFLOW_REDIS_URL", "redis://env-mdflow:1/0")
    monkeypatch.setenv("REDIS_URL", "redis://env-redis:1/0")
    assert mdflow.redis_url("redis://explicit:6379/3") == "redis://explicit:6379/3"


def test_mdflow_env_before_redis_env(monkeypatch):
    monkeypatch.setenv("MDFLOW_REDIS_URL", "redis://env-mdflow:1/0")
    monkeypatch.setenv("REDIS_URL", "redis://env-redis:1/0")
    assert mdflow.redis_url() == "redis://env-mdflow:1/0"
    monkeypatch.delenv("MDFLOW_REDIS_URL")
    assert mdflow.redis_url() == "redis://env-redis:1/0"


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost",
        "redis://localhost:6380/2",
        "rediss://user:pw@cache.example.com:6380/0",
        "unix:///tmp/redis.sock",
        "unix:///tmp/redis.sock?db=3",
        "redis://:pw@10.0.0.1:6379?db=4",
    ],
)
def test_accepts_supported_schemes(url):
    assert mdflow.redis_url(url) == url


@pytest.mark.parametrize(
    "url, match",
    [
        ("http://localhost:6379", "must start with redis://, rediss:// or unix://"),
        ("redis://:pw@host:notaport/0", "invalid port"),
        ("redis://host:6379/abc", "database number"),
        ("unix://", "socket path"),
        ("", "non-empty str"),
        (42, r"got 42 \(int\)"),
    ],
)
def test_rejects_bad_urls_with_clear_message(url, match):
    with pytest.raises(ConfigError, match=match):
        mdflow.redis_url(url)


def test_config_error_is_value_error():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, MdflowError)


@pytest.mark.parametrize(
    "url, masked",
    [
        ("redis://alice:s3cret@cache:6379/0", "redis://alice:***@cache:6379/0"),
        ("rediss://:s3cret@cache:6380", "rediss://:***@cache:6380"),
        ("redis://alice@cache:6379", "redis://alice@cache:6379"),
        ("unix:///run/r.sock?db=1&password=s3cret", "unix:///run/r.sock?db=1&password=***"),
        ("redis://cache:6379/0", "redis://cache:6379/0"),
    ],
)
def test_mask_url(url, masked):
    assert mdflow.mask_url(url) == masked


def test_password_never_logged_or_raised(caplog):
    url = "redis://bob:topsecret@host:99999/0"
    with pytest.raises(ConfigError) as info:
        mdflow.redis_url(url)
    assert "topsecret" not in str(info.value)
    caplog.set_level(logging.INFO, logger="mdflow")
    mdflow.redis_url("redis://bob:topsecret@otherhost:6379/0")
    assert "bob:***@otherhost" in caplog.text
    assert "topsecret" not in caplog.text


def test_mask_text_scrubs_urls_inside_messages():
    text = "failed on redis://u:pw1@a:1/0 and rediss://:pw2@b:2 (retrying)"
    assert urls.mask_text(text) == "failed on redis://u:***@a:1/0 and rediss://:***@b:2 (retrying)"


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_embedded_server_starts_on_first_use_and_stops_at_exit(isolated_env):
    code = """
        import mdflow, redis
        url = mdflow.redis_url()
        assert url.startswith("unix://"), url
        r = redis.Redis.from_url(url)
        r.set("k", "v")
        assert r.get("k") == b"v"
        assert mdflow.redis_url() == url          # one per process
        print(url)
    """
    result = _run(code, isolated_env)
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip()
    socket_path = url[len("unix://") :].split("?")[0]
    assert not os.path.exists(socket_path), "embedded server (or its dir) outlived the process"
    with pytest.raises(redis.ConnectionError):
        redis.Redis(unix_socket_path=socket_path).ping()


def test_embedded_server_persists_with_embedded_dir(isolated_env, server_dir):
    env = dict(isolated_env, MDFLOW_EMBEDDED_DIR=os.path.join(server_dir, "data"))
    write = _run(
        """
        import mdflow
        mdflow.db().xadd("persisted", {"a": "1"})
    """,
        env,
    )
    assert write.returncode == 0, write.stderr
    status = shared_server_status(os.path.join(server_dir, "data"))
    assert status.running, "the shared embedded server stopped when its starter exited"
    read = _run(
        """
        import mdflow
        print(mdflow.db().xlen("persisted"))
    """,
        env,
    )
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == "1"
    assert shared_server_status(os.path.join(server_dir, "data")).pid == status.pid  # reused
    # it survives a restart too (append-only file)
    assert stop_shared_server(os.path.join(server_dir, "data"))
    again = _run(
        """
        import mdflow
        print(mdflow.db().xlen("persisted"))
    """,
        env,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "1"


def test_embedded_server_in_process_reuses_shared_server(monkeypatch, server_dir):
    monkeypatch.setenv("MDFLOW_EMBEDDED_DIR", server_dir)
    monkeypatch.setattr(urls, "_embedded", None)
    server = urls.embedded_server()
    assert isinstance(server, SharedServer) and server.started
    assert urls.embedded_server() is server  # cached while it runs
    assert mdflow.redis_url() == server.url
    assert server.stop()
    restarted = urls.embedded_server()  # it was stopped from outside: start a new one
    assert restarted.running and restarted.pid != server.pid


def test_embedded_dir_too_long_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MDFLOW_EMBEDDED_DIR", str(tmp_path / ("x" * 120)))
    monkeypatch.setattr(urls, "_embedded", None)
    with pytest.raises(ConfigError, match="too long for a unix socket"):
        urls.embedded_server()


def test_a_url_with_a_wrong_scheme_is_refused_without_its_password():
    from mdflow.errors import ConfigError
    from mdflow.reservoir import redis_url

    with pytest.raises(ConfigError) as info:
        redis_url("http://user:hunter2@cache:6379/0")
    assert "hunter2" not in str(info.value)
    assert "http://user:***@cache" in str(info.value)
