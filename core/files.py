"""Durable, atomic file writes: the one home of temp-file + fsync + rename.

Every writer in rntflow (spool, warehouse Parquet, products, reports, catalogs) goes
through :func:`atomic_write`: the content is written to a hidden temporary file in the
destination folder, flushed and fsync'd, renamed over the destination with
:func:`os.replace` (atomic on POSIX), and the folder is fsync'd so that the rename itself
survives a power cut. A reader therefore sees either the old file or the new one, never a
torn one, and a crash leaves at most a ``.<name>.*.tmp`` file that :func:`remove_stale_temps`
clears.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

#: Suffix of every temporary file :func:`atomic_write` creates.
TMP_SUFFIX = ".tmp"


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so that renames and creations inside it are durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike,
    mode: str = "wb",
    *,
    file_mode: int | None = None,
    durable: bool = True,
    before_rename: Callable[[Path], None] | None = None,
) -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` atomically when the block exits cleanly.

    Parameters
    ----------
    path : path-like
        The destination. Its folder is created if needed.
    mode : {"wb", "w"}
        Binary or text (UTF-8) mode.
    file_mode : int, optional
        Permission bits of the new file (e.g. ``0o600`` for identified data); default: the
        process umask.
    durable : bool
        fsync the file and its folder (default). ``False`` still renames atomically.
    before_rename : callable, optional
        Test hook called with the temporary path after fsync and before the rename
        (simulates a crash between the two).

    Yields
    ------
    file object
        Write the content to it; on an exception the temporary file is removed and the
        destination is untouched.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=TMP_SUFFIX, dir=final.parent)
    tmp = Path(tmp_name)
    try:
        if file_mode is not None:
            os.fchmod(fd, file_mode)
        with open(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(final.parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, **kwargs) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_write`; returns the path."""
    with atomic_write(path, "wb", **kwargs) as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, **kwargs) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_write`; returns the path."""
    with atomic_write(path, "w", **kwargs) as fh:
        fh.write(text)
    return Path(path)


def remove_stale_temps(folder: str | os.PathLike, pattern: str = f".*{TMP_SUFFIX}") -> int:
    """Delete temporary files a crashed writer left under ``folder``; returns how many."""
    n = 0
    for tmp in Path(folder).rglob(pattern):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            n += 1
    return n
