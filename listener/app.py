"""Entry point of the DICOM listener: ``rntflow listen --config trial.yaml``.

``start_listener`` wires the pieces (pynetdicom's apps/qrscp split): the AE and its
presentation contexts (:func:`build_ae`) served behind the admission front
(:mod:`listener.front`: connection limits, request deadline, PDU size caps), admission and
C-STORE handlers
(:mod:`listener.handlers`), durable storage (:mod:`listener.spool`), and the ingest worker
(:mod:`listener.stable`) that de-identifies, detects stable studies and hands them off.
"""

from __future__ import annotations

import argparse
import errno
import logging
import multiprocessing
import os
import signal
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import UID_dictionary
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from rntflow.core.config import TrialConfig, load_config
from rntflow.core.errors import ConfigError
from rntflow.listener.deid import EnrolmentIndex, KeyStore
from rntflow.listener.faults import FaultInjector
from rntflow.listener.front import AdmissionLimits, FrontServer
from rntflow.listener.handlers import ListenerHandlers
from rntflow.listener.handoff import DeploymentDispatcher, Dispatcher, HoldDispatcher, LocalDispatcher
from rntflow.listener.logs import configure_logging, get_logger, limit_library_logs, log_event
from rntflow.listener.profile import load_table
from rntflow.listener.spool import Spool
from rntflow.listener.stable import IngestWorker, WorkerSettings

#: transfer syntaxes accepted: native, deflated and the common compressed ones (PS3.5 A.4).
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.8.1",
]


def decodable_transfer_syntaxes() -> list[str]:
    """:data:`TRANSFER_SYNTAXES` minus compressed ones no installed decoder can read.

    Offering only what can be decoded lets a sender fall back to a native syntax instead
    of having its instances refused after the transfer (PS3.4 B.4.1).
    """
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    out = []
    for ts in TRANSFER_SYNTAXES:
        if UID(ts).is_compressed:
            try:
                if not get_decoder(ts).is_available:
                    continue
            except NotImplementedError:
                continue
        out.append(ts)
    return out


#: advertised maximum PDU receive size when the config says 0
DEFAULT_MAX_PDU_BYTES = 4 * 1024 * 1024


def storage_sop_classes() -> list[str]:
    """Every storage SOP class in pydicom's copy of PS3.6 Table A-1 (retired included)."""
    return sorted(
        uid
        for uid, (name, kind, *_rest) in UID_dictionary.items()
        if kind == "SOP Class" and "Storage" in name and "Commitment" not in name and "Storage Management" not in name
    )


def build_ae(config: TrialConfig, limits: AdmissionLimits | None = None) -> AE:
    """A pynetdicom AE with Verification and every storage SOP class as SCP.

    ``limits`` (default: the config's ``listener.admission``) sets the association cap and
    the idle timeout (s) after which a silent association is aborted.
    """
    limits = limits or AdmissionLimits.from_settings(config.listener.admission)
    ae = AE(ae_title=config.listener.ae_title)
    # 0 in the config means "the listener's default": 4 MiB, so that senders such as
    # dcmtk storescu send large PDUs (fewer Python-level PDU decodes per instance)
    ae.maximum_pdu_size = config.listener.max_pdu_bytes or DEFAULT_MAX_PDU_BYTES
    ae.maximum_associations = limits.max_associations
    ae.acse_timeout = 30
    ae.dimse_timeout = 120
    ae.network_timeout = limits.idle_timeout_s
    ae.add_supported_context(Verification)
    syntaxes = decodable_transfer_syntaxes()
    for uid in storage_sop_classes():
        ae.add_supported_context(uid, syntaxes)
    return ae


def tls_context(config: TrialConfig) -> ssl.SSLContext | None:
    """Server-side TLS context with mutual authentication, or None when TLS is off."""
    tls = config.listener.tls
    if not tls.enabled:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(str(config.resolve(tls.cert_file)), str(config.resolve(tls.key_file)))
    ctx.load_verify_locations(str(config.resolve(tls.ca_file)))
    return ctx


