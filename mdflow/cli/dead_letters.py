"""``mdflow dead-letters``: list, replay or purge the dead letters of a stream.

Examples
--------
.. code-block:: console

    $ mdflow dead-letters quotes                  # the table of quotes:dead
    $ mdflow dead-letters quotes --replay --yes   # back into quotes, byte for byte
    $ mdflow dead-letters quotes:dead --purge --yes
"""

from __future__ import annotations

import sys
from typing import Any

import click
import redis
from rich import box
from rich.table import Table
from rich.text import Text

from ..errors import ConfigError, MdflowError, RedisUnavailable
from ..reservoir import ensure_available
from ..streams.dead_letters import (
    DEFAULT_DEAD_LETTER,
    DeadLetter,
    dead_letter_stream,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
)
from .common import fail, handle_errors, json_option, print_json, resolve, url_option
from .entries import codec_of, decoded_json, local_time, print_whole, short, summary

__all__ = ["dead_letters_command"]

_CONNECT_DEADLINE = 5.0
_PAYLOAD_TEXT = 80


def _origin_of(name: str, pattern: str) -> str | None:
    """The origin stream ``name`` stands for when ``name`` is itself a dead-letter stream."""
    head, _, tail = pattern.partition("{topic}")
    if dead_letter_stream(name, pattern) != name:
        return name
    inner = name[len(head) : len(name) - len(tail)] if tail else name[len(head) :]
    return inner or None


def _check_exists(url: str, name: str, dead: str, pattern: str) -> None:
    """A user error if neither the dead-letter stream nor its origin exists."""
    conn = ensure_available(url, deadline=_CONNECT_DEADLINE)
    kinds = {key: conn.type(key).decode() for key in {dead, _origin_of(name, pattern) or dead}}
    if kinds[dead] not in ("stream", "none"):
        raise ConfigError(f"{dead!r} is a Redis {kinds[dead]}, not a dead-letter stream")
    if all(kind == "none" for kind in kinds.values()):
        others = sorted(k for k in kinds if k != dead)
        also = f" nor a stream {others[0]!r}" if others else ""
        msg = (
            f"no dead-letter stream {dead!r}{also} on this Redis; check the name (and --url, "
            f"--dead-letter if the outlet used dead_letter=...)"
        )
        raise ConfigError(msg)


def _payload(letter: DeadLetter) -> tuple[str, Any, str | None]:
    """(codec, decoded value or None, error or None)."""
    codec = codec_of(letter.fields)
    try:
        return codec, letter.payload(), None
    except MdflowError as exc:
        return codec, None, str(exc)


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        text = " ".join(
            f"{k}={v!r}" if not isinstance(v, str) else f"{k}={v}" for k, v in value.items()
        )
    elif type(value).__name__ in ("DataFrame", "Series", "ndarray"):
        text = summary(value)
    else:
        text = repr(value)
    return short(text, _PAYLOAD_TEXT)


def _as_json(letter: DeadLetter) -> dict[str, Any]:
    codec, data, error = _payload(letter)
    out: dict[str, Any] = {
        "id": letter.id,
        "stream": letter.stream,
        "origin": letter.origin,
        "origin_id": letter.origin_id,
        "group": letter.group,
        "consumer": letter.consumer,
        "deliveries": letter.deliveries,
        "reason": letter.reason,
        "time": letter.time.isoformat(),
        "codec": codec,
    }
    out.update(decoded_json(data, error, letter.fields))
    return out


def _table(dead: str, letters: list[DeadLetter]) -> Table:
    table = Table(
        title=Text(f"{dead}: {len(letters)} dead letter{'s' if len(letters) != 1 else ''}"),
        box=box.SIMPLE_HEAD,
        title_justify="left",
        show_lines=True,
    )
    # few columns of several lines each, folding long words: whole in an 80-column terminal
    table.add_column("dead letter", min_width=15, overflow="fold")
    table.add_column("origin (group/consumer)", min_width=15, overflow="fold")
    table.add_column("deliv.", justify="right")
    table.add_column("reason / payload", ratio=1, min_width=20, overflow="fold")
    for letter in letters:
        codec, data, error = _payload(letter)
        detail = Text(letter.reason)
        detail.append(f"\n{codec}: ", style="dim")
        if error is None:
            detail.append(_compact(data))
        else:
            detail.append("undecodable", style="red")
        table.add_row(
            Text(f"{letter.id}\n{local_time(letter.time)}"),
            Text(f"{letter.origin}\n{letter.origin_id}\n{letter.group}/{letter.consumer}"),
            Text(str(letter.deliveries)),
            detail,
        )
    return table


