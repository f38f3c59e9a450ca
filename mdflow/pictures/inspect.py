"""Look at a whole mdflow system from outside: what is in Redis, and every live graph.

:func:`inspect` asks one Redis (synchronously, a few pipelined round trips)
for

* its **streams** (``SCAN TYPE stream``): length, first/last entry ids and
  times, consumer groups (``XINFO GROUPS``: consumers, pending,
  last-delivered id, lag) and their consumers (``XINFO CONSUMERS``: pending,
  idle, inactive). Streams named ``<source>:dead`` (the outlets' default
  dead-letter name) are marked ``dead_letter_of`` their source, and the
  source gets ``dead_letters`` (the dead-letter stream's length). A custom
  ``dead_letter=`` name is not recognised;
* the **live graphs** every running mdflow process publishes
  (``mdflow:topology:*``, see :mod:`.publish`), with their age;
* the **collector managers'** status hashes (``mdflow:collectors:*``).

and merges it into one :class:`~.topology.Topology`: every live graph's nodes
and edges (ids prefixed with their graph id), joined through shared
reservoir nodes (``stream:<name>``), so a writer in one process and its
reader in another are one picture. Streams carry ``info`` lines
(``len 1,234``, ``last 3s ago``, ``dead letters 2``); a consumer group no
live graph reads (a ``redis-cli`` consumer, a dead process) is a node of
kind ``group`` with a read edge from its stream; a dead-letter stream hangs
off its source by an edge of kind ``dead``. Read edges carry lag, pending and
a fill: (lag + pending) relative to the reading outlet's ``max_inflight``,
or to :data:`GROUP_FILL_SCALE` (1000) when no live outlet tells it.

Examples
--------
>>> view = inspect("redis://localhost:6379/0")            # doctest: +SKIP
>>> [s["name"] for s in view["streams"]]                   # doctest: +SKIP
['quotes', 'quotes:dead']
>>> view.svg()                                             # doctest: +SKIP
>>> snapshot = view.snapshot()                             # for a web page  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from ..errors import RedisUnavailable
from ..reservoir import CONNECTION_ERRORS, mask_text, mask_url, translate_error
from ..reservoir import redis_url as resolve_url
from .describe import KINDS
from .health import fill_bar, fill_colour
from .publish import PATTERN as TOPOLOGY_PATTERN
from .render import RenderUnavailable
from .topology import Topology

__all__ = ["DEAD_SUFFIX", "GROUP_FILL_SCALE", "SystemView", "inspect"]

logger = logging.getLogger(__name__)

_LAG_SCAN = 10_000  # most entries counted for a lag Redis does not report (Redis < 7)

#: A read edge's fill is (lag + pending) / this when no live outlet gives its max_inflight.
GROUP_FILL_SCALE = 1000
#: Streams whose name ends so are dead-letter streams of the stream before it.
DEAD_SUFFIX = ":dead"
COLLECTORS_PATTERN = "mdflow:collectors:*"

_CONNECT_TIMEOUT = 2.0
_SOCKET_TIMEOUT = 5.0
_SCAN_COUNT = 1000
# What the first PING may meet: unreachable, refused, wrong password (all mean "unavailable").
_PING_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, redis.RedisError)


class SystemView(dict[str, Any]):
    """What :func:`inspect` saw, as plain JSON-ready data, with ways to show it.

    Keys: ``redis`` (masked URL), ``time`` (Unix time), ``streams``,
    ``graphs``, ``collectors`` and ``topology`` (one merged
    :class:`~.topology.Topology`). ``to_dot()``, ``svg()`` and the Jupyter
    display draw the merged topology; :meth:`snapshot` is what a dashboard shows.

    Examples
    --------
    >>> view = SystemView(redis="redis://h:6379/0", time=0.0, streams=[], graphs=[],
    ...                   collectors=[], topology=Topology(nodes={}, edges=[]))
    >>> view
    <SystemView redis://h:6379/0: 0 streams, 0 live graphs, 0 collector managers>
    """

    @property
    def topology(self) -> Topology:
        """The merged topology of every live graph and every stream."""
        topo = self["topology"]
        return topo if isinstance(topo, Topology) else Topology(topo)

    def to_dot(self) -> str:
        """The merged topology as Graphviz DOT text."""
        return self.topology.to_dot()

    def svg(self) -> str:
        """The merged topology as inline SVG text (raises ``RenderUnavailable``)."""
        return self.topology.svg()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        bundle = self.topology._repr_mimebundle_(include, exclude)
        bundle["text/plain"] = f"{self!r}\n{bundle.get('text/plain', '')}"
        return bundle

    def __repr__(self) -> str:
        return (
            f"<SystemView {self.get('redis')}: {len(self.get('streams', []))} streams, "
            f"{len(self.get('graphs', []))} live graphs, "
            f"{len(self.get('collectors', []))} collector managers>"
        )

    def snapshot(self) -> dict[str, Any]:
        """The dashboard's view: title, SVG, node and stream summaries, graphs, errors.

        Returns
        -------
        dict
            ``{"time", "title", "svg", "nodes", "streams", "graphs", "errors"}``;
            ``svg`` is ``""`` (and ``errors`` says why) when no renderer is available.

        Examples
        --------
        >>> view = SystemView(redis="redis://h:6379/0", time=0.0, streams=[], graphs=[],
        ...                   collectors=[], topology=Topology(nodes={}, edges=[]))
        >>> sorted(view.snapshot())                              # doctest: +SKIP
        ['errors', 'graphs', 'nodes', 'streams', 'svg', 'time', 'title']
        """
        errors: list[str] = list(self.get("errors", []))
        try:
            svg = self.svg()
        except RenderUnavailable as exc:
            svg = ""
            errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        nodes = []
        for node_id, node in self.topology["nodes"].items():
            status = node.get("status")
            if status is None:
                continue
            extra = node.get("overlay") or {}
            nodes.append(
                {
                    "id": node_id,
                    "name": node.get("name"),
                    "kind": node.get("kind"),
                    "state": status.get("state"),
                    "health": extra.get("health"),
                    "rate": extra.get("rate"),
                    "counts": dict(extra.get("counts") or {}),
                    "text": extra.get("text", ""),
                }
            )
        streams = [
            {
                "name": s["name"],
                "length": s["length"],
                "last_id": s["last_id"],
                "groups": [
                    {
                        "name": g["name"],
                        "lag": g["lag"],
                        "pending": g["pending"],
                        "consumers": g["consumers"],
                    }
                    for g in s["groups"]
                ],
                "dead_letters": s["dead_letters"],
            }
            for s in self.get("streams", [])
        ]
        graphs = [
            {
                "id": g["id"],
                "host": g["host"],
                "pid": g["pid"],
                "program": g.get("program"),
                "nodes": g["nodes"],
                "age": g["age"],
            }
            for g in self.get("graphs", [])
        ]
        return {
            "time": self.get("time"),
            "title": f"mdflow · {self.get('redis')}",
            "svg": svg,
            "nodes": nodes,
            "streams": streams,
            "graphs": graphs,
            "errors": errors,
        }


def inspect(redis_url: str | None = None, pattern: str = "*") -> SystemView:
    """Everything one Redis knows about the mdflow system around it (see the module docs).

    Parameters
    ----------
    redis_url : str, optional
        Where Redis is (see :func:`mdflow.redis_url`).
    pattern : str
        ``SCAN MATCH`` pattern for the streams to look at (live graphs and
        collector managers are always all listed).

    Returns
    -------
    SystemView
        Plain data: ``redis``, ``time``, ``streams``, ``graphs``, ``collectors``, ``topology``.

    Raises
    ------
    RedisUnavailable
        Redis did not answer within a few seconds (the message masks the password).
    RedisAccessDenied
        An ACL user without a command inspect needs (it says which).

    Examples
    --------
    >>> view = inspect("redis://localhost:6379/0", pattern="quotes*")   # doctest: +SKIP
    >>> view["streams"][0]["groups"][0]["lag"]                           # doctest: +SKIP
    0
    >>> view.snapshot()["title"]                                         # doctest: +SKIP
    'mdflow · redis://localhost:6379/0'
    """
    url = resolve_url(redis_url)
    conn = redis.Redis.from_url(
        url,
        socket_connect_timeout=_CONNECT_TIMEOUT,
        socket_timeout=_SOCKET_TIMEOUT,
        retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 1),
        client_name="mdflow-inspect",
    )
    try:
        try:
            conn.ping()
        except _PING_ERRORS as exc:
            raise _unavailable(url, exc) from None
        try:
            return _inspect(conn, url, pattern)
        except CONNECTION_ERRORS as exc:
            raise _unavailable(url, exc) from None
        except redis.exceptions.NoPermissionError as exc:  # an ACL user without a command
            raise translate_error(exc, url) from None
    finally:
        conn.close()


def _unavailable(url: str, exc: BaseException) -> RedisUnavailable:
    return RedisUnavailable(
        f"cannot inspect Redis at {mask_url(url)}: {type(exc).__name__}: {mask_text(str(exc))}. "
        "Check that redis-server is running and reachable, and the username/password."
    )


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def _id_time(entry_id: str | None) -> float | None:
    """The Unix time in a stream entry id (its milliseconds part)."""
    if not entry_id:
        return None
    ms = entry_id.partition("-")[0]
    return int(ms) / 1000 if ms.isdigit() else None


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f}h ago"
    return f"{seconds / 86400:.0f}d ago"


def _inspect(conn: redis.Redis, url: str, pattern: str) -> SystemView:
    now = time.time()
    seconds, micros = conn.time()
    server_now = seconds + micros / 1e6
    errors: list[str] = []
    streams = _streams(conn, pattern, server_now)
    graphs = _graphs(conn, now, errors)
    collectors = _collectors(conn, errors)
    topo = _merge(graphs, streams)
    for graph in graphs:
        del graph["topology"]
    return SystemView(
        redis=mask_url(url),
        time=now,
        streams=streams,
        graphs=graphs,
        collectors=collectors,
        topology=topo,
        errors=errors,
    )


def _streams(conn: redis.Redis, pattern: str, server_now: float) -> list[dict[str, Any]]:
    keys = sorted(set(conn.scan_iter(match=pattern, count=_SCAN_COUNT, _type="stream")))
    pipe = conn.pipeline(transaction=False)
    for key in keys:
        pipe.xinfo_stream(key)
        pipe.xinfo_groups(key)
    replies = pipe.execute(raise_on_error=False) if keys else []
    found: list[tuple[bytes, dict[str, Any], list[dict[str, Any]]]] = []
    for i, key in enumerate(keys):
        info, groups = replies[2 * i], replies[2 * i + 1]
        if isinstance(info, Exception) or isinstance(groups, Exception):
            continue  # deleted (or replaced) since the SCAN
        found.append((key, info, groups))
    pipe = conn.pipeline(transaction=False)
    for key, _, groups in found:
        for group in groups:
            pipe.xinfo_consumers(key, group["name"])
    members = iter(pipe.execute(raise_on_error=False) if any(g for *_, g in found) else [])
    out: list[dict[str, Any]] = []
    for key, info, groups in found:
        first = info.get("first-entry")
        last = info.get("last-entry")
        first_id = _text(first[0]) if first else None
        last_id = _text(last[0]) if last else None
        last_time = _id_time(last_id)
        stream: dict[str, Any] = {
            "name": _text(key),
            "length": int(info.get("length") or 0),
            "first_id": first_id,
            "first_time": _id_time(first_id),
            "last_id": last_id,
            "last_time": last_time,
            "last_age": None if last_time is None else round(max(0.0, server_now - last_time), 3),
            "groups": [],
            "dead_letters": None,
            "dead_letter_of": None,
        }
        for group in groups:
            consumers = next(members)
            lag = group.get("lag")
            if lag is None:  # Redis < 7 (or a group Redis cannot count): count what is after
                lag = _lag_after(conn, key, group.get("last-delivered-id"))
            stream["groups"].append(
                {
                    "name": _text(group["name"]),
                    "consumers": int(group.get("consumers") or 0),
                    "pending": int(group.get("pending") or 0),
                    "last_delivered_id": _text(group.get("last-delivered-id") or b""),
                    "entries_read": group.get("entries-read"),
                    "lag": None if lag is None else int(lag),
                    "consumer_list": []
                    if isinstance(consumers, Exception)
                    else [
                        {
                            "name": _text(c["name"]),
                            "pending": int(c.get("pending") or 0),
                            "idle_ms": c.get("idle"),
                            "inactive_ms": c.get("inactive"),
                        }
                        for c in consumers
                    ],
                    "live": False,
                }
            )
        out.append(stream)
    by_name = {s["name"]: s for s in out}
    for stream in out:
        name = stream["name"]
        if name.endswith(DEAD_SUFFIX) and len(name) > len(DEAD_SUFFIX):
            source = name[: -len(DEAD_SUFFIX)]
            stream["dead_letter_of"] = source
            if source in by_name:
                by_name[source]["dead_letters"] = stream["length"]
    return out


def _lag_after(conn: redis.Redis, key: Any, last_delivered: Any) -> int | None:
    """Entries after a group's last-delivered id (at most ``_LAG_SCAN``), as the outlet does."""
    if not last_delivered:
        return None
    after = conn.xrange(key, min="(" + _text(last_delivered), count=_LAG_SCAN)
    return len(after or ())


