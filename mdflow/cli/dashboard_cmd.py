"""``mdflow dashboard``: serve the live system view of one Redis as a web page.

The page (:func:`mdflow.pictures.serve_dashboard`) shows every live graph of every
process, joined through the streams, with status colours, lag, pending and dead
letters, pushed about once a second. It runs until Ctrl-C or SIGTERM (exit 0).

Examples
--------
.. code-block:: console

    $ mdflow dashboard --port 8799
    mdflow dashboard at http://127.0.0.1:8799/ (Redis redis://localhost:6379/0; Ctrl-C stops it)
"""

from __future__ import annotations

import threading

import click

from ..reservoir import ensure_available, mask_url
from .common import EXIT_USAGE, fail, handle_errors, resolve, until_stopped, url_option

__all__ = ["dashboard_command"]


@click.command("dashboard", short_help="Serve the live web dashboard of one Redis.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8799,
    show_default=True,
    help="TCP port (0 picks a free one).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a --host that is not loopback (the page has no authentication).",
)
@click.option(
    "--pattern", default="*", show_default=True, help="Which streams to list (SCAN MATCH)."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between updates pushed to the page.",
)
@url_option
@handle_errors("dashboard")
def dashboard_command(
    port: int, host: str, allow_remote: bool, pattern: str, interval: float, url: str | None
) -> None:
    """Serve the live web dashboard of every mdflow graph on one Redis.

    Prints the page's URL and serves until Ctrl-C or SIGTERM. The page works
    offline, never shows a password, and listens on 127.0.0.1 unless
    --host and --allow-remote say otherwise.

    \b
    Examples:
      mdflow dashboard
      mdflow dashboard --port 0 --url redis://localhost:6379/0
    """
    from ..pictures import serve_dashboard
    from ..pictures.web import is_loopback

    if not is_loopback(host):  # before any connection: a usage error needs no Redis
        if not allow_remote:
            fail(
                "dashboard",
                f"--host {host!r} is not a loopback address, and the dashboard has no "
                "authentication: anyone who can reach it sees every stream, group and graph "
                "of this Redis. Add --allow-remote to serve other machines anyway.",
                EXIT_USAGE,
            )
        click.echo(
            f"mdflow dashboard: warning: --host {host!r} with --allow-remote: other machines "
            "can read this page (no authentication)",
            err=True,
        )
    resolved = resolve(url)
    ensure_available(resolved, deadline=5.0)  # unreachable: one line and exit 1, not a page
    try:
        server = serve_dashboard(
            port=port,
            host=host,
            redis_url=resolved,
            interval=interval,
            pattern=pattern,
            allow_remote=allow_remote,
        )
    except ValueError as exc:  # a number DashboardServer refuses (checked above: the host)
        fail("dashboard", str(exc), EXIT_USAGE)
    except OSError as exc:
        fail("dashboard", f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    click.echo(f"mdflow dashboard at {server.url} (Redis {mask_url(resolved)}; Ctrl-C stops it)")
    try:
        with until_stopped():
            threading.Event().wait()
    finally:
        server.stop()
    click.echo("mdflow dashboard stopped")
