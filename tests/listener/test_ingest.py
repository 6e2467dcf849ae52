"""End-to-end ingest with pynetdicom as the sending PACS: store, dedup, versions, de-id,
hold/release, stable-study hand-off with retries and restarts, storage faults."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time

import pydicom
import pytest

from rntflow.listener.app import start_listener
from rntflow.listener.handoff import LocalDispatcher, StudyHandoff
from rntflow.listener.stable import WorkerSettings
from rntflow.listener.status import format_status, inbox_status
from tests.listener.conftest import PATIENT, UNENROLLED, FakeDispatcher, assert_no_phi, scu, wait_until
from tests.listener.dicomgen import ENCAPSULATED_PDF, ct_series, nm_multiframe, rtstruct_for

FAST = WorkerSettings(quiet_period_s=0.5, poll_s=0.05, backoff_base_s=0.05, backoff_max_s=0.2)


def push(port: int, datasets, calling: str = "SITE01_PACS", contexts=()) -> list[int]:
    assoc = scu(calling, contexts).associate("127.0.0.1", port, ae_title="RNTFLOW")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def deid_files(trial) -> list:
    return sorted((trial.spool_dir / "deid").rglob("*.dcm"))


def test_store_dedup_deid_and_handoff(trial, listener, caplog):
    caplog.set_level(logging.DEBUG, logger="rntflow.listener")
    cts = ct_series(PATIENT, 4)
    nm = nm_multiframe(PATIENT, study_uid=str(cts[0].StudyInstanceUID))
    rt = rtstruct_for(PATIENT, cts)
    assert push(listener.port, cts + [nm, rt]) == [0] * 6
    # re-sent identical instance: Success, not stored twice
    assert push(listener.port, [cts[0]]) == [0]
    h = wait_until(lambda: listener.dispatcher.accepted)[0]
    assert (h.site_id, h.subject_id, h.kind, h.n_instances, h.handoff_version) == (
        "SITE01",
        "RNT-001-0001",
        "patient",
        6,
        1,
    )
    st = inbox_status(trial)["sites"]["SITE01"]
    assert (st["instances"], st["duplicates"], st["studies_handed_off"]) == (6, 1, 1)

    files = deid_files(trial)
    assert len(files) == 6
    dsets = [pydicom.dcmread(f) for f in files]
    for f in files:
        assert_no_phi(f.read_bytes(), str(f))
    assert_no_phi(json.dumps(h.parameters("x")), "hand-off")
    assert_no_phi(caplog.text, "logs")
    assert all(d.PatientID == "RNT-001-0001" and not d.get("PatientBirthDate") for d in dsets)
    # UIDs replaced, references inside the RTSTRUCT still resolve to the CT copies
    ct_uids = {str(d.SOPInstanceUID) for d in dsets if d.Modality == "CT"}
    assert not ct_uids & {str(c.SOPInstanceUID) for c in cts}
    rt_copy = next(d for d in dsets if d.Modality == "RTSTRUCT")
    refs = {
        str(i.ReferencedSOPInstanceUID)
        for i in rt_copy.ReferencedFrameOfReferenceSequence[0]
        .RTReferencedStudySequence[0]
        .RTReferencedSeriesSequence[0]
        .ContourImageSequence
    }
    assert refs == ct_uids
    ct_copy = next(d for d in dsets if d.Modality == "CT")
    assert rt_copy.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID == ct_copy.FrameOfReferenceUID
    # dates shifted by one whole-day offset: the injection-to-scan interval is exact
    nm_copy = next(d for d in dsets if d.Modality == "NM")
    rp = nm_copy.RadiopharmaceuticalInformationSequence[0]
    assert float(rp.RadionuclideTotalDose) == pytest.approx(7.4e9)
    fmt = "%Y%m%d%H%M%S.%f"
    before = dt.datetime.strptime(str(nm.AcquisitionDateTime), fmt) - dt.datetime.strptime(
        str(nm.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime), fmt
    )
    after = dt.datetime.strptime(str(nm_copy.AcquisitionDateTime), fmt) - dt.datetime.strptime(
        str(rp.RadiopharmaceuticalStartDateTime), fmt
    )
    assert after == before
    assert nm_copy.StudyDate != nm.StudyDate and nm_copy.StationName == nm.StationName


def test_same_uid_new_content_is_new_version(trial, listener):
    ct = ct_series(PATIENT, 1)[0]
    assert push(listener.port, [ct]) == [0]
    ct.WindowCenter = 40  # same SOP Instance UID, different content
    assert push(listener.port, [ct]) == [0]
    st = inbox_status(trial)["sites"]["SITE01"]
    assert (st["instances"], st["new_versions"]) == (2, 1)


def test_unenrolled_held_then_released(trial, listener):
    cts = ct_series(UNENROLLED, 3)
    assert push(listener.port, cts) == [0, 0, 0]
    st = wait_until(lambda: (s := inbox_status(trial)["sites"]["SITE01"])["held_instances"] == 3 and s)
    assert len(st["held_studies"]) == 1 and st["held_studies"][0]["instances"] == 3
    assert_no_phi(format_status(inbox_status(trial)), "status")
    assert listener.dispatcher.accepted == [] and deid_files(trial) == []
    with trial.enrolment_file.open("a") as fh:  # the coordinator enrols her
        fh.write(f"SITE01,{UNENROLLED.patient_id},RNT-001-0002,patient\n")
    h = wait_until(lambda: listener.dispatcher.accepted)[0]
    assert (h.subject_id, h.n_instances) == ("RNT-001-0002", 3)
    assert inbox_status(trial)["sites"]["SITE01"]["held_instances"] == 0


def test_handoff_retried_until_accepted_and_late_instance_retriggers(trial):
    disp = FakeDispatcher(fail_n=3)
    srv = start_listener(trial, disp, block=False, worker_settings=FAST)
    try:
        cts = ct_series(PATIENT, 2)
        push(srv.port, cts)
        h1 = wait_until(lambda: disp.accepted)[0]
        assert disp.calls == 4 and h1.handoff_version == 1
        late = ct_series(PATIENT, 1, study_uid=str(cts[0].StudyInstanceUID), seed=5)
        push(srv.port, late)
        h2 = wait_until(lambda: len(disp.accepted) == 2 and disp.accepted[1])
        assert (h2.handoff_version, h2.n_instances, h2.study_key) == (2, 3, h1.study_key)
    finally:
        srv.shutdown()


def test_quiet_state_and_outbox_survive_restart(trial):
    slow = WorkerSettings(quiet_period_s=3600, poll_s=0.05)
    disp = FakeDispatcher()
    srv = start_listener(trial, disp, block=False, worker_settings=slow)
    push(srv.port, ct_series(PATIENT, 2))
    wait_until(lambda: inbox_status(trial)["sites"]["SITE01"]["studies_pending"] == 1)
    srv.shutdown()
    assert disp.accepted == []
    srv = start_listener(trial, disp, block=False, worker_settings=FAST)
    try:
        h = wait_until(lambda: disp.accepted)[0]
        assert h.n_instances == 2 and h.handoff_version == 1
    finally:
        srv.shutdown()


def test_local_dispatcher_import_error_is_retried(trial):
    calls: list[dict] = []
    disp = LocalDispatcher("no_such_module_rntflow:flow")
    h = StudyHandoff("SITE01", "RNT-001-0001", "patient", "k", "/x", 1, 1)
    with pytest.raises(Exception, match="cannot import"):
        disp.submit(h)
    ok = LocalDispatcher(lambda **kw: calls.append(kw), config_path="/cfg.yaml")
    assert ok.submit(h).startswith("local-")
    wait_until(lambda: calls)
    assert calls[0]["config_path"] == "/cfg.yaml" and calls[0]["study_dir"] == "/x"


def test_injected_storage_failure_gives_a700(trial, listener):
    cts = ct_series(PATIENT, 2)
    listener.faults.fail_next(1)
    assert push(listener.port, cts) == [0xA700, 0]
    st = inbox_status(trial)["sites"]["SITE01"]
    assert (st["instances"], st["storage_failures"]) == (1, 1)
    assert not list((trial.spool_dir / "raw").rglob("*.tmp"))


def test_unusable_sop_class_stored_and_reported(trial, listener):
    from tests.listener.dicomgen import _base

    pdf = _base(PATIENT, ENCAPSULATED_PDF, pydicom.uid.generate_uid(), pydicom.uid.generate_uid(), "DOC")
    pdf.MIMETypeOfEncapsulatedDocument = "application/pdf"
    pdf.EncapsulatedDocument = b"%PDF-1.4 fake\n"
    assert push(listener.port, [pdf], contexts=(ENCAPSULATED_PDF,)) == [0]
    assert inbox_status(trial)["sites"]["SITE01"]["unusable_instances"] == 1


def test_sop_class_contradicting_context_is_quarantined(trial, listener):
    ct = ct_series(PATIENT, 1)[0]
    ct.SOPClassUID = pydicom.uid.NuclearMedicineImageStorage  # says NM, sent on the CT context
    ct.file_meta.MediaStorageSOPClassUID = pydicom.uid.CTImageStorage
    assoc = scu().associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
    cx = next(c for c in assoc.accepted_contexts if c.abstract_syntax == pydicom.uid.CTImageStorage)
    import io

    from pynetdicom.dimse_primitives import C_STORE

    from tests.listener.dicomgen import to_bytes

    req = C_STORE()
    req.MessageID, req.AffectedSOPClassUID = 1, cx.abstract_syntax
    req.AffectedSOPInstanceUID, req.Priority = ct.SOPInstanceUID, 2
    req.DataSet = io.BytesIO(to_bytes(ct, with_meta=False))
    # pause the association's reactor as pynetdicom's own send_c_store does, or it may take
    # the response off the DIMSE queue first ("Received unexpected C-STORE service message")
    try:
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.0001)
        assoc.dimse.send_msg(req, cx.context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    assoc.release()
    assert rsp.Status == 0xA900
    q = list((trial.spool_dir / "quarantine" / "SITE01").glob("*.json"))
    assert len(q) == 1 and "contradicts" in json.loads(q[0].read_text())["reason"]


def test_a_pause_inside_an_association_does_not_hand_off_half_a_study(trial, listener):
    """Issue 14: a sender (or a busy machine) pausing longer than the quiet period between two
    instances of one association: the study is handed off once, complete, after the release."""
    cts = ct_series(PATIENT, 3)
    assoc = scu("SITE01_PACS").associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
    assert assoc.is_established
    try:
        assert int(assoc.send_c_store(cts[0]).Status) == 0
        time.sleep(10 * FAST.quiet_period_s)  # far longer than the quiet period (0.5 s)
        assert listener.dispatcher.accepted == []  # the association is still open: not stable
        assert [int(assoc.send_c_store(ds).Status) for ds in cts[1:]] == [0, 0]
    finally:
        assoc.release()
    h = wait_until(lambda: listener.dispatcher.accepted)[0]
    time.sleep(4 * FAST.quiet_period_s)
    assert len(listener.dispatcher.accepted) == 1
    assert (h.n_instances, h.handoff_version) == (3, 1)
