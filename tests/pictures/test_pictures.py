"""Pictures of graphs: text forms (DOT, Mermaid), rendering with pip alone, streamz's
``visualize``, inline display, and live status drawn from the nodes' own ``status()``."""

from __future__ import annotations

import asyncio
import html
import re

import pytest
from helpers import path_without
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream

import mdflow
from mdflow.pictures import Topology, to_dot, to_mermaid, topology, visualize
from mdflow.pictures.describe import KINDS
from mdflow.pictures.display import mimebundle

PASSWORD = "s3cret-pw"
URL = f"redis://:{PASSWORD}@127.0.0.1:6399/0"


@pytest.fixture
def no_dot(monkeypatch, tmp_path):
    """Graphviz's ``dot`` cannot be found: the pip-installed renderer must do."""
    monkeypatch.setenv("PATH", path_without("dot", shim_root=str(tmp_path)))


def every_kind() -> list[Stream]:
    """A graph (and a few separate ones) with every kind of node; nothing is started."""
    outlet = Stream.from_redis("ticks", group="grp", consumer="c1", redis_url=URL)
    pump = Stream.engine("ticks", lambda: {"px": 1}, push_interval=0.5, redis_url=URL)
    listener = Stream.from_pubsub(["alerts", "px.*"], redis_url=URL)
    joined = outlet.zip(listener)
    joined.rate_limit(0.1).to_redis("out", maxlen=100, redis_url=URL)
    joined.map_async(_double).to_pubsub("chan", redis_url=URL)
    outlet.map(_double).filter(bool).sliding_window(3).timed_window(1.5).buffer(10).sink(_ignore)
    outlet.scan("spike", redis_url=URL).to_cache("last:{symbol}", ttl=60, redis_url=URL)
    scanner = Stream.scanner(["quotes"], analyzer="high_low_of_day", redis_url=URL)
    scanner.sink_to_list()
    feed = mdflow.SimulatedExchangeCollector("ws://127.0.0.1:1", symbols=["BTC-USDT"])
    collector = Stream.collector(feed)
    collector.partition(5).sink(print)
    return [outlet, pump, scanner, collector]


def _ignore(x):
    pass


async def _double(x):
    return 2 * x


def test_dot_draws_every_kind_with_its_shape_and_parameters():
    dot = to_dot(every_kind())
    kinds = {
        "engine": "engine<ticks>",
        "outlet": "from_redis<ticks>",
        "pubsub": "from_pubsub<alerts, px.*>",
        "scanner": "scanner<high_low_of_day>",
        "collector": "collector<simulated>",
        "scan": "scan<spike>",
        "writer": "to_redis<out>",
        "publisher": "to_pubsub<chan>",
        "cacher": "to_cache<last:{symbol}>",
        "transform": "map<_double>",
        "filter": "filter<bool>",
        "window": "sliding_window",
        "timer": "timed_window",
        "join": "zip",
        "async": "map_async<_double>",
        "sink": "sink<_ignore>",
        "stream": "ticks",
        "channel": "alerts",
        "cache": "last:{symbol}",
    }
    lines = dot.splitlines()
    for kind, name in kinds.items():
        shape = KINDS[kind][0]
        node = [line for line in lines if f'label="{name}' in line and f"kind-{kind} " in line]
        assert node, f"no {kind} node labelled {name!r} in:\n{dot}"
        assert f"shape={shape} " in node[0]
    # Parameters that matter are in the labels; the password never is.
    for text in (
        "group=grp",
        "consumer=c1",
        "max_inflight=1000",
        "every 0.5s",
        "maxlen=100",
        "ttl=60s",
        "channels=quotes",
        "exchange=simulated",
        "symbols=BTC-USDT",
        "n=3",
        "interval=1.5",
        "n=10",
        "interval=0.1",
        "n=5",
    ):
        assert text in dot, text
    assert PASSWORD not in dot
    # Redis keys are nodes between their writers and readers.
    ids = {
        name: node_id
        for node_id, name in re.findall(r'"([^"]+)" \[id="node-[^"]+"[^]]*label="([^"\\]+)', dot)
    }
    assert f'"{ids["engine<ticks>"]}" -> "stream:ticks"' in dot
    assert '"stream:ticks" -> "' + ids["from_redis<ticks>"] + '"' in dot


def test_mermaid_has_every_node_and_edge():
    text = to_mermaid(every_kind())
    assert text.startswith("flowchart LR")
    topo = topology(every_kind())
    node_lines = [line for line in text.splitlines() if '"' in line and "-->" not in line]
    edge_lines = [line for line in text.splitlines() if "-->" in line or "-.->" in line]
    assert len(node_lines) == len(topo["nodes"])
    assert len(edge_lines) == len(topo["edges"])
    assert "stream_ticks_" in text and '[("ticks")]' in text  # a stream is a cylinder
    assert '-->|"group grp"|' in text
    assert PASSWORD not in text


