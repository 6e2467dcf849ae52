"""``rntflow push``: send a tree of DICOM files by C-STORE, as a site's PACS would.

One association per study (StudyInstanceUID), presentation contexts proposed for exactly
the SOP classes and transfer syntaxes the study holds, and every non-Success status
reported with the file it belongs to. Files that are not DICOM are reported and skipped.
Studies go in acquisition order (StudyDate, StudyTime), as a PACS forwards them when they
are acquired, not in folder-name order. A rejected association is reported once with the
receiver's reason (PS3.8 Table 9-21); a permanent rejection stops the push, since every
later association would be refused the same way.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pynetdicom import AE, build_context, evt
from pynetdicom.pdu import A_ASSOCIATE_RJ

from rntflow.core.errors import PushError

LOG = logging.getLogger("rntflow.push")


@dataclass
class PushFailure:
    """One instance that was not stored, and why."""

    path: str
    study_uid: str
    status: str


@dataclass
class PushReport:
    """Outcome of a push."""

    studies: int = 0
    sent: int = 0
    stored: int = 0
    skipped_files: list[str] = field(default_factory=list)
    failures: list[PushFailure] = field(default_factory=list)
    #: Reasons the receiver gave for rejected associations (each once, in order).
    rejections: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _index(root: Path) -> dict[str, list[tuple[Path, str, str]]]:
    """StudyInstanceUID -> [(path, SOPClassUID, TransferSyntaxUID)], studies in acquisition order.

    Unreadable files are listed under the key ``""``.
    """
    studies: dict[str, list[tuple[Path, str, str]]] = defaultdict(list)
    when: dict[str, str] = {}
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in paths:
        try:
            ds = dcmread(
                path,
                stop_before_pixels=True,
                specific_tags=["StudyInstanceUID", "SOPClassUID", "StudyDate", "StudyTime"],
            )
            ts = str(ds.file_meta.TransferSyntaxUID)
            uid = str(ds.StudyInstanceUID)
            studies[uid].append((path, str(ds.SOPClassUID), ts))
            when.setdefault(uid, f"{ds.get('StudyDate', '') or ''}{ds.get('StudyTime', '') or ''}")
        except (InvalidDicomError, AttributeError, KeyError, OSError, ValueError):
            studies[""].append((path, "", ""))
    order = sorted((uid for uid in studies if uid), key=lambda uid: (when.get(uid, ""), uid))
    return {uid: studies[uid] for uid in order} | ({"": studies[""]} if "" in studies else {})


def _rejection_reason(pdu: A_ASSOCIATE_RJ) -> tuple[str, bool]:
    """A one-line reason for an A-ASSOCIATE-RJ and whether it is permanent."""
    permanent = pdu.result == 0x01
    return (f"{'permanent' if permanent else 'transient'} rejection by {pdu.source_str}: {pdu.reason_str}", permanent)


#: Associations tried per study: a lost association (no response within
#: :data:`DIMSE_TIMEOUT_S`, an abort) is retried for the instances not yet acknowledged, as a
#: PACS retries; what was acknowledged is on the receiver's disk and is not sent again.
STUDY_ATTEMPTS = 3
#: Seconds to wait for each C-STORE response (pynetdicom's default is 30 s): a receiver that
#: checks, stores and fsyncs before it answers can take longer on a loaded machine.
DIMSE_TIMEOUT_S = 120.0


def keep_responses_for_the_sender(assoc) -> None:
    """Stop pynetdicom's requestor reactor from swallowing a C-STORE response.

    pynetdicom 3.0 pauses its reactor thread around each ``send_c_store`` by a check-then-act
    handshake (the sender clears ``_reactor_checkpoint`` and waits for ``_is_paused``; the
    reactor sets ``_is_paused``, passes the still-set checkpoint, clears ``_is_paused`` and
    takes the next DIMSE message). When the reactor is descheduled between the checkpoint and
    its ``get_msg`` (a loaded machine), the sender's response arrives first and the reactor
    takes it: it logs "Received unexpected C-STORE service message" and drops it, the sender
    waits out its DIMSE timeout and aborts, and the receiver sees a study end early (seen at
    load ~20: 181 s without progress and a study handed off without its NM instances).
    A requestor that serves no requests (no C-GET) needs the reactor only for release and abort,
    so a response it takes is put back on the DIMSE queue for the waiting sender.

    Parameters
    ----------
    assoc : pynetdicom.association.Association
        An established requestor association (its ``_serve_request`` is wrapped, this
        association only).
    """
    serve = assoc._serve_request

    def serve_or_return(msg, context_id: int) -> None:
        if msg is not None and not msg.is_valid_request and msg.is_valid_response:
            assoc.dimse.msg_queue.put((context_id, msg))  # the sender's get_msg(block=True) takes it
            return
        serve(msg, context_id)

    assoc._serve_request = serve_or_return


def _send_study(
    study_uid: str,
    files: list[tuple[Path, str, str]],
    host: str,
    port: int,
    calling_aet: str,
    called_aet: str,
    tls_context,
    report: PushReport,
) -> tuple[list[tuple[Path, str, str]], list[PushFailure], tuple[str, bool] | None]:
    """One association for ``files``: (files to send again, failures, refusal (reason, permanent) or None).

    Files whose C-STORE got no response because the association was lost are returned to be
    sent again; a file the receiver answered with a failure status is a failure, not resent.
    """
    ae = AE(ae_title=calling_aet)
    ae.dimse_timeout = DIMSE_TIMEOUT_S
    contexts = sorted({(c, t) for _p, c, t in files})
    if len(contexts) > 128:
        raise PushError(f"study {study_uid}: more than 128 presentation contexts needed")
    ae.requested_contexts = [build_context(c, [t]) for c, t in contexts]
    kwargs = {"ae_title": called_aet}
    if tls_context is not None:
        kwargs["tls_args"] = (tls_context, host)
    rejected: list[A_ASSOCIATE_RJ] = []
    kwargs["evt_handlers"] = [
        (
            evt.EVT_PDU_RECV,
            lambda event, seen=rejected: seen.append(event.pdu) if isinstance(event.pdu, A_ASSOCIATE_RJ) else None,
        )
    ]
    assoc = ae.associate(host, port, **kwargs)
    if not assoc.is_established:
        permanent = False
        if assoc.is_rejected and rejected:
            reason, permanent = _rejection_reason(rejected[0])
        else:
            reason = f"aborted, or no connection to {host}:{port}"  # pynetdicom reports both as aborted
        failures = [PushFailure(str(path), study_uid, f"association {reason}") for path, _c, _t in files]
        return [], failures, (reason, permanent)
    keep_responses_for_the_sender(assoc)
    failures: list[PushFailure] = []
    resend: list[tuple[Path, str, str]] = []
    try:
        for i, item in enumerate(files):
            if not assoc.is_established:
                resend += files[i:]
                break
            try:
                status = assoc.send_c_store(dcmread(item[0]))
            except RuntimeError:  # the association ended between the check above and the send
                resend += files[i:]
                break
            report.sent += 1
            code = getattr(status, "Status", None)
            if code is None:
                resend.append(item)
            elif code in (0x0000, 0xB000, 0xB007, 0xB006):
                report.stored += 1
            else:
                comment = getattr(status, "ErrorComment", "")
                failures.append(PushFailure(str(item[0]), study_uid, f"0x{code:04X} {comment}".strip()))
    finally:
        if assoc.is_established:
            assoc.release()
    return resend, failures, None


def push_tree(
    root: str | Path,
    host: str,
    port: int,
    calling_aet: str,
    called_aet: str,
    progress: Callable[[str], None] | None = None,
    tls_context=None,
) -> PushReport:
    """Push every DICOM file under ``root``, one association per study.

    Parameters
    ----------
    root : str or Path
        A folder (searched recursively) or one file.
    host, port : str, int
        The receiving Storage SCP.
    calling_aet, called_aet : str
        Our AE title and the receiver's.
    progress : callable, optional
        Called with a one-line message per study.
    tls_context : ssl.SSLContext, optional
        Client TLS context for DICOM TLS.

    Returns
    -------
    PushReport

    Raises
    ------
    PushError
        When ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise PushError(f"{root}: no such file or folder")
    report = PushReport()
    studies = _index(root)
    report.skipped_files = [str(p) for p, _c, _t in studies.pop("", [])]
    for study_uid, files in studies.items():
        report.studies += 1
        stored_before = report.stored
        pending, failures, refusal = list(files), [], None
        for attempt in range(1, STUDY_ATTEMPTS + 1):
            pending, failed, refusal = _send_study(
                study_uid, pending, host, port, calling_aet, called_aet, tls_context, report
            )
            failures += failed
            if refusal is not None or not pending or attempt == STUDY_ATTEMPTS:
                break
            if progress:  # a lost association (e.g. a response timeout): resend what was not acknowledged
                progress(f"study ...{study_uid[-12:]}: association lost, resending {len(pending)} instance(s)")
        report.failures += failures
        if refusal is not None:
            reason, permanent = refusal
            if reason not in report.rejections:
                report.rejections.append(reason)
                if progress:
                    progress(f"association refused: {reason}")
            if permanent:
                break
            continue
        report.failures += [
            PushFailure(str(path), study_uid, "no response (association lost)") for path, _c, _t in pending
        ]
        if progress:
            progress(f"study ...{study_uid[-12:]}: {report.stored - stored_before}/{len(files)} stored")
    return report
