"""The server path, end to end: a real Prefect server, a process work pool, the deployments of
``deployments/prefect.yaml`` (``prefect deploy``), a process worker, and the listener handing
studies to the ``process-study`` deployment (``rntflow listen --dispatch deployment``).

Everything Prefect runs in subprocesses with their own ``PREFECT_HOME`` and SQLite database
(see ``conftest_server.py``); this process only reads the server through a client pointed at
it with ``temporary_settings``, so the session-wide in-process test harness is left alone.

Two fast tests check that every production install file of ``deployments/`` parses and that
each entry point of ``prefect.yaml`` imports the way a worker imports it.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port
from tests.flows.conftest_server import REPO_ROOT, PrefectServer, prefect_cmd, run_prefect, start_prefect_server

DEPLOYMENTS = REPO_ROOT / "deployments"
PREFECT_YAML = DEPLOYMENTS / "prefect.yaml"
POOL = "rntflow-process"

#: the flow the test deploys as process-study; PROBE_ENTRYPOINT is the throwaway stand-in
#: (same name and signature) used while the real flow did not exist yet.
REAL_ENTRYPOINT = "rntflow.flows.process_study:process_study"
PROBE_ENTRYPOINT = "tests.flows._probe_flow:process_study"
ENTRYPOINT = REAL_ENTRYPOINT

#: deployment name -> (entry point, flow name): the contract of ARCHITECTURE.md. Entry points
#: are module paths: a file path (flows/warehouse.py:...) makes Prefect put flows/ first on
#: sys.path, where flows/warehouse.py shadows the `warehouse` package.
EXPECTED_DEPLOYMENTS = {
    "process-study": ("rntflow.flows.process_study:process_study", "process-study"),
    "calibration": ("rntflow.flows.calibration:calibration_flow", "calibration"),
    "timepoint": ("rntflow.flows.timepoint:timepoint_flow", "timepoint"),
    "dosimetry": ("rntflow.flows.dosimetry:dosimetry_flow", "dosimetry"),
    "qa": ("rntflow.flows.qa:qa_flow", "qa"),
    "dose-effect": ("rntflow.flows.warehouse:dose_effect_flow", "dose-effect"),
    "campaign": ("rntflow.flows.campaign:campaign_flow", "campaign"),
}


# --------------------------------------------------------------------------- fast: the files


def test_deployment_files_parse():
    """prefect.yaml, compose.yaml and the systemd units are well-formed and agree."""
    doc = yaml.safe_load(PREFECT_YAML.read_text())
    deps = {d["name"]: d for d in doc["deployments"]}
    assert {n: d["entrypoint"] for n, d in deps.items()} == {n: ep for n, (ep, _flow) in EXPECTED_DEPLOYMENTS.items()}
    for d in deps.values():
        assert d["work_pool"]["name"] == POOL
        assert "config_path" in d["parameters"]
    assert any("prefect.deployments.steps.set_working_directory" in step for step in doc["pull"])
    # the model `prefect deploy` validates the file with
    from prefect.cli.deploy._models import PrefectYamlModel

    PrefectYamlModel.model_validate(doc)

    compose = yaml.safe_load((DEPLOYMENTS / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "prefect-server", "prefect-worker", "listener"} <= set(services)
    assert "postgres:16" in services["postgres"]["image"]
    env = services["prefect-server"]["environment"]
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    listen = " ".join(services["listener"]["command"])
    assert "rntflow listen" in listen and "--dispatch deployment" in listen
    volumes = set(compose["volumes"])
    assert {"spool", "warehouse", "keys", "pgdata"} <= volumes
    # the key table is mounted only where de-identification happens (listener), never
    # into the worker that runs the flows; the worker sees the spool read-only
    worker, listener = _mounts(services["prefect-worker"]), _mounts(services["listener"])
    assert "keys" in listener and "keys" not in worker
    assert worker["spool"].endswith(":ro") and worker["warehouse"]

    units = sorted((DEPLOYMENTS / "systemd").glob("*.service"))
    assert {u.name for u in units} == {"rntflow-listener.service", "prefect-server.service", "prefect-worker@.service"}
    for unit in units:
        cp = configparser.ConfigParser(strict=False, interpolation=None)
        cp.optionxform = str
        cp.read_string(unit.read_text())
        assert {"Unit", "Service", "Install"} <= set(cp.sections()), unit.name
        assert cp["Service"]["ExecStart"].startswith("/"), unit.name


_LOAD_FLOWS = """
import json, sys
from prefect.flows import load_flow_from_entrypoint
out = {}
for ep in sys.argv[1:]:
    flow = load_flow_from_entrypoint(ep, use_placeholder_flow=False)
    out[ep] = [flow.name, sorted(flow.parameters.properties)]
