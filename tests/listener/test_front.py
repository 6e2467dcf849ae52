"""Admission before resources (issue 15, findings 1, 2, 5, 7 and part of 9), with real
sockets against a listener in this process.

Hostile connections come from 127.0.0.2 (Linux routes all of 127/8 to the loopback), the
configured site pushes from 127.0.0.1, so per-address limits can be told apart.

Run alone: ``.venv/bin/pytest tests/listener/test_front.py -q``
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import threading
import time
from pathlib import Path

import pytest
import yaml

from rntflow.core.config import load_config
from rntflow.listener.app import start_listener
from rntflow.listener.front import AdmissionLimits, read_association_request
from rntflow.listener.logs import LibraryLogLimiter
from tests.listener.conftest import PATIENT, FakeDispatcher, scu, wait_until, write_config
from tests.listener.dicomgen import CT, ct_series

HOSTILE = "127.0.0.2"
APP_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def associate_rq(
    calling: str = "SITE01_PACS",
    called: str = "RNTFLOW",
    contexts: tuple[tuple[str, tuple[str, ...]], ...] = ((VERIFICATION, (EXPLICIT_LE,)),),
    max_length: int = 16384,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU encoded by hand (PS3.8 9.3.2, 9.3.2.2, D.1)."""
    items = _item(0x10, APP_CONTEXT)
    for i, (abstract, syntaxes) in enumerate(contexts):
        body = struct.pack(">BBBB", 2 * i + 1, 0, 0, 0) + _item(0x30, abstract.encode())
        body += b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
        items += _item(0x20, body)
    items += _item(0x50, _item(0x51, struct.pack(">L", max_length)))
    var = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + b"\0" * 32 + items
    return struct.pack(">BBL", 0x01, 0, len(var)) + var


def connect(port: int, source: str = HOSTILE, timeout: float = 10.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_pdu(sock: socket.socket, timeout: float = 10.0) -> tuple[int, bytes] | None:
    """The next PDU ``(type, variable field)``, or None when the peer closed."""
    sock.settimeout(timeout)
    try:
        head = sock.recv(6, socket.MSG_WAITALL)
        if len(head) < 6:
            return None
        kind, _, length = struct.unpack(">BBL", head)
        return kind, sock.recv(length, socket.MSG_WAITALL)
    except ConnectionResetError:
        return None


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """Whether the peer closes the connection (EOF or reset) within ``timeout`` s."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def rss_kib() -> int:
    """This process's resident set size (KiB) from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def front(trial):
    """A listener with short front timeouts (no ingest worker)."""
    limits = AdmissionLimits(request_timeout_s=2.0, idle_timeout_s=60.0)
    srv = start_listener(trial, FakeDispatcher(), block=False, run_worker=False, limits=limits)
    yield srv
    srv.shutdown()


def push_ok(port: int, n: int = 3) -> list[int]:
    assoc = scu().associate("127.0.0.1", port, ae_title="RNTFLOW")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in ct_series(PATIENT, n, size=16)]
    finally:
        assoc.release()


def test_idle_and_partial_requests_do_not_stop_a_site(trial, front):
    """100 idle sockets plus 64 partial association requests from one address."""
    hostile = [connect(front.port) for _ in range(100)]
    partial = associate_rq()[:10]
    for _ in range(64):
        s = connect(front.port)
        s.sendall(partial)
        hostile.append(s)
    assert push_ok(front.port) == [0, 0, 0]
    # the per-address cap refused most at once; the rest are closed after the deadline
    assert all(closed_by_peer(s, 30.0) for s in hostile)
    wait_until(lambda: front.server.book.open_count(HOSTILE) == 0)
    for s in hostile:
        s.close()
    assert push_ok(front.port) == [0, 0, 0]


def test_unknown_addresses_cannot_take_a_listed_sites_slots(tmp_path):
    path = write_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["sites"][2]["source_addresses"] = ["127.0.0.3"]
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    limits = AdmissionLimits(request_timeout_s=30.0, max_pending=8, max_per_address=100)
    srv = start_listener(cfg, FakeDispatcher(), block=False, run_worker=False, limits=limits)
    held = []
    try:
        held = [connect(srv.port, src) for src in ("127.0.0.2", "127.0.0.4") for _ in range(20)]
        wait_until(lambda: srv.server.book.open_count() == 8)
        # an unlisted address finds the pending pool full ...
        late = connect(srv.port, "127.0.0.5")
        assert closed_by_peer(late, 10.0)
        late.close()
        # ... while the site whose address is listed still gets in, long before 30 s
        t0 = time.monotonic()
        assoc = scu("ANYSCAN3").associate("127.0.0.1", srv.port, ae_title="RNTFLOW", bind_address=("127.0.0.3", 0))
        assert assoc.is_established
        assert assoc.send_c_store(ct_series(PATIENT, 1, size=16)[0]).Status == 0
        assoc.release()
        assert time.monotonic() - t0 < 20.0
    finally:
        for s in held:
            s.close()
        srv.shutdown()


