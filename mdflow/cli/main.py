"""The ``mdflow`` command line: one click group with every command.

``mdflow --version``, ``mdflow -v COMMAND`` (log at INFO level) and the commands:
``doctor``, ``demo``, ``graph``, ``inspect``, ``dashboard`` (here) and ``run``,
``server``, ``tail``, ``dead-letters`` (in their own modules). Exit codes: 0 ok,
1 failed, 2 usage error, 130 interrupted.

Examples
--------
>>> main(["--version"])  # doctest: +SKIP
mdflow 0.4.0
0
>>> main(["doctor", "--url", "redis://localhost:6379/0"])  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

import click

from .. import __version__
from .common import EXIT_USAGE, err_console
from .dashboard_cmd import dashboard_command
from .dead_letters import dead_letters_command
from .demo_cmd import demo_command
from .doctor import doctor_command
from .graph import graph_command
from .inspect_cmd import inspect_command
from .run import run_command
from .server import server_group
from .tail import tail_command

__all__ = ["cli", "main"]

#: Exit code of a command stopped by Ctrl-C that does not treat it as its normal end.
EXIT_INTERRUPTED = 130


@click.group(
    name="mdflow",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="mdflow", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level (on stderr).")
def cli(verbose: bool) -> None:
    """mdflow: live dataflow graphs on streamz with Redis as the reservoir.

    Every command takes --url (alias --redis-url; default MDFLOW_REDIS_URL,
    REDIS_URL, else the embedded server) and --help. Exit codes: 0 ok,
    1 failed, 2 usage error.
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for _command in (
    doctor_command,
    demo_command,
    graph_command,
    inspect_command,
    dashboard_command,
    run_command,
    tail_command,
    dead_letters_command,
    server_group,
):
    cli.add_command(_command)


def _code(value: object) -> int:
    """An exit code from what a command returned or raised (None is success)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    # SystemExit("message"): Python prints the message and exits 1
    click.echo(str(value), err=True)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mdflow`` command line on ``argv`` (default ``sys.argv[1:]``); return the exit code.

    The entry point of the ``mdflow`` console script and of ``python -m mdflow.cli``.
    It never raises ``SystemExit``: usage errors are printed and give 2, failures 1,
    Ctrl-C 130 (except where a command treats it as its normal end).

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments, without the program name.

    Returns
    -------
    int
        The process exit code.

    Examples
    --------
    >>> main(["graph", "--format", "gif", "x.py"])  # doctest: +SKIP
    2
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="mdflow", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `mdflow` alone: help, and 2 as before
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return EXIT_USAGE
    except click.ClickException as exc:  # usage errors (exit 2) and other click failures
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:  # Ctrl-C or EOF at a prompt
        err_console.print("Aborted.")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except SystemExit as exc:
        return _code(exc.code)
    except BrokenPipeError:  # `mdflow inspect --json | head`: the reader left, not an error
        # Python would complain again when flushing stdout at exit: point it at /dev/null
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return _code(result)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
