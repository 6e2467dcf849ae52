"""Association admission, C-ECHO and C-STORE handlers. No image processing here.

The C-STORE handler checks the encoded stream (:mod:`listener.validate`), stores it
durably (:class:`listener.spool.Spool`) and answers:

* ``0x0000`` once bytes are fsync'd and indexed (also for a re-sent duplicate);
* ``0xA700`` (out of resources) when storing fails;
* ``0xA900`` when the dataset contradicts its presentation context / request;
* ``0xC000`` (cannot understand) for malformed input, pixel data that contradicts its
  header or does not decode, or an instance that cannot be de-identified; kept in
  quarantine with the reason.

Nothing is acknowledged that the ingest worker cannot use: the handler runs the same
de-identification the worker will run (:func:`listener.deid.preflight`) before answering.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pynetdicom import evt
from pynetdicom.events import Event

from rntflow.core.config import TrialConfig
from rntflow.core.errors import StorageError
from rntflow.listener.deid import DeidentificationError, preflight
from rntflow.listener.logs import log_event
from rntflow.listener.part10 import part10_prefix
from rntflow.listener.spool import Spool
from rntflow.listener.validate import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    InvalidDataset,
    check_structure,
    read_header,
)

#: PS3.7 C.4.1.1.4: a request that is not a C-ECHO on the Verification service
STATUS_UNRECOGNISED_OPERATION = 0x0211


@dataclass(frozen=True)
class Admission:
    """Decision on an association request."""

    accepted: bool
    site_id: str | None
    reason: str = ""
    rsd: tuple[int, int, int] = (0, 0, 0)  # A-ASSOCIATE-RJ result, source, diagnostic


def admit(config: TrialConfig, calling_ae: str, called_ae: str, address: str, free_disk_mb: float) -> Admission:
    """Decide whether to accept an association (pure function of its inputs).

    Parameters
    ----------
    config : TrialConfig
    calling_ae, called_ae : str
        AE titles from the A-ASSOCIATE-RQ.
    address : str
        The peer's IP address.
    free_disk_mb : float
        Free space on the spool's filesystem (MB).
    """
    calling_ae, called_ae = calling_ae.strip(), called_ae.strip()
    site = config.site_for_ae(calling_ae)
    if site is None:
        return Admission(False, None, "calling AE title unknown", (0x01, 0x01, 0x03))
    if called_ae != config.listener.ae_title:
        return Admission(False, site.id, "called AE title is not the listener's", (0x01, 0x01, 0x07))
    if site.source_addresses and address not in site.source_addresses:
        return Admission(False, site.id, "source address not allowed for this site", (0x01, 0x01, 0x03))
    if free_disk_mb < config.listener.min_free_disk_mb:
        return Admission(False, site.id, "free disk below the configured floor", (0x02, 0x03, 0x02))
    return Admission(True, site.id)


def well_formed_contexts(rq: object) -> bool:
    """Whether every proposed presentation context names at least one transfer syntax.

    PS3.8 9.3.2.2: a presentation context item carries one abstract syntax and one or
    more transfer syntax sub-items.
    """
    contexts = getattr(rq, "presentation_context_definition_list", None) or []
    return bool(contexts) and all(cx.transfer_syntax for cx in contexts)


def certificate_names(cert: dict | None) -> set[str]:
    """Subject common names and SAN DNS/URI/directory-CN entries of a peer certificate.

    Parameters
    ----------
    cert : dict or None
        :meth:`ssl.SSLSocket.getpeercert` output (verified by the TLS handshake).
    """
    names: set[str] = set()
    if not cert:
        return names
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.add(str(value).strip())
    for kind, value in cert.get("subjectAltName", ()):
        if kind in ("DNS", "URI"):
            names.add(str(value).strip())
        elif kind == "DirName":
            for rdn in value:
                for key, v in rdn:
                    if key == "commonName":
                        names.add(str(v).strip())
    return names


def certificate_matches_site(cert: dict | None, site_id: str, calling_aes: list[str]) -> bool:
    """Whether a verified client certificate names the site the calling AE belongs to.

    The certificate's subject CN or a SAN entry must equal the site's id or one of its
    calling AE titles (``sites[].calling_ae_titles`` in the trial config), so that a site's
    certificate cannot push under another site's AE title.
    """
    wanted = {site_id, *calling_aes}
    return bool(certificate_names(cert) & wanted)


def peer_certificate(event: Event) -> dict | None:
    """The verified peer certificate of the association's TLS socket, or None."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return None
    try:
        return getpeercert()
    except (ValueError, OSError):
        return None


