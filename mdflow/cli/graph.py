"""``mdflow graph SPEC``: the topology picture of a pipeline, without running it.

The pipeline is loaded with :func:`~.load.load_pipeline` (nothing is started) and
drawn with :mod:`mdflow.pictures`: SVG or PNG (rendered with the system ``dot`` or
the pip-installed Graphviz), DOT or Mermaid text. Without ``-o`` the picture goes
to stdout (DOT by default).

Examples
--------
.. code-block:: console

    $ mdflow graph pipelines/ticks.py -o ticks.svg
    $ mdflow graph myproject.flows:prices --format mmd
"""

from __future__ import annotations

import os
import sys

import click

from ..errors import ConfigError
from .common import EXIT_USAGE, fail, handle_errors, json_option, print_json, url_option
from .load import load_pipeline

__all__ = ["FORMATS", "format_for", "graph_command"]

#: File suffix -> picture format.
FORMATS = {
    ".svg": "svg",
    ".png": "png",
    ".dot": "dot",
    ".gv": "dot",
    ".mmd": "mmd",
    ".mermaid": "mmd",
}


def format_for(filename: str) -> str:
    """The picture format of ``filename``, from its suffix.

    Raises
    ------
    ConfigError
        The suffix is not one of :data:`FORMATS`.

    Examples
    --------
    >>> format_for("out/pipeline.SVG")
    'svg'
    >>> format_for("flow.mmd")
    'mmd'
    """
    suffix = os.path.splitext(filename)[1].lower()
    if suffix not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        msg = (
            f"cannot tell the picture format of {filename!r} from its suffix "
            f"(known: {known}); add --format svg|png|dot|mmd"
        )
        raise ConfigError(msg)
    return FORMATS[suffix]


@click.command("graph")
@click.argument("spec", metavar="SPEC")
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    default=None,
    help="Write the picture there (format from the suffix: .svg .png .dot .gv .mmd).",
)
@click.option(
    "-f",
    "--format",
    "fmt",
    type=click.Choice(["svg", "png", "dot", "mmd"], case_sensitive=False),
    default=None,
    help="Picture format (default: from -o's suffix, else dot).",
)
@url_option
@json_option
@handle_errors("graph")
def graph_command(
    spec: str, output: str | None, fmt: str | None, url: str | None, as_json: bool
) -> None:
    """Draw the topology of the pipeline SPEC without running it.

    SPEC is package.module[:attr] or path/to/file.py[:attr]; attr (default
    'pipeline', else every top-level source node) names a streamz node, a list
    of nodes or a function returning them. Nothing is started: nodes are only
    built, and a node given no redis_url uses --url.

    \b
    Examples:
      mdflow graph pipelines/ticks.py -o ticks.svg
      mdflow graph pipelines/ticks.py:build -o ticks.png
      mdflow graph myproject.flows:prices --format mmd > prices.mmd
      mdflow graph pipelines/ticks.py --json
    """
    from ..pictures import to_dot, to_mermaid, visualize
    from ..pictures.topology import topology

    if url:
        # nodes built with redis_url=None resolve it through the environment (mdflow.redis_url)
        os.environ["MDFLOW_REDIS_URL"] = url
    if output is not None and not output:
        fail("graph", "-o/--output must name a file", EXIT_USAGE)
    if fmt is None and output:
        try:
            fmt = format_for(output)
        except ConfigError as exc:
            fail("graph", str(exc), EXIT_USAGE)
    fmt = (fmt or "dot").lower()
    nodes = load_pipeline(spec)
    if as_json:
        print_json(topology(nodes))
        return
    if fmt in ("mmd", "dot"):
        text = to_mermaid(nodes) if fmt == "mmd" else to_dot(nodes)
        data = (text if text.endswith("\n") else text + "\n").encode()
    else:
        data = visualize(nodes, format=fmt).data
    if output:
        try:
            with open(output, "wb") as out:
                out.write(data)
        except OSError as exc:
            fail("graph", f"cannot write {output!r}: {exc.strerror or exc}")
        click.echo(f"wrote {output} ({fmt}, {len(data):,} bytes)")
        return
    if fmt == "png" and sys.stdout.isatty():
        fail("graph", "a PNG is not printed to a terminal; give -o FILE.png", EXIT_USAGE)
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
