"""Pictures: what a person would rather look at than read.

* :mod:`.topology` — :func:`write_picture`, one picture of every graph a set of nodes belongs to.

It may import any room below it (nodes, streams, pubsub, collectors read-only);
nothing but the command line imports it.
"""

from __future__ import annotations

from .topology import write_picture

__all__ = ["write_picture"]
