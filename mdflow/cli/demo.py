"""``mdflow demo``: a self-contained market-data pipeline on the embedded Redis.

Two pumps write into the reservoir: a quote table (a pandas DataFrame of a few
hundred symbols, every half second) and a tick stream (a few hundred ticks a
second); a collector brings tickers, trades and candles in from a simulated
exchange over a real websocket. Three outlets drain them through ``map`` / ``filter`` /
``sliding_window`` / ``rate_limit`` into a sink and, with ``to_redis``, into a
second stream. Nothing here prints: :func:`run_demo` reports through a
callback and returns a summary dict, and the CLI renders both.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from streamz import Stream

from ..collectors import SimulatedExchange
from ..marketdata import OHLCV
from ..pictures import RenderUnavailable, visualize
from ..reservoir import client, mask_url, wait_available
from ..reservoir import redis_url as resolve_url

__all__ = ["QuoteBook", "run_demo"]


class QuoteBook:
    """A seeded random walk over ``n`` symbols: quote tables and single ticks."""

    def __init__(self, n: int = 300, seed: int = 7):
        self._rng = np.random.default_rng(seed)
        self._random = random.Random(seed)
        self.codes = pd.Index([f"{600000 + i:06d}" for i in range(n)], name="code")
        self.names = [f"SYM{i:03d}" for i in range(n)]
        self.prices = self._rng.uniform(5, 200, n)
        self.opens = self.prices.copy()

    def table(self) -> pd.DataFrame:
        """The whole quote table, like the seed notebook's ``quotation.all``."""
        self.prices *= np.exp(self._rng.normal(0, 0.002, len(self.prices)))
        spread = self.prices * 0.0005
        return pd.DataFrame(
            {
                "name": pd.array(self.names, dtype="str"),
                "now": self.prices.round(3),
                "buy": (self.prices - spread).round(3),
                "sell": (self.prices + spread).round(3),
                "open": self.opens.round(3),
                "ask1_volume": self._rng.integers(0, 5000, len(self.prices)),
                "time": pd.Timestamp.now(tz="Asia/Shanghai"),
            },
            index=self.codes,
        )

    def tick(self) -> dict:
        """One trade for a random symbol, stamped with its production time."""
        i = self._random.randrange(len(self.prices))
        return {
            "sym": self.names[i],
            "px": float(self.prices[i]),
            "qty": self._random.randint(-5, 100),
            "ts": time.time(),
        }


