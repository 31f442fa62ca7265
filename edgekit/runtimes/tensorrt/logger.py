"""The one TensorRT logger of the process, and how its error lines reach the session whose call caused them.

TensorRT keeps a single logger per process (NVIDIA/TensorRT#1475): whichever ``ILogger`` reached it first
gets every later message, so a logger per session loses the errors of every session but the first. Here
:func:`shared_logger` creates one adapter lazily (under a lock, on first use by any session) and every
builder, parser and runtime gets that one.

Routing: TensorRT calls the logger on the thread that made the failing API call. A session wraps its
TensorRT calls in :func:`capture`, which opens a capture on the calling thread; error lines logged on that
thread while it is open go to it (the innermost one when nested). Since a session serializes its own
calls under its lock, the lines in a capture are the ones that session caused, even with other sessions
running on other threads. :func:`last_error` is what a session puts in its BackendError. Error lines logged
on a thread with no open capture (TensorRT's own worker threads) are kept in a short process-wide list;
when a failed call captured nothing, the newest such line logged since its capture opened is reported,
marked as logged on another thread. Every message also goes to Python logging under this module's name
(errors as ERROR, warnings as WARNING, TensorRT's INFO as DEBUG; VERBOSE is dropped).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

NO_MESSAGE = "no error message from TensorRT (run with logging at WARNING to see more)"
STRAY_KEPT = 32  # uncaptured error lines kept for the fallback


@dataclass
class Capture:
    """Error lines TensorRT logged on one thread while a session's call was in flight."""

    start: int  # sequence number when it opened: uncaptured lines after it may belong to this call
    lines: list[str] = field(default_factory=list)


class ErrorRouter:
    """Routes TensorRT's error lines to the capture open on the logging thread; pure Python, no TensorRT."""

    def __init__(self, keep: int = STRAY_KEPT) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._stray: deque[tuple[int, str]] = deque(maxlen=keep)

    def _stack(self) -> list[Capture]:
        stack: list[Capture] | None = getattr(self._local, "captures", None)
        if stack is None:
            stack = self._local.captures = []
        return stack

    def record(self, level: int, message: str) -> None:
        """One TensorRT message at a Python logging ``level``: logged, and kept if it is an error."""
        line = " ".join(str(message).split())
        log.log(level, "TensorRT: %s", line)
        if level < logging.ERROR:
            return
        stack = self._stack()
        if stack:
            stack[-1].lines.append(line)
            return
        with self._lock:
            self._stray.append((next(self._seq), line))

    @contextmanager
    def capture(self) -> Iterator[Capture]:
        """Collect the error lines logged on this thread until the block ends."""
        with self._lock:
            opened = Capture(start=next(self._seq))
        stack = self._stack()
        stack.append(opened)
        try:
            yield opened
        finally:
            stack.remove(opened)

    def last_error(self) -> str:
        """The newest error line of this thread's innermost capture, else a recent uncaptured one, else a hint."""
        stack = self._stack()
        if not stack:
            return NO_MESSAGE
        current = stack[-1]
        if current.lines:
            return current.lines[-1]
        with self._lock:
            stray = [line for seq, line in self._stray if seq > current.start]
        return f"{stray[-1]} (logged on another thread)" if stray else NO_MESSAGE


ROUTER = ErrorRouter()
_shared: Any = None
_shared_lock = threading.Lock()


def _levels(trt: Any) -> dict[Any, int]:
    severity = trt.ILogger.Severity
    return {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.DEBUG,
    }


def _make_adapter(trt: Any, router: ErrorRouter) -> Any:
    """An ``ILogger`` subclass instance that hands every message to ``router``."""
    levels = _levels(trt)

    class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity: Any, msg: str) -> None:
            level = levels.get(severity)
            if level is not None:  # VERBOSE is dropped
                router.record(level, msg)

    return _Logger()


def shared_logger(trt: Any) -> Any:
    """The process's one TensorRT logger, created on first call; every session passes this one to TensorRT."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = _make_adapter(trt, ROUTER)
    return _shared


def capture() -> AbstractContextManager[Capture]:
    """:meth:`ErrorRouter.capture` on the process's router."""
    return ROUTER.capture()


def last_error() -> str:
    """:meth:`ErrorRouter.last_error` on the process's router."""
    return ROUTER.last_error()
