"""Storage-failure injection: the test hook that makes the spool's next writes fail.

:class:`rntflow.listener.spool.Spool` calls :meth:`FaultInjector.check` before every
durable write; tests arm it (through the listener's ``faults`` argument) to raise an
``OSError`` such as ENOSPC, and check that the store is answered with a failure status
(0xA700), never acknowledged.
"""

from __future__ import annotations

import errno
import os
import threading


class FaultInjector:
    """Test hook: make the next ``n`` writes fail with an ``OSError`` (default ENOSPC)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._remaining = 0
        self._errno = errno.ENOSPC

    def fail_next(self, n: int = 1, err: int = errno.ENOSPC) -> None:
        with self._lock:
            self._remaining, self._errno = n, err

    def check(self) -> None:
        with self._lock:
            if self._remaining > 0:
                self._remaining -= 1
                raise OSError(self._errno, os.strerror(self._errno))
