"""No untrusted data is executed: every decoder and every source, fuzzed.

Random and *mutated* inputs — valid encodings of records, market data, numpy and pandas
objects, datetimes..., with bytes flipped, inserted, deleted, truncated, spliced, or with a
node of their msgpack tree (ext payloads included) replaced by something hostile: pickles
(also inside ext codes other libraries use for pickled objects), dtype names that make
pandas read a file or import a module, huge shapes, unknown ext codes — go through

* every decoder: ``unpack``, ``decode_entry`` (``auto``/``msgpack``/``json``/``fields``),
  ``decode_message`` (``auto``/``msgpack``/``json``), the dead-letter payload
  (``read_payload``, ``DeadLetter.payload``), the CLI's rendering of entries, messages and
  dead letters (``mdflow tail`` / ``mdflow dead-letters``), the collectors' parsers;
* every source, through a real Redis (fewer examples): ``from_redis``, ``from_pubsub``,
  ``scanner``, and a collector reading a websocket that sends mutants.

Properties: nothing but :class:`~mdflow.errors.DecodeError` leaves a decoder; nothing is
unpickled, evaluated or executed (the tripwire refuses it with a ``BaseException`` that no
``except Exception`` can hide) and no file is opened but time-zone data; whatever decodes can
be rendered by the CLI; sources count or dead-letter what they cannot decode and keep running.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import pickle
import uuid

import numpy as np
import pytest
import redis
from fuzzkit import (
    PICKLE_EVAL,
    CodeExecution,
    mutate,
    mutate_bytes,
    mutate_json,
    seed_frames,
    seed_json,
    sweep,
    tripwire,
)
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st
from pubsubtools import connect, wait_numsub
from rich.console import Console
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream

from mdflow.cli import dead_letters as cli_dead_letters
from mdflow.cli.entries import jsonable, message_item, render, stream_item
from mdflow.codecs import JSON_FIELD, MAGIC, MSGPACK_FIELD, decode_entry, decode_message, unpack
from mdflow.collectors import SimulatedExchangeCollector
from mdflow.collectors.websocket import WebSocketCollector
from mdflow.errors import DecodeError
from mdflow.reservoir import RedisServer
from mdflow.streams import DeadLetter, list_dead_letters, read_payload

pytestmark = [pytest.mark.fault, pytest.mark.slow]

FRAMES = seed_frames()
JSONS = seed_json()
# MDFLOW_FUZZ_EXAMPLES=20000 for a longer hunt (the default keeps the file under a minute)
EXAMPLES = int(os.environ.get("MDFLOW_FUZZ_EXAMPLES", "800"))
FUZZ = settings(
    deadline=None,
    database=None,
    max_examples=EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SOURCES = settings(  # (through Redis: few examples, and no shrinking, which takes minutes)
    deadline=None,
    database=None,
    max_examples=6,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FAILED = object()


def drawer(data: st.DataObject):
    """Uniform choices for the mutators (hypothesis' own integers favour the small ones)."""
    return data.draw(st.randoms(use_true_random=False)).randint


def frame(data: st.DataObject) -> bytes:
    """A mutated mdflow msgpack frame, or (sometimes) plain random bytes."""
    if data.draw(st.integers(0, 9)) == 0:
        return data.draw(st.binary(max_size=64))
    blob = mutate(FRAMES, drawer(data))
    note(f"frame: {blob!r}")
    return blob


def json_text(data: st.DataObject) -> bytes:
    blob = mutate_json(JSONS[data.draw(st.integers(0, len(JSONS) - 1))], drawer(data))
    note(f"json: {blob!r}")
    return blob


def show(value: object) -> None:
    """Render a decoded value as the CLI does (rich table and JSON); must not raise."""
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(render(value))
    json.dumps(jsonable(value))


def check(decoder, *args, **kwargs) -> object:
    """Call ``decoder``; only DecodeError may escape; nothing executed, no file read."""
    with tripwire() as trip:
        try:
            value = decoder(*args, **kwargs)
        except DecodeError:
            value = FAILED
        if value is not FAILED:
            show(value)
    assert not trip.forbidden, trip.forbidden
    assert not trip.allowed_files(), f"files opened while decoding: {trip.allowed_files()}"
    assert not trip.foreign_imports(), trip.foreign_imports()
    return value


# --- the tripwire itself --------------------------------------------------------------------------
def test_tripwire_refuses_unpickling_and_eval_and_sees_files():
    from pandas.api.types import pandas_dtype

    with tripwire() as trip:
        for call in (
            lambda: pickle.loads(PICKLE_EVAL),
            lambda: pickle.Unpickler(io.BytesIO(PICKLE_EVAL)).load(),
            lambda: eval("1"),
            lambda: np.load(io.BytesIO(b"")),
        ):
            with pytest.raises(CodeExecution):
                try:
                    call()
                except Exception:  # noqa: BLE001 - what a decoder's handler would do
                    pytest.fail("the tripwire must not be catchable by except Exception")
        with pytest.raises(TypeError):  # pandas reads the file as a time zone, then gives up
            pandas_dtype("datetime64[ns, dateutil//etc/passwd]")
    assert len(trip.forbidden) == 4
    assert trip.allowed_files() == ["/etc/passwd"]
    assert pickle.loads(pickle.dumps(1)) == 1  # restored


# --- decoders -------------------------------------------------------------------------------------
@FUZZ
@given(st.data())
def test_unpack_raises_only_decode_error_and_executes_nothing(data):
    check(unpack, frame(data))


@FUZZ
@given(st.data(), st.sampled_from(["auto", "msgpack", "json", "fields"]))
def test_decode_entry_of_every_codec(data, codec):
    kind = data.draw(st.integers(0, 5))
    if kind <= 2:
        fields = {MSGPACK_FIELD: frame(data)}
    elif kind == 3:
        fields = {JSON_FIELD: json_text(data)}
    elif kind == 4:  # plain fields, maybe with a reserved name among them
        names = st.sampled_from([MSGPACK_FIELD, JSON_FIELD, "sym", "", "px\x00"]) | st.text()
        fields = data.draw(st.dictionaries(names, st.binary(max_size=16), min_size=1, max_size=4))
    else:
        fields = {data.draw(st.sampled_from([MSGPACK_FIELD, JSON_FIELD])): data.draw(st.text())}
    if data.draw(st.booleans()):  # as redis-py returns them
        fields = {k.encode() if isinstance(k, str) else k: v for k, v in fields.items()}
    check(decode_entry, fields, codec, source=b"s\xff", entry_id="1-0")
    item = stream_item("s", b"1700000000000-0", fields)  # `mdflow tail` of a stream
    with tripwire() as trip:
        json.dumps(item.as_json())
        Console(file=io.StringIO(), width=100).print(item.renderable(show_source=True))
    assert not trip.forbidden


@FUZZ
@given(st.data(), st.sampled_from(["auto", "msgpack", "json"]))
def test_decode_message_of_every_codec(data, codec):
    kind = data.draw(st.integers(0, 3))
    if kind <= 1:
        payload: bytes | str = MAGIC + frame(data)
    elif kind == 2:
        payload = json_text(data)
    else:
        payload = data.draw(st.binary(max_size=64) | st.text(max_size=64))
    check(decode_message, payload, codec, source="c")
    item = message_item({"channel": b"c", "pattern": None, "data": payload})  # `mdflow tail`
    with tripwire() as trip:
        json.dumps(item.as_json())
        Console(file=io.StringIO(), width=100).print(item.renderable(show_source=True))
    assert not trip.forbidden


@FUZZ
@given(st.data())
def test_dead_letter_payloads(data):
    original = {MSGPACK_FIELD.encode(): frame(data)}
    import msgpack

    payload = msgpack.packb(original)
    if data.draw(st.booleans()):
        payload = mutate_bytes(payload, drawer(data), data.draw(st.integers(1, 3)))
    key = data.draw(st.sampled_from([b"payload", "payload"]))
    fields = check(read_payload, {key: payload})
    if fields is FAILED:
        fields = original
    letter = DeadLetter("1700000000000-0", "s:dead", "s", "1-0", "g", "c", "why", 2, dict(fields))
    check(letter.payload)
    with tripwire() as trip:  # `mdflow dead-letters` (table and --json)
        json.dumps(cli_dead_letters._as_json(letter))
        Console(file=io.StringIO(), width=100).print(cli_dead_letters._table("s:dead", [letter]))
    assert not trip.forbidden


@FUZZ
@given(st.data())
def test_collector_parsers_raise_exceptions_only(data):
    """A collector skips what ``parse`` raises on (an Exception); nothing more may happen."""
    raw: bytes | str = json_text(data)
    if data.draw(st.booleans()):
        raw = raw.decode("utf-8", "replace")
    for collector in (
        SimulatedExchangeCollector("ws://127.0.0.1:9", ["BTC-USDT"]),
        WebSocketCollector("ws://127.0.0.1:9", ["BTC-USDT"], parse=lambda m: m),
    ):
        with tripwire() as trip:
            try:
                collector.parse(raw)
            except Exception:  # noqa: BLE001 - counted as a parse error by the node
                pass
        assert not trip.forbidden


# --- sources, through a real Redis ---------------------------------------------------------------
@SOURCES
@given(st.data())
def test_from_redis_dead_letters_what_it_cannot_decode(redis_url, data):
    topic = f"fuzz:{uuid.uuid4().hex[:8]}"
    entries = []
    for _ in range(data.draw(st.integers(5, 25))):
        kind = data.draw(st.integers(0, 3))
        if kind <= 1:
            entries.append({MSGPACK_FIELD: frame(data)})
        elif kind == 2:
            entries.append({JSON_FIELD: json_text(data)})
        else:
            names = st.text(max_size=8)
            entries.append(data.draw(st.dictionaries(names, st.binary(max_size=16), min_size=1)))
    conn = redis.Redis.from_url(redis_url)
    ids = [conn.xadd(topic, f).decode() for f in entries]
    seen: list[object] = []

    async def body():
        outlet = Stream.from_redis(
            topic, group="g", consumer="c", start_id="0", max_deliveries=1, retry_delay=0.01,
            redis_url=redis_url, asynchronous=True,
        )  # fmt: skip
        outlet.sink(lambda x: (show(x), seen.append(x)))
        with tripwire() as trip:
            outlet.start()
            await async_wait_for(
                lambda: outlet.status()["acked"] >= len(entries) or outlet.status()["failure"],
                timeout=30,
                message="every entry acked or dead-lettered",
            )
            status = outlet.status()
            await stop_and_wait(outlet)
        assert not trip.forbidden and not trip.allowed_files(installed=True)
        return status

    try:
        status = run(body, timeout=60)
        assert status["failure"] is None and status["state"] == "running", status
        assert status["emitted"] + status["dead_lettered"] == len(entries), status
        assert status["failed"] == 0, status  # the sink renders what decoded: it never fails
        letters = list_dead_letters(topic, redis_url=redis_url)
        assert len(letters) == status["dead_lettered"]
        written = dict(zip(ids, entries, strict=True))
        for letter in letters:
            assert letter.reason.startswith("cannot decode from")
            original = written[letter.origin_id]
            assert letter.fields == {
                (k.encode() if isinstance(k, str) else k): v for k, v in original.items()
            }
            check(letter.payload)
        assert conn.xpending(topic, "g")["pending"] == 0
    finally:
        conn.delete(topic, topic + ":dead")
        conn.close()


@SOURCES
@given(st.data())
def test_pubsub_listener_and_scanner_count_what_they_cannot_decode(redis_url, data):
    from mdflow.analyzers import HighLowOfDay

    channel = f"fuzz:{uuid.uuid4().hex[:8]}"
    payloads: list[bytes] = []
    for _ in range(data.draw(st.integers(5, 25))):
        kind = data.draw(st.integers(0, 2))
        if kind == 0:
            payloads.append(MAGIC + frame(data))
        elif kind == 1:
            payloads.append(json_text(data))
        else:
            payloads.append(data.draw(st.binary(max_size=32)))
    seen: list[object] = []

    async def body():
        listener = Stream.from_pubsub(channel, redis_url=redis_url, asynchronous=True)
        listener.sink(lambda x: (show(x), seen.append(x)))
        scan = Stream.scanner(
            channel, HighLowOfDay(key_prefix=channel), redis_url=redis_url, asynchronous=True
        )
        scan.sink(show)
        with tripwire() as trip:
            listener.start()
            scan.start()
            async with connect(redis_url) as conn:
                await wait_numsub(conn, channel, 2)
                for payload in payloads:
                    await conn.publish(channel, payload)
            await async_wait_for(
                lambda: (
                    listener.status()["received"] >= len(payloads)
                    and scan.status()["received"] >= len(payloads)
                ),
                timeout=30,
                message="every message received",
            )
            statuses = listener.status(), scan.status()
            await stop_and_wait(listener, scan)
        assert not trip.forbidden and not trip.allowed_files(installed=True)
        return statuses

    listened, scanned = run(body, timeout=60)
    for status in (listened, scanned):
        assert status["state"] == "running" and status["failure"] is None, status
    assert listened["emitted"] + listened["decoding_errors"] == len(payloads), listened
    assert listened["errors"] == 0, listened  # (the sink renders what decoded: it never fails)
    assert scanned["processed"] + scanned["decoding_errors"] + scanned["errors"] >= len(payloads)


@SOURCES
@given(st.data())
def test_collector_reading_a_hostile_feed_keeps_running(data):
    from websockets.asyncio.server import serve

    frames: list[bytes | str] = []
    for _ in range(data.draw(st.integers(5, 30))):
        text = json_text(data)
        frames.append(
            text if data.draw(st.integers(0, 4)) == 0 else text.decode("utf-8", "replace")
        )
    points: list[object] = []

    async def feed(ws):
        await ws.recv()  # the subscription
        for item in frames:
            await ws.send(item)
        await ws.wait_closed()

    async def body():
        async with serve(feed, "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            collector = SimulatedExchangeCollector(f"ws://127.0.0.1:{port}", ["BTC-USDT"])
            node = Stream.collector(collector, max_silence=30, asynchronous=True)
            node.sink(lambda p: (show(p), points.append(p)))
            with tripwire() as trip:
                node.start()
                await async_wait_for(
                    lambda: node.get_status()["statistics"]["messages_received"] >= len(frames),
                    timeout=30,
                    message="every frame received",
                )
                status = node.get_status()
                node.stop()
                await asyncio.sleep(0)
            assert not trip.forbidden and not trip.allowed_files(installed=True)
            return status

    status = run(body, timeout=60)
    assert status["status"] == "running", status
    counts = status["statistics"]
    assert counts["messages_processed"] + counts["parse_errors"] == len(frames), status


def test_every_node_of_every_seed_replaced_by_hostile_values():
    """The deterministic half: each node of each seed in turn replaced by each hostile value
    of its kind (what random mutation finds only by luck: a dtype name that reads a file, a
    pickle where an ndarray's elements go...)."""
    tried = decoded = 0
    with tripwire() as trip:
        for blob in sweep(FRAMES):
            tried += 1
            try:
                value = unpack(blob)
            except DecodeError:
                continue
            except BaseException as exc:  # noqa: BLE001 - reported with the input
                pytest.fail(f"{type(exc).__name__}: {exc} from {blob!r}")
            decoded += 1
            if decoded % 4:  # (render a quarter: rich tables of DataFrames are what costs)
                continue
            try:
                show(value)
            except Exception as exc:  # noqa: BLE001 - reported with the input
                pytest.fail(f"the CLI cannot render {blob!r}: {type(exc).__name__}: {exc}")
    assert not trip.forbidden, trip.forbidden
    assert not trip.allowed_files(), trip.allowed_files()
    assert not trip.foreign_imports(), trip.foreign_imports()
    assert tried > 20_000 and decoded > 1000, (tried, decoded)


# --- what fuzzing found (minimal examples), kept as regressions -----------------------------------
FOUND = {
    # a Series whose masked dtype name makes pandas read /etc/passwd as a time zone (dateutil)
    "dtype name reads a file": (
        b"\xc7S\x10\x93\xc0\xc7\x0b\x0f\x95\xa5range\x00\x01\x01\xc0\x94\xa6masked\xd9$"
        b"datetime64[ns, dateutil//etc/passwd]\x93\xa2np\xa3<i8\xc4\x08\x01\x00\x00\x00\x00\x00"
        b"\x00\x00\xc4\x01\x00",
        r"bad dtype 'datetime64\[ns, dateutil//etc/passwd\]'",
    ),
    # a numpy datetime64 without a unit but not NaT: str() of it raises (the CLI crashed)
    "datetime64 without unit": (
        b"\xc7\x0f\x08\x92\xa3<M8\xc4\x08\x15\xff\\7\xb7h\xa6\x17",
        r"<M8 without a unit holds values other than NaT",
    ),
    # a numpy str array holding a UCS-4 value beyond U+10FFFF: repr() and tolist() raise
    # SystemError (the CLI crashed)
    "code point beyond Unicode": (
        b"\xc7\x19\t\x93\xa3<U2\x91\x02\xc4\x10a\x00\x00\x00b\x00\x00\x00c\x00\x11\x00"
        b"\x00\x00\x00\x00",
        r"<U2 holds a code point beyond U\+10FFFF",
    ),
    # a RangeIndex of 2**63 elements: len() raises OverflowError (the CLI crashed)
    "RangeIndex longer than ssize_t": (
        b"\xc7\x14\x0f\x95\xa5range\x00\xcf\xff\xff\xff\xff\xff\xff\xff\xff\x02\xa1r",
        r"bad RangeIndex \[0, 18446744073709551615, 2\]",
    ),
    # 17 bytes declaring 10**12 elements of a zero-size dtype (any .tolist() hangs)
    "zero-size elements": (
        b"\xc7\x11\t\x93\xa3|V0\x91\xcf\x00\x00\x00\xe8\xd4\xa5\x10\x00\xc4\x00",
        r"1000000000000 elements of zero bytes \(\|V0\); at most 65536",
    ),
}


@pytest.mark.parametrize("name", FOUND)
def test_what_fuzzing_found(name):
    blob, reason = FOUND[name]
    with tripwire() as trip, pytest.raises(DecodeError, match=reason):
        unpack(blob)
    assert trip.opened == [] and trip.forbidden == []


def test_cli_renders_a_frame_of_2_to_the_63_rows():
    """A frame without columns and a RangeIndex of 2**63-1 rows (44 bytes) decodes, legitimately;
    the CLI's JSON used to iterate every row (and ``itertuples`` built a namedtuple by eval)."""
    blob = (
        b"\xc7&\x11\x93\xc7\x0b\x0f\x95\xa5range\x00\x00\x01\xc0\xc7\x13\x0f\x95\xa5range\x00"
        b"\xcf\x7f\xff\xff\xff\xff\xff\xff\xff\x01\xc0\x90"
    )
    frame = check(unpack, blob)  # (check renders it, under the tripwire: no eval)
    assert frame.shape == (2**63 - 1, 0)
    out = jsonable(frame)
    assert out["rows"] == 2**63 - 1 and len(out["index"]) == 100_000


def test_read_payload_raises_decode_error_only():
    for fields in ({}, {b"payload": b"\xc1"}, {b"payload": b"\x91\x01"}, {"payload": 7}):
        with pytest.raises(DecodeError, match=r"dead letter|dead-letter"):
            read_payload(fields)


# --- what other processes publish: topology documents and collector status (inspect, dashboard) -
@pytest.fixture(scope="module")
def own_server():
    """A server of this module's own: ``inspect`` reads every key (hypothesis examples share it)."""
    server = RedisServer().start()
    from mdflow.pictures.inspect import inspect

    inspect(server.url).snapshot()  # (imports the renderer now: lazy imports are not data)
    yield server
    server.cleanup()


def topology_document() -> bytes:
    """A live graph's document as ``mdflow.pictures.publish`` writes it."""
    from mdflow.pictures.topology import topology

    url = "redis://127.0.0.1:1/0"  # (never connected: the nodes are not started)
    source = Stream.from_redis("in", group="g", redis_url=url)
    mapped = source.map(str)
    writer = mapped.to_redis("out", redis_url=url)
    doc = {
        "version": 1,
        "id": "fuzz:1:1",
        "host": "h",
        "pid": 1,
        "program": "p.py",
        "started": 1.0,
        "time": 2.0,
        "interval": 1.0,
        "ttl": 5.0,
        "redis": url,
        "topology": topology([source, mapped, writer], status=True, prefix="fuzz:1:1/"),
    }
    return json.dumps(doc, default=str).encode()


@settings(SOURCES, max_examples=max(40, EXAMPLES // 10))
@given(st.data())
def test_inspect_reads_hostile_topology_documents(own_server, data):
    """``inspect`` (``mdflow inspect``, the dashboard) parses JSON that any client may SET."""
    from mdflow.pictures.dashboard import snapshot_html
    from mdflow.pictures.inspect import inspect

    conn = redis.Redis.from_url(own_server.url)
    conn.flushall()
    good = topology_document()
    for n in range(data.draw(st.integers(1, 4))):
        conn.set(f"mdflow:topology:fuzz:{n}", mutate_json(good, drawer(data)))
    status = json.dumps({"feed": {"status": "running", "statistics": {"messages_received": 3}}})
    conn.hset("mdflow:collectors:fuzz", "okx", mutate_json(status.encode(), drawer(data)))
    conn.xadd("in", {"a": "1"})
    conn.close()
    with tripwire() as trip:
        view = inspect(own_server.url)
        snap = view.snapshot()
        json.dumps(snap, default=str)
        snapshot_html(snap)  # (the dashboard in Jupyter)
        repr(view)
    assert not trip.forbidden and not trip.allowed_files(installed=True)


def test_inspect_refuses_a_document_that_injects_dot_attributes(own_server):
    """Found by fuzzing: node and edge words go into DOT unquoted; a fill of
    ``white" URL="javascript:alert(1)`` became a link in the dashboard's SVG."""
    from mdflow.pictures.inspect import inspect

    doc = json.loads(topology_document())
    node = next(iter(doc["topology"]["nodes"].values()))
    node["fill"] = 'white" URL="javascript:alert(1)'
    conn = redis.Redis.from_url(own_server.url)
    conn.flushall()
    conn.set("mdflow:topology:evil", json.dumps(doc))
    conn.set("mdflow:topology:list", json.dumps({"topology": {"nodes": {}, "edges": ["x"]}}))
    conn.close()
    snap = inspect(own_server.url).snapshot()
    assert "javascript" not in snap["svg"]
    assert any("mdflow:topology:evil: not a topology document" in e for e in snap["errors"])
    assert any("an edge is str, not an object" in e for e in snap["errors"])
