"""Codec speed: mdflow msgpack beside pickle and JSON, in one run.

Usage::

    python benchmarks/bench_codecs.py            # a minute or so
    python benchmarks/bench_codecs.py --quick    # a smoke run in a few seconds

Cases: a small dict (one tick), and 100-row and 5,000-row quote tables
(``str`` code and name columns, float64 prices, int64 volumes, a
``datetime64[ns, Asia/Shanghai]`` column, a category, a bool; indexed by code).
Each figure is the best of several repeats (``time.perf_counter``). The
machine's speed drifts, so read the *ratios* (same run), not the absolute
rates. The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mdflow.codecs import pack, unpack


def tick() -> dict:
    return {"sym": "BTC-USD", "px": 50_123.5, "qty": 3, "ts": 1_700_000_000.123, "side": "buy"}


def quotes(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = [f"{600000 + i:06d}.SH" for i in range(n)]
    base = rng.uniform(5, 100, n)
    df = pd.DataFrame(
        {
            "code": codes,
            "name": [f"股票{i}" for i in range(n)],
            "now": base,
            "open": base * 0.99,
            "high": base * 1.02,
            "low": base * 0.97,
            "buy": base - 0.01,
            "sell": base + 0.01,
            "bid1": base - 0.01,
            "ask1": base + 0.01,
            "volume": rng.integers(0, 10**9, n),
            "turnover": rng.integers(0, 10**11, n),
            "time": pd.date_range(
                "2024-01-02 09:30", periods=n, freq="s", tz="Asia/Shanghai"
            ).as_unit("ns"),
            "exchange": pd.Categorical(rng.choice(["SH", "SZ", "BJ"], n)),
            "halted": rng.random(n) < 0.05,
        }
    )
    return df.set_index(pd.Index(codes, name="code"))


def best(fn: Callable[[], Any], budget: float, repeats: int) -> float:
    """Best seconds per call over ``repeats`` rounds of about ``budget / repeats`` each."""
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(budget / repeats / once))
    result = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        result = min(result, (time.perf_counter() - start) / number)
    return result


def codecs_for(obj: Any) -> dict[str, tuple[Callable, Callable]]:
    if isinstance(obj, pd.DataFrame):

        def json_dumps(df):
            return df.to_json(orient="split", date_format="iso")

        def json_loads(text):
            return pd.read_json(io.StringIO(text), orient="split")
    else:
        json_dumps, json_loads = json.dumps, json.loads
    return {
        "mdflow": (pack, unpack),
        "pickle": (lambda o: pickle.dumps(o, protocol=5), pickle.loads),
        "json": (json_dumps, json_loads),
    }


def measure(obj: Any, budget: float, repeats: int) -> dict:
    out: dict[str, Any] = {}
    for lib, (dumps, loads) in codecs_for(obj).items():
        blob = dumps(obj)
        size = len(blob)
        enc = best(lambda dumps=dumps: dumps(obj), budget, repeats)
        dec = best(lambda loads=loads, blob=blob: loads(blob), budget, repeats)
        out[lib] = {
            "bytes": size,
            "encode_ops": 1 / enc,
            "decode_ops": 1 / dec,
            "encode_mbps": size / enc / 1e6,
            "decode_mbps": size / dec / 1e6,
        }
    out["ratio_mdflow_pickle"] = {  # < 1: mdflow is faster
        "encode": out["pickle"]["encode_ops"] / out["mdflow"]["encode_ops"],
        "decode": out["pickle"]["decode_ops"] / out["mdflow"]["decode_ops"],
    }
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run in a few seconds")
    args = parser.parse_args(argv)
    budget, repeats = (0.08, 3) if args.quick else (1.5, 7)
    cases = {"tick": tick(), "quotes_100": quotes(100), "quotes_5000": quotes(5000)}
    results = {name: measure(obj, budget, repeats) for name, obj in cases.items()}

    head = (
        f"{'case':<12} {'codec':<7} {'bytes':>9} {'enc ops/s':>11} {'enc MB/s':>9} "
        f"{'dec ops/s':>11} {'dec MB/s':>9}"
    )
    print(head)
    print("-" * len(head))
    for name, res in results.items():
        for lib in ("mdflow", "pickle", "json"):
            r = res[lib]
            print(
                f"{name:<12} {lib:<7} {r['bytes']:>9} {r['encode_ops']:>11,.0f} "
                f"{r['encode_mbps']:>9.1f} {r['decode_ops']:>11,.0f} {r['decode_mbps']:>9.1f}"
            )
        ratio = res["ratio_mdflow_pickle"]
        print(
            f"{name:<12} mdflow/pickle time: encode {ratio['encode']:.2f}x, "
            f"decode {ratio['decode']:.2f}x  (< 1 is faster than pickle)"
        )
    report = {
        "bench": "codecs",
        "quick": args.quick,
        "python": sys.version.split()[0],
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "cases": results,
    }
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
