"""Structured, PHI-free logging for the listener.

Every record is one JSON object per line (``{"event": ..., ...}``). Callers pass only
opaque values: site ids, trial subject ids, ``"unenrolled"`` plus an HMAC hash, counts,
byte sizes and status codes. PatientName, PatientID and birth dates are never logged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Hashable
from typing import Any

LOGGER_NAME = "rntflow.listener"


def get_logger() -> logging.Logger:
    """Return the listener's logger (``rntflow.listener``)."""
    return logging.getLogger(LOGGER_NAME)


def log_event(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event as a JSON line.

    Parameters
    ----------
    event : str
        Short event name, e.g. ``stored``, ``rejected``, ``quarantined``.
    level : int
        A :mod:`logging` level.
    **fields
        JSON-serialisable, PHI-free values.
    """
    logger = get_logger()
    if not logger.isEnabledFor(level):
        return
    record = {"ts": round(time.time(), 3), "event": event}
    record.update(fields)
    logger.log(level, json.dumps(record, default=str, sort_keys=False))


class JsonLineFormatter(logging.Formatter):
    """Pass JSON messages through; wrap any other message as ``{"msg": ...}``."""

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102
        msg = record.getMessage()
        if msg.startswith("{"):
            return msg
        return json.dumps(
            {"ts": round(record.created, 3), "logger": record.name, "level": record.levelname, "msg": msg}
        )


class RateLimiter:
    """At most ``burst`` events per key per ``window_s`` seconds, counting the rest.

    Parameters
    ----------
    burst : int
        Events allowed per key and window.
    window_s : float
        Window length (s).
    max_keys : int
        Keys remembered; the table is cleared when full (bounded memory).
    """

    def __init__(self, burst: int = 5, window_s: float = 60.0, max_keys: int = 4096) -> None:
        self.burst = burst
        self.window_s = window_s
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._state: dict[Hashable, list[float | int]] = {}

    def allow(self, key: Hashable) -> tuple[bool, int]:
        """Whether to log this event, and how many were suppressed since the last one."""
        now = time.monotonic()
        with self._lock:
            state = self._state.get(key)
            if state is None or now - state[0] >= self.window_s:
                if state is None and len(self._state) >= self.max_keys:
                    self._state.clear()
                suppressed = int(state[2]) if state else 0
                self._state[key] = [now, 1, 0]
                return True, suppressed
            if state[1] < self.burst:
                state[1] += 1
                suppressed, state[2] = int(state[2]), 0
                return True, suppressed
            state[2] += 1
            return False, 0


class LibraryLogLimiter(logging.Filter):
    """Bound library (pynetdicom, pydicom) log output per thread, i.e. per association.

    Each thread may log ``burst`` records per ``window_s``; messages are cut to
    ``max_chars`` and tracebacks dropped, so that one hostile association request cannot
    write megabytes of warnings. Suppressed records are counted in the next one logged.
    """

    def __init__(self, burst: int = 10, window_s: float = 60.0, max_chars: int = 300) -> None:
        super().__init__()
        self.limiter = RateLimiter(burst, window_s)
        self.max_chars = max_chars

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        allowed, suppressed = self.limiter.allow(record.threadName)
        if not allowed:
            return False
        msg = record.getMessage()
        if len(msg) > self.max_chars:
            msg = msg[: self.max_chars] + f"... ({len(msg)} chars)"
        if suppressed:
            msg += f" [{suppressed} similar records suppressed]"
        record.msg, record.args = msg, None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def limit_library_logs(level: int = logging.WARNING, stream_handler: logging.Handler | None = None) -> None:
    """Route pynetdicom's records through one rate-limited handler (idempotent).

    Parameters
    ----------
    level : int
        Level of the ``pynetdicom`` logger.
    stream_handler : logging.Handler, optional
        Where records go (default: stderr as JSON lines).
    """
    lib = logging.getLogger("pynetdicom")
    lib.setLevel(level)
    if any(getattr(h, "_rntflow_limited", False) for h in lib.handlers):
        return
    handler = stream_handler or logging.StreamHandler()
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(LibraryLogLimiter())
    handler._rntflow_limited = True  # type: ignore[attr-defined]
    lib.handlers[:] = [handler]
    lib.propagate = False


def configure_logging(level: int = logging.INFO) -> None:
    """Send listener logs to stderr as JSON lines; pynetdicom at WARNING, rate-limited."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLineFormatter())
    logger = get_logger()
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    limit_library_logs(logging.WARNING)
