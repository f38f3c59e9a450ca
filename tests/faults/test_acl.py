"""ACL: least-privilege Redis users for each mdflow role, and clear failures outside the role.

The ACL lines below are the README's ("ACL: least privilege"), word for word:
each role runs its job with its user, and a node that steps outside its role
stops at once in the ``failed`` state with a reason that names NOPERM, the
command and its key or channel, the user and the (masked) URL.

Redis 7 lines use a selector (``(...)``) so the consumer may XADD to its
dead-letter streams only; Redis 6.2 has no selectors, so its consumer line
grants XADD on the consumer's key pattern instead (``ACL_REDIS6``).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import uuid

import pytest
import redis
from helpers import wait_for
from streamz import Stream

import mdflow
from mdflow.analyzers import HighLowOfDay
from mdflow.codecs import encode_message
from mdflow.errors import RedisAccessDenied
from mdflow.pictures.inspect import inspect
from mdflow.reservoir import RedisServer

pytestmark = [pytest.mark.fault, pytest.mark.slow]

ADMIN = "admin-s3cret"

#: The README's ACL lines (Redis 7), one per role.
ACL = {
    "producer": (
        "ACL SETUSER producer reset on >producer-pw resetchannels ~ticks:* "
        "+ping +client|setname +type +xadd"
    ),
    "consumer": (
        "ACL SETUSER consumer reset on >consumer-pw resetchannels ~ticks:* "
        "+ping +client|setname +xgroup|create +xreadgroup +xack +xpending +xclaim "
        '+xinfo|groups +xrange +eval "(+xadd ~ticks:*:dead)"'
    ),
    "scanner": (
        "ACL SETUSER scanner reset on >scanner-pw resetchannels ~mdflow:hod:* "
        "&ticks:* &mdflow:hod:alerts +ping +client|setname +subscribe +psubscribe "
        "+scan +lrange +lpush +ltrim +pexpire +publish"
    ),
    "inspector": (
        "ACL SETUSER inspector reset on >inspector-pw resetchannels ~* "
        "+@read -@dangerous +ping +time +client|setname"
    ),
}
#: Redis 6.2 has no selectors: its consumer may XADD anywhere in ~ticks:*.
ACL_REDIS6 = dict(
    ACL,
    consumer=(
        "ACL SETUSER consumer reset on >consumer-pw resetchannels ~ticks:* "
        "+ping +client|setname +xgroup|create +xreadgroup +xack +xpending +xclaim "
        "+xinfo|groups +xrange +eval +xadd"
    ),
)
#: Optional, Redis 7: let ``mdflow inspect`` and the dashboard see the role's live graph.
TOPOLOGY = 'ACL SETUSER {user} "(+set ~mdflow:topology:*)"'


class AclServer:
    """A server of this module's own with the role users; ``url(role)`` logs in as one."""

    def __init__(self):
        self.server = RedisServer(extra_args=("--requirepass", ADMIN)).start()
        self.admin = redis.Redis.from_url(self.server.url, password=ADMIN)
        version = self.admin.info("server")["redis_version"]
        self.redis7 = int(version.split(".")[0]) >= 7
        self.lines = ACL if self.redis7 else ACL_REDIS6
        for line in self.lines.values():
            self.admin.execute_command(*shlex.split(line))

    def url(self, role: str) -> str:
        return self.server.url.replace("redis://", f"redis://{role}:{role}-pw@")

    def close(self) -> None:
        self.admin.close()
        self.server.cleanup()


@pytest.fixture(scope="module")
def acl():
    server = AclServer()
    yield server
    server.close()


@pytest.fixture
def topic() -> str:
    return f"ticks:{uuid.uuid4().hex[:8]}"


# What a role's user is refused while it does its job, and may be (each call tolerates it):
# the topology SET (optional, see TOPOLOGY); CONFIG GET proto-max-bulk-len (writers ask once
# for the largest value Redis takes, and assume Redis' default when refused); CLIENT SETINFO
# (redis-py announces itself). Redis 6.2 logs subcommands as 'client' / 'config'; 7.0 does
# not know CLIENT SETINFO.
QUIETLY_REFUSED = {"set", "config", "config|get", "client", "client|setinfo"}


def _refused(acl: AclServer, user: str) -> set[str]:
    """What the ACL LOG says ``user`` was refused since the last ``ACL LOG RESET``."""
    return {str(e["object"]) for e in acl.admin.acl_log() if e.get("username") == user}