def _graphs(conn: redis.Redis, now: float, errors: list[str]) -> list[dict[str, Any]]:
    keys = sorted(set(conn.scan_iter(match=TOPOLOGY_PATTERN, count=_SCAN_COUNT, _type="string")))
    values = conn.mget(keys) if keys else []
    out = []
    for key, raw in zip(keys, values, strict=True):
        if raw is None:
            continue  # expired since the SCAN
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise TypeError(f"a JSON {type(doc).__name__}, not an object")
            topo = doc["topology"]
            _check_topology(topo)
            nodes = [n for n in topo["nodes"].values() if not n.get("reservoir")]
            out.append(
                {
                    "id": str(doc["id"]),
                    "key": _text(key),
                    "host": doc.get("host"),
                    "pid": doc.get("pid"),
                    "program": doc.get("program"),
                    "started": doc.get("started"),
                    "time": doc.get("time"),
                    "age": round(max(0.0, now - float(doc.get("time") or now)), 3),
                    "redis": doc.get("redis"),
                    "nodes": len(nodes),
                    "topology": topo,
                }
            )
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            why = mask_text(f"{type(exc).__name__}: {exc}")[:300]
            errors.append(f"{_text(key)}: not a topology document ({why})")
    return out


# What a published topology may hold, checked before it is merged and drawn: any client that
# can SET a key can publish one, and its words go into DOT attributes (unquoted: shape, fill,
# colour, classes) and an SVG that the dashboard shows in a browser.
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")  # a DOT ID: shape is written unquoted
_COLOUR = re.compile(r"#[0-9A-Fa-f]{3,8}|[A-Za-z]{1,30}")
_NODE_FIELDS: dict[str, tuple[type, ...]] = {
    "label": (list,),
    "info": (list,),
    "overlay": (dict,),
    "status": (dict,),
}
_EDGE_FIELDS: dict[str, tuple[type, ...]] = {
    "text": (str,),
    "lag": (int,),
    "pending": (int,),
}


