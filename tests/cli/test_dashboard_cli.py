"""``mdflow dashboard``: serves the page, then stops cleanly on Ctrl-C or SIGTERM."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request

import pytest
from helpers import wait_for


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_dashboard_serves_the_page_until_stopped(
    stop, redis_url, rdb, prefix, isolated_env, tmp_path
):
    rdb.xadd(f"{prefix}prices", {"px": "1"})
    out = tmp_path / "dashboard.out"
    with out.open("w") as sink:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "mdflow.cli", "dashboard", "--port", "0"),
                *("--pattern", f"{prefix}*", "--url", redis_url),
            ],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
            env=isolated_env,
        )
        try:
            found = wait_for(
                lambda: re.search(r"(http://127\.0\.0\.1:\d+/)", out.read_text()),
                timeout=60,
                message="the dashboard's URL on stdout",
            )
            url = found.group(1)
            with urllib.request.urlopen(url, timeout=30) as page:
                assert page.status == 200
                assert "<html" in page.read().decode()
            with urllib.request.urlopen(url + "snapshot.json", timeout=60) as response:
                snapshot = json.loads(response.read())
            assert [s["name"] for s in snapshot["streams"]] == [f"{prefix}prices"]
            process.send_signal(stop)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert "stopped" in out.read_text()
