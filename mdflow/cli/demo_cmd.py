"""``mdflow demo``: run the self-contained market-data demo (:mod:`.demo`) and show how it went.

Examples
--------
.. code-block:: console

    $ mdflow demo --seconds 5 --picture demo.svg
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..reservoir import mask_url
from .common import EXIT_FAILED, handle_errors, resolve, url_option

__all__ = ["demo_command"]

_SUMMARY_KEYS = (
    "produced",
    "processed",
    "acked",
    "in_windows_at_exit",
    "dead_lettered",
    "throughput_per_s",
    "lag",
    "latency_p50_ms",
    "latency_p99_ms",
    "vwap_entries_written",
    "candles_received",
    "collector",
    "picture",
)


def _print_summary(summary: dict[str, Any]) -> None:
    click.echo("\nsummary")
    for key in _SUMMARY_KEYS:
        click.echo(f"  {key:22s} {summary[key]}")
    movers = summary["top_movers"]
    if movers:
        click.echo("  top movers (last quote table):")
        for code, row in movers.items():
            click.echo(
                f"    {code} {row['name']:8s} now={row['now']:9.3f} p_change={row['p_change']:+.5f}"
            )
    # the last line is machine-readable: {"demo": summary}
    click.echo(json.dumps({"demo": summary}, default=str))


@click.command("demo")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="How long to run.",
)
@url_option
@click.option(
    "--picture",
    default="mdflow-demo.png",
    show_default=True,
    metavar="FILE",
    help="Where to write the topology picture (.png, .svg or .dot; '' to skip).",
)
@handle_errors("demo")
def demo_command(seconds: float, url: str | None, picture: str) -> None:
    """Run the self-contained market-data demo pipeline.

    Pumps a quote table and ticks into Redis streams, brings candles in from a
    simulated exchange, drains them through from_redis -> map/filter/
    sliding_window/rate_limit -> sink + to_redis, shows live progress, then a
    summary; the last line of output is the summary as JSON. Exits 1 if an
    entry was lost or dead-lettered.

    \b
    Examples:
      mdflow demo --seconds 5
      mdflow demo --url redis://localhost:6379/0 --picture demo.svg
    """
    from .demo import run_demo

    resolved = resolve(url)
    click.echo(
        f"mdflow demo on {mask_url(resolved)} for {seconds:g}s: quote tables + ticks + a "
        "collector on a simulated exchange -> Redis streams -> from_redis -> map/filter/"
        "sliding_window/rate_limit -> sink + to_redis"
    )
    summary = run_demo(seconds, resolved, report=click.echo, picture=picture or None)
    _print_summary(summary)
    # every produced entry is acked, still held by a window (replayed next run), or unread (lag)
    accounted = summary["acked"] + summary["in_windows_at_exit"] + summary["lag"]
    ok = summary["acked"] > 0 and accounted >= summary["produced"]
    if not (ok and summary["dead_lettered"] == 0):
        click.echo("mdflow demo: some entries were not accounted for (see the summary)", err=True)
        raise SystemExit(EXIT_FAILED)
