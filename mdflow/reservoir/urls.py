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

TLS: a ``rediss://`` URL verifies the server's certificate (and its host
name) against the system's CAs, or against the CA its query names:
``rediss://user:pw@host:6380/0?ssl_ca_certs=/etc/redis/ca.pem``; add
``&ssl_certfile=client.pem&ssl_keyfile=client.key`` when the server asks for
client certificates. Every ``ssl_*`` option of redis-py's TLS connections
works (both its clients read them from the URL); :func:`validate_url` checks
their names, values and files before any connection is made.

Examples
--------
>>> redis_url("redis://localhost:6379/2")
'redis://localhost:6379/2'
>>> mask_url("redis://alice:s3cret@cache:6379/0")
'redis://alice:***@cache:6379/0'
"""

from __future__ import annotations

import atexit
import functools
import inspect
import logging
import os
import re
import shutil
import tempfile
import threading
from urllib.parse import SplitResult, parse_qs, parse_qsl, urlsplit

import redis.asyncio.connection
import redis.connection

from ..errors import ConfigError, describe
from .server import RedisServer
from .shared import SharedServer, default_server_dir, start_shared_server

__all__ = ["embedded_server", "mask_text", "mask_url", "redis_url"]

logger = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss", "unix")
_MASK = "***"
# scheme://[user][:password]@  -- anything between ':' and the LAST '@' of the URL is a secret:
# redis-py (urllib) reads the userinfo up to the last '@', so 'redis://u:p@ss@h' means password
# 'p@ss', and quote(password) keeps '/' ('redis://u:a/b@h' does not parse, and its error
# echoes it). A URL ends at whitespace, a double quote or '<' '>' (JSON, HTML, SVG text).
# Any scheme: a URL given with a wrong scheme, e.g. http://u:pw@h, is echoed in the error.
# (The pattern starts at '://', a literal the regex engine finds fast: a 100 kB SVG takes
# 0.02 ms instead of 1 ms with the scheme's letters matched first.)
_USERINFO = re.compile(r"(?P<head>://[^:@/\s]*:)(?P<secret>[^\s\"<>]*)(?P<tail>@)")
_QUERY_SECRET = re.compile(r"(?P<head>[?&](?:ssl_)?password=)(?P<secret>[^&\s]*)", re.IGNORECASE)
# TLS options whose value names a file (ssl_ca_path: a directory) that must exist
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_CERT_REQS = ("none", "optional", "required")
# an HTTP credentials header as websockets and http clients log it at DEBUG (a feed URL's
# user:password becomes 'Authorization: Basic <base64>'): the rest of its line is a secret
_AUTH_HEADER = re.compile(
    r"(?P<head>\b(?:Proxy-)?Authorization:[ \t]*(?:[A-Za-z]+[ \t]+)?)"
    r"(?P<secret>[^\s'\"][^\r\n'\"]*)",
    re.IGNORECASE,
)

# a password with '/', '?' or '#' cuts the URL short: its host (or port) is then wrong
_ENCODE_HINT = (
    " (a password with / ? # or other special characters must be percent-encoded: "
    "urllib.parse.quote(password, safe=''))"
)

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
    """Mask every URL password (userinfo or ``?password=``) and HTTP credentials header in ``text``.

    Examples
    --------
    >>> mask_text("XREAD from redis://u:p@ss@h:6379/0 failed")
    'XREAD from redis://u:***@h:6379/0 failed'
    >>> mask_text("> Authorization: Basic dTpwdw==")
    '> Authorization: Basic ***'
    """
    # the substring tests first: most texts (an SVG picture of 100 kB...) have none of these
    if "://" in text:
        text = _USERINFO.sub(lambda m: m["head"] + (_MASK if m["secret"] else "") + m["tail"], text)
    folded = text.lower()
    if "password=" in folded:
        text = _QUERY_SECRET.sub(lambda m: m["head"] + _MASK, text)
    if "authorization:" in folded:
        text = _AUTH_HEADER.sub(lambda m: m["head"] + _MASK, text)
    return text


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
            msg = (
                f"redis_url needs a host, e.g. redis://localhost:6379/0; got {mask_url(url)!r}"
                f"{_ENCODE_HINT}"
            )
            raise ConfigError(msg)
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            msg = f"redis_url has an invalid port; got {mask_url(url)!r}{_ENCODE_HINT}"
            raise ConfigError(msg) from exc
        db = parts.path.lstrip("/") or dict(parse_qsl(parts.query)).get("db", "0")
    if not db.isdigit():
        msg = (
            "redis_url database number must be a non-negative integer; "
            f"got {db!r} in {mask_url(url)!r}"
        )
        raise ConfigError(msg)
    if parts.query:
        _check_query(url, parts)
    return url


@functools.lru_cache(maxsize=1)
def tls_options() -> frozenset[str]:
    """The ``ssl_*`` options a ``rediss://`` URL may carry: those both redis-py clients take.

    Examples
    --------
    >>> "ssl_ca_certs" in tls_options()
    True
    """
    sync = inspect.signature(redis.connection.SSLConnection.__init__).parameters
    asynchronous = inspect.signature(redis.asyncio.connection.SSLConnection.__init__).parameters
    return frozenset(name for name in sync if name.startswith("ssl_") and name in asynchronous)


def _check_query(url: str, parts: SplitResult) -> None:
    """The URL's query: TLS options only on rediss://, known, with sane values and real files;
    every option redis-py parses (``ssl_check_hostname``, ``socket_timeout``...) parses."""
    options = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    tls = sorted(name for name in options if name.startswith("ssl_"))
    if tls and parts.scheme != "rediss":
        msg = (
            f"redis_url has TLS options ({', '.join(tls)}) but is not a rediss:// URL; got "
            f"{mask_url(url)!r}. Use rediss://host:port/db?{tls[0]}=... to connect with TLS"
        )
        raise ConfigError(msg)
    unknown = [name for name in tls if name not in tls_options()]
    if unknown:
        msg = (
            f"redis_url has an unknown TLS option {unknown[0]!r}; got {mask_url(url)!r}. "
            f"Known: {', '.join(sorted(tls_options()))}"
        )
        raise ConfigError(msg)
    reqs = options.get("ssl_cert_reqs")
    if reqs is not None and reqs not in _CERT_REQS:
        msg = (
            f"redis_url option ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}; got "
            f"{reqs!r} in {mask_url(url)!r}"
        )
        raise ConfigError(msg)
    for name in _TLS_FILES:
        path = options.get(name)
        if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
            msg = f"redis_url option {name} names no readable file: {path!r} (in {mask_url(url)!r})"
            raise ConfigError(msg)
    path = options.get("ssl_ca_path")
    if path is not None and not os.path.isdir(path):
        msg = f"redis_url option ssl_ca_path names no directory: {path!r} (in {mask_url(url)!r})"
        raise ConfigError(msg)
    try:
        redis.connection.parse_url(url)
    except ValueError as exc:  # e.g. "Invalid value for 'ssl_check_hostname' in connection URL."
        msg = f"redis_url: {exc} Got {mask_url(url)!r}"
        raise ConfigError(msg) from exc


def _verification_off(url: str) -> bool:
    if not url.startswith("rediss:"):
        return False
    options = dict(parse_qsl(urlsplit(url).query))
    return options.get("ssl_cert_reqs") == "none"


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
        if _verification_off(url):
            logger.warning(
                "mdflow: %s does not verify the server's certificate (ssl_cert_reqs=none): "
                "anyone in between can read and change the data; give the CA instead "
                "(?ssl_ca_certs=/path/ca.pem)",
                mask_url(url),
            )
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
