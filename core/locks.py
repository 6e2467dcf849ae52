"""Named inter-process locks (``flock``) for work that must not overlap across workers.

The warehouse writer serialises loads *per table* (``<warehouse>/<table>/.lock``), which keeps
every file whole and every natural key's versions contiguous. It cannot keep a *set* of
tables consistent: one subject-cycle's dosimetry writes ``voi_timepoints``, ``tac_fits``,
``voi_doses``, ``dvhs`` and ``qa_checks`` in turn, and two flow runs of the same cycle on two
workers (two time points of one cycle arriving at once) could interleave those loads, or the
run that read fewer time points could load last and leave the older result as the latest
version. :func:`named_lock` serialises such a unit of work: whoever takes the lock second
reads its inputs after the first has written its outputs, so the last result loaded is the
one computed from the most inputs.

The lock is an exclusive ``flock`` on a file ``<lock_dir>/<name>.lock``; the kernel releases
it when its holder exits, however it exits (a killed flow-run process leaves no stale lock).
Every worker that may run the same unit must see the same ``lock_dir``: on one host any
local folder, across hosts a shared filesystem with working POSIX/BSD locks (NFSv4, CephFS;
the same requirement the warehouse's table locks have).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rntflow.core.errors import RntflowError

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


class LockTimeout(RntflowError):
    """A named lock was not obtained within its timeout."""


def lock_path(lock_dir: str | Path, *parts: object) -> Path:
    """``<lock_dir>/<part1>__<part2>...lock``, each part reduced to ``[A-Za-z0-9_.-]``."""
    name = "__".join(_UNSAFE.sub("_", str(p)) or "_" for p in parts)
    return Path(lock_dir) / f"{name}.lock"


@contextmanager
def named_lock(
    lock_dir: str | Path, *parts: object, timeout_s: float | None = 3600.0, poll_s: float = 0.2
) -> Iterator[float]:
    """Hold the exclusive lock named by ``parts`` in ``lock_dir``; yields the seconds waited.

    Raises
    ------
    LockTimeout
        When another holder kept it longer than ``timeout_s`` (``None``: wait for ever).
    """
    path = lock_path(lock_dir, *parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    t0 = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                raise LockTimeout(f"lock {path.name} held by another process for more than {timeout_s:.0f} s")
            time.sleep(poll_s)
        yield time.monotonic() - t0
    finally:
        os.close(fd)  # closing the descriptor releases the flock
