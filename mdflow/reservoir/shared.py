"""A Redis server that outlives the process that started it: the shared server.

:func:`start_shared_server` starts a ``redis-server`` in a directory, detached
from its starter (its own session, re-parented when the starter exits), with an
append-only file so its data survives restarts. A directory holds at most one
server; a second call reuses it. Any process may stop it with
:func:`stop_shared_server` or inspect it with :func:`shared_server_status`.
``mdflow server`` and ``MDFLOW_EMBEDDED_DIR`` (see :mod:`.urls`) use it.

A server directory ``DIR`` holds::

    DIR/server.json   pid, port, socket, url, binary, version, started_at (written last)
    DIR/server.lock   locked (flock) while a process starts or stops the server
    DIR/redis.sock    the unix socket (always; TCP on 127.0.0.1 only if a port is asked for)
    DIR/redis.pid     redis-server's own pidfile
    DIR/redis.log     its log (and anything it wrote on stderr)
    DIR/appendonly*   its data

A record whose process is gone (a crash, a reboot) is *stale*: the next start
or stop removes it. Two processes starting at once get one server (the lock).

Examples
--------
>>> server = start_shared_server("/tmp/mdf")      # doctest: +SKIP
>>> server.url                                    # doctest: +SKIP
'unix:///tmp/mdf/redis.sock?db=0'
>>> shared_server_status("/tmp/mdf").keys         # doctest: +SKIP
0
>>> stop_shared_server("/tmp/mdf")                # doctest: +SKIP
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, RedisUnavailable, describe
from .processes import (
    is_redis_process,
    launch_child,
    launch_detached,
    log_size,
    terminate,
    wait_ready,
)
from .server import _ping, binary_version, find_redis_server

__all__ = [
    "MAX_SOCKET_PATH",
    "SharedServer",
    "SharedServerStatus",
    "default_server_dir",
    "shared_server_status",
    "start_shared_server",
    "stop_shared_server",
]

logger = logging.getLogger(__name__)

#: Unix socket paths must stay shorter than this (the kernel's limit is 104-108 bytes).
MAX_SOCKET_PATH = 100
STATE_FILE = "server.json"
LOCK_FILE = "server.lock"
SOCKET_FILE = "redis.sock"
PID_FILE = "redis.pid"
LOG_FILE = "redis.log"
# Waits for the directory lock: another process may be starting a server (loading a big AOF).
LOCK_TIMEOUT = 60.0


@dataclass(frozen=True)
class SharedServer:
    """A shared ``redis-server`` running in :attr:`directory`.

    Attributes
    ----------
    directory : str
        Its directory (absolute).
    pid : int
        Its process id.
    socket : str
        Its unix socket.
    port : int
        Its TCP port on 127.0.0.1, or 0 if it listens on the socket only.
    url : str
        The URL clients use: TCP if there is a port, else the socket.
    binary, version : str
        The ``redis-server`` it runs and that binary's version.
    started_at : float
        When it started (``time.time()``).
    started : bool
        True if this call started it, False if it was already running.

    Examples
    --------
    >>> server = start_shared_server("/tmp/mdf")    # doctest: +SKIP
    >>> server.socket_url, server.running           # doctest: +SKIP
    ('unix:///tmp/mdf/redis.sock?db=0', True)
    """

    directory: str
    pid: int
    socket: str
    port: int
    url: str
    binary: str
    version: str
    started_at: float
    started: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def socket_url(self) -> str:
        """The unix-socket URL (always available, even with a TCP port)."""
        return f"unix://{self.socket}?db=0"

    @property
    def running(self) -> bool:
        """True while its process is alive (a cheap check: no round trip to Redis)."""
        return is_redis_process(self.pid)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop it (see :func:`stop_shared_server`)."""
        return stop_shared_server(self.directory, timeout=timeout)

    def wait(self) -> int | None:
        """Block until the server exits; return its exit code if it is this process's child."""
        if self.process is not None:
            return self.process.wait()
        while self.running:
            time.sleep(0.2)
        return None

    def as_dict(self) -> dict[str, Any]:
        """Its record as written to ``DIR/server.json``."""
        record = dataclasses.asdict(dataclasses.replace(self, process=None))
        record.pop("process")
        record.pop("started")
        return record


