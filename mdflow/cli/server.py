"""``mdflow server``: a Redis server that outlives your scripts.

* ``mdflow server [--dir DIR] [--port P]`` (or ``mdflow server start``) starts the
  shared server of ``DIR`` (default: ``MDFLOW_EMBEDDED_DIR``, else
  ``~/.cache/mdflow/server``), prints its URL and how to share it, and returns
  at once, leaving it running; if one already runs there it is reused;
* ``--foreground`` keeps it attached until Ctrl-C or SIGTERM, then stops it
  (exit 0);
* ``mdflow server status [--json]`` reports on it: exit 0 if it runs, 1 if not;
* ``mdflow server stop`` stops it: exit 0, or 1 if nothing was running.

Errors (a bad ``--dir``, a port in use) are one line on stderr and exit 1.
The server is addressed by its directory, so these commands take no ``--url``.

Examples
--------
.. code-block:: console

    $ mdflow server --dir /tmp/mdf
    mdflow server: started in /tmp/mdf (pid 4242, redis 7.0.15)
    ...
    $ export MDFLOW_EMBEDDED_DIR=/tmp/mdf   # scripts now share it
    $ mdflow server stop --dir /tmp/mdf
"""

from __future__ import annotations

import datetime
import shlex
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import click

from ..reservoir.shared import (
    SharedServer,
    SharedServerStatus,
    default_server_dir,
    shared_server_status,
    start_shared_server,
    stop_shared_server,
)
from .common import EXIT_FAILED, fail, handle_errors, json_option, print_json

__all__ = ["server_group"]

F = TypeVar("F", bound=Callable[..., Any])

dir_option = click.option(
    "--dir",
    "directory",
    default=None,
    metavar="DIR",
    help="The server's directory (default: MDFLOW_EMBEDDED_DIR, else ~/.cache/mdflow/server).",
)


def _start_options(func: F) -> F:
    func = json_option(func)
    func = click.option(
        "--foreground",
        is_flag=True,
        help="Stay attached: run until Ctrl-C or SIGTERM, then stop the server.",
    )(func)
    func = click.option(
        "--port",
        type=click.IntRange(1, 65535),
        default=None,
        help="Also listen on this TCP port of 127.0.0.1 (default: the unix socket only).",
    )(func)
    return dir_option(func)


