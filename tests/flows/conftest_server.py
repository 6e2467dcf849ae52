"""Helpers for tests that need a REAL Prefect server (not the in-process test harness).

Everything runs in subprocesses with its own ``PREFECT_HOME`` and SQLite database under a
temporary folder, so the server path never touches the session-wide ephemeral harness of
``tests/flows/conftest.py`` nor the user's Prefect profile. Every process is started in its
own session and stopped by process-group id (a process worker's flow-run subprocesses go
with it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

#: environment variables never inherited by the subprocesses (a stray API URL or key, a
#: profile, the harness's settings ...): every PREFECT_* variable is set here explicitly.
_DROP_PREFIXES = ("PREFECT_",)


def prefect_env(home: Path, api_url: str, **extra: str) -> dict[str, str]:
    """Environment of a subprocess that must talk to the server at ``api_url`` only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES)}
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_PROFILES_PATH": str(home / "profiles.toml"),
            "PREFECT_API_URL": api_url,
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_TELEMETRY_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",  # no UI build copied into PREFECT_HOME: faster
            "DO_NOT_TRACK": "1",
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@dataclass
class Proc:
    """A subprocess in its own session, with its combined output in ``log``."""

    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 60) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f"--- {self.name} ({self.log}), last {n} lines ---\n" + "\n".join(lines[-n:])

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``grace_s``."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:  # children (flow runs, the listener's ingest process) may outlive the leader
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass


def spawn(name: str, args: list[str], env: dict[str, str], logdir: Path, cwd: Path = REPO_ROOT) -> Proc:
    """Start ``args`` in a new session, output to ``logdir/<name>.log``."""
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{name}.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Proc(name, popen, log)


def prefect_cmd(*args: str) -> list[str]:
    """The ``prefect`` CLI of this interpreter's environment."""
    return [sys.executable, "-m", "prefect", *args]


def run_prefect(
    args: list[str], env: dict[str, str], cwd: Path = REPO_ROOT, timeout_s: float = 180
) -> subprocess.CompletedProcess:
    """Run one ``prefect`` CLI command to completion; raise with its output on failure."""
    cp = subprocess.run(
        prefect_cmd("--no-prompt", *args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
    )
    if cp.returncode != 0:
        raise AssertionError(
            f"prefect {' '.join(args)} exited {cp.returncode}\n"
            f"stdout:\n{cp.stdout[-4000:]}\nstderr:\n{cp.stderr[-4000:]}"
        )
    return cp


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:
            return r.status == 200 and json.loads(r.read() or b"false") is True
    except (OSError, ValueError):
        return False


@dataclass
class PrefectServer:
    """A running ``prefect server start`` with SQLite under ``home``."""

    api_url: str
    home: Path
    proc: Proc
    logdir: Path
    children: list[Proc] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return prefect_env(self.home, self.api_url, **extra)

    def spawn(self, name: str, args: list[str], **extra_env: str) -> Proc:
        """Start a client process (worker, listener) against this server; stopped with it."""
        p = spawn(name, args, self.env(**extra_env), self.logdir)
        self.children.append(p)
        return p

    def logs(self) -> str:
        return "\n".join(p.tail() for p in [self.proc, *self.children])

    def stop(self) -> None:
        for p in reversed(self.children):
            p.stop()
        self.proc.stop()


def start_prefect_server(root: Path, timeout_s: float = 120.0) -> PrefectServer:
    """Start a Prefect server on a free port, SQLite in ``root/prefect_home``; wait for health."""
    home = root / "prefect_home"
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    proc = spawn(
        "prefect-server",
        prefect_cmd("server", "start", "--host", "127.0.0.1", "--port", str(port)),
        prefect_env(home, api_url),
        root / "logs",
    )
    server = PrefectServer(api_url, home, proc, root / "logs")
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not proc.alive():
            raise AssertionError(f"prefect server exited {proc.popen.returncode}\n{proc.tail()}")
        if _healthy(api_url):
            return server
        time.sleep(0.5)
    server.stop()
    raise AssertionError(f"prefect server not healthy after {timeout_s} s\n{proc.tail()}")
