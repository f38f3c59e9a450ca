"""``load_pipeline``: every SPEC form, the fallback, and the errors users read."""

from __future__ import annotations

import sys
import textwrap

import pytest
from streamz import Stream

from mdflow import ConfigError
from mdflow.cli.load import load_pipeline


@pytest.fixture(autouse=True)
def _own_sys_path(monkeypatch):
    """load_pipeline puts folders on sys.path: keep that inside each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("mdflow_pipeline_", "loadpkg_")):
            del sys.modules[name]


def write(path, code: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(code))
    return path


def names(nodes) -> list[str]:
    return [type(node).__name__ for node in nodes]


def test_file_default_attr_is_pipeline(tmp_path):
    flow = write(
        tmp_path / "flow.py",
        """
        from streamz import Stream
        source = Stream()
        pipeline = source.map(str)
        """,
    )
    nodes = load_pipeline(str(flow))
    assert names(nodes) == ["map"]
    assert all(isinstance(node, Stream) for node in nodes)


def test_file_attr_list_tuple_and_function(tmp_path):
    flow = write(
        tmp_path / "flow.py",
        """
        from streamz import Stream
        a, b = Stream(), Stream()
        both = [a, b]
        pair = (a, b)
        def build():
            s = Stream()
            return (s, s.map(len))
        class Holder:
            node = a
        """,
    )
    assert names(load_pipeline(f"{flow}:both")) == ["Stream", "Stream"]
    assert names(load_pipeline(f"{flow}:pair")) == ["Stream", "Stream"]
    assert names(load_pipeline(f"{flow}:build")) == ["Stream", "map"]
    assert names(load_pipeline(f"{flow}:Holder.node")) == ["Stream"]


def test_fallback_is_every_top_level_source(tmp_path):
    flow = write(
        tmp_path / "flow.py",
        """
        from streamz import Stream
        first = Stream(stream_name="first")
        mapped = first.map(str)
        second = Stream(stream_name="second")
        again = first
        """,
    )
    nodes = load_pipeline(str(flow))
    assert [node.name for node in nodes] == ["first", "second"]


def test_module_spec_and_relative_path(tmp_path, monkeypatch):
    write(tmp_path / "loadpkg_a" / "__init__.py", "")
    write(
        tmp_path / "loadpkg_a" / "flows.py",
        """
        from streamz import Stream
        def prices():
            return Stream(stream_name="prices")
        pipeline = Stream(stream_name="default")
        """,
    )
    write(tmp_path / "here.py", "from streamz import Stream\npipeline = Stream()\n")
    monkeypatch.chdir(tmp_path)
    assert [n.name for n in load_pipeline("loadpkg_a.flows:prices")] == ["prices"]
    assert [n.name for n in load_pipeline("loadpkg_a.flows")] == ["default"]
    assert names(load_pipeline("here.py")) == ["Stream"]


def test_file_imports_its_neighbours_and_main_block_does_not_run(tmp_path):
    write(tmp_path / "helpers_for_flow.py", "def double(x):\n    return 2 * x\n")
    flow = write(
        tmp_path / "flow.py",
        """
        from streamz import Stream
        from helpers_for_flow import double
        pipeline = Stream().map(double)
        if __name__ == "__main__":
            raise SystemExit("a script's main block must not run")
        """,
    )
    assert names(load_pipeline(str(flow))) == ["map"]


def test_nothing_is_started(tmp_path, monkeypatch, redis_url, rdb, prefix):
    monkeypatch.setenv("MDFLOW_REDIS_URL", redis_url)
    flow = write(
        tmp_path / "flow.py",
        f"""
        from streamz import Stream
        import mdflow
        pump = Stream.engine("{prefix}ticks", lambda: {{"px": 1.0}}, push_interval=0.01)
        outlet = Stream.from_redis("{prefix}ticks", group="g")
        outlet.map(lambda r: r["px"]).sink(print)
        pipeline = [pump, outlet]
        """,
    )
    pump, outlet = load_pipeline(str(flow))
    assert pump.stopped and outlet.stopped
    assert rdb.exists(f"{prefix}ticks") == 0  # no entry written, no group created


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "SPEC must be a non-empty str"),
        ("{tmp}/missing.py", r"pipeline file '.*missing.py' does not exist; give package.module"),
        ("{tmp}/notes.txt", r"is not a Python file"),
        ("{tmp}/flow.py:nope", r"pipeline file '.*flow.py' has no attribute 'nope'; give SPEC as"),
        ("{tmp}/flow.py:number", r"'number' of .* is 42 \(int\); expected a streamz node"),
        ("{tmp}/flow.py:empty", r"'empty' of .* is \[\] \(list\); expected a streamz node"),
        ("{tmp}/flow.py:mixed", r"'mixed' of .* holds 'x' \(str\); expected only streamz nodes"),
        (
            "{tmp}/flow.py:broken",
            r"calling broken\(\) of .* failed at flow.py:7: ZeroDivisionError",
        ),
        ("{tmp}/flow.py:", "ends with ':'"),
        ("{tmp}/plain.py", r"has no attribute 'pipeline' and defines no streamz node"),
        ("{tmp}/raises.py", r"importing pipeline file .* failed at raises.py:3: KeyError: 'k'"),
        ("{tmp}/exits.py", r"called sys.exit\(3\)"),
        ("no_such_module_xyz:pipeline", "cannot import module 'no_such_module_xyz'"),
        ("json:dumps", r"calling dumps\(\) of 'json:dumps' failed: TypeError: dumps\(\) missing"),
        ("not a module!", "neither a module name nor a path to a .py file"),
    ],
)
def test_bad_specs_say_what_was_given_and_expected(tmp_path, spec, match):
    write(
        tmp_path / "flow.py",
        """
        from streamz import Stream
        number = 42
        empty = []
        mixed = [Stream(), "x"]
        def broken():
            return 1 / 0
        """,
    )
    write(tmp_path / "plain.py", "x = 1\n")
    write(tmp_path / "raises.py", "import os\nvalue = {}\nvalue['k']\n")
    write(tmp_path / "exits.py", "import sys\nsys.exit(3)\n")
    write(tmp_path / "notes.txt", "hello\n")
    with pytest.raises(ConfigError, match=match):
        load_pipeline(spec.format(tmp=tmp_path))


def test_mdflow_errors_from_the_module_pass_through(tmp_path, redis_url, monkeypatch):
    monkeypatch.setenv("MDFLOW_REDIS_URL", redis_url)
    flow = write(
        tmp_path / "flow.py",
        """
        from streamz import Stream
        import mdflow
        pipeline = Stream.from_redis(42)
        """,
    )
    with pytest.raises(ConfigError, match="42"):
        load_pipeline(str(flow))
