"""Scripts keep pumping and stop cleanly: real processes, real signals, a real Redis.

* a script that ends with ``Stream.engine(...).start()`` runs until SIGTERM, then exits 0
  without a traceback;
* ``mdflow.run`` stopped by SIGINT or SIGTERM mid-flow: reading stops, what is in the graph
  finishes, acks are flushed: nothing lost, nothing left pending;
* a second Ctrl-C exits at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import redis
from helpers import finish, wait_for


def _spawn(tmp_path, source: str, env: dict) -> subprocess.Popen:
    script = tmp_path / "pipeline_script.py"
    script.write_text(textwrap.dedent(source))
    env = dict(env)
    env.pop("MDFLOW_KEEP_ALIVE", None)  # the default a user has
    return subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_script_ending_in_engine_start_pumps_until_sigterm(
    tmp_path, redis_url, rdb, prefix, isolated_env
):
    topic = f"{prefix}ticks"
    process = _spawn(
        tmp_path,
        f"""
        from streamz import Stream
        import mdflow

        Stream.engine({topic!r}, lambda: {{"x": 1}}, push_interval=0.02,
                      redis_url={redis_url!r}).start()
        print("main module done", flush=True)
        """,
        isolated_env,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "main module done"
        wait_for(lambda: rdb.xlen(topic) >= 5, timeout=30, message="ticks written")
        # still pumping well after the main module ended
        seen = rdb.xlen(topic)
        wait_for(lambda: rdb.xlen(topic) >= seen + 10, timeout=30, message="more ticks")
        assert process.poll() is None
        process.send_signal(signal.SIGTERM)
        code, _, err = finish(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, err
    assert "Traceback" not in err
    assert "cannot schedule new futures" not in err
    assert "keep running until they stop or Ctrl-C / SIGTERM" in err


def test_script_whose_sources_all_stop_exits_by_itself(tmp_path, redis_url, prefix, isolated_env):
    process = _spawn(
        tmp_path,
        f"""
        import threading
        from streamz import Stream

        pump = Stream.engine({prefix + "t"!r}, push_interval=0.05, redis_url={redis_url!r})
        pump.start()
        threading.Timer(1.0, pump.stop).start()
        """,
        isolated_env,
    )
    code, _, err = finish(process)
    assert code == 0, err
    assert "Traceback" not in err


def test_sources_left_on_a_finished_asyncio_run_do_not_hold_the_exit(
    tmp_path, redis_url, prefix, isolated_env
):
    process = _spawn(
        tmp_path,
        f"""
        import asyncio
        from streamz import Stream

        async def main():
            source = Stream.from_redis({prefix + "in"!r}, group="g", redis_url={redis_url!r},
                                       asynchronous=True)
            source.start()  # never stopped: its loop ends with asyncio.run
            await asyncio.sleep(0.3)

        asyncio.run(main())
        print("done", flush=True)
        """,
        isolated_env,
    )
    code, out, err = finish(process, timeout=60)
    assert code == 0, err
    assert out.strip() == "done"
    assert "keep running" not in err


CONSUMER = """
import asyncio
import sys
import mdflow
from streamz import Stream

async def slow(x):
    await asyncio.sleep({delay})
    return x

source = Stream.from_redis({inp!r}, group="g", consumer="c", start_id="0", block=0.1,
                           max_inflight=20, redis_url={url!r})
