"""The ``mdflow`` command line: ``mdflow --version``, ``mdflow doctor``, ``mdflow demo``.

This module is the only place in mdflow that writes to the terminal.
"""

from __future__ import annotations

import argparse
import logging
import sys
import uuid
from collections.abc import Sequence
from typing import TextIO

from .. import __version__
from ..errors import MdflowError

__all__ = ["main"]


def _check_rendering() -> tuple[bool, str]:
    """Render a tiny graph to SVG and PNG with whatever is there; say which renderer served."""
    from ..pictures.render import RenderUnavailable, available_formats, render

    served = available_formats()
    try:
        for fmt in ("svg", "png"):
            render("digraph { a -> b }", fmt)
    except RenderUnavailable as exc:
        return False, str(exc)
    return True, f"ok (svg: {served.get('svg')}, png: {served.get('png')})"


def doctor(redis_url: str | None = None, out: TextIO = sys.stdout) -> int:
    """Print where Redis is and what it supports; return a process exit code."""
    from ..reservoir import ensure_available, mask_url
    from ..reservoir import redis_url as resolve

    ok = True
    url = resolve(redis_url)
    print(f"mdflow {__version__}", file=out)
    print(f"redis url:        {mask_url(url)}", file=out)
    try:
        database = ensure_available(url, deadline=5.0)
    except MdflowError as exc:
        print(f"redis:            UNAVAILABLE - {exc}", file=out)
        return 1
    info = database.info("server")
    server_version = info.get("redis_version", "?")
    print(f"redis server:     {server_version} ({info.get('redis_mode', 'standalone')})", file=out)
    key = f"mdflow:doctor:{uuid.uuid4().hex}"
    try:
        database.xadd(key, {"probe": "1"})
        print("streams:          supported", file=out)
        database.xgroup_create(key, "doctor", id="0")
        database.xreadgroup("doctor", "doctor", {key: ">"}, count=1)
        print("consumer groups:  supported", file=out)
    except Exception as exc:  # noqa: BLE001 - the doctor reports every failure
        ok = False
        print(f"streams/groups:   NOT SUPPORTED - {exc} (mdflow needs Redis >= 5)", file=out)
    finally:
        database.delete(key)
    rendering, why = _check_rendering()
    print(f"pictures render:  {why if rendering else 'unavailable - ' + why}", file=out)
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mdflow", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mdflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command")
    doc = sub.add_parser("doctor", help="check the Redis connection and the picture renderers")
    doc.add_argument(
        "--redis-url",
        default=None,
        help="Redis URL (default: MDFLOW_REDIS_URL, REDIS_URL, else embedded)",
    )
    demo = sub.add_parser("demo", help="run the self-contained market-data demo pipeline")
    demo.add_argument("--seconds", type=float, default=10.0, help="how long to run (default 10)")
    demo.add_argument(
        "--redis-url",
        default=None,
        help="Redis URL (default: MDFLOW_REDIS_URL, REDIS_URL, else embedded)",
    )
    demo.add_argument(
        "--picture",
        default="mdflow-demo.png",
        help="where to write the topology picture ('' to skip)",
    )
    return parser


def demo(
    seconds: float, redis_url: str | None, picture: str | None, out: TextIO = sys.stdout
) -> int:
    """Run the demo, printing live progress and a summary."""
    import json

    from ..reservoir import mask_url
    from ..reservoir import redis_url as resolve
    from .demo import run_demo

    if seconds <= 0:
        print("mdflow demo: --seconds must be positive", file=sys.stderr)
        return 2
    url = resolve(redis_url)
    print(
        f"mdflow demo on {mask_url(url)} for {seconds:g}s: quote tables + ticks + a collector "
        "on a simulated exchange -> Redis streams -> from_redis -> map/filter/sliding_window/"
        "rate_limit -> sink + to_redis",
        file=out,
    )
    summary = run_demo(
        seconds, url, report=lambda line: print(line, file=out, flush=True), picture=picture or None
    )
    print("\nsummary", file=out)
    for key in (
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
    ):
        print(f"  {key:22s} {summary[key]}", file=out)
    movers = summary["top_movers"]
    if movers:
        print("  top movers (last quote table):", file=out)
        for code, row in movers.items():
            print(
                f"    {code} {row['name']:8s} now={row['now']:9.3f}"
                f" p_change={row['p_change']:+.5f}",
                file=out,
            )
    print(json.dumps({"demo": summary}, default=str), file=out)
    # every produced entry is acked, still held by a window (replayed next run), or unread (lag)
    accounted = summary["acked"] + summary["in_windows_at_exit"] + summary["lag"]
    ok = summary["acked"] > 0 and accounted >= summary["produced"]
    return 0 if ok and summary["dead_lettered"] == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mdflow`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "doctor":
            return doctor(args.redis_url)
        if args.command == "demo":
            return demo(args.seconds, args.redis_url, args.picture)
    except MdflowError as exc:
        print(f"mdflow {args.command}: {exc}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command!r}")  # pragma: no cover
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
