"""``mdflow dead-letters`` through the installed entry point, against the test server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pandas as pd
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream

import mdflow  # noqa: F401 - registers the nodes
from mdflow.codecs import encode_entry
from mdflow.reservoir import free_port

FRAME = pd.DataFrame({"px": [1.5, 2.5]}, index=pd.Index(["AAA", "BBB"], name="sym"))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mdflow.cli", "dead-letters", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


async def cli(*args: str) -> subprocess.CompletedProcess:
    """Run the command without blocking the loop the outlet runs on."""
    return await asyncio.to_thread(run_cli, *args)


def test_replayed_dead_letters_are_processed_by_the_running_pipeline(redis_url, rdb, prefix):
    topic = prefix + "s"
    originals = [{"n": 1, "sym": "BTC"}, FRAME, {"plain": "fields"}]
    rdb.xadd(topic, encode_entry(originals[0]))
    rdb.xadd(topic, encode_entry(originals[1]))
    rdb.xadd(topic, {"plain": "fields"})  # as redis-cli writes it
    broken = {"on": True}
    done: list = []

    def handle(item):
        if broken["on"]:
            raise RuntimeError("the downstream service is down")
        return item

    async def body():
        outlet = Stream.from_redis(
            topic,
            group="g",
            consumer="c1",
            start_id="0",
            max_deliveries=2,
            retry_delay=0.01,
            redis_url=redis_url,
            asynchronous=True,
        )
        outlet.map(handle).sink(done.append)
        outlet.start()
        try:
            await async_wait_for(
                lambda: outlet.status()["dead_lettered"] == 3, timeout=60, message="3 dead"
            )
            listing = await cli(topic, "--url", redis_url)
            assert listing.returncode == 0, listing.stderr
            assert f"{topic}:dead: 3 dead letters" in listing.stdout
            assert "max_deliveries=2" in listing.stdout and "g/c1" in listing.stdout
            assert "sym=BTC" in listing.stdout and "DataFrame" in listing.stdout

            as_json = await cli(topic + ":dead", "--json", "--url", redis_url)
            assert as_json.returncode == 0, as_json.stderr
            letters = json.loads(as_json.stdout)
            assert [d["deliveries"] for d in letters] == [3, 3, 3]
            assert all("more than max_deliveries=2" in d["reason"] for d in letters)
            assert {(d["origin"], d["group"], d["consumer"]) for d in letters} == {
                (topic, "g", "c1")
            }
            assert letters[0]["data"] == {"n": 1, "sym": "BTC"}
            assert letters[2]["data"] == {"plain": "fields"} and letters[2]["codec"] == "fields"

            refused = await cli(topic, "--replay", "--url", redis_url)
            assert refused.returncode == 1 and "pass --yes" in refused.stderr
            assert rdb.xlen(topic + ":dead") == 3

            broken["on"] = False
            replay = await cli(topic, "--replay", "--yes", "--url", redis_url)
            assert replay.returncode == 0, replay.stderr
            assert f"replayed 3 of 3 dead letters from '{topic}:dead' to '{topic}'" in replay.stdout
            await async_wait_for(lambda: len(done) == 3, timeout=60, message="3 processed")
            await async_wait_for(
                lambda: outlet.status()["acked"] == 6, timeout=60, message="all acked"
            )
        finally:
            await stop_and_wait(outlet)

    run(body, timeout=180)
    assert done[0] == originals[0]
    pd.testing.assert_frame_equal(done[1], FRAME)
    assert done[2] == originals[2]
    assert rdb.xlen(topic + ":dead") == 0
    assert rdb.xpending(topic, "g")["pending"] == 0
    empty = run_cli(topic, "--url", redis_url)
    assert empty.returncode == 0 and f"{topic}:dead: no dead letters" in empty.stdout


def bury_undecodable(redis_url, rdb, topic, n):
    """Dead letters the quick way: entries no codec decodes go to the dead stream at once."""
    for i in range(n):
        rdb.xadd(topic, {"mdflow.msgpack": b"\xc1" + bytes([0x80 + i])})

    async def body():
        outlet = Stream.from_redis(
            topic, group="g", start_id="0", redis_url=redis_url, asynchronous=True
        )
        outlet.start()
        await async_wait_for(lambda: outlet.status()["dead_lettered"] == n, timeout=60)
        await stop_and_wait(outlet)

    run(body)


def test_purge_and_replay_elsewhere(redis_url, rdb, prefix):
    topic = prefix + "s"
    bury_undecodable(redis_url, rdb, topic, 3)
    listing = json.loads(run_cli(topic, "--json", "--url", redis_url).stdout)
    assert all("not valid mdflow msgpack" in d["error"] for d in listing)
    assert listing[0]["raw"] == {"mdflow.msgpack": "\\xc1\\x80"}

    other = prefix + "quarantine"
    moved = run_cli(
        topic,
        "--replay",
        "--to",
        other,
        "--id",
        listing[0]["id"],
        "--yes",
        "--json",
        "--url",
        redis_url,
    )
    assert moved.returncode == 0, moved.stderr
    report = json.loads(moved.stdout)
    assert report["replayed"] == 1 and list(report["ids"]) == [listing[0]["id"]]
    assert rdb.xrange(other)[0][1] == {b"mdflow.msgpack": b"\xc1\x80"}

    refused = run_cli(topic, "--purge", "--url", redis_url)
    assert refused.returncode == 1 and "pass --yes" in refused.stderr
    assert rdb.xlen(topic + ":dead") == 2
    purged = run_cli(topic, "--purge", "--yes", "--url", redis_url)
    assert purged.returncode == 0, purged.stderr
    assert f"purged 2 of 2 dead letters from '{topic}:dead'" in purged.stdout
    assert rdb.xlen(topic + ":dead") == 0


def test_user_errors_are_one_line(redis_url, prefix):
    missing = run_cli(prefix + "nothing", "--url", redis_url)
    assert missing.returncode == 1
    assert missing.stderr.startswith("mdflow dead-letters: no dead-letter stream")
    assert missing.stderr.count("\n") == 1

    url = f"redis://:sekret@127.0.0.1:{free_port()}/0"
    down = run_cli("quotes", "--url", url)
    assert down.returncode == 1 and down.stderr.count("\n") == 1
    assert "sekret" not in down.stderr and "Traceback" not in down.stderr

    both = run_cli("quotes", "--replay", "--purge", "--url", redis_url)
    assert both.returncode == 2 and "cannot be used together" in both.stderr
    to = run_cli("quotes", "--to", "x", "--url", redis_url)
    assert to.returncode == 2 and "--to only goes with --replay" in to.stderr