def _check_topology(topo: object) -> None:
    """Raise TypeError/ValueError (saying what) unless ``topo`` has the shape of a topology."""
    if not isinstance(topo, dict):
        raise TypeError("'topology' is not an object")
    nodes, edges = topo.get("nodes"), topo.get("edges")
    if not isinstance(nodes, dict) or not isinstance(edges, list):
        raise TypeError("'topology' needs an object 'nodes' and a list 'edges'")
    for node_id, node in nodes.items():
        if not isinstance(node, dict):
            raise TypeError(f"node {node_id!r} is not an object")
        _check_fields(node, _NODE_FIELDS, f"node {node_id!r}")
        for name in ("kind", "shape"):
            _check_word(node.get(name), _WORD, f"node {node_id!r} {name}")
        _check_word(node.get("fill"), _COLOUR, f"node {node_id!r} fill")
        overlay = node.get("overlay") or {}
        if overlay and not isinstance(overlay.get("health"), str):
            raise TypeError(f"node {node_id!r}: an overlay without a health")
        _check_word(overlay.get("health"), _WORD, f"node {node_id!r} health")
        counts, rate = overlay.get("counts") or {}, overlay.get("rate")
        if not isinstance(counts, dict) or not all(_is_number(v) for v in counts.values()):
            raise TypeError(f"node {node_id!r}: overlay counts is not an object of numbers")
        if rate is not None and not _is_number(rate):
            raise TypeError(f"node {node_id!r}: overlay rate is {type(rate).__name__}")
        inflight = (node.get("status") or {}).get("max_inflight")
        if inflight is not None and (not isinstance(inflight, int) or inflight < 0):
            raise TypeError(f"node {node_id!r}: max_inflight is {inflight!r}")
    for edge in edges:
        if not isinstance(edge, dict):
            raise TypeError(f"an edge is {type(edge).__name__}, not an object")
        _check_fields(edge, _EDGE_FIELDS, "an edge")
        if not all(isinstance(edge.get(name), str) for name in ("src", "dst", "kind")):
            raise TypeError("an edge without a str src, dst and kind")
        if "fill" in edge and not _is_number(edge["fill"]):
            raise TypeError(f"an edge's fill is {type(edge['fill']).__name__}")
        _check_word(edge["kind"], _WORD, "an edge's kind")
        _check_word(edge.get("colour"), _COLOUR, "an edge's colour")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_fields(item: dict[str, Any], fields: dict[str, tuple[type, ...]], what: str) -> None:
    for name, types in fields.items():
        value = item.get(name)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            raise TypeError(f"{what}: {name} is {type(value).__name__}")


