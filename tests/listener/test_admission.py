"""Fault test: unknown AE, wrong called AE, foreign address, disk floor, and TLS.

Run alone: ``.venv/bin/pytest tests/listener/test_admission.py -q``
"""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rntflow.core.config import load_config
from rntflow.listener.app import start_listener
from rntflow.listener.handlers import admit
from rntflow.listener.status import inbox_status
from tests.listener.conftest import PATIENT, FakeDispatcher, scu, write_config
from tests.listener.dicomgen import ct_series


def test_unknown_and_wrong_called_ae_rejected_with_reason(trial, listener):
    a = scu("INTRUDER").associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
    assert a.is_rejected and not a.is_established
    b = scu("SITE01_PACS").associate("127.0.0.1", listener.port, ae_title="SOMEONE_ELSE")
    assert b.is_rejected
    c = scu("ANYSCAN3").associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
    assert c.is_rejected  # SITE03 is only admitted from 10.9.9.9
    ok = scu("GEPACS02").associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
    assert ok.is_established and ok.send_c_echo().Status == 0
    ok.release()
    st = inbox_status(trial)
    assert st["unattributed"]["rejections"] == 1
    assert st["sites"]["SITE01"]["rejections"] == 1
    assert st["sites"]["SITE03"]["rejections"] == 1
    import sqlite3

    reasons = {r[0] for r in sqlite3.connect(trial.spool_dir / "inbox.sqlite").execute("SELECT reason FROM rejections")}
    assert reasons == {
        "calling AE title unknown",
        "called AE title is not the listener's",
        "source address not allowed for this site",
    }


def test_admission_rules_pure(trial):
    assert admit(trial, "SITE01_PACS", "RNTFLOW", "127.0.0.1", 1e6).accepted
    assert admit(trial, "ANYSCAN3", "RNTFLOW", "10.9.9.9", 1e6).accepted
    low = admit(trial, "SITE01_PACS", "RNTFLOW", "127.0.0.1", 0.5)
    assert not low.accepted and "disk" in low.reason and low.rsd[0] == 0x02  # transient


def test_disk_floor_refuses_new_associations(tmp_path):
    cfg = load_config(write_config(tmp_path, min_free_disk_mb=1e12))
    srv = start_listener(cfg, FakeDispatcher(), block=False, run_worker=False)
    try:
        a = scu().associate("127.0.0.1", srv.port, ae_title="RNTFLOW")
        assert a.is_rejected
    finally:
        srv.shutdown()


def _cert(subject: str, issuer_key, issuer_name, key, ca: bool, san: str | None = None):
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(__import__("ipaddress").ip_address(san))]), critical=False
        )
    return b.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> dict[str, Path]:
    """A throwaway CA, a server cert for 127.0.0.1 and SITE01's client cert (EC P-256)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rntflow test CA")])
    ca = _cert("rntflow test CA", ca_key, ca_name, ca_key, ca=True)
    out = {"ca": folder / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for name, cn, san in (("server", "server", "127.0.0.1"), ("client", "SITE01_PACS", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(cn, ca_key, ca_name, key, ca=False, san=san)
        out[name] = folder / f"{name}.pem"
        out[name + "_key"] = folder / f"{name}.key"
        out[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        out[name + "_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return out


def test_tls_mutual_auth_and_plain_connection_refused(tmp_path):
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
    srv = start_listener(cfg, FakeDispatcher(), block=False, run_worker=False)
    try:
        # plain DICOM on the TLS port: no association
        plain = scu().associate("127.0.0.1", srv.port, ae_title="RNTFLOW")
        assert not plain.is_established
        # TLS without a client certificate: refused by mutual authentication
        anon = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"]))
        no_cert = scu().associate("127.0.0.1", srv.port, ae_title="RNTFLOW", tls_args=(anon, "127.0.0.1"))
        served = no_cert.is_established and "Status" in no_cert.send_c_echo()
        if no_cert.is_established:
            no_cert.abort()
        assert not served
        # TLS with the client certificate: works
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"]))
        ctx.load_cert_chain(str(pki["client"]), str(pki["client_key"]))
        ok = scu().associate("127.0.0.1", srv.port, ae_title="RNTFLOW", tls_args=(ctx, "127.0.0.1"))
        assert ok.is_established
        assert ok.send_c_store(ct_series(PATIENT, 1, size=16)[0]).Status == 0
        ok.release()
        # SITE01's certificate calling as SITE02's AE title: refused (identity binding)
        other = scu("GEPACS02").associate("127.0.0.1", srv.port, ae_title="RNTFLOW", tls_args=(ctx, "127.0.0.1"))
        assert other.is_rejected and not other.is_established
        import sqlite3

        from tests.listener.conftest import wait_until

        db = sqlite3.connect(cfg.spool_dir / "inbox.sqlite")
        reasons = wait_until(lambda: [r[0] for r in db.execute("SELECT reason FROM rejections WHERE site_id='SITE02'")])
        assert reasons == ["TLS client certificate does not name this site"]
    finally:
        srv.shutdown()


def test_certificate_site_binding_rules():
    from rntflow.listener.handlers import certificate_matches_site

    cert = {"subject": ((("commonName", "SITE01_PACS"),),), "subjectAltName": (("DNS", "pacs.site01.example"),)}
    assert certificate_matches_site(cert, "SITE01", ["SITE01_PACS"])
    assert not certificate_matches_site(cert, "SITE03", ["ANYSCAN3"])
    san_only = {"subject": ((("commonName", "pacs"),),), "subjectAltName": (("DNS", "SITE03"),)}
    assert certificate_matches_site(san_only, "SITE03", ["ANYSCAN3"])
    assert not certificate_matches_site(None, "SITE01", ["SITE01_PACS"])


def test_store_on_verification_service_refused(trial, listener):
    """A C-STORE naming the Verification SOP class gets no Success (finding 9)."""
    from pynetdicom.dimse_primitives import C_STORE

    from tests.listener.dicomgen import to_bytes

    assoc = scu().associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
    assert assoc.is_established
    ds = ct_series(PATIENT, 1, size=16)[0]
    req = C_STORE()
    req.MessageID = 7
    req.AffectedSOPClassUID = "1.2.840.10008.1.1"
    req.AffectedSOPInstanceUID = ds.SOPInstanceUID
    req.Priority = 2
    req.DataSet = __import__("io").BytesIO(to_bytes(ds, with_meta=False))
    cx = next(c for c in assoc.accepted_contexts if c.abstract_syntax == "1.2.840.10008.1.1")
    import time

    try:  # pause the reactor as pynetdicom's send_c_store does (see test_ingest)
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.0001)
        assoc.dimse.send_msg(req, cx.context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    assert rsp is not None and int(rsp.Status) != 0
    assoc.release()
    assert inbox_status(trial)["sites"]["SITE01"]["instances"] == 0