@dataclass(frozen=True)
class SharedServerStatus:
    """What :func:`shared_server_status` reports about a server directory.

    Fields other than ``directory``, ``running`` and ``stale`` are None when
    nothing runs there (or when the server does not answer).

    Examples
    --------
    >>> shared_server_status("/tmp/nothing-here").running   # doctest: +SKIP
    False
    """

    directory: str
    running: bool
    stale: bool = False
    pid: int | None = None
    url: str | None = None
    socket: str | None = None
    port: int | None = None
    version: str | None = None
    binary: str | None = None
    started_at: float | None = None
    uptime_s: int | None = None
    used_memory: int | None = None
    used_memory_human: str | None = None
    keys: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


def default_server_dir() -> str:
    """The shared server's directory: ``MDFLOW_EMBEDDED_DIR``, else a per-user cache dir.

    The per-user dir is ``$XDG_CACHE_HOME/mdflow/server`` (``~/.cache/mdflow/server``).

    Examples
    --------
    >>> import os; os.environ["MDFLOW_EMBEDDED_DIR"] = "/tmp/mdf"
    >>> default_server_dir()
    '/tmp/mdf'
    >>> del os.environ["MDFLOW_EMBEDDED_DIR"]
    """
    explicit = os.environ.get("MDFLOW_EMBEDDED_DIR")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.abspath(os.path.join(cache, "mdflow", "server"))


def _resolve_dir(directory: str | os.PathLike[str] | None) -> str:
    if directory is None:
        return default_server_dir()
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
        msg = f"directory must be a non-empty path (str) or None; got {describe(directory)}"
        raise ConfigError(msg)
    return os.path.abspath(os.path.expanduser(os.fspath(directory)))


def _socket_path(directory: str) -> str:
    sock = os.path.join(directory, SOCKET_FILE)
    if len(sock) >= MAX_SOCKET_PATH:
        msg = (
            f"the server directory is too long for a unix socket path ({len(sock)} chars, "
            f"the limit is {MAX_SOCKET_PATH - 1}); got {directory!r}. Choose a shorter "
            "directory (MDFLOW_EMBEDDED_DIR or --dir), e.g. /tmp/mdflow-$USER."
        )
        raise ConfigError(msg)
    return sock


def _prepare_dir(directory: str) -> None:
    if os.path.exists(directory) and not os.path.isdir(directory):
        msg = f"the server directory {directory!r} exists and is not a directory"
        raise ConfigError(msg)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as exc:
        msg = f"cannot create the server directory {directory!r}: {exc.strerror or exc}"
        raise ConfigError(msg) from exc
    if not os.access(directory, os.W_OK | os.X_OK):
        msg = f"the server directory {directory!r} is not writable by this user"
        raise ConfigError(msg)