print(json.dumps(out))
"""


def test_entrypoints_load_as_a_worker_loads_them(tmp_path):
    """Each entry point of prefect.yaml imports (no placeholder) from the repository root, as
    the worker's flow-run process does after the pull step, and names the contracted flow.
    ``prefect deploy`` would not tell: it falls back to parsing the file when the import fails.
    """

    from rntflow.listener.handoff import StudyHandoff
    from tests.flows.conftest_server import prefect_env

    eps = [ep for ep, _flow in EXPECTED_DEPLOYMENTS.values()]
    cp = subprocess.run(
        [sys.executable, "-c", _LOAD_FLOWS, *eps],
        cwd=REPO_ROOT,
        env=prefect_env(tmp_path / "home", "http://127.0.0.1:9/api"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cp.returncode == 0, cp.stderr[-3000:]
    loaded = json.loads(cp.stdout.strip().splitlines()[-1])
    for ep, flow_name in EXPECTED_DEPLOYMENTS.values():
        name, params = loaded[ep]
        assert name == flow_name and "config_path" in params, (ep, name, params)
    # the listener's hand-off is accepted by the deployment's parameter schema
    handoff = set(StudyHandoff.__dataclass_fields__) | {"config_path"}
    assert handoff <= set(loaded[EXPECTED_DEPLOYMENTS["process-study"][0]][1])


def _mounts(service: dict) -> dict[str, str]:
    """Volume source -> "target[:ro]" for a compose service (short and long syntax)."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            src, _, rest = v.partition(":")
            out[src] = rest
        else:
            out[v["source"]] = v["target"] + (":ro" if v.get("read_only") else "")
    return out


# --------------------------------------------------------------------------- slow: the server


@pytest.fixture
def prefect_server(tmp_path):
    """A real Prefect server (SQLite under tmp_path) and everything started against it."""
    server = start_prefect_server(tmp_path / "server")
    try:
        yield server
    finally:
        server.stop()


def _phi(truth: dict) -> list[str]:
    """Identifying strings of the simulated patients (ID, name in both spellings, birth date)."""
    out: list[str] = []
    for s in truth["subjects"].values():
        name = str(s["patient_name"])
        parts = name.split()
        out += [
            str(s["patient_id"]),
            name,
            "^".join(reversed(parts)),
            parts[-1],
            str(s["birth_date"]),
            str(s["birth_date"]).replace("-", ""),
        ]
    return [p for p in out if len(p) >= 4]


def _trial_config(small_trial: Path, root: Path) -> Path:
    """The demo trial config with every path in ``root`` and a free listener port."""
    cfg = yaml.safe_load((DEPLOYMENTS / "trial.example.yaml").read_text())
    cfg["listener"].update(port=free_port(), quiet_period_s=3, min_free_disk_mb=1)
    data = root / "data"
    cfg["paths"].update(
        spool=str(data / "spool"),
        warehouse=str(data / "warehouse"),
        keys=str(root / "keys"),
        prefect_home=str(data / "prefect"),
        products=str(data / "products"),
        enrolment=str(small_trial / "enrolment.csv"),
        phantom_fills=str(small_trial / "phantom_fills.csv"),
    )
    path = root / "trial.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _deploy(server: PrefectServer, root: Path, config_path: Path) -> None:
    """``prefect deploy`` with deployments/prefect.yaml, from the repository root."""
    env = server.env(RNTFLOW_CONFIG=str(config_path))
    if ENTRYPOINT == REAL_ENTRYPOINT:
        run_prefect(["deploy", "--prefect-file", str(PREFECT_YAML), "--all"], env)
        return
    # the probe stands in for process-study: same file, only that entry point swapped
    text = PREFECT_YAML.read_text()
    assert REAL_ENTRYPOINT in text
    probe_yaml = root / "prefect.yaml"
    probe_yaml.write_text(text.replace(REAL_ENTRYPOINT, PROBE_ENTRYPOINT))
    run_prefect(["deploy", "--prefect-file", str(probe_yaml), "--name", "process-study"], env)


