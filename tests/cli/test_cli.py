"""The console script, run through its installed entry point against the test server."""

from __future__ import annotations

import subprocess
import sys

import mdflow


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mdflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"mdflow {mdflow.__version__}"


def test_doctor_reports_masked_url_and_support(redis_url, isolated_env):
    env = dict(isolated_env, MDFLOW_REDIS_URL=redis_url.replace("redis://", "redis://default:pw@"))
    result = run_cli("doctor", env=env)
    # the test server has no password, so AUTH fails: the doctor must say so without the password
    assert "pw@" not in result.stdout + result.stderr
    ok = run_cli("doctor", "--redis-url", redis_url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"redis url:        {redis_url}" in ok.stdout
    assert "streams:          supported" in ok.stdout
    assert "consumer groups:  supported" in ok.stdout
    assert "pictures render:  ok (svg: " in ok.stdout


def test_doctor_unavailable_exit_code():
    from mdflow.reservoir import free_port

    result = run_cli("doctor", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stdout


def test_console_script_is_installed():
    import os
    import shutil

    script = shutil.which("mdflow", path=os.path.dirname(sys.executable))
    assert script, "the mdflow console script is not installed next to the interpreter"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