class _Stop(Exception):
    """SIGINT/SIGTERM/SIGHUP in ``--foreground``: leave the wait and stop the server."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _share_lines(server: SharedServer) -> list[str]:
    lines = [f"  export MDFLOW_EMBEDDED_DIR={shlex.quote(server.directory)}"]
    lines.append(f"  export MDFLOW_REDIS_URL={shlex.quote(server.url)}")
    return lines


def _print_started(server: SharedServer, as_json: bool, foreground: bool) -> None:
    if as_json:
        print_json(dict(server.as_dict(), started=server.started, running=True))
        return
    what = "started" if server.started else "already running"
    click.echo(
        f"mdflow server: {what} in {server.directory} (pid {server.pid}, redis {server.version})"
    )
    click.echo(f"url: {server.url}")
    if server.port:
        click.echo(f"socket: {server.socket_url}")
    click.echo("share it with your scripts and notebooks (either line):")
    for line in _share_lines(server):
        click.echo(line)
    if foreground:
        click.echo("running in the foreground: Ctrl-C stops it")
    else:
        click.echo(f"stop it with: mdflow server stop --dir {shlex.quote(server.directory)}")


def _start(directory: str | None, port: int | None, foreground: bool, as_json: bool) -> None:
    if not foreground:
        _print_started(start_shared_server(directory, port), as_json, foreground=False)
        return
    # Signals are only noted while the server starts (so it is never left half-started),
    # then they interrupt the wait; either way the server is stopped in order.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    pending: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _: pending.append(signum)) for sig in signals
    }
    server: SharedServer | None = None
    code: int | None = None
    try:
        server = start_shared_server(directory, port, detach=False)
        for sig in signals:
            signal.signal(sig, _raise_stop)
        if pending:
            raise _Stop(signal.Signals(pending[0]).name)
        _print_started(server, as_json, foreground=True)
        sys.stdout.flush()
        code = server.wait()
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        if server is not None:
            stop_shared_server(server.directory)
            if server.process is not None:
                server.process.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    assert server is not None  # start_shared_server returned, else its error propagated
    if code is None:
        click.echo(f"mdflow server: stopped the server in {server.directory}", err=as_json)
    elif code == 0:
        click.echo(
            f"mdflow server: the server in {server.directory} was stopped by another process"
        )
    else:
        fail("server", f"redis-server in {server.directory} exited with code {code}")


@click.group("server", invoke_without_command=True)
@_start_options
@click.pass_context
@handle_errors("server")
def server_group(
    ctx: click.Context,
    directory: str | None,
    port: int | None,
    foreground: bool,
    as_json: bool,
) -> None:
    """Run a Redis server that outlives your scripts: start, status, stop.

    Bare `mdflow server` starts it (the same as `mdflow server start`) and returns,
    leaving it running. It lives in a directory (--dir, else MDFLOW_EMBEDDED_DIR,
    else ~/.cache/mdflow/server) with an append-only file, so its data survives
    restarts. Point scripts at it with `export MDFLOW_EMBEDDED_DIR=DIR`.
    """
    ctx.ensure_object(dict)
    ctx.obj["directory"] = directory
    if ctx.invoked_subcommand is None:
        _start(directory, port, foreground, as_json)


@server_group.command("start")
@_start_options
@click.pass_context
@handle_errors("server start")
def start_command(
    ctx: click.Context,
    directory: str | None,
    port: int | None,
    foreground: bool,
    as_json: bool,
) -> None:
    """Start the server (or reuse the one running there); the same as bare `mdflow server`."""
    _start(directory or ctx.obj.get("directory"), port, foreground, as_json)


@server_group.command("stop")
@dir_option
@click.pass_context
@handle_errors("server stop")
def stop_command(ctx: click.Context, directory: str | None) -> None:
    """Stop the server (exit 1 if none is running there)."""
    where = directory or ctx.obj.get("directory") or default_server_dir()
    if not stop_shared_server(where):
        fail("server stop", f"no server is running in {where}")
    click.echo(f"mdflow server: stopped the server in {where}")


def _describe_status(status: SharedServerStatus) -> list[str]:
    if not status.running:
        line = f"mdflow server in {status.directory}: not running"
        if status.stale:
            line += " (a dead server left its record; the next start or stop clears it)"
        return [line]
    started = (
        datetime.datetime.fromtimestamp(status.started_at).isoformat(timespec="seconds")
        if status.started_at
        else "?"
    )
    rows = [
        ("pid", status.pid),
        ("url", status.url),
        ("socket", status.socket),
        ("version", status.version),
        ("started", started),
        ("uptime", f"{status.uptime_s}s" if status.uptime_s is not None else "?"),
        ("memory", status.used_memory_human or "?"),
        ("keys", status.keys if status.keys is not None else "?"),
        ("binary", status.binary),
    ]
    return [f"mdflow server in {status.directory}: running"] + [
        f"  {name:8s} {value}" for name, value in rows
    ]


@server_group.command("status")
@dir_option
@json_option
@click.pass_context
@handle_errors("server status")
def status_command(ctx: click.Context, directory: str | None, as_json: bool) -> None:
    """Say whether the server runs, and its URL, uptime, version, memory and keys.

    Exit 0 if it runs, 1 if not.
    """
    status = shared_server_status(directory or ctx.obj.get("directory"))
    if as_json:
        print_json(status.as_dict())
    else:
        for line in _describe_status(status):
            click.echo(line)
    if not status.running:
        raise SystemExit(EXIT_FAILED)