def _wait_port(port: int, proc, timeout_s: float = 60) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        assert proc.alive(), f"listener exited\n{proc.tail()}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"listener not listening on {port} after {timeout_s} s\n{proc.tail()}")


def _push(study: Path, port: int) -> None:
    """Send one study as SITE01's PACS: dcmtk ``storescu`` when installed, else ``push_tree``.

    (pynetdicom's SCU can lose a C-STORE response to its own reactor thread when the CPU is
    busy -- "Received unexpected C-STORE service message", then a DIMSE timeout -- and the
    listener would then see a partial study; storescu, a separate real sender, does not.)
    """
    files = sorted(str(p) for p in study.rglob("*.dcm"))
    assert files, study
    storescu = shutil.which("storescu")
    if storescu:
        cp = subprocess.run(
            [storescu, "-aet", "SITE01_PACS", "-aec", "RNTFLOW", "-nh", "127.0.0.1", str(port), *files],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cp.returncode == 0, f"storescu exited {cp.returncode}: {cp.stderr[-2000:]}"
        return
    from rntflow.push import push_tree

    report = push_tree(study, "127.0.0.1", port, "SITE01_PACS", "RNTFLOW")
    assert report.ok and report.stored == report.sent == len(files), report


def _final_runs(client, n: int, server: PrefectServer, timeout_s: float) -> list:
    """Poll until ``n`` process-study flow runs exist and all are in a final state."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    flt = FlowFilter(name=FlowFilterName(any_=["process-study"]))
    end = time.monotonic() + timeout_s
    runs: list = []
    while time.monotonic() < end:
        runs = client.read_flow_runs(flow_filter=flt, limit=50)
        if len(runs) >= n and all(r.state is not None and r.state.is_final() for r in runs):
            return runs
        time.sleep(1.0)
    states = [(r.name, r.state_name) for r in runs]
    raise AssertionError(f"process-study runs not final after {timeout_s} s: {states}\n{server.logs()}")


def _run_logs(client, run) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])), limit=200)
    return "\n".join(f"{lg.level} {lg.message}" for lg in logs)


# Over 100 lines on purpose: one end-to-end scenario on a real server, read top to bottom.
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_listener_to_deployment_on_a_real_server(prefect_server, small_trial, small_truth, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = prefect_server
    t0 = time.monotonic()
    env = server.env()
    _check_server_api(server)

    # the process pool, the deployments (default config_path: this trial), a worker
    config_path = _trial_config(small_trial, tmp_path)
    run_prefect(["work-pool", "create", POOL, "--type", "process"], env)
    _deploy(server, tmp_path, config_path)
    worker = server.spawn(
        "prefect-worker",
        prefect_cmd(
            "--no-prompt",
            "worker",
            "start",
            "--pool",
            POOL,
            "--type",
            "process",
            "--name",
            "test-worker",
            "--limit",
            "2",
        ),
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="5",
    )

    # the listener, handing stable studies to the process-study deployment
    port = yaml.safe_load(config_path.read_text())["listener"]["port"]
    listener = server.spawn(
        "rntflow-listen",
        [
            sys.executable,
            "-m",
            "rntflow.cli",
            "listen",
            "--config",
            str(config_path),
            "--dispatch",
            "deployment",
            "--deployment",
            "process-study/process-study",
        ],
    )
    _wait_port(port, listener)

    site = "SITE01"
    patient = next(s for s in small_truth["subjects"].values() if s["site_id"] == site)
    studies = [
        next((small_trial / "dicom" / site / f"QC-CYL-{site}").iterdir()),  # phantom
        sorted((small_trial / "dicom" / site / patient["patient_id"]).glob("*_4H"))[0],
    ]
    phi = _phi(small_truth)
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        with get_client(sync_client=True) as client:
            # one study at a time, as a site's PACS sends them: the phantom calibrates the
            # camera the patient study is then quantified with
            for i, study in enumerate(studies, start=1):
                _push(study, port)
                runs = _final_runs(client, i, server, timeout_s=150)

            assert worker.alive(), worker.tail()
            _check_deployments(client, config_path)
            deployment = client.read_deployment_by_name("process-study/process-study")
            assert len(runs) == len(studies)
            for run in runs:
                assert run.state.is_completed(), (
                    f"{run.name}: {run.state_name} {run.state.message}\n{_run_logs(client, run)}\n{server.logs()}"
                )
                assert run.deployment_id == deployment.id
                assert run.work_pool_name == POOL  # a worker of the pool ran it
                p = run.parameters
                assert p["site_id"] == site and p["config_path"] == str(config_path)
                assert p["handoff_version"] == 1 and p["n_instances"] > 0
                assert Path(p["study_dir"]).is_dir()
                blob = json.dumps(p) + run.name
                for s in phi:
                    assert s not in blob, f"{s!r} in the parameters of {run.name}"
            assert {r.parameters["kind"] for r in runs} == {"phantom", "patient"}
            assert {r.parameters["subject_id"] for r in runs} == {
                f"{site}-PH-CYL",
                next(k for k, v in small_truth["subjects"].items() if v is patient),
            }

    # what Prefect stored: flow run parameters and names, and every log line, straight from
    # its database, hold no patient identifier
    db = sqlite3.connect(f"file:{server.home / 'prefect.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT name, parameters FROM flow_run").fetchall()
        logs = db.execute("SELECT message FROM log").fetchall()
    finally:
        db.close()
    assert len(rows) >= len(studies)
    stored = "\n".join([f"{n} {p}" for n, p in rows] + [m for (m,) in logs])
    for s in phi:
        assert s not in stored, f"{s!r} stored in Prefect's database"
    print(f"server path: {len(runs)} runs Completed in {time.monotonic() - t0:.0f} s")


def _check_deployments(client, config_path: Path) -> None:
    """``prefect deploy --all`` created every deployment, templated by the build steps."""
    names = ["process-study"] if ENTRYPOINT != REAL_ENTRYPOINT else list(EXPECTED_DEPLOYMENTS)
    for name in names:
        ep, flow_name = EXPECTED_DEPLOYMENTS[name]
        dep = client.read_deployment_by_name(f"{flow_name}/{name}")
        assert dep.work_pool_name == POOL and dep.enforce_parameter_schema, name
        assert dep.entrypoint == (ENTRYPOINT if name == "process-study" else ep)
        # build step outputs: absolute repository root and trial config
        assert dep.parameters["config_path"] == os.path.realpath(config_path), name
        assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}], (
            dep.pull_steps
        )
        if name == "dose-effect":
            assert dep.schedules and dep.schedules[0].active


def _check_server_api(server: PrefectServer) -> None:
    """Fail early, with the cause, if this environment's FastAPI breaks the Prefect API.

    FastAPI >= 0.151 validates an explicit JSON ``null`` against the parameter's type instead
    of using its default, so every ``/filter`` call of the Prefect 3.8 client (``limit: null``)
    is refused with 422: the UI, ``prefect deploy`` and this test's polling all fail.
    """
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        f"{server.api_url}/flow_runs/filter",
        method="POST",
        data=b'{"limit": null, "offset": 0}',
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10):
            return
    except urllib.error.HTTPError as exc:
        import fastapi

        body = exc.read().decode(errors="replace")[:300]
        pytest.fail(
            f"the Prefect server refuses `limit: null` ({exc.code}: {body}); FastAPI "
            f"{fastapi.__version__} is incompatible with this Prefect: pin fastapi<0.151"
        )