def _check_word(value: object, pattern: re.Pattern[str], what: str) -> None:
    if value is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
        raise ValueError(f"{what} is {str(value)[:40]!r}")


def _collectors(conn: redis.Redis, errors: list[str]) -> list[dict[str, Any]]:
    keys = sorted(set(conn.scan_iter(match=COLLECTORS_PATTERN, count=_SCAN_COUNT, _type="hash")))
    pipe = conn.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    replies = pipe.execute(raise_on_error=False) if keys else []
    out = []
    for key, raw in zip(keys, replies, strict=True):
        if isinstance(raw, Exception) or not raw:
            continue
        name = _text(key)[len(COLLECTORS_PATTERN) - 1 :]
        entry: dict[str, Any] = {"name": name, "key": _text(key), "updated_at": None}
        collectors: dict[str, Any] = {}
        for field, value in raw.items():
            field_name, text = _text(field), _text(value)
            if field_name == "updated_at":
                entry["updated_at"] = text
                continue
            try:
                collectors[field_name] = json.loads(text)
            except (ValueError, RecursionError):
                errors.append(f"{_text(key)}: field {field_name!r} is not JSON")
        entry["collectors"] = collectors
        out.append(entry)
    return out


def _merge(graphs: list[dict[str, Any]], streams: list[dict[str, Any]]) -> Topology:
    """One topology: every live graph, joined through reservoirs; streams and groups from Redis."""
    topo = Topology(nodes={}, edges=[])
    nodes: dict[str, Any] = topo["nodes"]
    edges: list[dict[str, Any]] = topo["edges"]
    for graph in graphs:
        for node_id, node in graph["topology"].get("nodes", {}).items():
            if node.get("reservoir"):
                nodes.setdefault(node_id, node)
            else:
                nodes[node_id] = {**node, "graph": graph["id"]}
        edges.extend(graph["topology"].get("edges", []))
    shape, fill, _ = KINDS["stream"]
    for stream in streams:
        name = stream["name"]
        rid = f"stream:{name}"
        node = nodes.setdefault(
            rid,
            {
                "kind": "stream",
                "name": name,
                "label": [name],
                "shape": shape,
                "fill": fill,
                "mdflow": False,
                "reservoir": True,
            },
        )
        info = [f"len {stream['length']:,}"]
        if stream["last_age"] is not None:
            info.append(f"last {_ago(stream['last_age'])}")
        if stream["dead_letters"]:
            info.append(f"dead letters {stream['dead_letters']:,}")
        node["info"] = info
        for group in stream["groups"]:
            _group_edges(topo, rid, stream, group)
    for stream in streams:
        source = stream["dead_letter_of"]
        if source is not None and f"stream:{source}" in nodes:
            edges.append(
                {
                    "src": f"stream:{source}",
                    "dst": f"stream:{stream['name']}",
                    "kind": "dead",
                    "text": f"dead letters {stream['length']:,}",
                }
            )
    return topo


