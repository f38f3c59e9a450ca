"""What every ``mdflow`` command shares: the ``--url`` and ``--json`` options, the consoles,
and turning mdflow errors into one line on stderr with exit code 1.

Examples
--------
>>> import click
>>> @click.command()
... @url_option
... @handle_errors("example")
... def example(url):
...     resolve(url)
"""

from __future__ import annotations

import contextlib
import functools
import json
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, TypeVar

import click
from rich.console import Console

from ..errors import MdflowError
from ..reservoir import mask_text

__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "console",
    "err_console",
    "fail",
    "handle_errors",
    "json_option",
    "print_json",
    "resolve",
    "until_stopped",
    "url_option",
]

#: The command ran but what it was asked to do failed (Redis unavailable, a node failed...).
EXIT_FAILED = 1
#: The command line itself was wrong (click's own convention).
EXIT_USAGE = 2

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])

url_option = click.option(
    "--url",
    "--redis-url",
    "url",
    default=None,
    metavar="URL",
    help="Redis URL (default: MDFLOW_REDIS_URL, REDIS_URL, else the embedded server).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the data as JSON instead of tables."
)


def resolve(url: str | None) -> str:
    """The Redis URL a command uses (see :func:`mdflow.redis_url`)."""
    from ..reservoir import redis_url

    return redis_url(url)


def print_json(data: Any) -> None:
    """One JSON document on stdout (values JSON cannot carry are printed with ``str``)."""
    click.echo(json.dumps(data, default=str))


def fail(command: str, message: str, code: int = EXIT_FAILED) -> None:
    """Print ``mdflow <command>: <message>`` on stderr (passwords masked) and exit."""
    click.echo(f"mdflow {command}: {mask_text(message)}", err=True)
    raise SystemExit(code)


def handle_errors(command: str) -> Callable[[F], F]:
    """Decorator: an :class:`~mdflow.MdflowError` becomes one line on stderr and exit 1.

    User errors never show a traceback; anything else (a bug) still does.
    """

    def wrap(func: F) -> F:
        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except MdflowError as exc:
                fail(command, str(exc))
            except KeyboardInterrupt:
                raise SystemExit(130) from None

        return run  # type: ignore[return-value]

    return wrap


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def until_stopped() -> Iterator[None]:
    """Run the block until Ctrl-C or SIGTERM, which end it quietly (the command exits 0).

    For commands that exist to run until stopped (``dashboard``, ``inspect --watch``):
    both signals work even where a shell started the command with SIGINT ignored
    (``mdflow dashboard &``). The previous handlers are restored afterwards.
    """
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, _interrupt) for sig in stops}
    try:
        yield
    except KeyboardInterrupt:
        pass  # how these commands end
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
