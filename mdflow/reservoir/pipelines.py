"""Many commands in one round trip on redis-py's synchronous connection, fast.

redis-py's ``Pipeline`` spends about 4 µs per command in Python (building,
packing and parsing each one), its asyncio twin twice that, and the asyncio
connection packs every argument in Python (an XACK of 100 ids: ~100 µs); for
the writes mdflow sends by the thousand (XADD, XACK) that is most of the cost.
:func:`send_commands` (and :func:`send_commands_async`, on ``redis.asyncio``) do
the same on the same pooled connection with less: each command is packed by hiredis' C
``pack_command`` (when hiredis is installed; redis-py's own packer otherwise),
all are sent at once, and the replies are read in order with the connection's
own ``read_response`` (hiredis' parser). About 1.6 µs per XADD.

Errors are those of redis-py: an error reply becomes that command's result (a
``redis.ResponseError``), anything else (a lost connection, a timeout, refused
credentials) disconnects the connection — so no unread reply is left for its
next user — and is raised for the caller to retry.

Examples
--------
>>> from mdflow.reservoir import sync_client
>>> from mdflow.reservoir.pipelines import send_commands
>>> replies = send_commands(sync_client(), [("XADD", "quotes", "*", "px", "1.5")])  # doctest: +SKIP
>>> replies                                                                        # doctest: +SKIP
[b'1764061200000-0']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio

from .fatal import with_command

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # hiredis is a dependency; its packer is optional to redis-py
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - without hiredis, redis-py packs
    _hiredis_pack = None

__all__ = ["send_commands", "send_commands_async"]

Command = Sequence[str | bytes | int | float]


def _pack(connection: Any, commands: Sequence[Command]) -> list[bytes]:
    if _hiredis_pack is not None:
        try:
            return [b"".join([_hiredis_pack(tuple(command)) for command in commands])]
        except TypeError:  # an argument hiredis does not take (redis-py encodes it below)
            pass
    return connection.pack_commands(commands)


def _named(exc: redis.ResponseError, command: Command) -> redis.ResponseError:
    """An ACL refusal names the command and its keys (Redis names neither for a key)."""
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return with_command(exc, command)
    return exc


def send_commands(client: redis.Redis, commands: Sequence[Command]) -> list[Any]:
    """Send ``commands`` in one round trip; return one reply per command, in order.

    Parameters
    ----------
    client : redis.Redis
        A synchronous client (its pool lends the connection).
    commands : sequence of sequences
        Each a command name and its arguments (str, bytes, int or float).

    Returns
    -------
    list
        The raw reply of each command (bytes, int, list... as the parser gives
        them: no response callbacks), or the ``redis.ResponseError`` it answered.
    """
    if not commands:
        return []
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command(_pack(connection, commands))
        replies: list[Any] = []
        for command in commands:
            try:
                replies.append(connection.read_response())
            except redis.ResponseError as exc:
                replies.append(_named(exc, command))
        return replies
    except BaseException:
        connection.disconnect()  # replies may be left unread: never hand this socket on
        raise
    finally:
        pool.release(connection)


async def send_commands_async(
    client: redis.asyncio.Redis, commands: Sequence[Command], block: float = 0.0
) -> list[Any]:
    """:func:`send_commands` for ``redis.asyncio``: one round trip, one reply per command.

    ``block``: seconds a blocking command among them (``XREADGROUP BLOCK``) may make Redis
    wait before it answers; the replies may take that long on top of the socket timeout
    (without it, a BLOCK longer than the socket timeout would look like a dead connection).
    """
    if not commands:
        return []
    pool = client.connection_pool
    connection = await pool.get_connection()
    timeout = connection.socket_timeout
    if block > 0 and timeout:
        connection.socket_timeout = timeout + block  # (this connection is ours until released)
    try:
        await connection.send_packed_command(_pack(connection, commands))
        replies: list[Any] = []
        for command in commands:
            try:
                replies.append(await connection.read_response())
            except redis.ResponseError as exc:
                replies.append(_named(exc, command))
        return replies
    except BaseException:
        await connection.disconnect()  # replies may be left unread: never hand this socket on
        raise
    finally:
        connection.socket_timeout = timeout
        await pool.release(connection)
