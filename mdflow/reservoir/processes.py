"""The shared server as an OS process: is it alive, start it, wait for it, stop it.

:mod:`.shared` keeps the server's record and lock; this module is about the
``redis-server`` process itself, by pid (the shared server is usually not a
child of the process that looks at it):

* :func:`pid_alive` — the pid exists and is not a zombie;
* :func:`is_redis_process` — alive, and (where ``/proc`` tells) runs redis-server,
  not an unrelated process that recycled the pid;
* :func:`launch_detached` — start a command in its own session, re-parented at
  once, its stderr appended to a log file; :func:`launch_child` — the same as a
  child of this process (``mdflow server --foreground``);
* :func:`wait_ready` — wait until the server answers on its socket, or say why
  not from its log (:func:`log_size` marks where this start's lines begin);
* :func:`terminate` — SIGTERM (Redis flushes its append-only file), then SIGKILL.

Examples
--------
>>> import os
>>> pid_alive(os.getpid()), pid_alive(0)
(True, False)
>>> pid = launch_detached(["redis-server"], "/tmp/mdf/redis.log")  # doctest: +SKIP
>>> is_redis_process(pid)                                           # doctest: +SKIP
True
>>> terminate(pid, timeout=5.0)                                     # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import RedisUnavailable
from .server import _ping

__all__ = [
    "is_redis_process",
    "launch_child",
    "launch_detached",
    "log_size",
    "pid_alive",
    "terminate",
    "wait_ready",
]

logger = logging.getLogger(__name__)

# Start the command in the background of a throwaway shell: the shell exits at once, so the
# server is re-parented (never a zombie child of a long-lived starter such as a notebook).
_LAUNCH = 'log=$1; shift; "$@" </dev/null >/dev/null 2>>"$log" & echo $!'


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (a dead child nobody has reaped yet).

    Examples
    --------
    >>> import os
    >>> pid_alive(os.getpid()), pid_alive(-1)
    (True, False)
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def is_redis_process(pid: int) -> bool:
    """``pid`` is alive and (where /proc tells) runs redis-server, not a recycled pid.

    Examples
    --------
    >>> is_redis_process(0)
    False
    """
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"redis" in cmdline


def launch_detached(command: Sequence[str], log: str) -> int:
    """Start ``command`` detached from this process and return its pid.

    It runs in its own session (no SIGINT/SIGHUP from this terminal) and is
    re-parented at once, so it outlives this process and never becomes its zombie.
    Its stdin and stdout are ``/dev/null``; its stderr is appended to ``log``.

    Parameters
    ----------
    command : sequence of str
        The program and its arguments.
    log : str
        The file its stderr is appended to; the error message names its directory.

    Raises
    ------
    RedisUnavailable
        The command could not be launched.

    Examples
    --------
    >>> launch_detached(["redis-server"], "/tmp/mdf/redis.log")    # doctest: +SKIP
    12345
    """
    try:
        out = subprocess.run(
            ["/bin/sh", "-c", _LAUNCH, "mdflow-server", log, *command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            start_new_session=True,  # no SIGINT/SIGHUP from the starter's terminal
            check=True,
        )
        return int(out.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        msg = f"could not launch {command[0]!r} in {os.path.dirname(log)}: {exc}"
        raise RedisUnavailable(msg) from exc


def launch_child(command: Sequence[str], log: str) -> subprocess.Popen[bytes]:
    """Start ``command`` as a child of this process, in a session of its own.

    Ctrl-C in this terminal reaches this process only, which then stops the child
    in order. Its stdin and stdout are ``/dev/null``; its stderr is appended to ``log``.

    Examples
    --------
    >>> child = launch_child(["redis-server"], "/tmp/mdf/redis.log")  # doctest: +SKIP
    >>> terminate(child.pid, timeout=5.0); child.wait()               # doctest: +SKIP
    0
    """
    with open(log, "ab") as err:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def log_size(log: str) -> int:
    """The size of ``log`` in bytes (0 if it does not exist): where new lines will start.

    Examples
    --------
    >>> log_size("/nonexistent/redis.log")
    0
    """
    try:
        return os.path.getsize(log)
    except OSError:
        return 0


def _log_since(log: str, offset: int, lines: int = 3) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def wait_ready(
    pid: int,
    process: subprocess.Popen[bytes] | None,
    sock: str,
    log: str,
    offset: int,
    timeout: float,
) -> None:
    """Wait until the redis-server ``pid`` answers PING on its unix socket ``sock``.

    Parameters
    ----------
    pid : int
        The server's process id.
    process : subprocess.Popen or None
        The server if it is this process's child (:func:`launch_child`), else None.
    sock : str
        Its unix socket.
    log : str
        Its log file; what it wrote after byte ``offset`` (see :func:`log_size`) goes
        into the error message.
    offset : int
        Where this start's lines begin in ``log``.
    timeout : float
        Seconds to wait; then the server is terminated.

    Raises
    ------
    RedisUnavailable
        It exited while starting, or did not answer within ``timeout`` (it is then stopped).

    Examples
    --------
    >>> log, sock = "/tmp/mdf/redis.log", "/tmp/mdf/redis.sock"
    >>> offset = log_size(log)
    >>> pid = launch_detached(["redis-server", "--unixsocket", sock], log)  # doctest: +SKIP
    >>> wait_ready(pid, None, sock, log, offset, timeout=30.0)             # doctest: +SKIP
    """
    directory = os.path.dirname(log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited = process.poll() is not None if process is not None else not pid_alive(pid)
        if exited:
            msg = (
                f"redis-server exited while starting in {directory}: "
                f"{_log_since(log, offset) or 'see ' + log}"
            )
            raise RedisUnavailable(msg)
        if _ping(None, None, sock):
            return
        time.sleep(0.02)
    terminate(pid, 5.0)
    if process is not None:
        process.wait()
    msg = (
        f"redis-server did not answer within {timeout:g}s in {directory}; "
        f"its log says: {_log_since(log, offset)}"
    )
    raise RedisUnavailable(msg)


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM (Redis flushes its AOF and exits), SIGKILL after ``timeout`` seconds.

    Returns once the process is gone (or after SIGKILL and 10 more seconds).

    Examples
    --------
    >>> terminate(12345, timeout=5.0)    # doctest: +SKIP
    """
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.02)
        if sig == signal.SIGTERM:
            logger.warning("mdflow: redis-server %s ignored SIGTERM for %gs; killing it", pid, wait)
