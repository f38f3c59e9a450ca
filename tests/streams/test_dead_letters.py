"""Dead-letter streams read back, replayed byte for byte, purged (mdflow.streams.dead_letters)."""

from __future__ import annotations

import asyncio
import datetime
import logging

import pandas as pd
import pytest

from mdflow.codecs import encode_entry
from mdflow.errors import ConfigError, DecodeError, MdflowError, RedisUnavailable
from mdflow.nodes import NodeStatus
from mdflow.reservoir import free_port
from mdflow.streams import (
    DeadLetter,
    DeadLetters,
    dead_letter_stream,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
)

FRAME = pd.DataFrame({"px": [1.5, 2.5], "qty": [1, 2]}, index=pd.Index(["A", "B"], name="sym"))


def bury(url, rdb, topic, entries, reason="delivered 6 times, more than max_deliveries=5"):
    """XADD ``entries`` (field dicts) to ``topic`` and dead-letter them with mdflow's own writer."""
    ids = [rdb.xadd(topic, fields).decode() for fields in entries]

    async def send():
        dead = DeadLetters(url, "g", "c1", "{topic}:dead", NodeStatus(("dead_lettered", "acked")))
        for entry_id, (_, fields) in zip(ids, rdb.xrange(topic), strict=True):
            await dead.send(topic, entry_id, fields, reason, 6)

    asyncio.run(send())
    return ids


def test_dead_letter_stream_accepts_origin_or_dead_name():
    assert dead_letter_stream("quotes") == "quotes:dead"
    assert dead_letter_stream("quotes:dead") == "quotes:dead"
    assert dead_letter_stream("quotes", dead_letter="dlq:{topic}") == "dlq:quotes"
    assert dead_letter_stream("dlq:quotes", dead_letter="dlq:{topic}") == "dlq:quotes"
    assert dead_letter_stream(":dead") == ":dead:dead"  # nothing before the suffix: an origin
    with pytest.raises(ConfigError, match=r"dead_letter must be a stream name pattern"):
        dead_letter_stream("quotes", dead_letter="dead")
    with pytest.raises(ConfigError, match=r"name must be a non-empty stream name; got 42"):
        dead_letter_stream(42)  # type: ignore[arg-type]


def test_list_reads_reason_deliveries_origin_and_payload(redis_url, rdb, prefix):
    topic = prefix + "s"
    ids = bury(
        redis_url,
        rdb,
        topic,
        [encode_entry({"sym": "BTC", "px": 1.5}), encode_entry(FRAME), {"a": "1"}],
    )
    letters = list_dead_letters(topic, redis_url=redis_url)
    assert [d.origin_id for d in letters] == ids
    first = letters[0]
    assert isinstance(first, DeadLetter)
    assert (first.stream, first.origin, first.group, first.consumer) == (
        topic + ":dead",
        topic,
        "g",
        "c1",
    )
    assert first.deliveries == 6 and "max_deliveries=5" in first.reason
    assert first.payload() == {"sym": "BTC", "px": 1.5}
    pd.testing.assert_frame_equal(letters[1].payload(), FRAME)
    assert letters[2].payload() == {"a": "1"}
    assert letters[2].fields == {b"a": b"1"}
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - first.time).total_seconds()) < 3600
    assert first.id == rdb.xrange(topic + ":dead")[0][0].decode()
    # the dead stream's own name works too, and count limits
    assert [d.id for d in list_dead_letters(topic + ":dead", count=2, redis_url=redis_url)] == [
        d.id for d in letters[:2]
    ]


def test_list_of_nothing_and_of_wrong_things(redis_url, rdb, prefix, caplog):
    assert list_dead_letters(prefix + "never", redis_url=redis_url) == []
    rdb.set(prefix + "str:dead", "x")
    with pytest.raises(ConfigError, match=r"is a Redis string, not a stream"):
        list_dead_letters(prefix + "str", redis_url=redis_url)
    rdb.xadd(prefix + "odd:dead", {"hello": "world"})
    with caplog.at_level(logging.WARNING, logger="mdflow.streams.dead_letters"):
        assert list_dead_letters(prefix + "odd", redis_url=redis_url) == []
    assert "not a dead letter written by mdflow" in caplog.text
    with pytest.raises(ConfigError, match=r"count must be a positive int"):
        list_dead_letters(prefix + "never", count=0, redis_url=redis_url)


