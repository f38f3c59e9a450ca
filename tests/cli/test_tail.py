"""``mdflow tail`` through the installed entry point, against the test server."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading

import pandas as pd
import pytest
from helpers import wait_for
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream

import mdflow  # noqa: F401 - registers the nodes
from mdflow.codecs import encode_entry, encode_message
from mdflow.reservoir import free_port

FRAME = pd.DataFrame(
    {"px": [1.5, 2.5], "qty": [10, 20]}, index=pd.Index(["AAA", "BBB"], name="sym")
)


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mdflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


class Live:
    """A running ``mdflow tail``: its stdout and stderr are collected as they come."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mdflow.cli", "tail", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _pump(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def wait_for_stderr(self, text: str) -> None:
        wait_for(
            lambda: text in "".join(self.err) or self.proc.poll() is not None,
            timeout=60,
            message=f"tail to say {text!r}",
        )
        assert text in "".join(self.err), "".join(self.err)

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=60)
        for thread in self._threads:
            thread.join(timeout=10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        return code, "".join(self.out), "".join(self.err)


@pytest.fixture
def live():
    """Start ``mdflow tail`` processes; any still running at the end is killed."""
    started: list[Live] = []

    def start(*args: str) -> Live:
        started.append(Live(*args))
        return started[-1]

    yield start
    for tail in started:
        if not tail.proc.stdout.closed:
            tail.finish(timeout=0.1 if tail.proc.poll() is None else 10)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_from_start_shows_every_kind_of_entry(redis_url, rdb, prefix, tmp_path):
    stream = prefix + "s"
    marker = tmp_path / "unpickled"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    ids = [
        rdb.xadd(stream, encode_entry({"sym": "BTC", "px": 1.5})),
        rdb.xadd(stream, encode_entry(FRAME)),
        rdb.xadd(stream, {"sym": "ETH", "note": "[bold]not markup[/bold]"}),
        rdb.xadd(stream, {"mdflow.msgpack": b"\xc1\xc1garbage"}),
        rdb.xadd(stream, {"blob": pickle.dumps(Evil())}),
    ]
    count = len(ids)
    if shutil.which("redis-cli"):
        host, port = redis_url.split("//")[1].split("/")[0].split(":")
        subprocess.run(
            ["redis-cli", "-h", host, "-p", port, "XADD", stream, "*", "a", "1", "b", "two"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        count += 1
    result = run_cli("tail", stream, "--from-start", "--max", str(count), "--url", redis_url)
    assert result.returncode == 0, result.stderr
    assert "is a stream: reading from the start with XREAD" in result.stderr
    out = result.stdout
    for entry_id in ids:
        assert entry_id.decode() in out
    assert "BTC" in out and "1.5" in out
    assert "DataFrame 2x2" in out and "AAA" in out and "BBB" in out and "qty" in out
    assert "20" in out and "2.5" in out
    assert "ETH" in out and "[bold]not markup[/bold]" in out
    assert "undecodable" in out and "not valid mdflow msgpack" in out
    assert r"\xc1\xc1garbage" in out
    assert not marker.exists(), "tail unpickled an entry"
    if count > len(ids):
        assert "two" in out

    as_json = run_cli(
        "tail", stream, "--from-start", "--max", str(count), "--json", "--url", redis_url
    )
    assert as_json.returncode == 0, as_json.stderr
    items = json_lines(as_json.stdout)
    assert [i["id"] for i in items[: len(ids)]] == [i.decode() for i in ids]
    assert items[0]["data"] == {"sym": "BTC", "px": 1.5} and items[0]["codec"] == "msgpack"
    assert items[1]["data"] == {
        "columns": ["px", "qty"],
        "index": ["AAA", "BBB"],
        "data": [[1.5, 10], [2.5, 20]],
    }
    assert items[2]["codec"] == "fields" and items[2]["data"]["sym"] == "ETH"
    assert "not valid mdflow msgpack" in items[3]["error"]
    assert items[3]["raw"] == {"mdflow.msgpack": r"\xc1\xc1garbage"}
    assert items[0]["time"].endswith("+00:00")
    if count > len(ids):
        assert items[-1]["data"] == {"a": "1", "b": "two"}


def test_new_entries_from_an_engine_and_to_redis(redis_url, rdb, prefix, live):
    stream = prefix + "s"
    old_id = rdb.xadd(stream, encode_entry("old")).decode()
    tail = live(stream, "--json", "--url", redis_url)
    tail.wait_for_stderr("reading new entries")

    async def body():
        pump = Stream.engine(
            stream, lambda: FRAME, push_interval=0.05, redis_url=redis_url, asynchronous=True
        )
        pump.start()
        await async_wait_for(lambda: rdb.xlen(stream) >= 3, timeout=60, message="2 pumped")
        await stop_and_wait(pump)
        source = Stream(asynchronous=True)
        source.to_redis(stream, redis_url=redis_url)
        await source.emit({"via": "to_redis"})

    run(body)
    wait_for(lambda: "to_redis" in "".join(tail.out), timeout=60, message="the to_redis entry")
    tail.proc.send_signal(signal.SIGINT)
    code, out, err = tail.finish()
    assert code == 0, err
    items = json_lines(out)
    assert old_id not in out
    assert [i["id"] for i in items] == [i.decode() for i, _ in rdb.xrange(stream)][1:]
    assert len(items) >= 3
    for item in items[:-1]:
        assert item["data"] == {
            "columns": ["px", "qty"],
            "index": ["AAA", "BBB"],
            "data": [[1.5, 10], [2.5, 20]],
        }
    assert items[-1]["data"] == {"via": "to_redis"}


def test_last_n_then_follow(redis_url, rdb, prefix, live):
    stream = prefix + "s"
    ids = [rdb.xadd(stream, encode_entry(i)).decode() for i in range(5)]
    tail = live(stream, "-n", "2", "--max", "3", "--json", "--url", redis_url)
    tail.wait_for_stderr("the last 2 entries, then new ones")
    new = rdb.xadd(stream, {"plain": "yes"}).decode()
    code, out, err = tail.finish()
    assert code == 0, err
    items = json_lines(out)
    assert [i["id"] for i in items] == [ids[3], ids[4], new]
    assert [i["data"] for i in items] == [3, 4, {"plain": "yes"}]


def test_channel_and_pattern_mode(redis_url, rdb, prefix, live):
    channel = prefix + "ch"
    tail = live(channel, "--max", "2", "--json", "--url", redis_url)
    tail.wait_for_stderr(
        "is not a stream (no key): listening to it as a pub/sub channel (SUBSCRIBE)"
    )
    wait_for(lambda: rdb.pubsub_numsub(channel)[0][1] > 0, timeout=60, message="a subscriber")
    rdb.publish(channel, encode_message({"px": 1.5}))
    rdb.publish(channel, b"hello")
    code, out, err = tail.finish()
    assert code == 0, err
    items = json_lines(out)
    assert [i["data"] for i in items] == [{"px": 1.5}, "hello"]
    assert items[0]["channel"] == channel and items[0]["pattern"] is None

    pattern = prefix + "p:*"
    tail = live(pattern, "--max", "1", "--url", redis_url)
    tail.wait_for_stderr("(PSUBSCRIBE)")
    wait_for(lambda: rdb.pubsub_numpat() > 0, timeout=60, message="a pattern subscriber")
    rdb.publish(prefix + "p:BTC", encode_message(FRAME))
    code, out, err = tail.finish()
    assert code == 0, err
    assert prefix + "p:BTC" in out and "DataFrame 2x2" in out and "AAA" in out


def test_group_mode_reads_its_share_without_acking(redis_url, rdb, prefix):
    stream = prefix + "s"
    for i in range(3):
        rdb.xadd(stream, encode_entry(i))
    result = run_cli(
        "tail", stream, "--group", "g", "--from-start", "--max", "2", "--json", "--url", redis_url
    )
    assert result.returncode == 0, result.stderr
    assert [i["data"] for i in json_lines(result.stdout)] == [0, 1]
    assert "NOT acknowledged" in result.stderr
    pending = rdb.xpending(stream, "g")
    assert pending["pending"] == 2, "tail --group does not acknowledge"
    assert "keeps its 2 pending entries" in result.stderr
    help_text = run_cli("tail", "--help").stdout
    assert "takes a" in help_text and "share of the group's entries" in help_text


def test_ctrl_c_exits_0_without_traceback(redis_url, rdb, prefix, live):
    stream = prefix + "s"
    rdb.xadd(stream, encode_entry(1))
    tail = live(stream, "--url", redis_url)
    tail.wait_for_stderr("Ctrl-C stops")
    tail.proc.send_signal(signal.SIGINT)
    code, _, err = tail.finish()
    assert code == 0, err
    assert "Traceback" not in err


def test_user_errors_are_one_line(redis_url, prefix):
    url = f"redis://:sekret@127.0.0.1:{free_port()}/0"
    down = run_cli("tail", "quotes", "--url", url)
    assert down.returncode == 1
    assert down.stderr.count("\n") == 1 and down.stderr.startswith("mdflow tail: ")
    assert "sekret" not in down.stderr and "Traceback" not in down.stderr and "***" in down.stderr

    missing = run_cli("tail", prefix + "nothing", "--from-start", "--url", redis_url)
    assert missing.returncode == 1
    assert "is not a stream (no such key); --from-start needs a stream" in missing.stderr
    assert missing.stderr.count("\n") == 1

    both = run_cli("tail", "s", "--from-start", "-n", "3", "--url", redis_url)
    assert both.returncode == 2 and "cannot be used together" in both.stderr


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_max_must_be_positive(bad):
    result = run_cli("tail", "s", "--max", bad)
    assert result.returncode == 2