source.map_async(slow).to_redis({out!r}, redis_url={url!r})
print("running", flush=True)
mdflow.run(source, grace={grace})
print("stopped", flush=True)
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_run_stops_gracefully_mid_flow(tmp_path, redis_url, rdb, prefix, isolated_env, signum):
    inp, out, total = f"{prefix}in", f"{prefix}out", 400
    pipe = rdb.pipeline()
    for i in range(total):
        pipe.xadd(inp, {"i": str(i)})
    pipe.execute()
    process = _spawn(
        tmp_path,
        CONSUMER.format(delay=0.02, inp=inp, out=out, url=redis_url, grace=20),
        isolated_env,
    )
    try:
        wait_for(lambda: rdb.xlen(out) >= 40, timeout=60, message="entries processed")
        process.send_signal(signum)
        code, stdout, err = finish(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 0, err
    assert "Traceback" not in err
    assert stdout.splitlines()[-1] == "stopped"
    written, pending, delivered = _accounting(rdb, inp, out)
    assert len(written) < total, "the signal came too late to test a stop mid-flow"
    # Every delivered entry was either finished (written downstream, then acked) or is still
    # pending for replay; none was acked unfinished; what stays pending is at most what the
    # outlet held (read, not yet emitted when reading stopped): max_inflight=20.
    assert written | pending == delivered
    assert not written & pending
    assert len(pending) <= 20
    # The next run replays what is pending and carries on: nothing lost.
    again = _spawn(
        tmp_path,
        CONSUMER.format(delay=0.001, inp=inp, out=out, url=redis_url, grace=20),
        isolated_env,
    )
    try:
        wait_for(
            lambda: len(_accounting(rdb, inp, out)[0]) == total, timeout=60, message="all written"
        )
        again.send_signal(signum)
        code, _, err = finish(again)
    finally:
        if again.poll() is None:
            again.kill()
    assert code == 0, err
    assert rdb.xpending(inp, "g")["pending"] == 0


def _accounting(rdb, inp: str, out: str) -> tuple[set[str], set[str], set[str]]:
    """(payloads written downstream, payloads still pending, payloads delivered to the group)."""
    from mdflow.codecs import decode_entry

    by_id = {i: f[b"i"].decode() for i, f in rdb.xrange(inp)}
    group = next(g for g in rdb.xinfo_groups(inp) if g["name"] == b"g")
    last = group["last-delivered-id"]
    delivered = {v for i, v in by_id.items() if _key(i) <= _key(last)}
    rows = rdb.xpending_range(inp, "g", min="-", max="+", count=10_000)
    pending = {by_id[r["message_id"]] for r in rows}
    written = {decode_entry(f, "msgpack")["i"] for _, f in rdb.xrange(out)}
    return written, pending, delivered


def _pending(rdb, stream: str) -> int:
    try:
        return rdb.xpending(stream, "g")["pending"]
    except redis.ResponseError:  # NOGROUP: the consumer has not created its group yet
        return 0


def _key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.decode().partition("-")
    return int(ms), int(seq or 0)


def test_second_ctrl_c_exits_at_once(tmp_path, redis_url, rdb, prefix, isolated_env):
    inp, out = f"{prefix}in", f"{prefix}out"
    for i in range(5):
        rdb.xadd(inp, {"i": str(i)})
    process = _spawn(
        tmp_path,
        CONSUMER.format(delay=120, inp=inp, out=out, url=redis_url, grace=120),
        isolated_env,
    )
    try:
        wait_for(lambda: _pending(rdb, inp) == 5, timeout=30, message="entries held")
        process.send_signal(signal.SIGINT)
        time.sleep(0.5)  # the first one is being handled: the graceful stop waits up to 120 s
        assert process.poll() is None
        began = time.monotonic()
        process.send_signal(signal.SIGINT)
        code, _, err = finish(process, timeout=30)
        assert time.monotonic() - began < 30
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 128 + signal.SIGINT, err
    assert "second SIGINT; exiting at once" in err
    # nothing acked that was not finished: the five stay pending for the next run
    assert rdb.xpending(inp, "g")["pending"] == 5
    with redis.Redis.from_url(redis_url) as conn:
        assert conn.xlen(out) == 0


def test_run_refuses_a_graph_without_sources():
    from streamz import Stream

    import mdflow

    with pytest.raises(mdflow.ConfigError, match="no mdflow source"):
        mdflow.run(Stream().map(str))


def test_runner_context_manager_stops_on_exit(redis_url, rdb, prefix):
    from streamz import Stream

    import mdflow

    pump = Stream.engine(f"{prefix}t", push_interval=0.02, redis_url=redis_url, asynchronous=False)
    with mdflow.Runner(pump, grace=2) as runner:
        wait_for(lambda: rdb.xlen(f"{prefix}t") >= 3, message="ticks")
        assert not runner.done
    assert runner.done
    assert pump.status()["state"] == "stopped"
    assert os.environ.get("MDFLOW_KEEP_ALIVE") == "0"  # conftest: pytest is not kept alive