@contextlib.contextmanager
def _locked(directory: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``DIR/server.lock`` (an exclusive flock); the kernel drops it if we die."""
    path = os.path.join(directory, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        msg = f"cannot open the lock file {path!r}: {exc.strerror or exc}"
        raise ConfigError(msg) from exc
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    msg = (
                        f"another process has held {path} for more than {timeout:g}s "
                        "(starting or stopping the server); try again"
                    )
                    raise RedisUnavailable(msg) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read_state(directory: str) -> dict[str, Any] | None:
    path = os.path.join(directory, STATE_FILE)
    try:
        with open(path) as f:
            state = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("mdflow: ignoring unreadable %s (%s)", path, exc)
        return {}
    if not isinstance(state, dict) or not isinstance(state.get("pid"), int):
        logger.warning("mdflow: ignoring %s: no pid in it", path)
        return {}
    return state


def _write_state(directory: str, server: SharedServer) -> None:
    path = os.path.join(directory, STATE_FILE)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(server.as_dict(), f, indent=2)
    os.replace(tmp, path)


def _from_state(state: dict[str, Any], started: bool = False) -> SharedServer:
    return SharedServer(
        directory=state["directory"],
        pid=state["pid"],
        socket=state["socket"],
        port=state.get("port") or 0,
        url=state["url"],
        binary=state.get("binary", ""),
        version=state.get("version", ""),
        started_at=state.get("started_at", 0.0),
        started=started,
    )


def _info(sock: str, section: str | None = None, timeout: float = 2.0) -> dict[str, Any] | None:
    """``INFO`` over the unix socket, or None if the server does not answer."""
    import redis

    client = redis.Redis(unix_socket_path=sock, socket_timeout=timeout)
    try:
        return client.info(section) if section else client.info()
    except redis.RedisError:
        return None
    finally:
        client.close()


def _from_info(directory: str, sock: str, info: dict[str, Any]) -> SharedServer:
    port = int(info.get("tcp_port") or 0)
    return SharedServer(
        directory=directory,
        pid=info["process_id"],
        socket=sock,
        port=port,
        url=f"redis://127.0.0.1:{port}/0" if port else f"unix://{sock}?db=0",
        binary=str(info.get("executable") or ""),
        version=str(info.get("redis_version") or ""),
        started_at=time.time() - int(info.get("uptime_in_seconds") or 0),
    )


def _adopt(directory: str, sock: str) -> SharedServer | None:
    """A server answers on the socket but left no record (an older mdflow): record it."""
    info = _info(sock, "server")
    if not info or not isinstance(info.get("process_id"), int):
        return None
    server = _from_info(directory, sock, info)
    _write_state(directory, server)
    logger.info("mdflow: adopted the redis-server (pid %s) running in %s", server.pid, directory)
    return server


def _remove_stale(directory: str, why: str) -> None:
    logger.info("mdflow: removing a stale server record in %s (%s)", directory, why)
    _remove_record(directory)


def _remove_record(directory: str) -> None:
    for name in (STATE_FILE, PID_FILE, SOCKET_FILE):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))


def _running_server(directory: str, sock: str) -> SharedServer | None:
    """The server running in ``directory`` (call with the lock held); clear stale records."""
    state = _read_state(directory)
    if state:
        if is_redis_process(state["pid"]):
            return _from_state(state)
        _remove_stale(directory, f"process {state['pid']} is gone")
        return None
    if os.path.exists(sock):
        if _ping(None, None, sock):
            return _adopt(directory, sock)
        _remove_stale(directory, "nothing answers on its socket")
    elif state == {}:
        _remove_stale(directory, f"{STATE_FILE} is unreadable")
    return None


def _check_port_free(port: int | None) -> None:
    if port is None:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            msg = f"port {port} on 127.0.0.1 is not available ({exc.strerror or exc}); pick another"
            raise ConfigError(msg) from exc


def _command(binary: str, directory: str, sock: str, port: int | None) -> list[str]:
    options = {
        "port": str(port or 0),
        "bind": "127.0.0.1",
        "unixsocket": sock,
        "unixsocketperm": "700",
        "dir": directory,
        "daemonize": "no",
        "pidfile": os.path.join(directory, PID_FILE),
        "logfile": os.path.join(directory, LOG_FILE),
        "appendonly": "yes",
        "appendfsync": "everysec",  # a clean stop keeps everything; a crash may lose ~1 s
        "save": "",
    }
    return [binary] + [arg for name, value in options.items() for arg in (f"--{name}", value)]


def start_shared_server(
    directory: str | os.PathLike[str] | None = None,
    port: int | None = None,
    *,
    detach: bool = True,
    timeout: float = 30.0,
) -> SharedServer:
    """Start the shared server in ``directory``, or return the one already running there.

    Parameters
    ----------
    directory : str, optional
        Where the server lives (:func:`default_server_dir` by default); created if
        missing. ``DIR/redis.sock`` must stay under 100 characters.
    port : int, optional
        Also listen on this TCP port of 127.0.0.1 (default: the unix socket only).
        A server already running there on another port is an error.
    detach : bool
        True (default): the server outlives this process. False: it is this
        process's child (``mdflow server --foreground``); stop it yourself.
    timeout : float
        Seconds to wait for it to answer (it may be loading a large AOF).

    Returns
    -------
    SharedServer
        ``started`` says whether this call started it.

    Raises
    ------
    ConfigError
        Bad directory (not a directory, not writable, too long), bad or busy port,
        or ``detach=False`` while a server already runs there.
    RedisUnavailable
        redis-server exited or did not answer within ``timeout``.

    Examples
    --------
    >>> server = start_shared_server("/tmp/mdf")    # doctest: +SKIP
    >>> import redis; redis.Redis.from_url(server.url).ping()   # doctest: +SKIP
    True
    """
    directory = _resolve_dir(directory)
    sock = _socket_path(directory)
    if port is not None:
        _check_port_value(port)
    _prepare_dir(directory)
    with _locked(directory):
        running = _running_server(directory, sock)
        if running is not None:
            if not detach:
                msg = (
                    f"a server is already running in {directory} (pid {running.pid}, "
                    f"{running.url}); stop it first (mdflow server stop --dir {directory}) "
                    "or use it as it is"
                )
                raise ConfigError(msg)
            if port is not None and running.port != port:
                where = f"on port {running.port}" if running.port else "on its unix socket only"
                msg = (
                    f"a server is already running in {directory} {where} (pid {running.pid}); "
                    f"stop it first to run one on port {port}"
                )
                raise ConfigError(msg)
            logger.debug("mdflow: reusing the shared server in %s (pid %s)", directory, running.pid)
            return running
        _check_port_free(port)
        binary = find_redis_server()
        version = binary_version(binary)
        command = _command(binary, directory, sock, port)
        log = os.path.join(directory, LOG_FILE)
        offset = log_size(log)
        process: subprocess.Popen[bytes] | None = None
        if detach:
            pid = launch_detached(command, log)
        else:
            process = launch_child(command, log)  # Ctrl-C reaches us; we stop it in order
            pid = process.pid
        wait_ready(pid, process, sock, log, offset, timeout)
        server = SharedServer(
            directory=directory,
            pid=pid,
            socket=sock,
            port=port or 0,
            url=f"redis://127.0.0.1:{port}/0" if port else f"unix://{sock}?db=0",
            binary=binary,
            version=version,
            started_at=time.time(),
            started=True,
            process=process,
        )
        _write_state(directory, server)
        logger.info("mdflow: started a shared Redis server in %s (pid %s)", directory, pid)
        return server


def _check_port_value(port: object) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        msg = f"port must be an int in 1..65535 or None (unix socket only); got {describe(port)}"
        raise ConfigError(msg)


def stop_shared_server(
    directory: str | os.PathLike[str] | None = None, timeout: float = 5.0
) -> bool:
    """Stop the shared server in ``directory`` (:func:`default_server_dir` by default).

    Redis gets SIGTERM (it flushes its append-only file), then SIGKILL after
    ``timeout`` seconds. Stale records of a dead server are removed.

    Returns
    -------
    bool
        True if a server was running and is now stopped, False if none was running.

    Examples
    --------
    >>> stop_shared_server("/tmp/mdf")     # doctest: +SKIP
    True
    """
    directory = _resolve_dir(directory)
    if not os.path.isdir(directory):
        return False
    sock = _socket_path(directory)
    with _locked(directory):
        running = _running_server(directory, sock)
        if running is None:
            return False
        terminate(running.pid, timeout)
        _remove_record(directory)
        logger.info(
            "mdflow: stopped the shared Redis server in %s (pid %s)", directory, running.pid
        )
        return True


def shared_server_status(directory: str | os.PathLike[str] | None = None) -> SharedServerStatus:
    """Report on the shared server in ``directory`` without changing anything.

    Examples
    --------
    >>> status = shared_server_status("/tmp/mdf")          # doctest: +SKIP
    >>> status.running, status.url, status.keys             # doctest: +SKIP
    (True, 'unix:///tmp/mdf/redis.sock?db=0', 12)
    """
    directory = _resolve_dir(directory)
    state = _read_state(directory) if os.path.isdir(directory) else None
    sock = os.path.join(directory, SOCKET_FILE)
    if not state:
        info = _info(sock, "server") if state is None and os.path.exists(sock) else None
        if not info or not isinstance(info.get("process_id"), int):
            stale = state == {} or os.path.exists(sock)
            return SharedServerStatus(directory=directory, running=False, stale=stale)
        state = _from_info(directory, sock, info).as_dict()  # running, but left no record
    if not isinstance(state.get("pid"), int) or not is_redis_process(state["pid"]):
        return SharedServerStatus(directory=directory, running=False, stale=True)
    info = _info(state.get("socket") or sock) or {}
    keys = sum(
        value.get("keys", 0)
        for name, value in info.items()
        if name.startswith("db") and isinstance(value, dict)
    )
    return SharedServerStatus(
        directory=directory,
        running=True,
        pid=state["pid"],
        url=state.get("url"),
        socket=state.get("socket"),
        port=state.get("port") or 0,
        version=info.get("redis_version") or state.get("version"),
        binary=state.get("binary"),
        started_at=state.get("started_at"),
        uptime_s=info.get("uptime_in_seconds"),
        used_memory=info.get("used_memory"),
        used_memory_human=info.get("used_memory_human"),
        keys=keys if info else None,
    )