def _assoc_id(event: Event) -> str:
    """This process's id of the association an event belongs to."""
    return f"{os.getpid()}-{id(event.assoc)}"


def set_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN: disable Nagle on the association's socket.

    Without TCP_NODELAY each small C-STORE response waits for the peer's delayed ACK
    (~40 ms on Linux), which caps a push at about 25 instances per second.
    """
    import socket

    dul = event.assoc.dul
    sock = getattr(getattr(dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _part10(event: Event, ds_bytes: bytes) -> bytes:
    """The received instance as a Part-10 stream: header (:mod:`listener.part10`) + dataset.

    Falls back to pynetdicom's encoder for UIDs the fast encoder refuses, then to the bare
    dataset (which the checks then refuse).
    """
    req = event.request
    try:
        prefix = part10_prefix(
            str(req.AffectedSOPClassUID), str(req.AffectedSOPInstanceUID), str(event.context.transfer_syntax)
        )
    except (ValueError, TypeError, UnicodeError):
        try:
            return event.encoded_dataset(include_meta=True)
        except Exception:
            return ds_bytes
    return prefix + ds_bytes


class ListenerHandlers:
    """Event handlers bound to one listener instance.

    Parameters
    ----------
    config : TrialConfig
    spool : Spool
    on_stored : callable, optional
        Called (no arguments) after each newly stored instance (wakes the worker).
    """

    def __init__(self, config: TrialConfig, spool: Spool, on_stored: Callable[[], None] | None = None) -> None:
        self.config = config
        self.spool = spool
        self.on_stored = on_stored or (lambda: None)
        self._hasher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rntflow-sha256")
        # (association, site, study) already recorded in the inbox's open_assocs table
        self._delivered: set[tuple[str, str, str]] = set()
        self._delivered_lock = threading.Lock()

    def _delivers(self, assoc_id: str, site_id: str, study_uid: str) -> None:
        """Record an open association's study once, not once per instance (one inbox
        write transaction fewer per C-STORE)."""
        key = (assoc_id, site_id, study_uid)
        with self._delivered_lock:
            if key in self._delivered:
                return
        self.spool.association_delivers(assoc_id, site_id, study_uid)
        with self._delivered_lock:
            self._delivered.add(key)

    def handlers(self) -> list[tuple]:
        """The ``evt_handlers`` list for ``AE.start_server``."""
        return [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self.on_store),
            (evt.EVT_CONN_CLOSE, self.on_closed),
        ]

    def on_closed(self, event: Event) -> None:
        """The connection ended (release, abort or loss): its studies may become stable."""
        assoc_id = _assoc_id(event)
        with self._delivered_lock:
            self._delivered = {k for k in self._delivered if k[0] != assoc_id}
        try:
            self.spool.association_ended(assoc_id)
        except Exception as exc:  # noqa: BLE001 - bookkeeping must not take the service down
            log_event("assoc_end_bookkeeping_failed", level=logging.WARNING, error=type(exc).__name__)

    def on_requested(self, event: Event) -> None:
        """Admission control on A-ASSOCIATE-RQ; rejects with a logged reason."""
        assoc = event.assoc
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title or "")
        called = str(rq.called_ae_title or "")
        address = str(assoc.requestor.address)
        try:
            free_mb = self.spool.free_disk_mb()
        except OSError:
            free_mb = 0.0
        decision = admit(self.config, calling, called, address, free_mb)
        if decision.accepted and not well_formed_contexts(rq):
            # pynetdicom 3.0's negotiate_as_acceptor indexes transfer_syntax[0] and its
            # thread dies on an empty list, leaving the peer without an answer
            decision = Admission(
                False, decision.site_id, "presentation context without a transfer syntax", (0x01, 0x01, 0x01)
            )
        if decision.accepted and self.config.listener.tls.enabled:
            site = self.config.site_for_ae(calling)
            if not certificate_matches_site(peer_certificate(event), site.id, list(site.calling_ae_titles)):
                decision = Admission(
                    False, site.id, "TLS client certificate does not name this site", (0x01, 0x01, 0x03)
                )
        if decision.accepted:
            log_event(
                "association_accepted",
                level=logging.DEBUG,
                site_id=decision.site_id,
                calling_ae=calling.strip(),
                address=address,
            )
            return
        assoc.acse.send_reject(*decision.rsd)
        assoc.kill()  # as pynetdicom's own rejections do: flush the A-ASSOCIATE-RJ, then stop
        self.spool.record_rejection(decision.site_id, calling.strip(), called.strip(), address, decision.reason)
        log_event(
            "association_rejected",
            level=logging.WARNING,
            site_id=decision.site_id,
            calling_ae=calling.strip(),
            called_ae=called.strip(),
            address=address,
            reason=decision.reason,
        )

    def on_echo(self, event: Event) -> int:
        """C-ECHO: Success; any other message on the Verification service is refused.

        pynetdicom routes a request by its Affected SOP Class UID, so a C-STORE naming the
        Verification SOP class lands here: it gets 0x0211 (unrecognised operation), not a
        Success C-ECHO response.
        """
        from pynetdicom.dimse_primitives import C_ECHO

        if not isinstance(event.request, C_ECHO):
            log_event("verification_misuse", level=logging.WARNING, message=type(event.request).__name__)
            return STATUS_UNRECOGNISED_OPERATION
        return STATUS_SUCCESS

    def on_store(self, event: Event) -> int:
        """C-STORE: check, store durably, answer with a status code."""
        site = self.config.site_for_ae(str(event.assoc.requestor.ae_title))
        site_id = site.id if site else None
        cx = event.context
        ds_bytes = event.encoded_dataset(include_meta=False)
        file_bytes = _part10(event, ds_bytes)
        # SHA-256 releases the GIL: it runs on another core while the checks below hold it
        sha_future = self._hasher.submit(_sha256_hex, ds_bytes)
        try:
            check_structure(ds_bytes, str(cx.transfer_syntax))
            ds, header = read_header(
                file_bytes, str(cx.abstract_syntax), str(event.request.AffectedSOPInstanceUID or "")
            )
            preflight(ds)
        except DeidentificationError as exc:
            return self._refuse(site_id, file_bytes, exc.reason, STATUS_CANNOT_UNDERSTAND)
        except InvalidDataset as exc:
            return self._refuse(site_id, file_bytes, exc.reason, exc.status)
        except Exception as exc:  # the service stays up whatever arrives
            return self._refuse(site_id, file_bytes, f"unexpected: {type(exc).__name__}", STATUS_CANNOT_UNDERSTAND)
        if site_id is None:  # cannot happen after admission; never ack unknown senders
            return STATUS_OUT_OF_RESOURCES
        sha = sha_future.result()
        try:
            result = self.spool.store(site_id, header, [file_bytes], sha)
        except (StorageError, OSError) as exc:
            self.spool.record_failure(site_id, str(exc))
            log_event("store_failed", level=logging.ERROR, site_id=site_id, error=str(exc), status="0xA700")
            return STATUS_OUT_OF_RESOURCES
        try:
            self._delivers(_assoc_id(event), site_id, header.study_instance_uid)
        except Exception as exc:  # noqa: BLE001 - the instance is stored; only the settle guard is lost
            log_event("assoc_bookkeeping_failed", level=logging.WARNING, error=type(exc).__name__)
        if result.outcome != "duplicate":
            self.on_stored()
        level = logging.WARNING if result.outcome == "new_version" else logging.DEBUG
        log_event(
            "instance_" + result.outcome,
            level=level,
            site_id=site_id,
            n_bytes=header.n_bytes,
            modality=header.modality,
            version=result.version,
        )
        return STATUS_SUCCESS

    def _refuse(self, site_id: str | None, data: bytes, reason: str, status: int) -> int:
        path = self.spool.quarantine(site_id, data, reason, status)
        log_event(
            "quarantined",
            level=logging.WARNING,
            site_id=site_id,
            reason=reason,
            status=f"0x{status:04X}",
            file=path.name,
        )
        return status
