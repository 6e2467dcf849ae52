"""Admission before resources: the listener's TCP front in front of pynetdicom.

pynetdicom 3.0's :class:`~pynetdicom.transport.AssociationServer` wraps TLS inside its
accept loop with no timeout, starts an association thread (which counts against
``maximum_associations``) for every TCP connection before a byte is read, and its
:class:`~pynetdicom.dul.DULServiceProvider` buffers whatever PDU length a peer declares.
This module puts a front in the way (see ``pynetdicom/transport.py`` and
``pynetdicom/dul.py`` in the installed package):

* the accept loop only accepts; per-source-address and global pending-connection limits
  are checked there (:class:`ConnectionBook`), with no I/O;
* in the connection's own thread, the TLS handshake and the complete A-ASSOCIATE-RQ must
  arrive within ``request_timeout_s`` of the accept; the request's length is read from its
  6-byte header (PS3.8 9.3.2) and refused above ``max_request_bytes`` *before* its body is
  read; any other first PDU gets an A-ABORT (PS3.8 9.2, state Sta2);
* only then is an association (thread, slot) created, fed the request already read;
* on the association, every PDU header is checked before its body is read: a P-DATA-TF
  longer than the maximum length the listener advertised (PS3.8 D.1), another PDU above
  ``max_request_bytes``, or an unknown PDU type is answered with an A-ABORT and the
  connection is closed.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from rntflow.core.config import AdmissionSettings
from rntflow.listener.logs import RateLimiter, log_event
from rntflow.listener.reactor import QueueDrivenAcceptor, WakingDUL

#: PS3.8 9.3.1: PDU types 0x01-0x07
KNOWN_PDU_TYPES = frozenset(range(0x01, 0x08))
PDU_ASSOCIATE_RQ = 0x01
PDU_P_DATA_TF = 0x04

#: PS3.8 Table 9-26: A-ABORT source 2 (service provider), reasons
ABORT_UNRECOGNISED_PDU = 0x01
ABORT_UNEXPECTED_PDU = 0x02
ABORT_INVALID_PARAMETER = 0x06

#: PS3.7 Annex C: failure "unrecognized operation"
STATUS_UNRECOGNISED_OPERATION = 0x0211


#: the defaults of the trial config's ``listener.admission`` section
_DEFAULTS = AdmissionSettings()


@dataclass(frozen=True)
class AdmissionLimits:
    """Bounds applied before and during an association.

    Set in the trial config's ``listener.admission`` section
    (:class:`rntflow.core.config.AdmissionSettings`, same names and defaults); see
    :meth:`from_settings`.

    Attributes
    ----------
    request_timeout_s : float
        Seconds from TCP accept to a complete A-ASSOCIATE-RQ (TLS handshake included).
    max_request_bytes : int
        Largest A-ASSOCIATE-RQ (and any non-P-DATA PDU) variable field accepted (bytes).
    max_per_address : int
        Concurrent connections from one source address (before and after admission).
    max_pending : int
        Connections still waiting for their A-ASSOCIATE-RQ, over all addresses not named
        in a site's ``source_addresses`` (those addresses are not counted, so unknown
        addresses cannot take their slots).
    idle_timeout_s : float
        Seconds an association may stay silent before it is aborted (pynetdicom's
        ``network_timeout``).
    max_associations : int
        Concurrent admitted associations (pynetdicom's ``maximum_associations``).
    """

    request_timeout_s: float = _DEFAULTS.request_timeout_s
    max_request_bytes: int = _DEFAULTS.max_request_bytes
    max_per_address: int = _DEFAULTS.max_per_address
    max_pending: int = _DEFAULTS.max_pending
    idle_timeout_s: float = _DEFAULTS.idle_timeout_s
    max_associations: int = _DEFAULTS.max_associations

    @classmethod
    def from_settings(cls, settings: AdmissionSettings) -> AdmissionLimits:
        """The limits a trial config's ``listener.admission`` section sets."""
        return cls(**settings.model_dump())


class FrontRefusal(Exception):
    """A connection refused by the front; ``answer`` is the PDU to send before closing."""

    def __init__(self, reason: str, answer: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.answer = answer


def abort_pdu(reason: int, source: int = 0x02) -> bytes:
    """An encoded A-ABORT PDU (PS3.8 9.3.8)."""
    return struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, source, reason)


def reject_pdu(result: int, source: int, diagnostic: int) -> bytes:
    """An encoded A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
    return struct.pack(">BBLBBBB", 0x03, 0, 4, 0, result, source, diagnostic)


def pdu_problem(pdu_type: int, length: int, max_pdata: int, max_other: int) -> str:
    """Why a PDU with this header must not be read ("" when it may).

    Parameters
    ----------
    pdu_type : int
        First byte of the PDU header.
    length : int
        Declared length of the variable field (bytes).
    max_pdata : int
        Maximum P-DATA-TF variable-field length the listener advertised (bytes; 0 = none).
    max_other : int
        Maximum length of any other PDU (bytes).
    """
    if pdu_type not in KNOWN_PDU_TYPES:
        return f"unknown PDU type 0x{pdu_type:02X}"
    if pdu_type == PDU_P_DATA_TF:
        if max_pdata and length > max_pdata:
            return f"P-DATA-TF of {length} bytes exceeds the advertised {max_pdata}"
        return ""
    if length > max_other:
        return f"PDU type 0x{pdu_type:02X} of {length} bytes exceeds {max_other}"
    return ""


def recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    """Read exactly ``n`` bytes before ``deadline`` (``time.monotonic`` seconds).

    Raises
    ------
    FrontRefusal
        When the peer closes first or the deadline passes.
    """
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FrontRefusal("association request not complete in time")
        sock.settimeout(remaining)
        try:
            k = sock.recv_into(view[got:], n - got)
        except TimeoutError:
            raise FrontRefusal("association request not complete in time") from None
        if k == 0:
            raise FrontRefusal("connection closed before the association request")
        got += k
    return bytes(buf)


def read_association_request(sock: socket.socket, deadline: float, max_bytes: int) -> bytes:
    """Read one complete A-ASSOCIATE-RQ PDU, checking its header before its body.

    Returns
    -------
    bytes
        The whole PDU (header and variable field).

    Raises
    ------
    FrontRefusal
        With the A-ABORT or A-ASSOCIATE-RJ to send for another PDU type or an oversized
        request; without an answer on timeout or early close.
    """
    head = recv_exact(sock, 6, deadline)
    pdu_type, _, length = struct.unpack(">BBL", head)
    if pdu_type != PDU_ASSOCIATE_RQ:
        reason = ABORT_UNEXPECTED_PDU if pdu_type in KNOWN_PDU_TYPES else ABORT_UNRECOGNISED_PDU
        raise FrontRefusal(f"first PDU is type 0x{pdu_type:02X}, not A-ASSOCIATE-RQ", abort_pdu(reason))
    if length > max_bytes:
        # rejected-permanent, service-provider (presentation), local-limit-exceeded
        raise FrontRefusal(f"association request of {length} bytes exceeds {max_bytes}", reject_pdu(0x01, 0x03, 0x02))
    return head + recv_exact(sock, length, deadline)


class ConnectionBook:
    """Thread-safe counts of open connections per source address.

    Parameters
    ----------
    limits : AdmissionLimits
    reserved : set of str
        Addresses named in sites' ``source_addresses``: exempt from the global pending cap.
    """

    def __init__(self, limits: AdmissionLimits, reserved: set[str]) -> None:
        self.limits = limits
        self.reserved = set(reserved)
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}
        self._pending_unreserved = 0

    def try_open(self, address: str) -> str:
        """Count a new connection; return a refusal reason ("" when admitted)."""
        with self._lock:
            if self._open.get(address, 0) >= self.limits.max_per_address:
                return "too many connections from this address"
            if address not in self.reserved:
                if self._pending_unreserved >= self.limits.max_pending:
                    return "too many connections awaiting an association request"
                self._pending_unreserved += 1
            self._open[address] = self._open.get(address, 0) + 1
            return ""

    def requested(self, address: str) -> None:
        """The connection's A-ASSOCIATE-RQ arrived: it no longer counts as pending."""
        with self._lock:
            if address not in self.reserved:
                self._pending_unreserved -= 1

    def close(self, address: str, pending: bool) -> None:
        """The connection ended (``pending``: before its association request arrived)."""
        with self._lock:
            if pending and address not in self.reserved:
                self._pending_unreserved -= 1
            n = self._open.get(address, 0) - 1
            if n > 0:
                self._open[address] = n
            else:
                self._open.pop(address, None)

    def open_count(self, address: str | None = None) -> int:
        """Open connections from ``address`` (all addresses when None)."""
        with self._lock:
            if address is None:
                return sum(self._open.values())
            return self._open.get(address, 0)


class FrontSocket(AssociationSocket):
    """An :class:`AssociationSocket` that first yields bytes the front already read.

    Also reads with ``recv_into`` into one buffer of the requested size (the header was
    checked by :class:`BoundedDUL` before any body is requested), instead of
    pynetdicom's 4096-byte ``recv`` loop.
    """

    def __init__(self, assoc: Any, client_socket: socket.socket, prefix: bytes) -> None:
        self._prefix = bytearray(prefix)
        super().__init__(assoc, client_socket=client_socket)

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of the stream."""
        self._prefix[:0] = data

    @property
    def ready(self) -> bool:  # noqa: D102
        if self._prefix and self.socket is not None:
            return True
        return super().ready

    def recv(self, nr_bytes: int) -> bytearray:  # noqa: D102
        out = bytearray(nr_bytes)
        take = min(nr_bytes, len(self._prefix))
        out[:take] = self._prefix[:take]
        del self._prefix[:take]
        got = take
        with memoryview(out) as view:
            while got < nr_bytes:
                k = self.socket.recv_into(view[got:], nr_bytes - got)
                if not k:  # the peer closed: return what arrived (pynetdicom's contract)
                    break
                got += k
        if got < nr_bytes:
            del out[got:]
        return out


class BoundedDUL(WakingDUL):
    """A DUL provider that checks each PDU header before reading the PDU's body.

    Parameters
    ----------
    assoc : Association
    max_pdata : int
        Advertised maximum P-DATA-TF length (bytes).
    max_other : int
        Cap for every other PDU (bytes).
    on_refused : callable
        Called with the reason when a PDU is refused (logging).
    """

    def __init__(self, assoc: Any, max_pdata: int, max_other: int, on_refused: Any = None) -> None:
        super().__init__(assoc)
        self.max_pdata = max_pdata
        self.max_other = max_other
        self.on_refused = on_refused or (lambda reason: None)

    def _read_pdu_data(self) -> None:
        sock = self.socket
        try:
            head = bytes(sock.recv(6))
        except (OSError, TimeoutError):
            self.event_queue.put("Evt17")  # transport closed (PS3.8 9.2)
            return
        if len(head) == 6:
            pdu_type, _, length = struct.unpack(">BBL", head)
            problem = pdu_problem(pdu_type, length, self.max_pdata, self.max_other)
            if problem:
                reason = ABORT_UNRECOGNISED_PDU if pdu_type not in KNOWN_PDU_TYPES else ABORT_INVALID_PARAMETER
                self.on_refused(problem)
                try:
                    sock.socket.sendall(abort_pdu(reason))
                except (OSError, AttributeError):
                    pass
                sock.close()  # emits Evt17: the association ends (AA-4)
                return
        sock.unread(head)
        super()._read_pdu_data()


class FrontAssociation(QueueDrivenAcceptor):
    """An acceptor that answers query/retrieve requests itself with a failure.

    pynetdicom routes a DIMSE request by its Affected SOP Class UID, so a C-FIND, C-GET or
    C-MOVE naming a storage SOP class reaches the Storage SCP, whose C-STORE response
    building raises and leaves the peer waiting. This listener offers no query/retrieve
    service: such a request gets its own response type with status 0x0211 at once.
    """

    def _serve_request(self, msg: Any, context_id: int) -> None:
        if isinstance(msg, (C_FIND, C_GET, C_MOVE)) and context_id in self._accepted_cx:
            rsp = type(msg)()
            rsp.MessageIDBeingRespondedTo = msg.MessageID
            rsp.AffectedSOPClassUID = msg.AffectedSOPClassUID
            rsp.Status = STATUS_UNRECOGNISED_OPERATION
            self.dimse.send_msg(rsp, context_id)
            log_event(
                "query_retrieve_refused",
                level=logging.WARNING,
                message=type(msg).__name__,
                address=self.requestor.address,
            )
            return
        super()._serve_request(msg, context_id)


class FrontHandler(RequestHandler):
    """Per-connection work of the front, in the connection's own thread."""

    server: FrontServer

    def handle(self) -> None:
        server = self.server
        address = str(self.client_address[0])
        deadline = server.accepted_at.pop(id(self.request), time.monotonic()) + server.limits.request_timeout_s
        sock = self.request
        pending = True
        try:
            if server.ssl_context is not None:
                sock = self._tls_handshake(sock, deadline)
            request = read_association_request(sock, deadline, server.limits.max_request_bytes)
            server.book.requested(address)
            pending = False
            sock.settimeout(server.limits.idle_timeout_s)
            assoc = self._front_association(sock, request)
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
            assoc.join()
        except FrontRefusal as exc:
            # a bare connect-and-close (port probe, load-balancer health check) is no attack
            quiet = exc.reason.startswith("connection closed before")
            server.refused(address, exc.reason, level=logging.INFO if quiet else logging.WARNING)
            _answer_and_close(sock, exc.answer)
        except (OSError, ssl.SSLError, ValueError) as exc:
            server.refused(address, f"{type(exc).__name__} before association")
            _answer_and_close(sock, b"")
        finally:
            server.book.close(address, pending)

    def _tls_handshake(self, sock: socket.socket, deadline: float) -> ssl.SSLSocket:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FrontRefusal("TLS handshake not complete in time")
        tls = self.server.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        self.request = tls
        tls.settimeout(remaining)
        try:
            tls.do_handshake()
        except TimeoutError:
            raise FrontRefusal("TLS handshake not complete in time") from None
        return tls

    def _front_association(self, sock: socket.socket, request: bytes) -> Any:
        """An acceptor :class:`Association` as pynetdicom 3.0's
        ``RequestHandler._create_association`` builds it, with :class:`BoundedDUL` and
        :class:`FrontSocket` holding the request already read."""
        ae, server = self.ae, self.server
        assoc = FrontAssociation(ae, MODE_ACCEPTOR)
        assoc._server = server
        assoc.dul = BoundedDUL(
            assoc,
            max_pdata=ae.maximum_pdu_size or 0,
            max_other=server.limits.max_request_bytes,
            on_refused=lambda r: server.refused(str(self.client_address[0]), r, after_admission=True),
        )
        assoc.network_timeout = ae.network_timeout  # re-arm the new DUL's idle timer
        # pynetdicom counts threads named AcceptorThread* as associations; one name per
        # connection also keys the per-association bound on library logs (listener.logs)
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        assoc.name = f"AcceptorThread@{peer}"
        assoc.dul.name = f"DUL@{peer}"
        assoc.set_socket(FrontSocket(assoc, sock, request))
        assoc.acceptor.maximum_length = ae.maximum_pdu_size
        assoc.acceptor.ae_title = server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = ae.implementation_version_name
        assoc.acceptor.supported_contexts = deepcopy(server.contexts)
        assoc.requestor.address_info = self.remote
        for event, bound in server._handlers.items():
            if event.is_intervention and bound:
                assoc.bind(event, *bound)
            elif isinstance(event, evt.NotificationEvent):
                for handler in bound:
                    assoc.bind(event, handler[0], handler[1])
        return assoc


def _answer_and_close(sock: socket.socket, answer: bytes) -> None:
    """Send ``answer`` (best effort, short timeout), then close the connection."""
    try:
        if answer:
            sock.settimeout(1.0)
            sock.sendall(answer)
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass
    try:
        sock.close()
    except OSError:
        pass


class FrontServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the front's admission (see module docstring).

    Extra keyword parameters: ``limits`` (:class:`AdmissionLimits`) and ``reserved``
    (addresses named in the trial config's sites).
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # listen() backlog; socketserver's default of 5 stalls bursts

    def __init__(self, *args: Any, limits: AdmissionLimits, reserved: set[str], **kwargs: Any) -> None:
        self.limits = limits
        self.book = ConnectionBook(limits, reserved)
        self.accepted_at: dict[int, float] = {}
        self.log_limiter = RateLimiter(burst=5, window_s=60.0)
        super().__init__(*args, request_handler=FrontHandler, **kwargs)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept only: TLS and reading happen in the connection's thread."""
        client, address = self.socket.accept()
        client.setblocking(True)
        self.accepted_at[id(client)] = time.monotonic()
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Per-address and pending-connection limits, checked in the accept loop."""
        reason = self.book.try_open(str(client_address[0]))
        if reason:
            self.accepted_at.pop(id(request), None)
            self.refused(str(client_address[0]), reason)
            return False
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log one bounded line instead of a traceback per connection."""
        self.refused(str(client_address[0]), "unexpected error in connection thread")

    def refused(self, address: str, reason: str, after_admission: bool = False, level: int = logging.WARNING) -> None:
        """Log a refusal, at most a few lines per address and reason per minute."""
        allowed, suppressed = self.log_limiter.allow((address, reason))
        if allowed:
            log_event(
                "connection_refused",
                level=level,
                address=address,
                reason=reason,
                after_admission=after_admission,
                suppressed_since_last=suppressed,
            )
