"""Benchmark: rntflow's listener vs dcmtk storescp vs a plain write-and-fsync floor.

Run: ``.venv/bin/python benchmarks/bench_listener.py [--slices 400] [--workdir DIR]``

The same >= 400 CT slices (512 x 512, int16) plus one SPECT reconstruction (NM
multi-frame, 128 frames of 128 x 128) are pushed with dcmtk ``storescu`` (TCP_NODELAY=1):

* to rntflow's listener (subprocess, worker on: dedup, index, de-identification);
* to dcmtk ``storescp`` (TCP_NODELAY=1, ``-od``);
* the floor: each file's bytes written and fsync'd, one file at a time, to the same disk.

Then three sites push three distinct copies at once (rntflow and storescp), against the
floor for three times the bytes. Prints a markdown table, then the C-STORE handler's own
work per 512 x 512 CT slice, stage by stage, in this process (what is left of the
listener's time is pynetdicom's receive path and the worker process sharing the cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
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
        ["storescu", "-aet", calling, "-aec", "RNTFLOW", "127.0.0.1", str(port), *map(str, files)],
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


def run_rntflow(work: Path, sets: list[list[Path]], callings: list[str]) -> tuple[float, float]:
    """Return (time to last acknowledgement, time until de-identification caught up)."""
    root = work / f"rnt{len(sets)}"
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
    )
    try:
        wait_port(port)
        t0 = time.perf_counter()
        t_ack = push(port, sets, callings)
        db = sqlite3.connect(root / "data" / "spool" / "inbox.sqlite")
        while db.execute("SELECT COUNT(*) FROM instances WHERE state='received'").fetchone()[0]:
            time.sleep(0.05)
        t_deid = time.perf_counter() - t0
        n = db.execute("SELECT COUNT(*) FROM instances WHERE state='deid'").fetchone()[0]
        expected = sum(len(s) for s in sets)
        if n != expected:
            raise RuntimeError(f"rntflow indexed/de-identified {n} of {expected}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    return t_ack, t_deid


def run_storescp(work: Path, sets: list[list[Path]], callings: list[str]) -> float:
    out = work / f"scp{len(sets)}"
    out.mkdir()
    port = free_port()
    env = dict(os.environ, TCP_NODELAY="1")
    proc = subprocess.Popen(
        ["storescp", "-aet", "RNTFLOW", "-od", str(out), str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        return push(port, sets, callings)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", type=int, default=800)
    ap.add_argument("--workdir", type=Path, default=None, help="on the disk to measure (default: a temp dir)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rntflow-bench-", dir=args.workdir))
    try:
        sets = make_sets(work / "input", args.slices, 3)
        one = sets[:1]
        n1 = len(one[0])
        mb1 = sum(f.stat().st_size for f in one[0]) / 1e6
        t_floor1 = floor(one, work / "floor1")
        t_scp1 = run_storescp(work, one, [SITES[0][1]])
        t_rnt1, t_rnt1_deid = run_rntflow(work, one, [SITES[0][1]])
        t_floor3 = floor(sets, work / "floor3")
        t_scp3 = run_storescp(work, sets, [c for _, c in SITES])
        t_rnt3, t_rnt3_deid = run_rntflow(work, sets, [c for _, c in SITES])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        ("write+fsync floor", 1, n1, mb1, t_floor1, t_floor1, t_scp1),
        ("dcmtk storescp", 1, n1, mb1, t_scp1, t_floor1, t_scp1),
        ("rntflow (acked)", 1, n1, mb1, t_rnt1, t_floor1, t_scp1),
        ("rntflow (+de-id done)", 1, n1, mb1, t_rnt1_deid, t_floor1, t_scp1),
        ("write+fsync floor", 3, 3 * n1, 3 * mb1, t_floor3, t_floor3, t_scp3),
        ("dcmtk storescp", 3, 3 * n1, 3 * mb1, t_scp3, t_floor3, t_scp3),
        ("rntflow (acked)", 3, 3 * n1, 3 * mb1, t_rnt3, t_floor3, t_scp3),
        ("rntflow (+de-id done)", 3, 3 * n1, 3 * mb1, t_rnt3_deid, t_floor3, t_scp3),
    ]
    print(
        f"{args.slices} CT slices 512x512 + 1 NM SPECT (128x128x128) per site; "
        f"storescu with TCP_NODELAY=1; {os.cpu_count()} CPUs\n"
    )
    print("| receiver | sites | instances | MB | time (s) | MB/s | x floor | x storescp |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, sites, n, mb, t, tf, ts in rows:
        print(f"| {name} | {sites} | {n} | {mb:.0f} | {t:.2f} | {mb / t:.0f} | {t / tf:.2f} | {t / ts:.2f} |")
    stages = handler_stages()
    print(
        f"\nfloor per instance: {1000 * t_floor1 / n1:.2f} ms; rntflow per instance: "
        f"{1000 * t_rnt1 / n1:.2f} ms; handler stages (ms per 512x512 CT slice):\n"
    )
    print("| " + " | ".join(stages) + " | total |")
    print("|" + " ---: |" * (len(stages) + 1))
    print("| " + " | ".join(f"{v:.2f}" for v in stages.values()) + f" | {sum(stages.values()):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