def _group_edges(topo: Topology, rid: str, stream: dict[str, Any], group: dict[str, Any]) -> None:
    """Give live read edges the group's real numbers; draw a group no live graph reads."""
    lag, pending = group["lag"], group["pending"]
    live = [
        e
        for e in topo["edges"]
        if e["src"] == rid and e["kind"] == "read" and e.get("group") == group["name"]
    ]
    group["live"] = bool(live)
    for edge in live:
        if edge.get("lag") is None and edge.get("pending") is None:
            status = topo["nodes"].get(edge["dst"], {}).get("status") or {}
            edge.update(_fill(lag, pending, status.get("max_inflight") or GROUP_FILL_SCALE))
    if live:
        return
    shape, fill, _ = KINDS["group"]
    node_id = f"group:{stream['name']}/{group['name']}"
    topo["nodes"][node_id] = {
        "kind": "group",
        "name": group["name"],
        "label": [
            f"group {group['name']}",
            f"consumers {group['consumers']}",
            f"pending {pending:,}",
        ],
        "shape": shape,
        "fill": fill,
        "mdflow": False,
        "stream": stream["name"],
        "consumers": [c["name"] for c in group["consumer_list"]],
    }
    edge = {"src": rid, "dst": node_id, "kind": "read", "group": group["name"]}
    edge.update(_fill(lag, pending, GROUP_FILL_SCALE))
    topo["edges"].append(edge)


def _fill(lag: int | None, pending: int | None, scale: int) -> dict[str, Any]:
    fraction = min(1.0, ((lag or 0) + (pending or 0)) / scale) if scale else 0.0
    shown_lag = "?" if lag is None else f"{lag:,}"
    return {
        "lag": lag,
        "pending": pending,
        "fill": fraction,
        "colour": fill_colour(fraction),
        "text": f"lag {shown_lag} · pending {pending or 0:,} {fill_bar(fraction)}",
    }
