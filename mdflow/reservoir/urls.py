"""Where Redis is: resolve, validate and mask Redis URLs; the embedded default.

Every mdflow node takes ``redis_url=None`` and passes it to :func:`redis_url`,
which picks, in order:

1. the explicit argument,
2. the ``MDFLOW_REDIS_URL`` environment variable,
3. the ``REDIS_URL`` environment variable,
4. an embedded ``redis-server`` started on first use:

   * without ``MDFLOW_EMBEDDED_DIR``: one per process, on a unix socket in a
     private temp dir, stopped at interpreter exit;
   * with ``MDFLOW_EMBEDDED_DIR=DIR``: the *shared* server of that directory
     (:mod:`.shared`): reused if running, else started detached; it is never
     stopped at exit, so other processes (and ``mdflow server status``) keep
     using it; its data (append-only file) survives restarts.

Examples
--------
>>> redis_url("redis://localhost:6379/2")
'redis://localhost:6379/2'
>>> mask_url("redis://alice:s3cret@cache:6379/0")
'redis://alice:***@cache:6379/0'
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import tempfile
import threading
from urllib.parse import parse_qsl, urlsplit

from ..errors import ConfigError, describe
from .server import RedisServer
from .shared import SharedServer, default_server_dir, start_shared_server

__all__ = ["embedded_server", "mask_text", "mask_url", "redis_url"]

logger = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss", "unix")
_MASK = "***"
# scheme://[user][:password]@  -- anything between ':' and '@' in the userinfo is a secret
# (any scheme: a URL given with a wrong scheme, e.g. http://u:pw@h, is echoed in the error)
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]*:)(?P<secret>[^@/\s]*)(?P<tail>@)"
)
_QUERY_SECRET = re.compile(r"(?P<head>[?&]password=)(?P<secret>[^&\s]*)", re.IGNORECASE)

_embedded: RedisServer | SharedServer | None = None
_embedded_lock = threading.Lock()
_logged: set[tuple[str, str]] = set()


def mask_url(url: str) -> str:
    """Return ``url`` with its password (userinfo or ``?password=``) replaced by ``***``.

    Examples
    --------
    >>> mask_url("rediss://:hunter2@example.com:6380/1")
    'rediss://:***@example.com:6380/1'
    >>> mask_url("unix:///tmp/redis.sock?db=2&password=hunter2")
    'unix:///tmp/redis.sock?db=2&password=***'
    """
    return mask_text(url)


def mask_text(text: str) -> str:
    """Mask every Redis URL password that appears anywhere in ``text``."""
    text = _USERINFO.sub(lambda m: m["head"] + (_MASK if m["secret"] else "") + m["tail"], text)
    return _QUERY_SECRET.sub(lambda m: m["head"] + _MASK, text)


def validate_url(url: str) -> str:
    """Check that ``url`` is a Redis URL mdflow can use; return it unchanged."""
    if not isinstance(url, str) or not url.strip():
        msg = (
            f"redis_url must be a non-empty str like 'redis://host:6379/0'; got {describe(url)}. "
            "Pass None to use MDFLOW_REDIS_URL, REDIS_URL or the embedded server."
        )
        raise ConfigError(msg)
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        msg = (
            f"redis_url must start with redis://, rediss:// or unix://; got {mask_url(url)!r}. "
            "Example: redis://localhost:6379/0 or unix:///run/redis.sock?db=0"
        )
        raise ConfigError(msg)
    if parts.scheme == "unix":
        if not parts.path:
            msg = (
                "unix:// redis_url needs a socket path, e.g. unix:///run/redis.sock; "
                f"got {mask_url(url)!r}"
            )
            raise ConfigError(msg)
        db = dict(parse_qsl(parts.query)).get("db", "0")
    else:
        if not parts.hostname:
            msg = f"redis_url needs a host, e.g. redis://localhost:6379/0; got {mask_url(url)!r}"
            raise ConfigError(msg)
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            msg = f"redis_url has an invalid port; got {mask_url(url)!r}"
            raise ConfigError(msg) from exc
        db = parts.path.lstrip("/") or dict(parse_qsl(parts.query)).get("db", "0")
    if not db.isdigit():
        msg = (
            "redis_url database number must be a non-negative integer; "
            f"got {db!r} in {mask_url(url)!r}"
        )
        raise ConfigError(msg)
    return url


def redis_url(url: str | None = None) -> str:
    """Resolve where Redis is (see the module docstring for the order).

    Parameters
    ----------
    url : str, optional
        ``redis://[user:password@]host[:port][/db]``, ``rediss://...`` (TLS) or
        ``unix:///path/to/socket[?db=N]``.

    Returns
    -------
    str
        A validated URL. It may contain a password: show it with :func:`mask_url`.
    """
    if url is not None:
        source = "argument"
    elif os.environ.get("MDFLOW_REDIS_URL"):
        url, source = os.environ["MDFLOW_REDIS_URL"], "MDFLOW_REDIS_URL"
    elif os.environ.get("REDIS_URL"):
        url, source = os.environ["REDIS_URL"], "REDIS_URL"
    else:
        url, source = embedded_server().url, "embedded server"
    validate_url(url)
    key = (url, source)
    if key not in _logged:
        _logged.add(key)
        logger.info("mdflow: using Redis at %s (from %s)", mask_url(url), source)
    return url


def embedded_server() -> RedisServer | SharedServer:
    """Return the embedded Redis server, starting it on first use.

    With ``MDFLOW_EMBEDDED_DIR`` set this is the shared server of that
    directory (started detached if none runs there, never stopped at exit);
    otherwise a private server of this process, stopped at interpreter exit.

    Examples
    --------
    >>> embedded_server().url                 # doctest: +SKIP
    'unix:///tmp/mdflow-embedded-x1y2/redis.sock?db=0'
    """
    global _embedded
    with _embedded_lock:
        if os.environ.get("MDFLOW_EMBEDDED_DIR"):
            directory = default_server_dir()
            current = _embedded
            if (
                isinstance(current, SharedServer)
                and current.directory == directory
                and current.running
            ):
                return current
            shared = start_shared_server(directory)
            _embedded = shared
            return shared
        if isinstance(_embedded, RedisServer) and _embedded.running:
            return _embedded
        private = tempfile.mkdtemp(prefix="mdflow-embedded-")
        os.chmod(private, 0o700)
        server = RedisServer(
            port=0, unixsocket=os.path.join(private, "redis.sock"), directory=private
        )
        server.start()
        atexit.register(_stop_embedded, server, private)
        _embedded = server
        return server


def _stop_embedded(server: RedisServer, private: str) -> None:
    server.stop()
    shutil.rmtree(private, ignore_errors=True)