def _failed(node, caplog, user: str) -> str:
    """Wait for ``failed``; one error line; the reason names NOPERM, the user, the masked URL."""
    try:
        wait_for(lambda: node.status()["state"] == "failed", timeout=20, message="state failed")
    finally:
        node.stop()
    reason = node.status()["failure"]
    lines = [r for r in caplog.records if "failed, not retrying" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert "denied a command by ACL (NOPERM" in reason, reason
    assert f"user {user!r}" in reason and f"redis://{user}:***@" in reason, reason
    assert f"{user}-pw" not in reason + " ".join(r.getMessage() for r in caplog.records)
    return reason


def test_readme_lines_are_valid_acl_rules(acl):
    users = {u.decode() if isinstance(u, bytes) else u for u in acl.admin.acl_users()}
    assert set(ACL) <= users


# --- producer ------------------------------------------------------------------------------
def test_producer_writes_its_topics(acl, topic):
    acl.admin.acl_log_reset()
    pump = Stream.engine(
        topic, push_interval=0.02, redis_url=acl.url("producer"), asynchronous=False
    )
    pump.start()
    try:
        wait_for(lambda: pump.status()["written"] >= 5, timeout=20, message="5 entries written")
    finally:
        pump.stop()
    assert pump.status()["failure"] is None
    assert acl.admin.xlen(topic) >= 5
    assert _refused(acl, "producer") <= QUIETLY_REFUSED


def test_producer_may_not_read(acl, topic, caplog):
    node = Stream.from_redis(
        topic, group="g", block=0.1, redis_url=acl.url("producer"), asynchronous=False
    )
    node.start()
    reason = _failed(node, caplog, "producer")
    assert "'xgroup" in reason  # Redis names the command it refused ('xgroup|create' on 7)
    assert f"XGROUP CREATE '{topic}'" in reason  # ... mdflow the key


def test_producer_may_not_write_other_keys(acl, caplog):
    node = Stream.engine(
        "prices:x", push_interval=0.05, redis_url=acl.url("producer"), asynchronous=False
    )
    node.start()
    reason = _failed(node, caplog, "producer")
    assert "keys" in reason and "TYPE 'prices:x'" in reason  # TYPE checks the key first


# --- consumer ------------------------------------------------------------------------------
def test_consumer_reads_acks_and_dead_letters(acl, topic):
    acl.admin.acl_log_reset()
    for n in range(6):
        acl.admin.xadd(topic, {"n": str(n)})

    def work(entry):
        if entry["n"] == "3":
            raise ValueError("poison")
        return entry

    node = Stream.from_redis(
        topic,
        group="g",
        start_id="0",
        block=0.1,
        max_deliveries=1,
        retry_delay=0.01,
        redis_url=acl.url("consumer"),
        asynchronous=False,
    )
    got = node.map(work).sink_to_list()
    node.start()
    try:
        wait_for(
            lambda: node.status()["acked"] >= 6 and node.status()["pending"] == 0,
            timeout=30,
            message="5 acked, 1 dead-lettered, nothing pending (XINFO works)",
        )
    finally:
        node.stop()
    status = node.status()
    assert status["failure"] is None and status["dead_lettered"] == 1
    assert sorted(e["n"] for e in got) == ["0", "1", "2", "4", "5"]
    assert acl.admin.xlen(f"{topic}:dead") == 1
    assert acl.admin.xpending(topic, "g")["pending"] == 0
    assert _refused(acl, "consumer") <= QUIETLY_REFUSED  # (housekeeping too: XINFO, XRANGE)


def test_consumer_may_not_write_its_topic(acl, topic, caplog):
    node = Stream.engine(
        topic, push_interval=0.05, redis_url=acl.url("consumer"), asynchronous=False
    )
    node.start()
    reason = _failed(node, caplog, "consumer")
    assert "'type'" in reason
    if acl.redis7:  # (the selector grants XADD on the dead-letter streams only)
        with pytest.raises(RedisAccessDenied, match=f"XADD '{topic}'"):
            mdflow.db(acl.url("consumer")).xadd(topic, {"a": "1"})


def test_consumer_may_not_read_other_keys(acl, caplog):
    node = Stream.from_redis(
        "prices:x", group="g", block=0.1, redis_url=acl.url("consumer"), asynchronous=False
    )
    node.start()
    reason = _failed(node, caplog, "consumer")
    assert "XGROUP CREATE 'prices:x'" in reason


# --- scanner -------------------------------------------------------------------------------
def _tick(price: float, volume: int = 10) -> bytes:
    return encode_message({"symbol": "AAA", "price": price, "volume": volume, "time": time.time()})


def _publish_until(acl, channel: str, done, message: str) -> None:
    """Publish rising prices until ``done()`` (a pattern subscription is confirmed first)."""
    wait_for(lambda: acl.admin.pubsub_numpat() >= 1, message="the scanner's PSUBSCRIBE")
    price = 100.0

    def step():
        nonlocal price
        price += 1
        acl.admin.publish(channel, _tick(price))
        return done()

    wait_for(step, timeout=20, interval=0.05, message=message)


def test_scanner_subscribes_caches_and_publishes(acl, topic):
    acl.admin.acl_log_reset()
    key = "mdflow:hod:AAA"
    acl.admin.delete(key)
    node = Stream.scanner(
        "ticks:*", HighLowOfDay(), redis_url=acl.url("scanner"), asynchronous=False
    )
    found = node.sink_to_list()
    node.start()
    try:
        wait_for(lambda: node.status()["state"] == "running", message="subscribed")
        _publish_until(acl, topic, lambda: len(found) >= 2, "2 findings")
    finally:
        node.stop()
    assert node.status()["failure"] is None
    assert acl.admin.llen(key) >= 2  # LPUSH + LTRIM + PEXPIRE on its cache
    assert _refused(acl, "scanner") <= QUIETLY_REFUSED


def test_scanner_may_not_listen_elsewhere(acl, caplog):
    node = Stream.scanner(
        "prices:*", HighLowOfDay(), redis_url=acl.url("scanner"), asynchronous=False
    )
    node.start()
    reason = _failed(node, caplog, "scanner")
    assert "channels" in reason and "PSUBSCRIBE 'prices:*'" in reason


def test_scanner_may_not_cache_elsewhere(acl, topic, caplog):
    node = Stream.scanner(
        "ticks:*",
        HighLowOfDay(key_prefix="prices:hod"),
        redis_url=acl.url("scanner"),
        asynchronous=False,
    )
    node.start()
    try:
        wait_for(lambda: node.status()["state"] == "running", message="subscribed")
        _publish_until(acl, topic, lambda: node.status()["state"] == "failed", "state failed")
    finally:
        node.stop()
    reason = _failed(node, caplog, "scanner")
    assert "LPUSH 'prices:hod:AAA'" in reason


# --- inspector -----------------------------------------------------------------------------
def test_inspector_runs_mdflow_inspect(acl, topic):
    acl.admin.acl_log_reset()
    acl.admin.xadd(topic, {"n": "1"})
    acl.admin.xgroup_create(topic, "g", id="0")
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "MDFLOW_EMBEDDED_DIR")}
    env["MDFLOW_REDIS_URL"] = acl.url("inspector")
    done = subprocess.run(
        [sys.executable, "-m", "mdflow.cli", "inspect", "--json", "ticks:*"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    view = json.loads(done.stdout)
    stream = next(s for s in view["streams"] if s["name"] == topic)
    assert stream["length"] == 1 and stream["groups"][0]["lag"] == 1
    assert "inspector-pw" not in done.stdout + done.stderr
    assert _refused(acl, "inspector") <= QUIETLY_REFUSED


def test_inspector_may_not_write(acl, topic, caplog):
    node = Stream.engine(
        topic, push_interval=0.05, redis_url=acl.url("inspector"), asynchronous=False
    )
    node.start()
    reason = _failed(node, caplog, "inspector")
    assert "'xadd'" in reason


def test_live_graph_is_shown_with_the_topology_rule(acl, topic):
    """Without the optional topology rule a role's graph is not shown: its SET is refused and
    the node runs on. With it (Redis 7: a selector) ``mdflow inspect`` sees the graph."""

    def refused_sets() -> int:
        return sum(
            int(e.get("count", 1))
            for e in acl.admin.acl_log()
            if e.get("username") == "producer" and e.get("object") == "set"
        )

    def shown() -> bool:  # (no other role may publish a graph: any of this process is ours)
        view = inspect(acl.url("inspector"), pattern=topic)
        return any(graph["pid"] == os.getpid() for graph in view["graphs"])

    before = refused_sets()
    pump = Stream.engine(
        topic, push_interval=0.05, redis_url=acl.url("producer"), asynchronous=False
    )
    pump.start()
    try:
        wait_for(lambda: refused_sets() > before, timeout=20, message="a refused topology SET")
        assert pump.status()["state"] == "running" and not shown()
        if acl.redis7:
            acl.admin.execute_command(*shlex.split(TOPOLOGY.format(user="producer")))
            wait_for(shown, timeout=20, interval=0.1, message="the graph in mdflow inspect")
            assert pump.status()["state"] == "running"
    finally:
        pump.stop()
        acl.admin.execute_command(*shlex.split(acl.lines["producer"]))  # back to the README's