@dataclass
class ListenerServer:
    """A running listener. ``port`` is the bound port; call :meth:`shutdown` to stop."""

    server: object
    spool: Spool
    worker: IngestWorker | None
    keys: KeyStore | None
    port: int
    worker_process: multiprocessing.process.BaseProcess | None = None

    def shutdown(self) -> None:
        self.server.shutdown()
        if self.worker is not None:
            self.worker.stop()
        if self.worker_process is not None:
            self.worker_process.terminate()  # state is transactional in the inbox
            self.worker_process.join(10)
        self.spool.close()
        if self.keys is not None:
            self.keys.close()
        log_event("listener_stopped", port=self.port)


def make_dispatcher(kind: str, config_path: str | None, deployment: str = "process-study/process-study") -> Dispatcher:
    """Build a dispatcher by name: ``local``, ``deployment`` or ``none``.

    The local runner gets Prefect's home from the trial config (``paths.prefect_home``),
    never ``$HOME/.prefect``.
    """
    if kind == "deployment":
        return DeploymentDispatcher(deployment, config_path)
    if kind == "none":
        return HoldDispatcher()
    home = load_config(config_path).prefect_home if config_path else None
    return LocalDispatcher(config_path=config_path, prefect_home=home)


def _worker_process_main(
    config: TrialConfig, dispatch: tuple[str, str | None, str], settings: WorkerSettings, log_level: int
) -> None:
    """Entry of the worker process (de-identification off the receiving process's GIL)."""
    configure_logging(log_level)
    keys = KeyStore(config.keys_dir)
    worker = IngestWorker(
        config.spool_dir, keys, EnrolmentIndex(config.enrolment_file), make_dispatcher(*dispatch), settings
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    worker.start()
    parent = os.getppid()
    while not stop.wait(0.5):
        if os.getppid() != parent:  # the listener died (e.g. SIGKILL): do not linger
            break
    worker.stop()
    keys.close()


def _check_separation(config: TrialConfig) -> None:
    keys, spool, wh = config.keys_dir, config.spool_dir, config.warehouse_dir
    for other, name in ((spool, "spool"), (wh, "warehouse")):
        if keys == other or other in keys.parents or keys in other.parents:
            raise ConfigError(f"paths.keys: must lie apart from the {name} ({keys})")


def start_listener(
    config: TrialConfig,
    dispatcher: Dispatcher | None = None,
    block: bool = True,
    *,
    port: int | None = None,
    faults: FaultInjector | None = None,
    worker_settings: WorkerSettings | None = None,
    run_worker: bool = True,
    config_path: str | None = None,
    worker_process: tuple[str, str | None, str] | None = None,
    limits: AdmissionLimits | None = None,
) -> ListenerServer:
    """Start the Storage SCP and the ingest worker.

    Parameters
    ----------
    config : TrialConfig
    dispatcher : Dispatcher, optional
        Where stable studies go; default :class:`LocalDispatcher` (embedded).
    block : bool
        Serve until interrupted (True) or return the running server at once (False).
    port : int, optional
        Override ``config.listener.port`` (0 = any free port).
    faults : FaultInjector, optional
        Storage-failure injection (tests).
    worker_settings : WorkerSettings, optional
        Default: ``quiet_period_s`` from the config.
    run_worker : bool
        Start the background worker (False to benchmark bare ingest).
    config_path : str, optional
        Passed to the flow with each hand-off.
    worker_process : tuple, optional
        ``(dispatch kind, config_path, deployment)``: run the ingest worker in a separate
        process (true parallelism for de-identification; the CLI default) instead of a
        thread; ``dispatcher`` is then built in that process by :func:`make_dispatcher`.
    limits : AdmissionLimits, optional
        Connection and PDU bounds of the front (:mod:`listener.front`); default: the
        config's ``listener.admission`` section.
    """
    _check_separation(config)
    load_table()  # the PS3.15 table: a broken install fails here, not by refusing every instance
    spool = Spool(config.spool_dir, faults=faults)
    spool.prepare_sites([s.id for s in config.sites])
    spool.reconcile()
    spool.forget_open_associations()
    settings = worker_settings or WorkerSettings(quiet_period_s=config.listener.quiet_period_s)
    worker = None
    keys: KeyStore | None = None
    proc = None
    if run_worker and worker_process is not None:
        proc = multiprocessing.get_context("spawn").Process(
            target=_worker_process_main,
            name="rntflow-ingest",
            args=(config, worker_process, settings, get_logger().getEffectiveLevel()),
            daemon=True,
        )
        proc.start()
    elif run_worker:
        keys = KeyStore(config.keys_dir)
        enrolment = EnrolmentIndex(config.enrolment_file)
        worker = IngestWorker(
            config.spool_dir,
            keys,
            enrolment,
            dispatcher or LocalDispatcher(config_path=config_path, prefect_home=config.prefect_home),
            settings,
        )
        worker.start()
    handlers = ListenerHandlers(config, spool, on_stored=worker.wake.set if worker else None)
    limits = limits or AdmissionLimits.from_settings(config.listener.admission)
    ae = build_ae(config, limits)
    limit_library_logs(logging.getLogger("pynetdicom").getEffectiveLevel())
    bind_port = config.listener.port if port is None else port
    server = serve_front(
        ae,
        (config.listener.host, bind_port),
        limits,
        reserved={a for s in config.sites for a in s.source_addresses},
        evt_handlers=handlers.handlers(),
        ssl_context=tls_context(config),
    )
    actual_port = server.server_address[1]
    log_event("listener_started", ae_title=config.listener.ae_title, port=actual_port, tls=config.listener.tls.enabled)
    running = ListenerServer(server, spool, worker, keys, actual_port, proc)
    if block:
        stop = threading.Event()

        def _stop(signum: int, frame: object) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        stop.wait()
        running.shutdown()
    return running


def serve_front(
    ae: AE,
    address: tuple[str, int],
    limits: AdmissionLimits,
    *,
    reserved: set[str],
    evt_handlers: list,
    ssl_context: ssl.SSLContext | None,
) -> FrontServer:
    """Start ``ae`` behind the admission front (:class:`listener.front.FrontServer`).

    Mirrors pynetdicom's non-blocking ``AE.start_server`` with another server class.
    """
    server = ae.make_server(
        address,
        ssl_context=ssl_context,
        evt_handlers=evt_handlers,
        server_class=FrontServer,
        limits=limits,
        reserved=reserved,
    )
    thread = threading.Thread(target=server.serve_forever, name="rntflow-front", daemon=True)
    thread.start()
    ae._servers.append(server)
    return server


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``listen`` to the ``rntflow`` command line."""
    p = subparsers.add_parser("listen", help="run the DICOM listener (Storage SCP)")
    p.add_argument("--config", required=True, type=Path, help="trial YAML file")
    p.add_argument("--port", type=int, default=None, help="override listener.port")
    p.add_argument(
        "--dispatch",
        choices=("local", "deployment", "none"),
        default="local",
        help="run process-study in this process (local), via a Prefect "
        "deployment (run_deployment), or not at all (none: hand-offs wait "
        "in the outbox)",
    )
    p.add_argument(
        "--deployment",
        default="process-study/process-study",
        help="Prefect deployment started per stable study with --dispatch deployment",
    )
    p.add_argument(
        "--no-worker", action="store_true", help="ingest only (no de-identification or hand-off); for benchmarks"
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO (default), WARNING or ERROR")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the listener until SIGTERM/SIGINT; return the exit code."""
    configure_logging(getattr(logging, str(args.log_level).upper(), logging.INFO))
    config = load_config(args.config)
    config_path = str(Path(args.config).resolve())
    try:
        start_listener(
            config,
            None,
            block=True,
            port=args.port,
            run_worker=not args.no_worker,
            config_path=config_path,
            worker_process=(args.dispatch, config_path, args.deployment),
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            port = args.port or config.listener.port
            raise ConfigError(
                f"port {port} is already in use (another listener, or --port); stop it or choose another port"
            ) from None
        raise
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m listener.app listen --config trial.yaml``."""
    parser = argparse.ArgumentParser(prog="rntflow-listener")
    add_parser(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
