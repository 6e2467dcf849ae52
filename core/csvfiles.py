"""Reading the coordinators' CSV files (fill logs, outcomes): one header check for all."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from typing import IO


def dict_reader(fh: IO[str], required: Sequence[str]) -> tuple[csv.DictReader, list[str]]:
    """A :class:`csv.DictReader` over ``fh`` with its header names stripped of spaces.

    Returns the reader and the ``required`` columns the header lacks (empty when all are
    there); the caller raises its own error, naming its file.
    """
    reader = csv.DictReader(fh)
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    return reader, [c for c in required if c not in header]
