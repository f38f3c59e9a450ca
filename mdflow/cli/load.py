"""Find the pipeline a command line names: ``SPEC`` to a list of streamz nodes, nothing started.

``SPEC`` is one of

* ``package.module:attr`` — import the module (as ``import`` would) and take ``attr``;
* ``path/to/file.py:attr`` — run the file as a module and take ``attr``; the file's
  directory goes first on ``sys.path``, as ``python path/to/file.py`` would do, so the
  file can import its neighbours;
* ``package.module`` or ``path/to/file.py`` — the same, with ``attr`` defaulting to
  ``pipeline``. A module without ``pipeline`` gives every streamz node defined at its
  top level that has no upstream (its sources), in the order they were defined.

``attr`` may be dotted (``module:graphs.prices``) and may name a node, a list, tuple
or set of nodes, or a function taking no arguments that returns one of those (called
once). A file is imported under the name ``mdflow_pipeline_<stem>``, not ``__main__``:
an ``if __name__ == "__main__":`` block in it does not run.

Examples
--------
>>> nodes = load_pipeline("pipelines/ticks.py")             # doctest: +SKIP
>>> nodes = load_pipeline("myproject.flows:build_prices")   # doctest: +SKIP
>>> load_pipeline("nope.py")                                # doctest: +SKIP
Traceback (most recent call last):
...
mdflow.errors.ConfigError: pipeline file 'nope.py' does not exist; give SPEC as ...
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import sys
import traceback
from types import ModuleType
from typing import Any

from streamz import Stream

from ..errors import ConfigError, MdflowError, describe

__all__ = ["DEFAULT_ATTR", "SPEC_FORMS", "load_pipeline"]

logger = logging.getLogger(__name__)

#: The attribute taken when SPEC names only a module or a file.
DEFAULT_ATTR = "pipeline"
#: How SPEC may be written, for error messages and --help.
SPEC_FORMS = "package.module[:attr] or path/to/file.py[:attr]"

_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def load_pipeline(spec: str) -> list[Stream]:
    """The streamz nodes ``spec`` names (see the module docs); nothing is started.

    Parameters
    ----------
    spec : str
        ``package.module:attr``, ``path/to/file.py:attr``, ``package.module`` or
        ``path/to/file.py`` (then ``attr`` is ``pipeline``, else every top-level source).

    Returns
    -------
    list of streamz.Stream
        At least one node; any node of a graph stands for its whole graph.

    Raises
    ------
    ConfigError
        The spec is malformed, the module or file cannot be found or fails to
        import, the attribute is missing, or it is not a node, nodes, or a
        function returning them. Errors mdflow itself raised while the module was
        imported (a bad node argument, Redis unavailable) are raised as they are.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> _ = pathlib.Path(folder, "flow.py").write_text(
    ...     "from streamz import Stream\\nsource = Stream()\\npipeline = source.map(str)\\n")
    >>> [type(node).__name__ for node in load_pipeline(f"{folder}/flow.py")]
    ['map']
    >>> [type(node).__name__ for node in load_pipeline(f"{folder}/flow.py:source")]
    ['Stream']
    """
    if not isinstance(spec, str) or not spec.strip():
        msg = f"pipeline SPEC must be a non-empty str; got {describe(spec)}; give {SPEC_FORMS}"
        raise ConfigError(msg)
    target, attr = _split(spec.strip())
    if _is_file(target):
        module = _import_file(spec, target)
    else:
        module = _import_module(spec, target)
    if attr is None:
        if hasattr(module, DEFAULT_ATTR):
            return _nodes(spec, getattr(module, DEFAULT_ATTR), DEFAULT_ATTR)
        sources = _top_level_sources(module)
        if not sources:
            msg = (
                f"{_what(module, target)} has no attribute {DEFAULT_ATTR!r} and defines no "
                f"streamz node at its top level; give SPEC as {target}:attr naming a node, "
                "a list of nodes or a function returning them"
            )
            raise ConfigError(msg)
        return sources
    return _nodes(spec, _getattr(module, target, attr), attr)


def _split(spec: str) -> tuple[str, str | None]:
    """``module_or_file[:attr]``; a colon belongs to a path unless what follows is a name."""
    head, colon, tail = spec.rpartition(":")
    if colon and head and _DOTTED.match(tail):
        return head, tail
    if colon and head and not tail:
        msg = f"pipeline SPEC {spec!r} ends with ':'; give {SPEC_FORMS}"
        raise ConfigError(msg)
    return spec, None


def _is_file(target: str) -> bool:
    return target.endswith(".py") or os.sep in target or "/" in target or os.path.isfile(target)


def _what(module: ModuleType, target: str) -> str:
    given = getattr(module, "__mdflow_spec__", None)  # set on modules made from files
    return f"pipeline file {given!r}" if given else f"module {target!r}"


def _import_file(spec: str, target: str) -> ModuleType:
    path = os.path.abspath(os.path.expanduser(target))
    if not os.path.exists(path):
        msg = f"pipeline file {target!r} does not exist; give {SPEC_FORMS}"
        raise ConfigError(msg)
    if not os.path.isfile(path) or not path.endswith(".py"):
        msg = f"pipeline file {target!r} is not a Python file (*.py); give {SPEC_FORMS}"
        raise ConfigError(msg)
    folder = os.path.dirname(path)
    if folder not in sys.path:  # as `python path/to/file.py` does: its neighbours import
        sys.path.insert(0, folder)
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    name = f"mdflow_pipeline_{stem}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    if loader_spec is None or loader_spec.loader is None:  # pragma: no cover - .py always loads
        msg = f"pipeline file {target!r} cannot be loaded as a Python module"
        raise ConfigError(msg)
    module = importlib.util.module_from_spec(loader_spec)
    module.__dict__["__mdflow_spec__"] = target
    sys.modules[name] = module  # dataclasses, pickle and friends look modules up there
    try:
        loader_spec.loader.exec_module(module)
    except MdflowError:
        sys.modules.pop(name, None)
        raise
    except Exception as exc:
        sys.modules.pop(name, None)
        raise _failed(f"importing pipeline file {target!r}", exc, path) from exc
    except SystemExit as exc:
        sys.modules.pop(name, None)
        msg = f"importing pipeline file {target!r} called sys.exit({exc.code!r})"
        raise ConfigError(msg) from exc
    return module


def _import_module(spec: str, target: str) -> ModuleType:
    if not _DOTTED.match(target):
        msg = (
            f"pipeline SPEC {spec!r} is neither a module name nor a path to a .py file; "
            f"give {SPEC_FORMS}"
        )
        raise ConfigError(msg)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `python -m` finds modules in the working directory
    try:
        return importlib.import_module(target)
    except MdflowError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            msg = f"cannot import module {target!r}: {exc}; give {SPEC_FORMS}"
            raise ConfigError(msg) from exc
        raise _failed(f"importing module {target!r}", exc, None) from exc
    except Exception as exc:
        raise _failed(f"importing module {target!r}", exc, None) from exc
    except SystemExit as exc:
        msg = f"importing module {target!r} called sys.exit({exc.code!r})"
        raise ConfigError(msg) from exc


def _failed(doing: str, exc: BaseException, path: str | None) -> ConfigError:
    """``<doing> failed at file.py:12: ZeroDivisionError: division by zero`` (one line)."""
    logger.info("%s failed", doing, exc_info=exc)  # the traceback, for `mdflow -v`
    where = ""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [
        f
        for f in frames
        if (path is None or os.path.abspath(f.filename) == path)
        and not f.filename.startswith("<")  # importlib's frozen frames
        and os.path.abspath(f.filename) != os.path.abspath(__file__)
    ]
    if own:
        last = own[-1]
        where = f" at {os.path.basename(last.filename)}:{last.lineno}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return ConfigError(f"{doing} failed{where}: {type(exc).__name__}: {text}".rstrip(": "))


def _getattr(module: ModuleType, target: str, attr: str) -> Any:
    value: Any = module
    for i, part in enumerate(attr.split(".")):
        if not hasattr(value, part):
            owner = _what(module, target) if i == 0 else repr(".".join(attr.split(".")[:i]))
            msg = (
                f"{owner} has no attribute {part!r}; give SPEC as {target}:attr naming a "
                "node, a list of nodes or a function returning them"
            )
            raise ConfigError(msg)
        value = getattr(value, part)
    return value


def _nodes(spec: str, value: Any, attr: str) -> list[Stream]:
    if callable(value) and not isinstance(value, Stream | type):
        try:
            value = value()
        except MdflowError:
            raise
        except Exception as exc:
            raise _failed(f"calling {attr}() of {spec!r}", exc, None) from exc
        if callable(value) and not isinstance(value, Stream):
            msg = f"{attr}() of {spec!r} returned {describe(value)}; expected a node or nodes"
            raise ConfigError(msg)
    if isinstance(value, Stream):
        return [value]
    if isinstance(value, list | tuple | set | frozenset) and value:
        items = list(value)
        bad = [item for item in items if not isinstance(item, Stream)]
        if not bad:
            return items
        msg = (
            f"{attr!r} of {spec!r} holds {describe(bad[0])}; "
            "expected only streamz nodes (e.g. the sources of the pipeline)"
        )
        raise ConfigError(msg)
    msg = (
        f"{attr!r} of {spec!r} is {describe(value)}; expected a streamz node, a non-empty "
        "list/tuple of nodes, or a function taking no arguments that returns one of those"
    )
    raise ConfigError(msg)


def _top_level_sources(module: ModuleType) -> list[Stream]:
    seen: set[int] = set()
    out: list[Stream] = []
    for value in vars(module).values():
        if isinstance(value, Stream) and not value.upstreams and id(value) not in seen:
            seen.add(id(value))
            out.append(value)
    return out
