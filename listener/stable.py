"""The ingest worker: de-identification, held patients, stable-study detection, outbox.

One background thread, its own SQLite connection, all state in the inbox database so it
survives restarts:

1. instances in state ``received`` are de-identified (or ``held`` when the patient is not
   in the enrolment table; held instances go back to ``received`` when the table changes); an instance whose
   de-identification fails after it was acknowledged (a full disk) is retried with
   exponential backoff, then marked ``failed`` with its study, which is then not handed off
   short of an instance but shown as failed by ``rntflow status``; failed instances get a
   new round of attempts when the worker restarts;
2. a study whose last instance arrived ``quiet_period_s`` ago, with nothing left to
   de-identify and no association still open that delivered part of it (a pause on a busy
   machine or a slow sender does not hand off half a study), gets a new hand-off version
   in the persistent ``outbox``;
3. pending outbox rows are submitted to the dispatcher, retried with exponential backoff
   until it accepts them. A late instance sets the study back to ``receiving`` and so
   produces the next hand-off version (idempotent per ``(site, study, version)``).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom

from rntflow.core.files import atomic_write
from rntflow.listener.deid import DeidIdentity, EnrolmentIndex, KeyStore, deid_relpath, deidentify
from rntflow.listener.handoff import Dispatcher, StudyHandoff, study_dir_for
from rntflow.listener.inbox import open_db
from rntflow.listener.logs import log_event

#: An association older than this no longer holds its studies back (a sender that keeps one
#: association open for hours, or bookkeeping lost with a crashed process).
MAX_OPEN_ASSOCIATION_S = 3600.0


@dataclass(frozen=True)
class WorkerSettings:
    """Timing of the ingest worker (seconds)."""

    quiet_period_s: float = 30.0
    poll_s: float = 0.2
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    batch: int = 64
    max_deid_attempts: int = 5


class IngestWorker:
    """Background de-identification, stable-study detection and outbox dispatch.

    Parameters
    ----------
    spool_dir : Path
        ``config.spool_dir`` (the inbox database lives there).
    keys : KeyStore
        Identity key table and HMAC secret.
    enrolment : EnrolmentIndex
        The enrolment table (re-read when it changes).
    dispatcher : Dispatcher
        Where stable studies go.
    settings : WorkerSettings
    clock : callable
        Wall clock (s).
    """

    def __init__(
        self,
        spool_dir: Path,
        keys: KeyStore,
        enrolment: EnrolmentIndex,
        dispatcher: Dispatcher,
        settings: WorkerSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(spool_dir)
        self.deid_root = self.root / "deid"
        self.conn = open_db(self.root / "inbox.sqlite")
        self.keys = keys
        self.enrolment = enrolment
        self.dispatcher = dispatcher
        self.settings = settings
        self.clock = clock
        self.wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        n = self.conn.execute(
            "UPDATE instances SET state='received', attempts=0, next_try_at_s=0 WHERE state='failed'"
        ).rowcount
        if n:
            self.conn.execute("UPDATE studies SET state='receiving' WHERE state='failed'")
            log_event("deid_retry_after_restart", n_instances=n)
        self._thread = threading.Thread(target=self._loop, name="rntflow-ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread:
            self._thread.join(timeout_s)
        self.conn.close()

    def _loop(self) -> None:
        # one worker per spool, even across processes (e.g. an orphan of a killed listener)
        lock_fd = os.open(self.root / "worker.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while not self._stop.is_set():
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    self._stop.wait(0.2)
            self._run()
        finally:
            os.close(lock_fd)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.step()
            except Exception as exc:  # never die: log and carry on
                log_event("worker_error", error=f"{type(exc).__name__}: {exc}")
                busy = False
            if not busy:
                self.wake.wait(self.settings.poll_s)
                self.wake.clear()

    def step(self) -> bool:
        """One pass of all duties; return True when there may be more work right now."""
        self.refresh_enrolment()
        n = self.process_received()
        self.detect_stable()
        self.dispatch_outbox()
        return n >= self.settings.batch

    # ------------------------------------------------------------ duties
    def refresh_enrolment(self) -> None:
        if self.enrolment.refresh():
            cur = self.conn.execute("UPDATE instances SET state='received' WHERE state='held'")
            if cur.rowcount:
                self.conn.execute("UPDATE studies SET state='receiving' WHERE state='held'")
                log_event("enrolment_changed", n_released=cur.rowcount)

    def process_received(self) -> int:
        rows = self.conn.execute(
            "SELECT id, site_id, path, study_uid, attempts FROM instances WHERE"
            " state='received' AND next_try_at_s <= ? ORDER BY id LIMIT ?",
            (self.clock(), self.settings.batch),
        ).fetchall()
        for inst_id, site_id, rel, study_uid, attempts in rows:
            try:
                self._deid_one(inst_id, site_id, self.root / rel, study_uid)
            except Exception as exc:
                self._deid_failed(inst_id, site_id, study_uid, attempts + 1, exc)
        return len(rows)

    def _deid_failed(self, inst_id: int, site_id: str, study_uid: str, attempts: int, exc: Exception) -> None:
        """Schedule a retry, or mark the instance and its study ``failed`` (PHI-free)."""
        error = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or ''}"[:200]
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        final = attempts >= self.settings.max_deid_attempts
        delay = min(self.settings.backoff_base_s * 2 ** (attempts - 1), self.settings.backoff_max_s)
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(
            "UPDATE instances SET state=?, attempts=?, next_try_at_s=?, last_error=? WHERE id=?",
            ("failed" if final else "received", attempts, self.clock() + delay, error, inst_id),
        )
        if final:
            self.conn.execute("UPDATE studies SET state='failed' WHERE site_id=? AND study_uid=?", (site_id, study_uid))
        self.conn.execute("COMMIT")
        log_event(
            "deid_failed" if final else "deid_retry",
            site_id=site_id,
            attempt=attempts,
            error=type(exc).__name__,
            delay_s=None if final else delay,
        )

    def _deid_one(self, inst_id: int, site_id: str, raw: Path, study_uid: str) -> None:
        ds = pydicom.dcmread(raw)
        pid = str(ds.get("PatientID", "") or "").strip()
        phash = self.keys.patient_hash(site_id, pid)
        enr = self.enrolment.get(site_id, pid) if pid else None
        if enr is None:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("UPDATE instances SET state='held' WHERE id=?", (inst_id,))
            self.conn.execute(
                "UPDATE studies SET state='held', patient_hash=? WHERE site_id=? AND study_uid=?",
                (phash, site_id, study_uid),
            )
            self.conn.execute("COMMIT")
            log_event("held", site_id=site_id, subject_id="unenrolled", patient_hash=phash)
            return
        shift = self.keys.date_shift_days(site_id, pid, enr.subject_id)
        study_key = self.keys.key("study", study_uid, 16)
        rel = deid_relpath(site_id, enr.subject_id, study_key, ds, self.keys)
        deidentify(ds, DeidIdentity(enr.subject_id, shift), self.keys)
        with atomic_write(self.deid_root / rel, "wb", file_mode=0o640) as fh:
            ds.save_as(fh, enforce_file_format=True)
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute("UPDATE instances SET state='deid', deid_path=? WHERE id=?", (str(rel), inst_id))
        self.conn.execute(
            "UPDATE studies SET subject_id=?, kind=?, study_key=?, patient_hash=?,"
            " state=CASE WHEN state='held' THEN 'receiving' ELSE state END"
            " WHERE site_id=? AND study_uid=?",
            (enr.subject_id, enr.kind, study_key, phash, site_id, study_uid),
        )
        self.conn.execute("COMMIT")

    def detect_stable(self) -> list[StudyHandoff]:
        now = self.clock()
        cutoff = now - self.settings.quiet_period_s
        rows = self.conn.execute(
            "SELECT s.site_id, s.study_uid, s.subject_id, s.kind, s.study_key, s.handoff_version"
            " FROM studies s WHERE s.state='receiving' AND s.last_at_s <= ? AND s.study_key"
            " IS NOT NULL AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.site_id=s.site_id"
            " AND i.study_uid=s.study_uid AND i.state IN ('received','held'))"
            " AND NOT EXISTS (SELECT 1 FROM open_assocs a WHERE a.site_id=s.site_id"
            " AND a.study_uid=s.study_uid AND a.opened_at_s > ?)",
            (cutoff, now - MAX_OPEN_ASSOCIATION_S),
        ).fetchall()
        out = []
        for site_id, study_uid, subject_id, kind, study_key, version in rows:
            n = self.conn.execute(
                "SELECT COUNT(DISTINCT sop_uid) FROM instances WHERE site_id=? AND study_uid=? AND state='deid'",
                (site_id, study_uid),
            ).fetchone()[0]
            h = StudyHandoff(
                site_id=site_id,
                subject_id=subject_id,
                kind=kind or "patient",
                study_key=study_key,
                study_dir=str(study_dir_for(self.deid_root, site_id, subject_id, study_key)),
                n_instances=int(n),
                handoff_version=int(version) + 1,
            )
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "INSERT OR IGNORE INTO outbox (site_id, study_uid, handoff_version, payload,"
                " next_try_at_s, created_at_s) VALUES (?,?,?,?,?,?)",
                (site_id, study_uid, h.handoff_version, json.dumps(h.__dict__), now, now),
            )
            self.conn.execute(
                "UPDATE studies SET state='stable', handoff_version=? WHERE site_id=? AND"
                " study_uid=? AND state='receiving'",
                (h.handoff_version, site_id, study_uid),
            )
            self.conn.execute("COMMIT")
            log_event(
                "study_stable",
                site_id=site_id,
                subject_id=subject_id,
                study_key=study_key,
                n_instances=n,
                handoff_version=h.handoff_version,
            )
            out.append(h)
        return out

    def dispatch_outbox(self) -> int:
        now = self.clock()
        rows = self.conn.execute(
            "SELECT id, site_id, study_uid, handoff_version, payload, attempts FROM outbox"
            " WHERE state='pending' AND next_try_at_s <= ? ORDER BY id",
            (now,),
        ).fetchall()
        n_done = 0
        for ob_id, site_id, study_uid, version, payload, attempts in rows:
            h = StudyHandoff(**json.loads(payload))
            try:
                run_id = self.dispatcher.submit(h)
            except Exception as exc:
                delay = min(self.settings.backoff_base_s * 2**attempts, self.settings.backoff_max_s)
                self.conn.execute(
                    "UPDATE outbox SET attempts=attempts+1, next_try_at_s=?, last_error=? WHERE id=?",
                    (now + delay, f"{type(exc).__name__}: {exc}"[:500], ob_id),
                )
                log_event(
                    "handoff_retry",
                    site_id=site_id,
                    subject_id=h.subject_id,
                    study_key=h.study_key,
                    attempt=attempts + 1,
                    delay_s=delay,
                    error=type(exc).__name__,
                )
                continue
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute(
                "UPDATE outbox SET state='done', attempts=attempts+1, run_id=?, done_at_s=? WHERE id=?",
                (str(run_id), self.clock(), ob_id),
            )
            self.conn.execute(
                "UPDATE studies SET state='handed_off' WHERE site_id=? AND"
                " study_uid=? AND state='stable' AND handoff_version=?",
                (site_id, study_uid, version),
            )
            self.conn.execute("COMMIT")
            log_event(
                "handed_off",
                site_id=site_id,
                subject_id=h.subject_id,
                study_key=h.study_key,
                handoff_version=version,
                run_id=str(run_id),
            )
            n_done += 1
        return n_done