def test_undecodable_payload_raises_decode_error_and_is_never_unpickled(redis_url, rdb, prefix):
    topic = prefix + "s"
    bury(redis_url, rdb, topic, [{"mdflow.msgpack": b"\xc1\xc1garbage"}])
    (letter,) = list_dead_letters(topic, redis_url=redis_url)
    assert letter.fields == {b"mdflow.msgpack": b"\xc1\xc1garbage"}
    with pytest.raises(DecodeError, match=r"cannot decode from .* entry"):
        letter.payload()


def test_replay_writes_the_exact_fields_back_and_removes_only_those(redis_url, rdb, prefix):
    topic = prefix + "s"
    originals = [
        encode_entry(FRAME),
        encode_entry({"n": 1}, codec="json"),
        {"a": "1", "b": b"\xff"},
    ]
    bury(redis_url, rdb, topic, originals)
    rdb.delete(topic)  # what was in the origin is gone: only the replay writes there
    letters = list_dead_letters(topic, redis_url=redis_url)

    done = replay_dead_letters(topic, ids=[letters[0].id, letters[2].id], redis_url=redis_url)
    assert list(done) == [letters[0].id, letters[2].id]
    back = rdb.xrange(topic)
    assert [i.decode() for i, _ in back] == list(done.values())
    assert back[0][1] == {k.encode(): v for k, v in originals[0].items()}  # byte for byte
    assert back[1][1] == {b"a": b"1", b"b": b"\xff"}
    assert [d.id for d in list_dead_letters(topic, redis_url=redis_url)] == [letters[1].id]

    # the rest, by the dead stream's name, to another stream
    other = prefix + "other"
    done = replay_dead_letters(topic + ":dead", to=other, redis_url=redis_url)
    assert list(done) == [letters[1].id]
    assert rdb.xrange(other)[0][1] == {b"mdflow.json": b'{"n":1}'}
    assert rdb.xlen(topic + ":dead") == 0
    assert replay_dead_letters(topic, redis_url=redis_url) == {}


def test_replay_that_redis_refuses_loses_nothing(redis_url, rdb, prefix):
    topic = prefix + "s"
    bury(redis_url, rdb, topic, [encode_entry(1), encode_entry(2)])
    before = rdb.xrange(topic + ":dead")
    rdb.set(prefix + "not-a-stream", "x")
    with pytest.raises(MdflowError, match=r"replaying dead letter .* failed: .*WRONGTYPE"):
        replay_dead_letters(topic, to=prefix + "not-a-stream", redis_url=redis_url)
    assert rdb.xrange(topic + ":dead") == before
    with pytest.raises(ConfigError, match=r"to is the dead-letter stream itself"):
        replay_dead_letters(topic, to=topic + ":dead", redis_url=redis_url)


def test_purge_deletes_what_it_is_told(redis_url, rdb, prefix):
    topic = prefix + "s"
    bury(redis_url, rdb, topic, [encode_entry(i) for i in range(3)])
    letters = list_dead_letters(topic, redis_url=redis_url)
    assert purge_dead_letters(topic, ids=[letters[1].id], redis_url=redis_url) == 1
    assert [d.id for d in list_dead_letters(topic, redis_url=redis_url)] == [
        letters[0].id,
        letters[2].id,
    ]
    assert purge_dead_letters(topic + ":dead", redis_url=redis_url) == 2
    assert rdb.xlen(topic + ":dead") == 0
    assert purge_dead_letters(prefix + "never", redis_url=redis_url) == 0


def test_unreachable_redis_is_a_clear_error():
    url = f"redis://:sekret@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable, match=r"did not answer") as info:
        list_dead_letters("quotes", redis_url=url)
    assert "sekret" not in str(info.value)