def test_huge_declared_association_request_is_refused_unread(trial, front):
    """Three connections declaring 4 GiB A-ASSOCIATE-RQs: refused from the header."""
    before = rss_kib()
    chunk = b"\0" * (1 << 20)
    answers: list[tuple[int, bytes] | None] = []
    sent: list[int] = []

    def attack() -> None:
        s = connect(front.port)
        n = 0
        try:
            s.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF))
            while n < 256 * len(chunk):
                s.sendall(chunk)
                n += len(chunk)
        except OSError:
            pass
        sent.append(n)
        try:
            answers.append(read_pdu(s, 5.0))
        except OSError:
            answers.append(None)
        s.close()

    threads = [threading.Thread(target=attack) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    grown_mb = (rss_kib() - before) / 1024
    assert grown_mb < 50, f"RSS grew by {grown_mb:.0f} MB"
    assert max(sent) < 256 * len(chunk), "a 256 MiB body was read"
    # the answer, when the peer could read it before the reset: A-ASSOCIATE-RJ
    assert all(a is None or a[0] == 0x03 for a in answers)
    assert push_ok(front.port, 1) == [0]


def test_partial_request_times_out_and_valid_request_passes_front(trial, front):
    s = connect(front.port)
    s.sendall(associate_rq()[:30])
    t0 = time.monotonic()
    assert closed_by_peer(s, 30.0)
    assert time.monotonic() - t0 < 20.0
    s.close()
    ok = connect(front.port, "127.0.0.1")
    ok.sendall(associate_rq())
    kind, _ = read_pdu(ok)
    assert kind == 0x02  # A-ASSOCIATE-AC
    ok.sendall(struct.pack(">BBLL", 0x05, 0, 4, 0))  # A-RELEASE-RQ
    assert read_pdu(ok)[0] == 0x06
    ok.close()


def test_read_association_request_rules():
    a, b = socket.socketpair()
    try:
        a.sendall(struct.pack(">BBL", 0x04, 0, 10))
        with pytest.raises(Exception) as exc:
            read_association_request(b, time.monotonic() + 5, 65536)
        assert exc.value.answer[0] == 0x07  # A-ABORT for a P-DATA first
        rq = associate_rq()
        a.sendall(rq)
        assert read_association_request(b, time.monotonic() + 5, 65536) == rq
        a.sendall(rq)
        with pytest.raises(Exception) as exc:
            read_association_request(b, time.monotonic() + 5, 64)
        assert exc.value.answer[0] == 0x03  # A-ASSOCIATE-RJ
    finally:
        a.close()
        b.close()


def established(port: int, contexts=((VERIFICATION, (EXPLICIT_LE,)), (CT, (EXPLICIT_LE,)))) -> socket.socket:
    s = connect(port, "127.0.0.1")
    s.sendall(associate_rq(contexts=contexts))
    assert read_pdu(s)[0] == 0x02
    return s


@pytest.mark.parametrize("after_association", [False, True])
def test_unknown_pdu_type_gets_an_abort(trial, front, after_association):
    s = established(front.port) if after_association else connect(front.port)
    t0 = time.monotonic()
    s.sendall(struct.pack(">BBL", 0x0A, 0, 4) + b"\0" * 4)
    answer = read_pdu(s, 10.0)
    assert answer is not None and answer[0] == 0x07, answer
    assert time.monotonic() - t0 < 1.5  # an answer, not the 2 s request deadline
    s.close()


def test_pdata_longer_than_advertised_is_aborted(trial, front):
    """A 64 MiB P-DATA-TF when 4 MiB is advertised: A-ABORT, body not buffered."""
    s = established(front.port)
    before = rss_kib()
    s.sendall(struct.pack(">BBL", 0x04, 0, 64 << 20))
    chunk = b"\0" * (1 << 20)
    n = 0
    try:
        while n < 64 * len(chunk):
            s.sendall(chunk)
            n += len(chunk)
    except OSError:
        pass
    assert n < 64 * len(chunk)
    assert closed_by_peer(s, 10.0)
    assert (rss_kib() - before) / 1024 < 50
    s.close()
    assert push_ok(front.port, 1) == [0]


def test_idle_association_is_aborted(trial):
    srv = start_listener(
        trial, FakeDispatcher(), block=False, run_worker=False, limits=AdmissionLimits(idle_timeout_s=1.0)
    )
    try:
        ae = scu()
        ae.network_timeout = None
        assoc = ae.associate("127.0.0.1", srv.port, ae_title="RNTFLOW")
        assert assoc.is_established
        wait_until(lambda: not assoc.is_established, timeout_s=20.0)
        assert assoc.is_aborted
    finally:
        srv.shutdown()


def test_silent_socket_does_not_block_mutual_tls_client(tmp_path):
    from tests.listener.test_admission import make_pki

    pki = make_pki(tmp_path / "pki")
    path = write_config(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["listener"]["tls"] = {
        "enabled": True,
        "cert_file": str(pki["server"]),
        "key_file": str(pki["server_key"]),
        "ca_file": str(pki["ca"]),
    }
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    # a long request deadline: the valid client must not wait for the silent ones
    srv = start_listener(
        cfg, FakeDispatcher(), block=False, run_worker=False, limits=AdmissionLimits(request_timeout_s=60.0)
    )
    silent = [connect(srv.port) for _ in range(10)]
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"]))
        ctx.load_cert_chain(str(pki["client"]), str(pki["client_key"]))
        t0 = time.monotonic()
        ok = scu().associate("127.0.0.1", srv.port, ae_title="RNTFLOW", tls_args=(ctx, "127.0.0.1"))
        assert ok.is_established and ok.send_c_echo().Status == 0
        ok.release()
        assert time.monotonic() - t0 < 30.0
    finally:
        for s in silent:
            s.close()
        srv.shutdown()


def test_refusal_logs_are_bounded_per_source(trial, front, caplog):
    caplog.set_level(logging.INFO, logger="rntflow.listener")
    for _ in range(60):
        s = connect(front.port)
        s.sendall(struct.pack(">BBL", 0x01, 0, 0x00E40000))  # a 0.9 MB request
        closed_by_peer(s, 10.0)
        s.close()
    lines = [r for r in caplog.records if "connection_refused" in r.getMessage()]
    assert 1 <= len(lines) <= 5
    assert sum(len(r.getMessage()) for r in caplog.records) < 20_000


def test_library_log_limiter_bounds_one_thread():
    limiter = LibraryLogLimiter(burst=10, max_chars=300)
    out = []
    for i in range(1000):
        rec = logging.LogRecord("pynetdicom.acse", logging.WARNING, __file__, 1, "x" * 5000 + " %d", (i,), None)
        if limiter.filter(rec):
            out.append(rec.getMessage())
    assert len(out) == 10 and all(len(m) < 400 for m in out)


def ac_context_results(ac_body: bytes) -> dict[int, int]:
    """``{context id: result}`` of the presentation context items of an A-ASSOCIATE-AC."""
    out, pos = {}, 68  # protocol version, reserved, AE titles, reserved (PS3.8 9.3.3)
    while pos + 4 <= len(ac_body):
        kind, _, length = struct.unpack_from(">BBH", ac_body, pos)
        if kind == 0x21:
            out[ac_body[pos + 4]] = ac_body[pos + 6]
        pos += 4 + length
    return out


def test_query_retrieve_contexts_refused_and_empty_syntax_list_answered(trial, front):
    find = "1.2.840.10008.5.1.4.1.2.2.1"
    s = connect(front.port, "127.0.0.1")
    s.sendall(associate_rq(contexts=((find, (EXPLICIT_LE,)), (CT, (EXPLICIT_LE,)))))
    kind, body = read_pdu(s)
    assert kind == 0x02 and ac_context_results(body) == {1: 0x03, 3: 0x00}
    s.close()
    for contexts in (((CT, ()),), ((CT, ()), (VERIFICATION, (EXPLICIT_LE,)))):
        s = connect(front.port, "127.0.0.1")
        t0 = time.monotonic()
        s.sendall(associate_rq(contexts=contexts))
        answer = read_pdu(s, 10.0)
        assert answer is not None and answer[0] == 0x03  # A-ASSOCIATE-RJ, not silence
        assert time.monotonic() - t0 < 5.0
        s.close()
    assert push_ok(front.port, 1) == [0]


@pytest.mark.parametrize("kind", ["C_FIND", "C_GET", "C_MOVE"])
def test_query_retrieve_on_storage_context_gets_a_failure(trial, front, kind):
    import io

    import pynetdicom.dimse_primitives as prims
    from pydicom import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    assoc = scu().associate("127.0.0.1", front.port, ae_title="RNTFLOW")
    assert assoc.is_established
    req = getattr(prims, kind)()
    req.MessageID, req.AffectedSOPClassUID, req.Priority = 3, CT, 2
    if kind == "C_MOVE":
        req.MoveDestination = "ELSEWHERE"
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, False
    write_dataset(buf, query)
    req.Identifier = io.BytesIO(buf.getvalue())
    cx = next(c for c in assoc.accepted_contexts if c.abstract_syntax == CT)
    try:  # pause the reactor as pynetdicom's send_c_* methods do (see test_ingest)
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.0001)
        assoc.dimse.send_msg(req, cx.context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    assert type(rsp).__name__ == kind and int(rsp.Status) == 0x0211
    assert assoc.send_c_echo().Status == 0  # the association is still served
    assoc.release()
