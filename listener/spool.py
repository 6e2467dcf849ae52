"""Durable storage: the raw spool, the quarantine and the SQLite inbox index.

Layout under ``config.spool_dir``::

    raw/<site_id>/<sha[:2]>/<sha256>.dcm    instances as received, Part-10, content-addressed
    quarantine/<site_id>/<utc>_<sha12>.bin  + .json reason record
    deid/<site_id>/<subject_id>/<study_key>/<series_key>/<sop_key>.dcm
    inbox.sqlite                            WAL-mode index (:mod:`rntflow.listener.inbox`)

Durability contract: :meth:`Spool.store` returns only after the instance's bytes are
fsync'd under their final name and the index row is committed. The file is created
under its final, content-addressed name and fsync'd (on ext4/xfs the fsync of a new file
commits the journal transaction holding its directory entry; the fan-out folders are
created and fsync'd once per site at start-up).
The index commits with ``synchronous=NORMAL`` (WAL): a committed row survives a crash of
the process (SIGKILL) but the last rows may be lost on power loss; :meth:`Spool.reconcile`
re-indexes on start-up every spool file that lacks its row, so the fsync'd file is the
ground truth and an acknowledged instance is never lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom import uid

from rntflow.core.errors import StorageError
from rntflow.core.files import fsync_dir as _fsync_dir
from rntflow.core.files import write_text_atomic
from rntflow.listener.faults import FaultInjector
from rntflow.listener.inbox import open_db
from rntflow.listener.logs import log_event

if TYPE_CHECKING:  # annotations only
    from rntflow.listener.validate import InstanceHeader

#: permissions (see deployments/README.md "File permissions"): identified data (raw
#: spool, quarantine, the inbox with original UIDs) only for the listener's user; the
#: de-identified copies also for its group (the flows' user)
PRIVATE_DIR_MODE, PRIVATE_FILE_MODE = 0o700, 0o600
SHARED_DIR_MODE = 0o750


#: SOP classes the pipeline can use (others are stored and reported as unusable).
USABLE_SOP_CLASSES = frozenset(
    {
        uid.CTImageStorage,
        uid.EnhancedCTImageStorage,
        uid.NuclearMedicineImageStorage,
        uid.PositronEmissionTomographyImageStorage,
        uid.EnhancedPETImageStorage,
        uid.RTStructureSetStorage,
        uid.SegmentationStorage,
        uid.MRImageStorage,
        uid.SecondaryCaptureImageStorage,
        uid.SpatialRegistrationStorage,
    }
)


@dataclass(frozen=True)
class StoreResult:
    """Outcome of :meth:`Spool.store`.

    Attributes
    ----------
    outcome : str
        ``stored``, ``duplicate`` or ``new_version``.
    version : int
        Version number of this SOP Instance UID (1 for the first).
    path : Path
        Spool file holding the bytes.
    """

    outcome: str
    version: int
    path: Path


class Spool:
    """The raw spool plus its SQLite inbox index, shared by all association threads.

    Parameters
    ----------
    spool_dir : Path
        Root of the spool (``config.spool_dir``).
    faults : FaultInjector, optional
        Storage-failure injection for tests.
    clock : callable, optional
        Wall clock in seconds (``time.time``).
    """

    def __init__(
        self, spool_dir: Path, faults: FaultInjector | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.root = Path(spool_dir)
        self.raw_dir = self.root / "raw"
        self.quarantine_dir = self.root / "quarantine"
        self.deid_dir = self.root / "deid"
        for d, mode in (
            (self.root, SHARED_DIR_MODE),
            (self.raw_dir, PRIVATE_DIR_MODE),
            (self.quarantine_dir, PRIVATE_DIR_MODE),
            (self.deid_dir, SHARED_DIR_MODE),
        ):
            d.mkdir(parents=True, exist_ok=True, mode=mode)
            os.chmod(d, mode)
        self.db_path = self.root / "inbox.sqlite"
        os.close(os.open(self.db_path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))
        for suffix in ("", "-wal", "-shm"):  # SQLite gives its WAL files the db's mode
            f = self.db_path.with_name(self.db_path.name + suffix)
            if f.exists():
                os.chmod(f, PRIVATE_FILE_MODE)
        self.conn = open_db(self.db_path)
        self.lock = threading.Lock()
        self.faults = faults or FaultInjector()
        self.clock = clock
        self._known_dirs: set[Path] = set()
        self._dir_lock = threading.Lock()

    # ------------------------------------------------------------------ open associations
    def association_delivers(self, assoc_id: str, site_id: str, study_uid: str) -> None:
        """Record that an open association is delivering ``study_uid`` (idempotent).

        A study is not stable while an association that delivered part of it is open,
        however long a busy machine or a slow sender pauses between its instances.
        """
        with self.lock:
            self.conn.execute(
                "INSERT OR IGNORE INTO open_assocs VALUES (?,?,?,?)", (assoc_id, site_id, study_uid, self.clock())
            )

    def association_ended(self, assoc_id: str) -> None:
        """The association released, aborted or lost its connection: its studies may settle."""
        with self.lock:
            self.conn.execute("DELETE FROM open_assocs WHERE assoc_id=?", (assoc_id,))

    def forget_open_associations(self) -> None:
        """At start-up: associations of a previous process cannot be open any more."""
        with self.lock:
            self.conn.execute("DELETE FROM open_assocs")

    # ------------------------------------------------------------------ writing
    def _ensure_dir(self, d: Path) -> None:
        """Create ``d`` durably. A site's 256 raw fan-out folders are made in one go, so
        that the parent fsyncs are paid once per site, not once per new folder."""
        if d in self._known_dirs:
            return
        with self._dir_lock:
            if d in self._known_dirs:
                return
            if d.parent.parent == self.raw_dir:
                site_dir = d.parent
                fresh = not site_dir.exists()
                site_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
                for i in range(256):
                    sub = site_dir / f"{i:02x}"
                    sub.mkdir(exist_ok=True, mode=PRIVATE_DIR_MODE)
                    self._known_dirs.add(sub)
                _fsync_dir(site_dir)
                if fresh:
                    _fsync_dir(self.raw_dir)
            elif not d.exists():
                d.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
                _fsync_dir(d.parent)
                _fsync_dir(d.parent.parent)
            self._known_dirs.add(d)

    def prepare_sites(self, site_ids: list[str]) -> None:
        """Create each site's raw fan-out folders now (start-up), not during a push."""
        for site_id in site_ids:
            self._ensure_dir(self.raw_dir / site_id / "00")

    def write_durable(self, final: Path, chunks: list[bytes]) -> None:
        """Write ``chunks`` to ``final`` and fsync it before returning.

        Fast path: create ``final`` exclusively and write it in place (one fsync; a crash
        mid-write leaves a partial file whose name no longer matches its content hash,
        which :meth:`reconcile` sets aside: it was never acknowledged). When ``final``
        already exists (a concurrent sender of the same content, or a leftover), write a
        temporary file and rename it over ``final``, then fsync.

        Not :func:`rntflow.core.files.atomic_write`: the path is content-addressed, so the
        common case creates it exclusively and writes in place (no temporary file, no rename
        on the ingest hot path); the folder fsync is batched by :meth:`_ensure_dir`.
        """
        self._ensure_dir(final.parent)
        try:
            fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
            tmp = None
        except FileExistsError:
            tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        try:
            self.faults.check()
            for c in chunks:
                view = memoryview(c)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            if tmp is not None:
                os.rename(tmp, final)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            (tmp or final).unlink(missing_ok=True)
            raise
        os.close(fd)

    def lookup(self, sop_uid: str, site_id: str) -> list[tuple[str, int]]:
        """Return ``(sha256, version)`` rows already indexed for ``sop_uid`` from a site."""
        with self.lock:
            return self.conn.execute(
                "SELECT sha256, version FROM instances WHERE sop_uid=? AND site_id=?", (sop_uid, site_id)
            ).fetchall()

    def store(self, site_id: str, header: InstanceHeader, chunks: list[bytes], sha256: str) -> StoreResult:
        """Store one instance durably and index it; dedup by (site, SOP Instance UID, content).

        The same bytes from another site are stored and indexed for that site too: each
        site's study is complete on its own (versions count per site).

        Parameters
        ----------
        site_id : str
            The sending site.
        header : InstanceHeader
            UIDs and class of the instance (see :mod:`listener.validate`).
        chunks : list of bytes
            The Part-10 byte stream, in pieces (preamble+meta, dataset).
        sha256 : str
            Hex SHA-256 of the dataset bytes (the content identity).

        Raises
        ------
        StorageError
            When the bytes cannot be made durable or indexed (disk full, I/O error).
        """
        existing = self.lookup(header.sop_instance_uid, site_id)
        for sha, version in existing:
            if sha == sha256:
                self._count_duplicate(site_id)
                return StoreResult("duplicate", version, self._raw_path(site_id, sha256))
        path = self._raw_path(site_id, sha256)
        try:
            self.write_durable(path, chunks)
        except OSError as exc:
            raise StorageError(f"spool write failed: {exc.strerror or exc}") from exc
        now = self.clock()
        usable = int(header.sop_class_uid in USABLE_SOP_CLASSES)
        try:
            with self.lock:
                rows = self.conn.execute(
                    "SELECT sha256, version FROM instances WHERE sop_uid=? AND site_id=?",
                    (header.sop_instance_uid, site_id),
                ).fetchall()
                for sha, version in rows:
                    if sha == sha256:  # a concurrent association won the race
                        self._count_duplicate_locked(site_id)
                        return StoreResult("duplicate", version, path)
                version = 1 + max((v for _, v in rows), default=0)
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    self._insert_locked(site_id, header, sha256, version, path, now, usable)
                    self.conn.execute("COMMIT")
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise StorageError(f"inbox index failed: {exc}") from exc
        return StoreResult("stored" if version == 1 else "new_version", version, path)

    def _insert_locked(
        self, site_id: str, header: InstanceHeader, sha256: str, version: int, path: Path, now: float, usable: int
    ) -> None:
        self.conn.execute(
            "INSERT INTO instances (site_id, sop_uid, sha256, version, flagged, path, n_bytes,"
            " study_uid, series_uid, sop_class_uid, modality, usable, state, received_at_s)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,'received',?)",
            (
                site_id,
                header.sop_instance_uid,
                sha256,
                version,
                int(version > 1),
                str(path.relative_to(self.root)),
                header.n_bytes,
                header.study_instance_uid,
                header.series_instance_uid,
                header.sop_class_uid,
                header.modality,
                usable,
                now,
            ),
        )
        self.conn.execute(
            "INSERT INTO studies (site_id, study_uid, n_instances, first_at_s, last_at_s, state)"
            " VALUES (?,?,1,?,?,'receiving') ON CONFLICT(site_id, study_uid) DO UPDATE SET"
            " n_instances=n_instances+1, last_at_s=excluded.last_at_s,"
            " state=CASE WHEN state IN ('held','failed') THEN state ELSE 'receiving' END",
            (site_id, header.study_instance_uid, now, now),
        )

    def _raw_path(self, site_id: str, sha256: str) -> Path:
        return self.raw_dir / site_id / sha256[:2] / f"{sha256}.dcm"

    def _count_duplicate(self, site_id: str) -> None:
        with self.lock:
            self._count_duplicate_locked(site_id)

    def _count_duplicate_locked(self, site_id: str) -> None:
        self.conn.execute(
            "INSERT INTO duplicates (site_id, n) VALUES (?,1) ON CONFLICT(site_id) DO UPDATE SET n=n+1", (site_id,)
        )

    # ------------------------------------------------------------------ bad input
    def quarantine(self, site_id: str | None, data: bytes, reason: str, status: int) -> Path:
        """Keep refused bytes with a reason record; never raises (best effort)."""
        sha = hashlib.sha256(data).hexdigest()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        d = self.quarantine_dir / (site_id or "unknown")
        path = d / f"{stamp}_{sha[:12]}_{uuid.uuid4().hex[:6]}.bin"
        try:
            self.write_durable(path, [data])
            record = {
                "reason": reason,
                "status": f"0x{status:04X}",
                "site_id": site_id,
                "sha256": sha,
                "n_bytes": len(data),
                "at_s": self.clock(),
            }
            write_text_atomic(path.with_suffix(".json"), json.dumps(record, indent=1), file_mode=PRIVATE_FILE_MODE)
        except OSError as exc:
            log_event("quarantine_write_failed", site_id=site_id, error=str(exc))
        try:
            with self.lock:
                self.conn.execute(
                    "INSERT INTO quarantine (site_id, path, reason, status, n_bytes, at_s) VALUES (?,?,?,?,?,?)",
                    (site_id, str(path.relative_to(self.root)), reason, status, len(data), self.clock()),
                )
        except sqlite3.Error as exc:
            log_event("quarantine_index_failed", site_id=site_id, error=str(exc))
        return path

    def record_rejection(self, site_id: str | None, calling_ae: str, called_ae: str, address: str, reason: str) -> None:
        """Index a refused association."""
        with self.lock:
            self.conn.execute(
                "INSERT INTO rejections (site_id, calling_ae, called_ae, address, reason, at_s) VALUES (?,?,?,?,?,?)",
                (site_id, calling_ae, called_ae, address, reason, self.clock()),
            )

    def record_failure(self, site_id: str | None, reason: str) -> None:
        """Index a storage failure answered with 0xA700."""
        try:
            with self.lock:
                self.conn.execute(
                    "INSERT INTO failures (site_id, reason, at_s) VALUES (?,?,?)", (site_id, reason, self.clock())
                )
        except sqlite3.Error:
            pass

    def free_disk_mb(self) -> float:
        """Free space on the spool's filesystem (MB, 1e6 bytes)."""
        return shutil.disk_usage(self.root).free / 1e6

    # ------------------------------------------------------------------ recovery
    def reconcile(self) -> int:
        """Index spool files that lack their row (crash between fsync and commit).

        Also removes temporary files left by an interrupted write. Returns the number of
        files re-indexed.
        """
        from rntflow.listener.validate import InvalidDataset, read_header

        n = 0
        for tmp in self.raw_dir.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        with self.lock:
            known = {r[0] for r in self.conn.execute("SELECT path FROM instances")}
        for f in self.raw_dir.rglob("*.dcm"):
            rel = str(f.relative_to(self.root))
            if rel in known:
                continue
            data = f.read_bytes()
            site_id = f.relative_to(self.raw_dir).parts[0]
            try:
                import pydicom

                ds = pydicom.dcmread(f, stop_before_pixels=True)
                _, header = read_header(data, str(ds.SOPClassUID), str(ds.SOPInstanceUID))
                offset = _dataset_offset(data)
                sha = hashlib.sha256(data[offset:]).hexdigest()
                if sha != f.stem:
                    raise InvalidDataset("content hash mismatch")
            except Exception as exc:  # partial or corrupt: keep aside, unacknowledged
                f.rename(f.with_suffix(".orphan"))
                log_event("reconcile_orphan", site_id=site_id, reason=str(exc))
                continue
            with self.lock:
                rows = self.conn.execute(
                    "SELECT sha256, version FROM instances WHERE sop_uid=? AND site_id=?",
                    (header.sop_instance_uid, site_id),
                ).fetchall()
                if any(s == sha for s, _ in rows):
                    continue
                version = 1 + max((v for _, v in rows), default=0)
                self._insert_locked(
                    site_id, header, sha, version, f, self.clock(), int(header.sop_class_uid in USABLE_SOP_CLASSES)
                )
            n += 1
        if n:
            log_event("reconciled", n_files=n)
        return n

    def close(self) -> None:
        with self.lock:
            self.conn.close()


def _dataset_offset(data: bytes) -> int:
    """Byte offset of the dataset after preamble + file meta in a Part-10 stream."""
    import struct

    pos = 132
    group_len = struct.unpack_from("<I", data, pos + 8)[0]  # (0002,0000) UL, explicit LE
    return pos + 12 + group_len
