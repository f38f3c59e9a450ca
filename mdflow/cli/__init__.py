"""The ``mdflow`` command line: the only place in mdflow that writes to the terminal.

* :mod:`.main` — the argument parser and the ``doctor`` / ``demo`` commands;
* :mod:`.demo` — the self-contained demo pipeline (``mdflow demo``).

The top room: it may import every other room; nothing in mdflow imports it.
"""

from __future__ import annotations

from .main import main

__all__ = ["main"]
