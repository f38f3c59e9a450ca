"""``mdflow run SPEC``: run a pipeline from a module or file, with live status, until stopped.

The pipeline is loaded with :func:`~mdflow.cli.load.load_pipeline`, its sources
are started by a :class:`~mdflow.Runner`, and one status line per source
(rate, counts, lag, pending, errors) is shown live on a terminal (every few
seconds as plain lines otherwise). SIGINT/SIGTERM stop it gracefully (exit 0);
a second Ctrl-C exits at once; a node that fails for good exits 1 with its
reason on stderr.

Examples
--------
``mdflow run pipelines/ticks.py``, ``mdflow run myproject.flows:prices --dashboard 8799``
"""

from __future__ import annotations

import os
import time
from typing import Any

import click
from rich.live import Live
from rich.table import Table

from ..errors import NodeFailed
from ..reservoir import mask_text
from .common import EXIT_FAILED, console, err_console, handle_errors, url_option

__all__ = ["StatusLines", "run_command"]

# counters that say how much a source moved, in the order they are preferred for the rate
_MOVED = ("read", "written", "received", "emitted", "messages", "published")
_PLAIN_EVERY = 5.0  # seconds between status lines when stdout is not a terminal


class StatusLines:
    """One status line per source: state, rate, counts, lag, pending, errors.

    Rates are the difference of a source's counter between two looks.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def rows(self, statuses: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        now = time.monotonic()
        out = []
        for name, status in statuses.items():
            counter = next((c for c in _MOVED if isinstance(status.get(c), int)), None)
            moved = int(status.get(counter, 0)) if counter else 0
            before = self._last.get(name)
            rate = None
            if before is not None and now > before[0]:
                rate = (moved - before[1]) / (now - before[0])
            self._last[name] = (now, moved)
            counts = {  # what moved; failures only once there are some
                k: status[k]
                for k in ("read", "written", "emitted", "acked", "dead_lettered", "failed")
                if isinstance(status.get(k), int)
                and (status[k] or k not in ("dead_lettered", "failed"))
            }
            out.append(
                {
                    "source": name,
                    "state": status.get("state"),
                    "rate": rate,
                    "counts": counts,
                    "lag": status.get("lag"),
                    "pending": status.get("pending"),
                    "errors": status.get("errors", 0),
                    "problem": status.get("failure") or status.get("last_error"),
                }
            )
        return out

    def table(self, statuses: dict[str, dict[str, Any]]) -> Table:
        table = Table(show_edge=False, pad_edge=False)
        for column in ("source", "state", "rate/s", "counts", "lag", "pending", "errors"):
            table.add_column(column, justify="right" if column == "rate/s" else "left")
        for row in self.rows(statuses):
            rate = "-" if row["rate"] is None else f"{row['rate']:.1f}"
            counts = " ".join(f"{k}={v}" for k, v in row["counts"].items())
            errors = str(row["errors"])
            if row["errors"] and row["problem"]:
                errors += f" ({mask_text(str(row['problem']))[:60]})"
            table.add_row(
                row["source"],
                str(row["state"]),
                rate,
                counts,
                _dash(row["lag"]),
                _dash(row["pending"]),
                errors,
            )
        return table

    def line(self, statuses: dict[str, dict[str, Any]]) -> str:
        parts = []
        for row in self.rows(statuses):
            rate = "" if row["rate"] is None else f" {row['rate']:.1f}/s"
            counts = " ".join(f"{k}={v}" for k, v in row["counts"].items())
            extra = "".join(f" {k}={row[k]}" for k in ("lag", "pending") if row[k] is not None)
            parts.append(
                f"{row['source']} {row['state']}{rate} {counts}{extra} errors={row['errors']}"
            )
        return " | ".join(parts)


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


@click.command("run")
@click.argument("spec")
@url_option
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Seconds in-flight elements get to finish when stopping (then they stay pending).",
)
@click.option(
    "--dashboard",
    "dashboard_port",
    type=click.IntRange(0, 65535),
    default=None,
    metavar="PORT",
    help="Also serve the live web dashboard of the pipeline on this port (0: any free one).",
)
@click.option("--quiet", "-q", is_flag=True, help="No live status, only errors.")
@handle_errors("run")
def run_command(
    spec: str, url: str | None, grace: float, dashboard_port: int | None, quiet: bool
) -> None:
    """Run the pipeline SPEC until its sources stop or Ctrl-C / SIGTERM.

    SPEC is `module:attr`, `path/to/file.py[:attr]` or `module` (attr defaults to
    `pipeline`): a node, a list of nodes or a function returning them. Ctrl-C or
    SIGTERM stop reading, let in-flight elements finish (--grace), flush acks and
    writes and exit 0; a second Ctrl-C exits at once. A node that fails for good
    (refused password, ACL, bad start_id, WRONGTYPE) exits 1.
    """
    from ..nodes.runner import Runner
    from .load import load_pipeline

    if url is not None:  # nodes built with redis_url=None resolve to it
        os.environ["MDFLOW_REDIS_URL"] = url
    nodes = load_pipeline(spec)
    runner = Runner(nodes, grace=grace)
    server = None
    if dashboard_port is not None:
        from ..pictures import serve_dashboard

        server = serve_dashboard(nodes[0], port=dashboard_port, redis_url=url)
        err_console.print(f"dashboard: {server.url}")
    lines = StatusLines()
    names = ", ".join(runner.status())
    err_console.print(f"mdflow run {spec}: {names} (Ctrl-C to stop)")
    try:
        if quiet:
            runner.run()
        elif console.is_terminal:
            with Live(lines.table(runner.status()), console=console, refresh_per_second=2) as live:
                runner.run(on_tick=lambda r: live.update(lines.table(r.status())), every=1.0)
        else:
            runner.run(on_tick=lambda r: console.print(lines.line(r.status())), every=_PLAIN_EVERY)
    except NodeFailed as exc:
        for name, reason in exc.failures.items():
            click.echo(f"mdflow run: {name} failed: {mask_text(reason)}", err=True)
        raise SystemExit(EXIT_FAILED) from None
    finally:
        if server is not None:
            server.stop()
    err_console.print("mdflow run: stopped cleanly")
