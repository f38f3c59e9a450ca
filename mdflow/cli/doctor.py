"""``mdflow doctor``: where Redis is, what it supports, and whether pictures render.

Examples
--------
.. code-block:: console

    $ mdflow doctor --url redis://localhost:6379/0
    mdflow 0.4.0
    redis url:        redis://localhost:6379/0
    redis server:     7.2.4 (standalone)
    streams:          supported
    consumer groups:  supported
    pictures render:  ok (svg: dot, png: dot)
"""

from __future__ import annotations

import uuid
from typing import Any

import click

from .. import __version__
from ..errors import MdflowError
from ..reservoir import mask_text, mask_url
from .common import EXIT_FAILED, handle_errors, json_option, print_json, resolve, url_option

__all__ = ["check", "doctor_command"]


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


def check(url: str | None = None) -> dict[str, Any]:
    """Check Redis at ``url`` and the picture renderers; return what was found.

    Parameters
    ----------
    url : str, optional
        The Redis URL (see :func:`mdflow.redis_url`).

    Returns
    -------
    dict
        ``ok``, ``mdflow`` (version), ``redis_url`` (masked), ``redis`` (``available``,
        ``version``, ``mode``, ``error``), ``streams``, ``consumer_groups`` and
        ``pictures`` (``ok``, ``detail``). Nothing in it carries a password.

    Examples
    --------
    >>> report = check("redis://127.0.0.1:6379/0")     # doctest: +SKIP
    >>> report["ok"], report["redis"]["version"]         # doctest: +SKIP
    (True, '7.2.4')
    """
    from ..reservoir import ensure_available

    resolved = resolve(url)
    report: dict[str, Any] = {
        "ok": False,
        "mdflow": __version__,
        "redis_url": mask_url(resolved),
        "redis": {"available": False, "version": None, "mode": None, "error": None},
        "streams": None,
        "consumer_groups": None,
        "pictures": None,
    }
    try:
        database = ensure_available(resolved, deadline=5.0)
    except MdflowError as exc:
        report["redis"]["error"] = mask_text(str(exc))
        return report
    info = database.info("server")
    report["redis"].update(
        available=True,
        version=info.get("redis_version", "?"),
        mode=info.get("redis_mode", "standalone"),
    )
    key = f"mdflow:doctor:{uuid.uuid4().hex}"
    try:
        database.xadd(key, {"probe": "1"})
        report["streams"] = True
        database.xgroup_create(key, "doctor", id="0")
        database.xreadgroup("doctor", "doctor", {key: ">"}, count=1)
        report["consumer_groups"] = True
    except Exception as exc:  # noqa: BLE001 - the doctor reports every failure
        report["streams"] = bool(report["streams"])
        report["consumer_groups"] = False
        report["redis"]["error"] = f"{mask_text(str(exc))} (mdflow needs Redis >= 5)"
    finally:
        database.delete(key)
    rendering, why = _check_rendering()
    report["pictures"] = {"ok": rendering, "detail": why}
    report["ok"] = bool(report["streams"] and report["consumer_groups"])
    return report


def _print(report: dict[str, Any]) -> None:
    redis = report["redis"]
    click.echo(f"mdflow {report['mdflow']}")
    click.echo(f"redis url:        {report['redis_url']}")
    if not redis["available"]:
        click.echo(f"redis:            UNAVAILABLE - {redis['error']}")
        return
    click.echo(f"redis server:     {redis['version']} ({redis['mode']})")
    if report["streams"]:
        click.echo("streams:          supported")
    if report["consumer_groups"]:
        click.echo("consumer groups:  supported")
    else:
        click.echo(f"streams/groups:   NOT SUPPORTED - {redis['error']}")
    pictures = report["pictures"]
    detail = pictures["detail"] if pictures["ok"] else "unavailable - " + pictures["detail"]
    click.echo(f"pictures render:  {detail}")


@click.command("doctor")
@url_option
@json_option
@handle_errors("doctor")
def doctor_command(url: str | None, as_json: bool) -> None:
    """Check the Redis connection and the picture renderers.

    Prints the (masked) Redis URL, the server's version, whether streams and
    consumer groups work, and which renderer draws SVG and PNG. Exits 1 when
    Redis cannot be reached or lacks streams.

    \b
    Examples:
      mdflow doctor
      mdflow doctor --url redis://localhost:6379/0 --json
    """
    report = check(url)
    if as_json:
        print_json(report)
    else:
        _print(report)
    if not report["ok"]:
        problem = report["redis"]["error"] or "Redis lacks streams or consumer groups"
        click.echo(f"mdflow doctor: {problem.splitlines()[0]}", err=True)
        raise SystemExit(EXIT_FAILED)
