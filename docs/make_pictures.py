"""Make the README's pictures: a live topology (SVG) and the web dashboard (PNG screenshot).

Runs a small two-stage pipeline on the embedded Redis for a few seconds, draws
it with live status, then serves the system dashboard and photographs it in
headless Chromium (Debian: ``apt-get install chromium chromium-driver``; the
``dev`` extra brings selenium).

Usage::

    .venv/bin/python docs/make_pictures.py            # writes docs/topology.svg, docs/dashboard.png
    .venv/bin/python docs/make_pictures.py --out /tmp --no-screenshot
"""

from __future__ import annotations

import argparse
import pathlib
import random
import shutil
import tempfile
import time

from streamz import Stream

import mdflow
from mdflow.pictures.web import HEADLESS_CHROMIUM_FLAGS

HERE = pathlib.Path(__file__).parent


def build(url: str, run: str) -> list[Stream]:
    """engine → [quotes] → from_redis → map → filter → window → to_redis → [vwap] → from_redis."""
    rng = random.Random(1)

    def quote() -> dict:
        return {"sym": rng.choice(["BTC", "ETH", "SOL"]), "px": 100 + rng.random(), "qty": 1}

    quotes, vwap = f"docs:{run}:quotes", f"docs:{run}:vwap"
    pump = Stream.engine(quotes, quote, push_interval=0.005, redis_url=url)
    outlet = Stream.from_redis(quotes, group="vwap", consumer="calc-1", redis_url=url)
    priced = outlet.map(lambda q: (q["sym"], q["px"] * q["qty"], q["qty"])).filter(
        lambda t: t[2] > 0
    )
    windows = priced.sliding_window(20, return_partial=False)
    windows.map(lambda w: {"vwap": sum(p for _, p, _ in w) / sum(q for *_, q in w)}).to_redis(
        vwap, maxlen=10_000, redis_url=url
    )
    reader = Stream.from_redis(vwap, group="report", consumer="board", redis_url=url)
    reader.rate_limit(0.001).sink(lambda x: None)
    return [pump, outlet, reader]


def screenshot(url: str, filename: pathlib.Path) -> None:
    """Serve the system dashboard and photograph it in headless Chromium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    server = mdflow.serve_dashboard(redis_url=url, port=0, interval=0.5)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    profile = tempfile.mkdtemp(prefix="mdflow-chromium-")
    for argument in (
        *HEADLESS_CHROMIUM_FLAGS,
        "--window-size=1500,1100",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(
        service=Service(executable_path=shutil.which("chromedriver")), options=options
    )
    try:
        driver.get(server.url)
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script(
                "return document.querySelectorAll('#nodes [data-field=\"rate\"]').length >= 3"
                " && !!document.querySelector('#picture svg')"
            )
        )
        time.sleep(1.5)  # two more updates: rates are differences between looks
        driver.save_screenshot(str(filename))
    finally:
        driver.quit()
        server.stop()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=HERE, help="directory to write into")
    parser.add_argument("--seconds", type=float, default=3.0, help="how long the pipeline runs")
    parser.add_argument("--no-screenshot", action="store_true", help="skip the dashboard PNG")
    args = parser.parse_args()
    url = mdflow.redis_url()
    run = f"{int(time.time()) % 100000}"
    sources = build(url, run)
    for source in sources:
        source.start()
    try:
        time.sleep(args.seconds)
        mdflow.visualize(sources, status=True)  # a first look: rates need two
        time.sleep(1.0)
        svg = args.out / "topology.svg"
        mdflow.visualize(sources, str(svg), status=True)
        print(f"wrote {svg}")
        if not args.no_screenshot:
            png = args.out / "dashboard.png"
            screenshot(url, png)
            print(f"wrote {png}")
    finally:
        for source in sources:
            source.stop()
        time.sleep(1.0)
        db = mdflow.db(url)
        for key in db.scan_iter(f"docs:{run}:*"):
            db.delete(key)


if __name__ == "__main__":
    main()