def test_svg_with_pip_alone_has_every_label_and_no_password(no_dot):
    picture = visualize(every_kind())
    svg = picture.data.decode()
    assert picture.format == "svg" and "<svg" in svg
    for name in ("from_redis&lt;ticks&gt;", "engine&lt;ticks&gt;", "sliding_window", "alerts"):
        assert name in svg
    classes = html.unescape(svg).count('class="node mdflow-node')  # Graphviz writes - as &#45;
    assert classes == len(topology(every_kind())["nodes"])
    assert PASSWORD not in svg


def test_streamz_visualize_writes_png_and_svg_without_graphviz(no_dot, tmp_path):
    node = Stream.from_redis("ticks", group="g", redis_url=URL)
    sink = node.map(str).sink(print)
    png = tmp_path / "pipeline.png"
    sink.visualize(str(png))  # streamz's own method, on any node of the graph
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = tmp_path / "pipeline.svg"
    sink.visualize(str(svg), rankdir="TB")
    assert "from_redis&lt;ticks&gt;" in svg.read_text()
    assert mdflow.visualize(node, str(tmp_path / "p.dot")).data.startswith(b"digraph")


def test_nodes_display_inline_as_svg(no_dot):
    sink = Stream.from_redis("ticks", group="g", redis_url=URL).map(str).sink(print)
    bundle = sink._repr_mimebundle_()
    assert "<svg" in bundle["image/svg+xml"] and "<?xml" not in bundle["image/svg+xml"]
    assert "4 nodes" in bundle["text/plain"] and "<sink: print>" in bundle["text/plain"]
    assert isinstance(topology(sink), Topology)
    assert "image/svg+xml" in mimebundle(topology(sink))


def test_overlay_shows_what_status_reports(redis_url, prefix):
    """A running pipeline's picture carries its nodes' own counts, rate, lag and health."""
    topic = f"{prefix}:ticks"
    n = 300

    async def body():
        outlet = Stream.from_redis(
            topic, group="g", start_id="0", redis_url=redis_url, asynchronous=True
        )  # "0": entries written before the group exists count too
        seen = outlet.map(lambda r: r["i"]).sink_to_list()
        pump = Stream(asynchronous=True)
        writer = pump.to_redis(topic, redis_url=redis_url)
        outlet.start()
        for i in range(n):
            await pump.emit({"i": i})
        await writer.flush()
        await async_wait_for(lambda: outlet.status()["acked"] == n, 20)
        await async_wait_for(  # metrics refreshed after the reads (they start at 0 / 300)
            lambda: outlet.status()["pending"] == 0 and outlet.status()["lag"] == 0, 10
        )
        first = topology([outlet, pump], status=True)
        await asyncio.sleep(0.2)  # rates are differences between two looks
        second = topology([outlet, pump], status=True)
        await stop_and_wait(outlet)
        stopped = topology([outlet, pump], status=True)
        return outlet, seen, first, second, stopped

    _, seen, first, second, stopped = run(body)
    assert len(seen) == n
    node_id, node = next((k, v) for k, v in second["nodes"].items() if v["kind"] == "outlet")
    assert node["overlay"]["counts"]["acked"] == n == node["status"]["acked"]
    assert node["overlay"]["counts"]["read"] == n
    assert node["overlay"]["health"] == "ok"
    assert "/s" in node["overlay"]["text"] and "lag 0" in node["overlay"]["text"]
    writer = next(v for v in second["nodes"].values() if v["kind"] == "writer")
    assert writer["overlay"]["counts"]["written"] == n
    edge = next(e for e in second["edges"] if e["dst"] == node_id and e["kind"] == "read")
    assert edge["lag"] == 0 and edge["pending"] == 0 and edge["fill"] == 0.0
    assert "lag 0 · pending 0" in to_dot(second)
    assert "acked 300" in first["nodes"][node_id]["overlay"]["text"]  # no rate before a 2nd look
    assert stopped["nodes"][node_id]["overlay"]["health"] == "stopped"
    assert "health-stopped" in to_dot(stopped)


def test_overlay_shows_back_pressure_of_a_source_waiting_on_a_slow_graph(redis_url, prefix):
    """Flink's busy/back-pressure view: the share of each second a source waited on its graph."""
    topic = f"{prefix}:slow"

    async def slow(x):
        await asyncio.sleep(0.02)
        return x

    async def body():
        pump = Stream(asynchronous=True)
        writer = pump.to_redis(topic, redis_url=redis_url)
        for i in range(200):
            await pump.emit({"i": i})
        await writer.flush()
        outlet = Stream.from_redis(
            topic, group="g", start_id="0", max_inflight=1, redis_url=redis_url, asynchronous=True
        )
        outlet.map_async(slow).sink_to_list()
        outlet.start()
        await async_wait_for(lambda: outlet.status()["acked"] >= 5, 20)
        topology(outlet, status=True)
        await asyncio.sleep(0.5)
        looked = topology(outlet, status=True)
        await stop_and_wait(outlet)
        return next(v for v in looked["nodes"].values() if v["kind"] == "outlet")

    node = run(body)
    assert node["status"]["waited"] > 0.3
    assert node["overlay"]["waiting"] > 0.5  # most of each second spent waiting on the graph
    assert "wait " in node["overlay"]["text"]
    assert node["overlay"]["health"] == "lagging"
