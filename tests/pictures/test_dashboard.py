"""Live dashboards of real pipelines: in Jupyter (on the running loop) and in a real browser."""

from __future__ import annotations

import asyncio
import html
import pathlib
import subprocess
import sys

import pytest
from helpers import wait_for
from streamtools import async_wait_for, run, stop_and_wait
from streamz import Stream
from test_web import _browser_or_skip, _png_size

import mdflow
from mdflow.pictures.dashboard import snapshot_provider
from mdflow.pictures.web import HEADLESS_CHROMIUM_FLAGS


def test_jupyter_dashboard_refreshes_while_the_pipeline_runs_on_the_same_loop(
    redis_url, prefix, capsys
):
    topic = f"{prefix}:ticks"

    async def body():
        pump = Stream.engine(
            topic, lambda: {"px": 1.0}, push_interval=0.01, redis_url=redis_url, asynchronous=True
        )
        outlet = Stream.from_redis(topic, group="g", redis_url=redis_url, asynchronous=True)
        seen = outlet.map(lambda r: r["px"]).sink_to_list()
        pump.start()
        outlet.start()
        board = mdflow.dashboard(outlet, interval=0.2)
        try:
            await async_wait_for(lambda: board.updates >= 2, 20)
            first = board.last
            await async_wait_for(lambda: board.last["time"] > first["time"] + 0.3, 20)
            return first, board.last, len(seen)
        finally:
            board.stop()
            await stop_and_wait(pump, outlet)

    first, last, seen = run(body)
    assert seen > 0  # the pipeline kept flowing while the dashboard refreshed
    acked = next(n for n in last["nodes"] if n["kind"] == "outlet")["counts"]["acked"]
    before = next(n for n in first["nodes"] if n["kind"] == "outlet")["counts"]["acked"]
    assert acked > before
    assert [s["name"] for s in last["streams"]] == [topic]
    assert last["streams"][0]["groups"][0]["name"] == "g"
    assert "<svg" in last["svg"] and "from_redis" in last["svg"]
    assert "mdflow · " in last["title"]


def test_snapshot_of_an_unreachable_redis_says_so():
    provider = snapshot_provider(redis_url="redis://:pw-secret@127.0.0.1:1/0")
    snap = asyncio.run(provider())
    assert snap["errors"] and "pw-secret" not in str(snap)
    assert snap["streams"] == [] and snap["title"].endswith("redis://:***@127.0.0.1:1/0")


@pytest.mark.slow
def test_browser_dashboard_of_a_script_pipeline(redis_url, prefix, tmp_path, monkeypatch):
    """A script-mode pipeline (streamz's own loop thread) served to a real headless browser."""
    chromium, driver_path = _browser_or_skip()
    monkeypatch.setenv("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    topic = f"{prefix}:ticks"
    pump = Stream.engine(topic, lambda: {"px": 1.0}, push_interval=0.02, redis_url=redis_url)
    outlet = Stream.from_redis(topic, group="g", redis_url=redis_url)
    outlet.map(lambda r: r["px"]).sink_to_list()
    pump.start()
    outlet.start()
    server = mdflow.serve_dashboard(outlet, port=0, interval=0.3)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        *HEADLESS_CHROMIUM_FLAGS,
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(
        service=Service(executable_path=driver_path, log_output=str(tmp_path / "driver.log")),
        options=options,
    )
    try:
        driver.get(server.url)
        wait = WebDriverWait(driver, 30, poll_frequency=0.1)
        acked = '#nodes [data-field="counts.acked"]'  # only the outlet acknowledges

        def number() -> int:
            text = driver.execute_script(
                "var e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
                acked,
            )
            return int(text.replace(",", "")) if text and text.strip() else -1

        wait.until(lambda d: number() >= 0)
        first = number()
        wait.until(lambda d: number() > first)  # a live number changed
        assert driver.execute_script("return !!document.querySelector('#picture svg')")
        svg = driver.execute_script("return document.querySelector('#picture').innerHTML")
        assert "from_redis" in svg and topic in svg
        shot = tmp_path / "dashboard.png"
        assert driver.save_screenshot(str(shot))
        width, height = _png_size(shot.read_bytes())
        assert width >= 800 and height >= 600
    finally:
        driver.quit()
        server.stop()
        pump.stop()
        outlet.stop()
        wait_for(lambda: outlet.status()["state"] == "stopped", 10)
        wait_for(lambda: pump.status()["state"] == "stopped", 10)


@pytest.mark.slow
def test_readme_pictures_script_makes_both_pictures(redis_url, isolated_env, tmp_path):
    """docs/make_pictures.py (which made the README's pictures) still works."""
    _browser_or_skip()
    script = pathlib.Path(__file__).parents[2] / "docs" / "make_pictures.py"
    result = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path), "--seconds", "1"],
        env={**isolated_env, "MDFLOW_REDIS_URL": redis_url, "SE_OFFLINE": "true"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    svg = (tmp_path / "topology.svg").read_text()
    assert "from_redis" in svg and "health-ok" in html.unescape(svg)
    width, height = _png_size((tmp_path / "dashboard.png").read_bytes())
    assert width >= 800 and height >= 600
