"""Benchmark: rntflow's listener vs dcmtk storescp vs a plain write-and-fsync floor.

Run: ``.venv/bin/python benchmarks/bench_listener.py [--slices 800] [--workdir DIR]
[--sites 1|3|both] [--baseline-listener DIR] [--py-spy FILE]``

``--baseline-listener DIR`` also runs another version of the ``listener`` package folder
(e.g. the previous commit's, exported with ``git show``) in the same run, for before/after
figures under the same load; ``--py-spy FILE`` records the listener and its worker process
with py-spy (all threads, idle included; ``pip install py-spy``).

The same >= 400 CT slices (512 x 512, int16) plus one SPECT reconstruction (NM
multi-frame, 128 frames of 128 x 128) are pushed with dcmtk ``storescu`` (TCP_NODELAY=1):

* to rntflow's listener (subprocess, worker on: dedup, index, de-identification);
* to dcmtk ``storescp`` (TCP_NODELAY=1, ``-od``);
* to a bare pynetdicom Storage SCP (subprocess, same 4 MiB maximum PDU, TCP_NODELAY,
  a handler that answers Success and keeps nothing): the cost of pynetdicom's receive path
  alone, which bounds what any pynetdicom-based listener can reach;
* the floor: each file's bytes written and fsync'd, one file at a time, to the same disk.

Then three sites push three distinct copies at once, against the floor for three times the
bytes. Prints a markdown table, the CPU time per instance of each receiving process (from
``/proc``; much less sensitive to other load than wall time), then the C-STORE handler's own
work per 512 x 512 CT slice, stage by stage, in this process (what is left of the
listener's time is pynetdicom's receive path and the worker process sharing the cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pydicom.uid import generate_uid  # noqa: E402

from tests.listener.conftest import PATIENT, write_config  # noqa: E402
from tests.listener.dicomgen import ct_series, nm_multiframe  # noqa: E402

SITES = (("SITE01", "SITE01_PACS"), ("SITE02", "GEPACS02"), ("SITE03", "ANYSCAN3"))


#: CPU time (ms per instance) of the receiving processes, by row name (filled by the runs)
CPU_MS: dict[str, float] = {}


def cpu_s(pid: int, descendants: bool = False) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), or of its child
    processes (recursively) with ``descendants``; from ``/proc`` (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")

    def own(p: int) -> float:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / tick

    def children(p: int) -> list[int]:
        out = []
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                out += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        return out

    if not descendants:
        return own(pid)
    total, todo = 0.0, children(pid)
    while todo:
        c = todo.pop()
        total += own(c)
        todo += children(c)
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_sets(root: Path, n_slices: int, n_sets: int) -> list[list[Path]]:
    """``n_sets`` copies of the study with distinct UIDs, written as Part-10 files."""
    cts = ct_series(PATIENT, n_slices, size=512)
    nm = nm_multiframe(PATIENT, frames=128, size=128, study_uid=str(cts[0].StudyInstanceUID))
    sets = []
    for k in range(n_sets):
        folder = root / f"set{k}"
        folder.mkdir(parents=True)
        study, ct_series_uid, nm_series = generate_uid(), generate_uid(), generate_uid()
        paths = []
        for i, ds in enumerate(cts + [nm]):
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = nm_series if ds is nm else ct_series_uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            p = folder / f"{i:05d}.dcm"
            ds.save_as(p, enforce_file_format=True)
            paths.append(p)
        sets.append(paths)
    return sets


def storescu(port: int, files: list[Path], calling: str) -> subprocess.Popen:
    env = dict(os.environ, TCP_NODELAY="1")
    return subprocess.Popen(
        ["/usr/bin/storescu", "-aet", calling, "-aec", "RNTFLOW", "127.0.0.1", str(port), *map(str, files)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def push(port: int, sets: list[list[Path]], callings: list[str]) -> float:
    t0 = time.perf_counter()
    procs = [storescu(port, files, c) for files, c in zip(sets, callings)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode()[-500:]}")
    return time.perf_counter() - t0


def wait_port(port: int, timeout_s: float = 30) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port}")


def floor(sets: list[list[Path]], out: Path) -> float:
    """Write-and-fsync each file's bytes (read into memory first)."""
    blobs = [f.read_bytes() for files in sets for f in files]
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    for i, b in enumerate(blobs):
        fd = os.open(out / f"{i:06d}.dcm", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        os.write(fd, b)
        os.fsync(fd)
        os.close(fd)
    return time.perf_counter() - t0


#: imported at start-up by every Python process of a baseline run (``--baseline-listener``)
_BOOT = """import os
_dir = os.environ.get("RNTFLOW_BENCH_LISTENER_DIR")
if _dir:
    import rntflow.listener
    rntflow.listener.__path__[:] = [_dir]
"""


def baseline_env(work: Path, listener_dir: Path | None) -> dict[str, str] | None:
    """Environment running ``rntflow.listener`` from ``listener_dir`` (another version of
    the package folder, e.g. ``git show HEAD:listener/...`` exported), in the listener and
    its spawned worker process alike; None for this tree's listener."""
    if listener_dir is None:
        return None
    boot = work / "boot"
    boot.mkdir(exist_ok=True)
    (boot / "sitecustomize.py").write_text(_BOOT)
    path = os.pathsep.join(p for p in (str(boot), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, RNTFLOW_BENCH_LISTENER_DIR=str(listener_dir.resolve()))


def run_rntflow(
    work: Path,
    sets: list[list[Path]],
    callings: list[str],
    py_spy: Path | None = None,
    listener_dir: Path | None = None,
) -> tuple[float, float]:
    """Return (time to last acknowledgement, time until de-identification caught up).

    With ``py_spy``, the listener (and its worker process) runs under ``py-spy record``;
    with ``listener_dir``, that folder's listener runs instead of this tree's.
    """
    root = work / f"rnt{len(sets)}{'b' if listener_dir else ''}"
    root.mkdir()
    cfg = write_config(root, quiet_period_s=3600)
    import yaml

    raw = yaml.safe_load(cfg.read_text())
    port = raw["listener"]["port"]
    for site in raw["sites"]:
        site.pop("source_addresses", None)
    cfg.write_text(yaml.safe_dump(raw))
    (root / "trial" / "enrolment.csv").write_text(
        "site_id,patient_id,subject_id,kind\n"
        + "".join(f"{s},{PATIENT.patient_id},RNT-{i:03d}-0001,patient\n" for i, (s, _) in enumerate(SITES))
    )
    log = (root / "listener.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rntflow.listener.app",
            "listen",
            "--config",
            str(cfg),
            "--dispatch",
            "none",
            "--log-level",
            "WARNING",
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=baseline_env(root, listener_dir),
    )
    spy = None
    try:
        wait_port(port)
        if py_spy is not None:  # all threads of the listener and its worker process
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(proc.pid), "--subprocesses"]
                + ["--threads", "--idle", "-r", "250", "--format", "raw", "-o", str(py_spy)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(2)
        n = sum(len(s) for s in sets)
        label = f"{len(sets)}{' baseline' if listener_dir else ''}"
        c_listener, c_worker = cpu_s(proc.pid), cpu_s(proc.pid, descendants=True)
        t0 = time.perf_counter()
        t_ack = push(port, sets, callings)
        CPU_MS[f"rntflow listener process, to last ack ({label})"] = 1000 * (cpu_s(proc.pid) - c_listener) / n
        db = sqlite3.connect(root / "data" / "spool" / "inbox.sqlite")
        while db.execute("SELECT COUNT(*) FROM instances WHERE state='received'").fetchone()[0]:
            time.sleep(0.05)
        t_deid = time.perf_counter() - t0
        CPU_MS[f"rntflow worker process, to de-id done ({label})"] = (
            1000 * (cpu_s(proc.pid, descendants=True) - c_worker) / n
        )
        n = db.execute("SELECT COUNT(*) FROM instances WHERE state='deid'").fetchone()[0]
        expected = sum(len(s) for s in sets)
        if n != expected:
            raise RuntimeError(f"rntflow indexed/de-identified {n} of {expected}")
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            spy.wait(timeout=60)
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    return t_ack, t_deid


def bare_scp_main(port: int) -> int:
    """A pynetdicom Storage SCP that acknowledges and keeps nothing (the pynetdicom floor)."""
    from pynetdicom import AE, evt

    from rntflow.listener.app import DEFAULT_MAX_PDU_BYTES, decodable_transfer_syntaxes, storage_sop_classes
    from rntflow.listener.handlers import set_nodelay

    ae = AE(ae_title="RNTFLOW")
    ae.maximum_pdu_size = DEFAULT_MAX_PDU_BYTES
    for uid in storage_sop_classes():
        ae.add_supported_context(uid, decodable_transfer_syntaxes())
    handlers = [(evt.EVT_CONN_OPEN, set_nodelay), (evt.EVT_C_STORE, lambda event: 0x0000)]
    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=handlers)
    return 0


def _time_receiver(
    label: str, argv: list[str], port: int, sets: list[list[Path]], callings: list[str], **popen
) -> float:
    """Start a receiver process on ``port``, push ``sets`` to it; push seconds (CPU ms per instance in CPU_MS)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)
    try:
        wait_port(port)
        c0 = cpu_s(proc.pid)
        t = push(port, sets, callings)
        CPU_MS[f"{label} ({len(sets)})"] = 1000 * (cpu_s(proc.pid) - c0) / sum(len(s) for s in sets)
        return t
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def run_bare_pynetdicom(work: Path, sets: list[list[Path]], callings: list[str]) -> float:
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--bare-scp", str(port)]
    return _time_receiver("pynetdicom bare SCP", argv, port, sets, callings, cwd=REPO)


def run_storescp(work: Path, sets: list[list[Path]], callings: list[str]) -> float:
    out = work / f"scp{len(sets)}"
    out.mkdir()
    port = free_port()
    argv = ["/usr/bin/storescp", "-aet", "RNTFLOW", "-od", str(out), str(port)]  # dcmtk's, not pynetdicom's script
    return _time_receiver("dcmtk storescp", argv, port, sets, callings, env=dict(os.environ, TCP_NODELAY="1"))


def handler_stages(n: int = 50) -> dict[str, float]:
    """Mean milliseconds per 512 x 512 CT slice of each stage of the C-STORE handler.

    The stages of :meth:`listener.handlers.ListenerHandlers.on_store`, called directly on
    encoded slices: structure check, header read, de-identification preflight, SHA-256,
    durable store (write, fsync, index).
    """
    import hashlib

    from rntflow.listener.deid import preflight
    from rntflow.listener.spool import Spool
    from rntflow.listener.validate import check_structure, read_header
    from tests.listener.dicomgen import CT, to_bytes

    slices = ct_series(PATIENT, n, size=512)
    blobs = [(to_bytes(d, with_meta=False), to_bytes(d, with_meta=True), str(d.SOPInstanceUID)) for d in slices]
    work = Path(tempfile.mkdtemp(prefix="rntflow-bench-handler-"))
    spool = Spool(work / "spool")
    spool.prepare_sites(["SITE01"])
    totals = dict.fromkeys(("structure", "header", "preflight", "sha256", "store"), 0.0)
    try:
        for ds_bytes, file_bytes, uid in blobs:
            t = time.perf_counter()
            check_structure(ds_bytes, "1.2.840.10008.1.2.1")
            t1 = time.perf_counter()
            ds, header = read_header(file_bytes, CT, uid)
            t2 = time.perf_counter()
            preflight(ds)
            t3 = time.perf_counter()
            sha = hashlib.sha256(ds_bytes).hexdigest()
            t4 = time.perf_counter()
            spool.store("SITE01", header, [file_bytes], sha)
            t5 = time.perf_counter()
            for key, dt in zip(totals, (t1 - t, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                totals[key] += dt
    finally:
        spool.close()
        shutil.rmtree(work, ignore_errors=True)
    return {k: 1000 * v / n for k, v in totals.items()}


def measure(
    work: Path, sets: list[list[Path]], tag: str, py_spy: Path | None, baseline: Path | None = None
) -> list[tuple]:
    """Floor, storescp, bare pynetdicom, rntflow (and a baseline listener) on ``sets``
    (one site per set), same run."""
    callings = [c for _, c in SITES[: len(sets)]]
    n = sum(len(s) for s in sets)
    mb = sum(f.stat().st_size for s in sets for f in s) / 1e6
    t_floor = floor(sets, work / f"floor{tag}")
    t_scp = run_storescp(work, sets, callings)
    t_bare = run_bare_pynetdicom(work, sets, callings)
    t_rnt, t_deid = run_rntflow(work, sets, callings, py_spy)
    k = len(sets)
    base = []
    if baseline is not None:
        t_b, t_b_deid = run_rntflow(work, sets, callings, listener_dir=baseline)
        base = [
            (f"rntflow baseline {baseline.name} (acked)", k, n, mb, t_b, t_floor, t_scp),
            (f"rntflow baseline {baseline.name} (+de-id done)", k, n, mb, t_b_deid, t_floor, t_scp),
        ]
    return base + [
        ("write+fsync floor", k, n, mb, t_floor, t_floor, t_scp),
        ("dcmtk storescp", k, n, mb, t_scp, t_floor, t_scp),
        ("pynetdicom, bare SCP (keeps nothing)", k, n, mb, t_bare, t_floor, t_scp),
        ("rntflow (acked)", k, n, mb, t_rnt, t_floor, t_scp),
        ("rntflow (+de-id done)", k, n, mb, t_deid, t_floor, t_scp),
    ]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", type=int, default=800)
    ap.add_argument("--workdir", type=Path, default=None, help="on the disk to measure (default: a temp dir)")
    ap.add_argument("--sites", choices=("1", "3", "both"), default="both", help="one site, three at once, or both")
    ap.add_argument("--py-spy", type=Path, default=None, help="record the listener with py-spy into this file")
    ap.add_argument(
        "--baseline-listener",
        type=Path,
        default=None,
        help="also run the listener package in this folder (e.g. the previous version), same run",
    )
    ap.add_argument("--bare-scp", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_scp is not None:
        return bare_scp_main(args.bare_scp)
    work = Path(tempfile.mkdtemp(prefix="rntflow-bench-", dir=args.workdir))
    load_before = os.getloadavg()
    rows: list[tuple] = []
    try:
        sets = make_sets(work / "input", args.slices, 1 if args.sites == "1" else 3)
        if args.sites in ("1", "both"):
            rows += measure(work, sets[:1], "1", args.py_spy, args.baseline_listener)
        if args.sites in ("3", "both"):
            rows += measure(work, sets, "3", None, args.baseline_listener)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    print(
        f"{args.slices} CT slices 512x512 + 1 NM SPECT (128x128x128) per site; "
        f"storescu with TCP_NODELAY=1; {os.cpu_count()} CPUs; load average (1 min) "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after\n"
    )
    print("| receiver | sites | instances | MB | time (s) | MB/s | x floor | x storescp |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, sites, n, mb, t, tf, ts in rows:
        print(f"| {name} | {sites} | {n} | {mb:.0f} | {t:.2f} | {mb / t:.0f} | {t / tf:.2f} | {t / ts:.2f} |")
    print("\nCPU time of the receiving process (ms per instance; less sensitive to other load than wall time):\n")
    print("| process (sites) | CPU ms / instance |")
    print("| --- | ---: |")
    for name, ms in CPU_MS.items():
        print(f"| {name} | {ms:.2f} |")
    stages = handler_stages()
    print("\nhandler stages in this process (ms per 512x512 CT slice):\n")
    print("| " + " | ".join(stages) + " | total |")
    print("|" + " ---: |" * (len(stages) + 1))
    print("| " + " | ".join(f"{v:.2f}" for v in stages.values()) + f" | {sum(stages.values()):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
