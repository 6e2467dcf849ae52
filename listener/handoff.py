"""Hand-off of a stable, de-identified study to processing (Prefect).

A :class:`StudyHandoff` carries only pseudonymous values: site id, trial subject id,
pseudonymous study key and the de-identified study folder. A :class:`Dispatcher` starts the
``process-study`` flow and returns a run id, or raises to be retried later by the outbox.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from rntflow.listener.logs import log_event

DEFAULT_LOCAL_FLOW = "rntflow.flows.process_study:process_study"


class DispatchError(Exception):
    """The dispatcher did not accept the hand-off; the outbox will retry it."""


@dataclass(frozen=True)
class StudyHandoff:
    """One stable study handed to processing.

    Attributes
    ----------
    site_id : str
    subject_id : str
        Trial pseudonym from the enrolment table.
    kind : str
        ``patient`` or ``phantom``.
    study_key : str
        Pseudonymous study key (HMAC of the StudyInstanceUID).
    study_dir : str
        Folder of the de-identified copy.
    n_instances : int
    handoff_version : int
        1 for the first hand-off of the study; +1 for each re-trigger by late instances.
    """

    site_id: str
    subject_id: str
    kind: str
    study_key: str
    study_dir: str
    n_instances: int
    handoff_version: int

    def parameters(self, config_path: str | None) -> dict[str, Any]:
        """Flow parameters: the hand-off fields plus ``config_path``."""
        params = asdict(self)
        params["config_path"] = config_path
        return params


class Dispatcher(Protocol):
    """Starts processing of a hand-off; returns a run id or raises to be retried."""

    def submit(self, h: StudyHandoff) -> str: ...


class DeploymentDispatcher:
    """Start the ``process-study`` deployment on a Prefect server (``run_deployment``).

    Parameters
    ----------
    deployment_name : str
        ``<flow name>/<deployment name>``.
    config_path : str, optional
        Trial config passed to the flow.
    """

    def __init__(self, deployment_name: str = "process-study/process-study", config_path: str | None = None) -> None:
        self.deployment_name = deployment_name
        self.config_path = config_path

    def submit(self, h: StudyHandoff) -> str:
        try:
            from prefect.deployments import run_deployment

            run = run_deployment(name=self.deployment_name, parameters=h.parameters(self.config_path), timeout=0)
        except Exception as exc:  # server down, deployment missing ...: retry later
            raise DispatchError(f"run_deployment failed: {type(exc).__name__}: {exc}") from exc
        return str(run.id)


class LocalDispatcher:
    """Run the flow in this process (the embedded default), one at a time, in the background.

    Parameters
    ----------
    func : callable or str, optional
        The flow callable, or ``"module:attr"`` imported lazily at submit time (an
        ImportError is a retryable failure). Default ``flows.process_study:process_study``.
    config_path : str, optional
        Trial config passed to the flow.
    """

    def __init__(
        self,
        func: Callable[..., Any] | str = DEFAULT_LOCAL_FLOW,
        config_path: str | None = None,
        prefect_home: str | Path | None = None,
        infrastructure_retries: int = 3,
        retry_delay_s: float = 10.0,
    ) -> None:
        self._func = func
        self.config_path = config_path
        self.infrastructure_retries = infrastructure_retries
        self.retry_delay_s = retry_delay_s
        if prefect_home is not None:
            local_prefect_environment(Path(prefect_home))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rntflow-flow")
        self._n = 0
        self._lock = threading.Lock()

    def _resolve(self) -> Callable[..., Any]:
        if callable(self._func):
            return self._func
        module, _, attr = self._func.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise DispatchError(f"cannot import {self._func}: {exc}") from exc

    def submit(self, h: StudyHandoff) -> str:
        func = self._resolve()
        with self._lock:
            self._n += 1
            run_id = f"local-{h.study_key}-v{h.handoff_version}-{self._n}"
        params = h.parameters(self.config_path)

        def _run() -> None:
            for attempt in range(self.infrastructure_retries + 1):
                try:
                    func(**params)
                    return
                except Exception as exc:
                    infrastructure = _is_infrastructure_error(exc)
                    log_event(
                        "local_flow_failed",
                        site_id=h.site_id,
                        subject_id=h.subject_id,
                        study_key=h.study_key,
                        error=type(exc).__name__,
                        detail=str(exc)[:200],
                        attempt=attempt + 1,
                        will_retry=infrastructure and attempt < self.infrastructure_retries,
                    )
                    if not infrastructure:
                        return  # the flow ran and recorded its own failure (flow_runs, QA)
                    time.sleep(self.retry_delay_s * 2**attempt)

        self._pool.submit(_run)
        return run_id

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _is_infrastructure_error(exc: BaseException) -> bool:
    """Whether the flow never ran (Prefect's server not ready or unreachable), so a retry helps.

    A failure inside the flow is recorded by the flow itself and is not retried here.
    """
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, (ConnectionError, TimeoutError)) or any(
        k in text
        for k in (
            "ephemeral",
            "prefect api",
            "connecterror",
            "connection refused",
            "server startup",
            "timed out while attempting to connect",
        )
    )


def local_prefect_environment(prefect_home: Path) -> None:
    """Point an in-process Prefect at the trial's home before Prefect is first used.

    The embedded (ephemeral) server keeps its SQLite database under ``PREFECT_HOME`` (the
    config's ``paths.prefect_home``, created 0700: the database holds run parameters), with
    analytics off and a start-up timeout that a busy machine does not exceed. Values already
    in the environment win.
    """
    prefect_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ.setdefault("PREFECT_HOME", str(prefect_home))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_TELEMETRY_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


class HoldDispatcher:
    """Accepts nothing: hand-offs wait in the outbox (ingest-only nodes, benchmarks)."""

    def submit(self, h: StudyHandoff) -> str:
        raise DispatchError("dispatch disabled (--dispatch none)")


def study_dir_for(deid_root: Path, site_id: str, subject_id: str, study_key: str) -> Path:
    """The de-identified copy's folder for one study."""
    return deid_root / site_id / subject_id / study_key


def handed_off_studies(spool_dir: Path, site_ids: list[str] | None = None) -> list[StudyHandoff]:
    """Every study the listener has handed to processing (latest hand-off), from the spool.

    Read-only (the listener may be running). Per site: phantoms first (a site scans them
    before treating patients), then in order of arrival, so that re-processing the spool
    (e.g. under another calibration policy) sees the time points in the order the flows did.

    Parameters
    ----------
    spool_dir : Path
        The listener's spool root (``inbox.sqlite`` and ``deid/``).
    site_ids : list of str, optional
        Only these sites (default: all).
    """
    import sqlite3

    db = Path(spool_dir) / "inbox.sqlite"
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT s.site_id, s.subject_id, s.kind, s.study_key, s.handoff_version,"
            " (SELECT count(*) FROM instances i WHERE i.site_id = s.site_id AND i.study_uid = s.study_uid"
            "  AND i.state = 'deid') FROM studies s WHERE s.state = 'handed_off'"
            " ORDER BY s.site_id, s.kind != 'phantom', s.first_at_s, s.study_key"
        ).fetchall()
    finally:
        con.close()
    return [
        StudyHandoff(
            site,
            subject,
            kind,
            key,
            str(study_dir_for(Path(spool_dir) / "deid", site, subject, key)),
            int(n),
            int(version),
        )
        for site, subject, kind, key, version, n in rows
        if site_ids is None or site in site_ids
    ]


def handoff_arrivals(spool_dir: Path) -> dict[tuple[str, str], float]:
    """``(site_id, study_key)`` -> when the study's first instance arrived (s since the epoch).

    Read-only on the inbox, like :func:`handed_off_studies`; used to select what to
    re-process "since a date" (real arrival time, not the de-identified study date).
    """
    import sqlite3

    db = Path(spool_dir) / "inbox.sqlite"
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT site_id, study_key, first_at_s FROM studies WHERE state = 'handed_off'").fetchall()
    finally:
        con.close()
    return {(site, key): float(first) for site, key, first in rows}
