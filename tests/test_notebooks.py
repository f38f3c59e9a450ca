"""Every notebook in notebooks/ executes top to bottom (against the test server) and shows its
pictures: the topology (SVG), the live dashboard (HTML) and at least one chart (PNG)."""

from __future__ import annotations

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))

# matplotlib's inline backend (shipped with ipykernel): figures become PNG outputs, no window
INLINE = "module://matplotlib_inline.backend_inline"


def _outputs(notebook: nbformat.NotebookNode) -> list[dict]:
    return [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _data(outputs: list[dict], mime: str) -> list[str]:
    return [o["data"][mime] for o in outputs if mime in o.get("data", {})]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, redis_url, monkeypatch):
    monkeypatch.setenv("MDFLOW_REDIS_URL", redis_url)  # the kernel inherits the environment
    monkeypatch.setenv("MPLBACKEND", INLINE)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    outputs = _outputs(notebook)
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors
    stderr = [o["text"] for o in outputs if o.get("name") == "stderr"]
    assert not [t for t in stderr if "Traceback" in t or "Error" in t], stderr

    # The topology: Graphviz SVG of the `mdflow` digraph, inline.
    pictures = [svg for svg in _data(outputs, "image/svg+xml") if "<title>mdflow</title>" in svg]
    assert pictures, f"{path.name}: no topology picture (image/svg+xml) in the outputs"
    # The live dashboard, after at least one snapshot (not its placeholder).
    boards = [html for html in _data(outputs, "text/html") if "mdflow-dashboard" in html]
    assert boards, f"{path.name}: no dashboard snapshot (text/html) in the outputs"
    assert any("<svg" in html for html in boards)
    # A matplotlib chart, as PNG.
    charts = [
        o
        for o in outputs
        if "image/png" in o.get("data", {}) and "Figure" in o["data"].get("text/plain", "")
    ]
    assert charts, f"{path.name}: no chart (image/png) in the outputs"
