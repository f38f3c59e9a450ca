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


def test_no_command_prints_usage_and_exits_2():
    result = run_cli()
    assert result.returncode == 2
    assert "Usage: mdflow" in result.stdout + result.stderr
    for command in ("doctor", "demo", "graph", "inspect", "dashboard", "run", "tail", "server"):
        assert command in result.stdout + result.stderr


def test_every_command_has_help_with_url_option():
    for command in ("doctor", "demo", "graph", "inspect", "dashboard"):
        result = run_cli(command, "--help")
        assert result.returncode == 0, result.stderr
        assert f"Usage: mdflow {command}" in result.stdout
        assert "--url" in result.stdout and "Examples:" in result.stdout


def test_main_returns_exit_codes_in_process(capsys):
    from mdflow.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mdflow {mdflow.__version__}"
    assert main([]) == 2
    assert main(["graph"]) == 2  # missing SPEC: a usage error
    assert "Missing argument 'SPEC'" in capsys.readouterr().err
    assert main(["demo", "--seconds", "0"]) == 2
    capsys.readouterr()
    assert main(["doctor", "--url", "http://h"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mdflow doctor: redis_url must start with redis://")
    assert len(err.strip().splitlines()) == 1


def test_doctor_json(redis_url):
    import json

    result = run_cli("doctor", "--url", redis_url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["redis_url"] == redis_url
    assert report["streams"] is True and report["consumer_groups"] is True


def test_unreachable_url_is_one_line_on_stderr_without_password(isolated_env):
    from mdflow.reservoir import free_port

    url = f"redis://someone:s3cret@127.0.0.1:{free_port()}/0"
    commands = [
        ["doctor"],
        ["inspect"],
        ["inspect", "--json"],
        ["inspect", "--watch"],
        ["dashboard", "--port", "0"],
    ]
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "mdflow.cli", *command, "--url", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=isolated_env,
        )
        for command in commands
    ]
    for command, process in zip(commands, processes, strict=True):
        out, err = process.communicate(timeout=120)
        assert process.returncode == 1, (command, out, err)
        assert "s3cret" not in out + err, command
        assert "Traceback" not in err, (command, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, (command, err)
        assert lines[0].startswith(f"mdflow {command[0]}: "), (command, err)
        assert "someone:***@" in lines[0], (command, err)


def test_doctor_says_a_password_was_refused(redis_factory):
    server = redis_factory(extra_args=("--requirepass", "the-right-one"))
    wrong = run_cli("doctor", "--url", server.url.replace("redis://", "redis://:not-it@"))
    assert wrong.returncode == 1
    assert "refused the credentials" in wrong.stdout + wrong.stderr
    assert "did not answer" not in wrong.stdout + wrong.stderr
    assert "not-it" not in wrong.stdout + wrong.stderr
    missing = run_cli("doctor", "--url", server.url)
    assert missing.returncode == 1
    assert "requires a password" in missing.stdout + missing.stderr
