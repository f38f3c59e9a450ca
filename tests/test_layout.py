"""The package's shape: public names, entry points, rooms, and imports that point one way.

* every public module's ``__all__`` names what it exports, and the names users
  import from ``mdflow``, ``mdflow.codecs``, ``mdflow.collectors``,
  ``mdflow.analyzers`` and ``mdflow.marketdata`` are all still there;
* every entry point resolves: streamz groups to a node registered on
  ``Stream``, ``mdflow.analyzers`` to an Analyzer, the console script to ``main``;
* the import graph of ``mdflow/`` (function-level imports included) has no
  cycle, and no room imports a room above it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import pathlib
import pkgutil

import pytest
from streamz import Stream

import mdflow
from mdflow.analyzers import Analyzer

PACKAGE = pathlib.Path(mdflow.__file__).parent

# What users imported before the package was laid out in rooms: these names must stay.
PUBLIC_BEFORE = {
    "mdflow": [
        "Analyzer",
        "AnalyzerResult",
        "Backoff",
        "Cache",
        "Collector",
        "CollectorManager",
        "CollectorState",
        "ConfigError",
        "DataType",
        "DecodeError",
        "EncodeError",
        "MarketDataPoint",
        "MdflowError",
        "OHLCV",
        "PollingCollector",
        "Record",
        "RedisUnavailable",
        "SimulatedExchange",
        "SimulatedExchangeCollector",
        "ValidationError",
        "WebSocketCollector",
        "__version__",
        "client",
        "codecs",
        "collector",
        "db",
        "engine",
        "from_pubsub",
        "from_redis",
        "mask_url",
        "redis_url",
        "scan",
        "scanner",
        "to_cache",
        "to_pubsub",
        "to_redis",
    ],
    "mdflow.codecs": [
        "CODECS",
        "MAGIC",
        "check_codec",
        "decode_entry",
        "decode_message",
        "encode_entry",
        "encode_message",
        "pack",
        "unpack",
    ],
    "mdflow.collectors": [
        "Collector",
        "CollectorManager",
        "CollectorState",
        "DataSilence",
        "DataType",
        "FeedClosed",
        "FeedError",
        "MarketDataPoint",
        "OHLCV",
        "PollingCollector",
        "STATUS_KEY",
        "SimulatedExchange",
        "SimulatedExchangeCollector",
        "WebSocketCollector",
        "collector",
        "published_status",
    ],
    "mdflow.analyzers": [
        "HighLowOfDay",
        "PriceVolumeSpike",
        "Tick",
        "analyzer_names",
        "get_analyzer",
        "parse_tick",
    ],
    "mdflow.marketdata": [
        "DataType",
        "MarketDataPoint",
        "OHLCV",
        "TIMEFRAMES",
        "WIRE_TYPES",
        "to_utc",
    ],
    "mdflow.errors": [
        "ConfigError",
        "DecodeError",
        "EncodeError",
        "MdflowError",
        "RedisUnavailable",
        "ValidationError",
    ],
}

# Rooms from the bottom up; a module may import its own room and rooms of a lower rank only.
RANKS = {
    "bottom": 0,  # errors, checks, record, marketdata: mdflow/*.py
    "reservoir": 1,
    "codecs": 1,
    "nodes": 2,
    "analyzers": 3,
    "streams": 4,
    "pubsub": 4,
    "collectors": 4,
    "pictures": 5,
    "": 6,  # the package itself: re-exports the public API (pictures included)
    "cli": 7,
}


def modules() -> dict[str, pathlib.Path]:
    """Every module of the package, by dotted name (packages by their own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("mdflow", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    return parts[1] if (PACKAGE / parts[1]).is_dir() else "bottom"


def imports(module: str, path: pathlib.Path, known: dict[str, pathlib.Path]) -> set[str]:
    """mdflow modules that ``module`` imports anywhere in its body (lazy imports too)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {name for name in candidates if name in known and name != module}
    return found


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 30, "the walk found too few modules to be meaningful"
    assert cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_imports_point_downwards():
    wrong = []
    for module, targets in import_graph().items():
        here = room(module)
        for target in targets:
            there = room(target)
            if there != here and RANKS[there] >= RANKS[here]:
                wrong.append(
                    f"{module} ({here or 'mdflow'}) imports {target} ({there or 'mdflow'})"
                )
    assert wrong == []


def test_every_room_is_ranked_and_documented():
    rooms = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert rooms <= set(RANKS), f"rank the new room(s) in this test: {rooms - set(RANKS)}"
    for name in rooms:
        package = importlib.import_module(f"mdflow.{name}")
        doc = package.__doc__ or ""
        assert "import" in doc, f"mdflow.{name}'s docstring must say what it may import"


def public_modules() -> list[str]:
    names = ["mdflow"]
    for info in pkgutil.walk_packages(mdflow.__path__, "mdflow."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", public_modules())
def test_all_lists_what_the_module_exports(name):
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    assert len(set(module.__all__)) == len(module.__all__), f"{name}.__all__ repeats a name"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == [], f"{name}.__all__ lists names it does not define"


@pytest.mark.parametrize("name", sorted(PUBLIC_BEFORE))
def test_public_api_kept(name):
    module = importlib.import_module(name)
    lost = sorted(set(PUBLIC_BEFORE[name]) - set(module.__all__))
    assert lost == [], f"{name} no longer exports {lost}"


def test_codec_wire_constants_kept():
    from mdflow import codecs

    assert codecs.MSGPACK_FIELD == "mdflow.msgpack" and codecs.JSON_FIELD == "mdflow.json"
    assert [codecs.EXT_BIGINT, codecs.EXT_PD_DATAFRAME, codecs.EXT_RECORD] == [1, 17, 18]


def entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
    return [
        ep for ep in importlib.metadata.entry_points(group=group) if ep.value.startswith("mdflow")
    ]


@pytest.mark.parametrize("group", ["streamz.sources", "streamz.nodes", "streamz.sinks"])
def test_streamz_entry_points_resolve_to_registered_nodes(group):
    for ep in entry_points(group):
        node = ep.load()
        assert issubclass(node, Stream) and node.__name__ == ep.name
        registered = Stream.__dict__[ep.name]
        assert isinstance(registered, staticmethod) == (group == "streamz.sources")
        wrapper = registered.__func__ if isinstance(registered, staticmethod) else registered
        assert wrapper.__wrapped__ is node, f"Stream.{ep.name} is not {ep.value}"


def test_analyzer_entry_points_resolve_to_analyzers():
    eps = entry_points("mdflow.analyzers")
    assert {ep.name for ep in eps} >= {"high_low_of_day", "spike"}
    for ep in eps:
        cls = ep.load()
        assert issubclass(cls, Analyzer) and cls.name == ep.name


def test_console_script_resolves_to_main():
    (script,) = [
        ep for ep in importlib.metadata.entry_points(group="console_scripts") if ep.name == "mdflow"
    ]
    from mdflow.cli import main

    assert script.load() is main
