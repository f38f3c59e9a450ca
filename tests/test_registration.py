"""Nodes are registered on streamz.Stream: by import, and by entry points without importing
mdflow."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import textwrap

import pytest
from streamz import Stream

import mdflow

GROUPS = ("streamz.sources", "streamz.nodes", "streamz.sinks")


def declared() -> dict[str, list[importlib.metadata.EntryPoint]]:
    eps = importlib.metadata.entry_points()
    return {g: [ep for ep in eps.select(group=g) if ep.value.startswith("mdflow.")] for g in GROUPS}


def test_every_registered_node_is_declared_as_an_entry_point():
    names = {ep.name for group in declared().values() for ep in group}
    assert {
        "engine",
        "from_redis",
        "to_redis",
        "from_pubsub",
        "scanner",
        "to_pubsub",
        "to_cache",
        "collector",
    } <= names
    for group, eps in declared().items():
        for ep in eps:
            node = ep.load()
            assert issubclass(node, Stream), f"{ep.value} is not a streamz node"
            assert node.__name__ == ep.name, "a node class is named after its method"
            assert getattr(Stream, ep.name) is not None
            is_source = group == "streamz.sources"
            assert isinstance(Stream.__dict__[ep.name], staticmethod) == is_source


def test_entry_points_work_without_importing_mdflow(redis_url, prefix):
    names = [ep.name for eps in declared().values() for ep in eps]
    code = textwrap.dedent(f"""
        import sys
        from streamz import Stream
        assert "mdflow" not in sys.modules
        for name in {names!r}:
            assert hasattr(Stream, name), name
        node = Stream.from_redis({prefix + "s"!r}, redis_url={redis_url!r})
        print(type(node).__module__)
        sink = Stream().to_redis({prefix + "o"!r}, redis_url={redis_url!r})
        print(type(sink).__module__)
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["mdflow.streams.outlet", "mdflow.streams.writer"]


def test_public_names_are_exported():
    for name in mdflow.__all__:
        assert hasattr(mdflow, name), f"mdflow.__all__ lists {name!r} but it is missing"
    public = {n for n in dir(mdflow) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(mdflow, n)).__name__ == "module"}
    missing = public - set(mdflow.__all__) - modules - {"annotations"}
    assert not missing, f"public names not in __all__: {sorted(missing)}"


@pytest.mark.parametrize("name", ["MdflowError", "ConfigError", "DecodeError", "RedisUnavailable"])
def test_error_hierarchy(name):
    assert issubclass(getattr(mdflow, name), mdflow.MdflowError)
