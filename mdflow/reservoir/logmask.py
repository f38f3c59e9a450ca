"""Passwords never reach a log: records of mdflow's loggers (and its loops') are masked.

mdflow masks the URLs it writes into its own messages, but a record may also carry text
mdflow did not write: the message of an exception raised by a user's function or by a
library (a feed's URL with its credentials, the URL a script put into its error), in
the message itself or in the traceback logged with it. A log record factory masks both
(:func:`~.urls.mask_text`) for records of the loggers named in :data:`MASKED_LOGGERS`:
mdflow's, those of the libraries whose loops run its nodes and report their errors
(streamz, tornado, asyncio), and websockets', whose DEBUG log of a collector's
handshake shows the ``Authorization`` header made from a feed URL's ``user:password``.
Records of other loggers are left alone, and a record with nothing to mask is not
touched.

Examples
--------
>>> import logging
>>> install()
>>> record = logging.getLogger("mdflow.example").makeRecord(
...     "mdflow.example", logging.ERROR, __file__, 1, "cannot reach %s", ("redis://:pw@h/0",), None
... )
>>> record.getMessage()
'cannot reach redis://:***@h/0'
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .urls import mask_text

__all__ = ["MASKED_LOGGERS", "install", "mask_record"]

#: Loggers (and their children) whose records are masked.
MASKED_LOGGERS = ("mdflow", "streamz", "tornado", "asyncio", "websockets")

_formatter = logging.Formatter()  # the standard traceback text, to mask
_lock = threading.Lock()
_installed = False


def _is_masked(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in MASKED_LOGGERS)


def mask_record(record: logging.LogRecord) -> logging.LogRecord:
    """Mask every password in ``record``'s message and traceback; return the record.

    Only what changes is replaced: the message becomes the masked text (``args``
    None); a traceback that names a password becomes masked text in ``exc_text``
    and ``exc_info`` is dropped, so that no handler can draw it from the exception.
    """
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken record is logging's to report, not ours
        return record
    masked = mask_text(message)
    if masked != message:
        record.msg, record.args = masked, None
    exc_info = record.exc_info
    if exc_info and exc_info[1] is not None:
        trace = _formatter.formatException(exc_info)
        masked = mask_text(trace)
        if masked != trace:
            record.exc_text, record.exc_info = masked, None
    return record


def install() -> None:
    """Mask the records of :data:`MASKED_LOGGERS` from now on (once; later calls do nothing).

    The factory in place (logging's own, or one a program installed) still makes
    every record; mdflow's wraps it.
    """
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if _is_masked(record.name):
                mask_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