def top_movers(df: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """The ``n`` liquid symbols that rose most since the open."""
    df = df[(df["now"] > 0) & (df["ask1_volume"] > 100)]
    change = (df["now"] - df["open"]) / df["open"]
    return df.assign(p_change=change).nlargest(n, "p_change")[["name", "now", "p_change"]]


def vwap(window: tuple) -> dict:
    qty = sum(t["qty"] for t in window)
    return {
        "sym": "ALL",
        "vwap": sum(t["px"] * t["qty"] for t in window) / qty,
        "ts": window[-1]["ts"],
        "n": len(window),
    }


async def _demo(
    seconds: float, url: str, report: Callable[[str], None], picture: str | None
) -> dict[str, Any]:
    await wait_available(url)
    run_id = uuid.uuid4().hex[:8]
    keys = {k: f"mdflow:demo:{run_id}:{k}" for k in ("quotes", "ticks", "vwap", "market")}
    book = QuoteBook()
    exchange = SimulatedExchange(["BTC-USDT", "ETH-USDT", "SOL-USDT"], interval=0.02)
    await exchange.start()

    quotes = Stream.engine(
        keys["quotes"], book.table, push_interval=0.5, redis_url=url, asynchronous=True
    )
    ticks = Stream.engine(
        keys["ticks"], book.tick, push_interval=0.002, redis_url=url, asynchronous=True
    )
    quote_outlet = Stream.from_redis(
        keys["quotes"],
        group="demo",
        consumer="demo",
        start_id="0",
        redis_url=url,
        asynchronous=True,
    )
    tick_outlet = Stream.from_redis(
        keys["ticks"], group="demo", consumer="demo", start_id="0", redis_url=url, asynchronous=True
    )
    movers: list[pd.DataFrame] = []
    latencies: list[float] = []
    quote_outlet.map(top_movers).filter(lambda df: len(df) > 0).sink(movers.append)
    windows = (
        tick_outlet.filter(lambda t: t["qty"] > 0)
        .sliding_window(20, return_partial=False)
        .map(vwap)
        .rate_limit(0.001)
    )
    windows.sink(lambda v: latencies.append(time.time() - v["ts"]))
    windows.to_redis(keys["vwap"], maxlen=10_000, redis_url=url)

    # Collector branch: outside data (a websocket feed) -> supervised collector -> reservoir
    feed = Stream.collector(
        exchange.collector(),
        heartbeat_interval=0.5,
        max_silence=5.0,
        backoff=(0.2, 2.0),
        asynchronous=True,
    )
    market_writer = feed.to_redis(keys["market"], maxlen=10_000, redis_url=url)
    market_outlet = Stream.from_redis(
        keys["market"],
        group="demo",
        consumer="demo",
        start_id="0",
        redis_url=url,
        asynchronous=True,
    )
    candles: list = []
    market_outlet.filter(lambda p: isinstance(p, OHLCV)).sink(candles.append)

    nodes = [quotes, ticks, quote_outlet, tick_outlet, market_outlet]
    for node in (quote_outlet, tick_outlet, market_outlet, quotes, ticks, feed):
        node.start()
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        await asyncio.sleep(min(1.0, seconds - elapsed))
        t = tick_outlet.status()
        report(
            f"[{time.monotonic() - started:5.1f}s] ticks written {ticks.status()['written']:6d}"
            f"  processed {t['emitted']:6d}  acked {t['acked']:6d}  lag {t['lag']}"
            f"  | quote tables {quote_outlet.status()['acked']:3d}"
            f"  | collector {feed.status()['state']}"
            f" market data {market_outlet.status()['acked']:5d}"
        )
    for node in (quotes, ticks, feed):
        node.stop()
    await asyncio.sleep(0.5)  # let the outlets drain what the pumps wrote last
    for node in (quote_outlet, tick_outlet, market_outlet):
        node.stop()
    while any(n.status()["state"] != "stopped" for n in nodes):
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started

    while feed.status()["state"] not in ("stopped", "failed"):
        await asyncio.sleep(0.05)
    await exchange.stop()
    conn = client(url)
    vwap_count = await conn.xlen(keys["vwap"])
    await conn.delete(*keys.values())
    t, q, m = tick_outlet.status(), quote_outlet.status(), market_outlet.status()
    f = feed.status()
    lat = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
    summary = {
        "redis_url": mask_url(url),
        "seconds": round(elapsed, 2),
        "produced": (
            ticks.status()["written"]
            + quotes.status()["written"]
            + market_writer.status()["written"]
        ),
        "processed": t["emitted"] + q["emitted"] + m["emitted"],
        "acked": t["acked"] + q["acked"] + m["acked"],
        "in_windows_at_exit": t["inflight"] + q["inflight"] + m["inflight"],
        "dead_lettered": t["dead_lettered"] + q["dead_lettered"] + m["dead_lettered"],
        "throughput_per_s": round((t["acked"] + q["acked"] + m["acked"]) / elapsed, 1),
        "lag": (t["lag"] or 0) + (q["lag"] or 0) + (m["lag"] or 0),
        "collector": {
            "status": f["status"],
            **{
                k: f["statistics"].get(k)
                for k in ("messages_received", "messages_processed", "parse_errors", "restarts")
            },
        },
        "candles_received": len(candles),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 3),
        "latency_p99_ms": round(float(np.percentile(lat, 99)), 3),
        "vwap_entries_written": vwap_count,
        "top_movers": movers[-1].head(3).to_dict("index") if movers else {},
        "picture": None,
    }
    if picture:
        nodes = [quotes, ticks, feed, quote_outlet, tick_outlet, market_outlet]
        try:
            summary["picture"] = visualize(nodes, picture, status=True).filename
        except RenderUnavailable as exc:
            summary["picture"] = f"not written: {exc}"
    return summary


def run_demo(
    seconds: float = 10.0,
    redis_url: str | None = None,
    report: Callable[[str], None] = lambda line: None,
    picture: str | None = "mdflow-demo.png",
) -> dict[str, Any]:
    """Run the demo pipeline for ``seconds``; return the summary dict."""
    url = resolve_url(redis_url)
    return asyncio.run(_demo(seconds, url, report, picture))
