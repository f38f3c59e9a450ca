"""Pictures of topologies: every node of one or more streamz graphs, drawn with Graphviz."""

from __future__ import annotations

from streamz import Stream

__all__ = ["write_picture"]


def write_picture(nodes: list[Stream], filename: str) -> str | None:
    """Write one picture of every graph that ``nodes`` belong to.

    The format follows the file name's extension (``.png`` if it has none).
    Returns ``filename``, or a note saying why nothing was written when
    Graphviz (``dot``) cannot render: the picture is optional.

    Examples
    --------
    >>> from streamz import Stream
    >>> source = Stream()
    >>> _ = source.map(str).sink(print)
    >>> write_picture([source], "/tmp/mdflow-doc.png")  # doctest: +SKIP
    '/tmp/mdflow-doc.png'
    """
    try:
        import networkx as nx
        from streamz.graph import create_graph, readable_graph, to_graphviz

        graph = nx.DiGraph()
        for node in nodes:
            create_graph(node, graph)
        stem, _, fmt = filename.rpartition(".")
        if not stem:
            stem, fmt = filename, "png"
        data = to_graphviz(readable_graph(graph)).pipe(format=fmt)
        with open(filename, "wb") as out:
            out.write(data)
        return filename
    except Exception as exc:  # noqa: BLE001 - the picture is optional: say why it is missing
        return f"not written ({type(exc).__name__}: {exc})"