def _confirm(what: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        fail("dead-letters", f"{what}: pass --yes to confirm (stdin is not a terminal)")
    if not click.confirm(f"{what}?", default=False):
        fail("dead-letters", "cancelled; nothing changed")


@click.command("dead-letters")
@click.argument("stream", metavar="STREAM")
@click.option(
    "--replay",
    is_flag=True,
    help="Write the dead letters back to their origin stream, exactly as they were first "
    "written, and remove them from the dead-letter stream.",
)
@click.option(
    "--to", "to", default=None, metavar="TOPIC", help="With --replay: write them to TOPIC instead."
)
@click.option("--purge", is_flag=True, help="Delete the dead letters for good.")
@click.option(
    "--id",
    "ids",
    multiple=True,
    metavar="ID",
    help="Only this dead letter (its id in the dead-letter stream); repeat for more.",
)
@click.option(
    "--dead-letter",
    "pattern",
    default=DEFAULT_DEAD_LETTER,
    show_default=True,
    metavar="PATTERN",
    help="The outlet's dead_letter= pattern, if it was not the default.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask before --replay or --purge.")
@json_option
@url_option
@handle_errors("dead-letters")
def dead_letters_command(
    stream: str,
    replay: bool,
    to: str | None,
    purge: bool,
    ids: tuple[str, ...],
    pattern: str,
    yes: bool,
    as_json: bool,
    url: str | None,
) -> None:
    """List the dead letters of STREAM (reason, deliveries, origin, payload), or replay or
    purge them.

    STREAM is the origin stream ("quotes": its dead letters are in "quotes:dead") or the
    dead-letter stream itself ("quotes:dead"). --replay writes each entry back to its origin
    (or --to TOPIC) with its original fields, so it decodes exactly as before; the consumer
    groups of that stream deliver it again as a new entry. An entry is removed from the
    dead-letter stream only once it was written back (both in one atomic step).
    """
    if replay and purge:
        raise click.UsageError("--replay and --purge cannot be used together")
    if to is not None and not replay:
        raise click.UsageError("--to only goes with --replay")
    resolved = resolve(url)
    try:
        _run(resolved, stream, replay, to, purge, ids, pattern, yes, as_json)
    except redis.RedisError as exc:
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            raise RedisUnavailable(f"lost Redis: {exc}") from exc
        raise MdflowError(f"Redis refused: {exc}") from exc


def _run(
    url: str,
    stream: str,
    replay: bool,
    to: str | None,
    purge: bool,
    ids: tuple[str, ...],
    pattern: str,
    yes: bool,
    as_json: bool,
) -> None:
    dead = dead_letter_stream(stream, pattern)
    _check_exists(url, stream, dead, pattern)
    letters = list_dead_letters(dead, dead_letter=pattern, redis_url=url)
    if ids:
        letters = [letter for letter in letters if letter.id in set(ids)]
        missing = sorted(set(ids) - {letter.id for letter in letters})
        if missing:
            raise ConfigError(f"no dead letter with id {', '.join(missing)} in {dead!r}")
    if not replay and not purge:
        if as_json:
            print_json([_as_json(letter) for letter in letters])
        elif not letters:
            click.echo(f"{dead}: no dead letters")
        else:
            print_whole(_table(dead, letters))
        return
    selected = [letter.id for letter in letters]
    count = f"{len(selected)} dead letter{'s' if len(selected) != 1 else ''}"
    if replay:
        targets = to or ", ".join(sorted({letter.origin for letter in letters})) or "-"
        if selected:
            _confirm(f"replay {count} from {dead!r} to {targets!r}", yes)
        done = replay_dead_letters(dead, to=to, ids=selected, dead_letter=pattern, redis_url=url)
        if as_json:
            print_json({"replayed": len(done), "stream": dead, "to": targets, "ids": done})
        else:
            click.echo(f"replayed {len(done)} of {count} from {dead!r} to {targets!r}")
        return
    if selected:
        _confirm(f"purge {count} from {dead!r} (they are deleted for good)", yes)
    purged = purge_dead_letters(dead, ids=selected, dead_letter=pattern, redis_url=url)
    if as_json:
        print_json({"purged": purged, "stream": dead})
    else:
        click.echo(f"purged {purged} of {count} from {dead!r}")
