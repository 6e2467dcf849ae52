"""Event-driven versions of pynetdicom 3.0's two polling loops (one association each).

pynetdicom runs two threads per association, and both poll: the DUL thread sleeps 1 ms
whenever a loop found nothing to do (``DULServiceProvider.run_reactor``), and the
association thread sleeps 1 ms before every look at its DIMSE queue
(``Association._run_reactor``). Each C-STORE crosses both loops twice (request in,
response out), and on a loaded machine every such sleep costs a scheduler round, several
milliseconds per instance (py-spy profile in BENCHMARKS.md, listener). Here the loops wait
on what they are waiting for instead:

* :class:`WakingDUL` blocks in ``select`` on the peer's socket and on a wake-up socket
  that :meth:`WakingDUL.send_pdu` and :meth:`WakingDUL.kill_dul` write to, so incoming
  PDUs and outgoing primitives are handled at once; at most :attr:`WakingDUL.WAIT_S`
  seconds pass between two turns of the loop (timers, kill flag);
* :class:`QueueDrivenAcceptor` blocks on the DIMSE message queue, and checks release,
  abort, a dead DUL thread and the idle timeout at least every
  :attr:`QueueDrivenAcceptor.POLL_S` seconds, in pynetdicom's order.

Everything else (state machine, PDU decoding, DIMSE, the handlers) is pynetdicom's own.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

#: pynetdicom's loggers (the messages its own loops log)
_ASSOC_LOG = logging.getLogger("pynetdicom.association")
_DUL_LOG = logging.getLogger("pynetdicom.dul")


class WakingDUL(DULServiceProvider):
    """A DUL provider whose loop sleeps in ``select`` instead of ``time.sleep``."""

    #: longest wait (s) between two turns of the loop when nothing happens
    WAIT_S = 0.005

    def __init__(self, assoc: Any) -> None:
        super().__init__(assoc)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already pending (buffer full) or closed: the loop wakes anyway

    def send_pdu(self, primitive: Any) -> None:  # noqa: D102
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:  # noqa: D102
        super().kill_dul()
        self._wake()

    def _wait_for_work(self) -> None:
        """Block until the peer's socket is readable, a wake-up arrives or WAIT_S passes."""
        sock = self.socket
        raw = getattr(sock, "socket", None)
        if raw is None:
            time.sleep(self._run_loop_delay)
            return
        if getattr(sock, "_prefix", None):  # bytes the front already read
            return
        pending = getattr(raw, "pending", None)  # an SSLSocket's decrypted, unread bytes
        if pending is not None and pending():
            return
        try:
            select.select([raw, self._wake_r], [], [], self.WAIT_S)
        except (OSError, ValueError):  # closed meanwhile: the loop notices (Evt17)
            time.sleep(self._run_loop_delay)
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def run_reactor(self) -> None:
        """pynetdicom 3.0's ``DULServiceProvider.run_reactor`` with :meth:`_wait_for_work`
        in place of its 1 ms sleep."""
        try:
            self._reactor_loop()
        finally:
            self._wake_r.close()
            self._wake_w.close()

    def _reactor_loop(self) -> None:
        self._idle_timer.start()
        sleep = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                sleep = True
            if sleep:
                self._wait_for_work()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:
                _DUL_LOG.error("Exception in DUL.run(), aborting association")
                _DUL_LOG.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue
            self.state_machine.do_action(event)
            sleep = False


class QueueDrivenAcceptor(Association):
    """An acceptor whose loop blocks on the DIMSE queue instead of sleeping 1 ms per look."""

    #: longest wait (s) for the next DIMSE message before release, abort, a dead DUL
    #: thread and the idle timeout are checked again
    POLL_S = 0.005

    def _run_reactor(self) -> None:
        """pynetdicom 3.0's ``Association._run_reactor``, waiting on the queue itself."""
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            try:
                context_id, msg = self.dimse.msg_queue.get(timeout=self.POLL_S)
            except queue.Empty:
                context_id, msg = None, None
            if msg:
                self._serve_request(msg, int(context_id))
            if self._association_ended():
                return

    def _association_ended(self) -> bool:
        """pynetdicom 3.0's end-of-association checks, in its order, with its log lines."""
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            _ASSOC_LOG.info("Association Released")
            self.is_released = True
            self.is_established = False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return True
        if self.acse.is_aborted():
            _ASSOC_LOG.info("Association Aborted" + (" (A-P-ABORT)" if self.acse.is_aborted("a-p-abort") else ""))
            self.dul.receive_pdu(wait=False)  # EVT_ACSE_RECV fires for subscribers
            self.is_aborted = True
            self.is_established = False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return True
        if not self.dul.is_alive():
            self.kill()
            return True
        if self.dul.idle_timer_expired():
            _ASSOC_LOG.error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return True
        return False
