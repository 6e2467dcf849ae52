"""pynetdicom 3.0's requestor race (issue 14: "Received unexpected C-STORE service message",
then a DIMSE timeout): a C-STORE response taken by the association's reactor while
``send_c_store`` waits for it goes back to the sender. The test SCU uses the same guard as
``rntflow push`` (:func:`rntflow.push.keep_responses_for_the_sender`)."""

from __future__ import annotations

from pynetdicom.dimse_primitives import C_STORE

from tests.listener.conftest import PATIENT, scu
from tests.listener.dicomgen import ct_series


def test_response_taken_by_the_reactor_goes_back_to_the_waiting_sender(listener):
    assoc = scu().associate("127.0.0.1", listener.port, ae_title="RNTFLOW")
    assert assoc.is_established
    try:
        assoc._reactor_checkpoint.clear()  # what send_c_store does before sending
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = 7
        rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        rsp.AffectedSOPInstanceUID = "1.2.3.4"
        rsp.Status = 0x0000
        assoc._serve_request(rsp, 1)  # the reactor won the race ...
        assert assoc.dimse.msg_queue.get(timeout=1.0) == (1, rsp)  # ... and gave it back
        assoc._reactor_checkpoint.set()
        assert int(assoc.send_c_store(ct_series(PATIENT, 1, size=16)[0]).Status) == 0
    finally:
        assoc.release()
