"""The ``mdflow`` command line: the only place in mdflow that writes to the terminal.

* :mod:`.main` — the click group ``cli`` and :func:`main`, the console script's entry point;
* :mod:`.common` — what every command shares (``--url``, ``--json``, errors, consoles);
* :mod:`.load` — :func:`load_pipeline`: a ``SPEC`` (``module:attr`` or ``file.py:attr``)
  to the streamz nodes it names, nothing started;
* one module per command: :mod:`.doctor`, :mod:`.demo_cmd` (and :mod:`.demo`, the demo
  pipeline itself), :mod:`.graph`, :mod:`.inspect_cmd`, :mod:`.dashboard_cmd`,
  :mod:`.run`, :mod:`.server`, :mod:`.tail`, :mod:`.dead_letters`.

The top room: it may import every other room; nothing in mdflow imports it.
"""

from __future__ import annotations

from .load import load_pipeline
from .main import cli, main

__all__ = ["cli", "load_pipeline", "main"]
