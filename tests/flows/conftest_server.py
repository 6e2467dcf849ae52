"""Helpers for tests that need a REAL Prefect server (not the in-process test harness).

Everything runs in subprocesses with its own ``PREFECT_HOME`` and database (SQLite under a
temporary folder, or a throw-away PostgreSQL cluster: :func:`start_postgres`), so the server path never touches the session-wide ephemeral harness of
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


def prefect_env(home: Path, api_url: str, database_url: str | None = None, **extra: str) -> dict[str, str]:
    """Environment of a subprocess that must talk to the server at ``api_url`` only.

    ``database_url``: the server's database (default: SQLite ``<home>/prefect.db``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROP_PREFIXES)}
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_PROFILES_PATH": str(home / "profiles.toml"),
            "PREFECT_API_URL": api_url,
            "PREFECT_API_DATABASE_CONNECTION_URL": database_url or f"sqlite+aiosqlite:///{home / 'prefect.db'}",
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
    """A running ``prefect server start`` (SQLite under ``home``, or ``database_url``)."""

    api_url: str
    home: Path
    proc: Proc
    logdir: Path
    children: list[Proc] = field(default_factory=list)
    database_url: str | None = None

    def env(self, **extra: str) -> dict[str, str]:
        return prefect_env(self.home, self.api_url, self.database_url, **extra)

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


def start_prefect_server(
    root: Path, timeout_s: float = 120.0, database_url: str | None = None, **extra_env: str
) -> PrefectServer:
    """Start a Prefect server on a free port; wait for health.

    Its database: SQLite in ``root/prefect_home``, or ``database_url``
    (``postgresql+asyncpg://...``, e.g. :attr:`Postgres.url`).
    """
    home = root / "prefect_home"
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    proc = spawn(
        "prefect-server",
        prefect_cmd("server", "start", "--host", "127.0.0.1", "--port", str(port)),
        prefect_env(home, api_url, database_url, **extra_env),
        root / "logs",
    )
    server = PrefectServer(api_url, home, proc, root / "logs", database_url=database_url)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not proc.alive():
            raise AssertionError(f"prefect server exited {proc.popen.returncode}\n{proc.tail()}")
        if _healthy(api_url):
            return server
        time.sleep(0.5)
    server.stop()
    raise AssertionError(f"prefect server not healthy after {timeout_s} s\n{proc.tail()}")


# --------------------------------------------------------------------------- PostgreSQL

#: Debian's server binaries (package postgresql-<ver>); the newest installed version is used.
PG_ROOT = Path("/usr/lib/postgresql")


def pg_bindir() -> Path | None:
    """``/usr/lib/postgresql/<newest>/bin`` when Debian's PostgreSQL server is installed."""
    if not PG_ROOT.is_dir():
        return None
    versions = sorted(
        (d for d in PG_ROOT.iterdir() if d.name.isdigit() and (d / "bin" / "initdb").exists()),
        key=lambda d: int(d.name),
    )
    return versions[-1] / "bin" if versions else None


@dataclass
class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1:``port`` (trust authentication, TCP only)."""

    bindir: Path
    datadir: Path
    port: int
    proc: Proc
    run_as: str | None  # the OS user the server runs as (None: this process's user)
    user: str = "prefect"
    db: str = "prefect"

    @property
    def url(self) -> str:
        """SQLAlchemy URL for Prefect's ``PREFECT_API_DATABASE_CONNECTION_URL``."""
        return f"postgresql+asyncpg://{self.user}:prefect@127.0.0.1:{self.port}/{self.db}"

    def psql(self, sql: str) -> str:
        """Run one statement with ``psql``; its unaligned output."""
        cp = subprocess.run(
            [str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", self.db]
            + ["-X", "-A", "-t", "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if cp.returncode != 0:
            raise AssertionError(f"psql {sql!r}: {cp.stderr[-2000:]}")
        return cp.stdout.strip()

    def size_bytes(self) -> int:
        return int(self.psql(f"SELECT pg_database_size('{self.db}')"))

    def stop(self) -> None:
        self.proc.stop(grace_s=15.0)
        import shutil

        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def _pg_user() -> str | None:
    """The OS user to run PostgreSQL as: None when not root (initdb refuses root), else an
    unprivileged account: ``postgres`` (Debian's package creates it) or ``nobody``."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise AssertionError("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _as_user(user: str | None, args: list[str]) -> list[str]:
    return args if user is None else ["runuser", "-u", user, "--", *args]


def start_postgres(logdir: Path, timeout_s: float = 60.0) -> Postgres:
    """``initdb`` a new cluster in a fresh temporary folder and start it on a free port.

    As root the cluster is owned by and runs as an unprivileged user (:func:`_pg_user`); its
    folder is made outside pytest's 0700 temporary tree so that user can reach it. Durability
    settings are off (``fsync``, ``synchronous_commit``): a test database, not a production one.
    """
    import tempfile

    bindir = pg_bindir()
    if bindir is None:
        raise AssertionError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)"
        )
    user = _pg_user()
    top = Path(tempfile.mkdtemp(prefix="rntflow-pg-"))
    os.chmod(top, 0o755)
    datadir = top / "data"
    if user is not None:
        import pwd

        pw = pwd.getpwnam(user)
        os.chown(top, pw.pw_uid, pw.pw_gid)
    cp = subprocess.run(
        _as_user(
            user,
            [str(bindir / "initdb"), "-D", str(datadir), "-U", "prefect", "--auth=trust", "-E", "UTF8", "--no-sync"]
            + ["--locale=C"],
        ),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=top,
    )
    if cp.returncode != 0:
        raise AssertionError(f"initdb exited {cp.returncode}: {cp.stdout[-2000:]}\n{cp.stderr[-2000:]}")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PREFECT_"))}
    proc = spawn(
        "postgres",
        _as_user(
            user,
            [str(bindir / "postgres"), "-D", str(datadir), "-p", str(port), "-c", "listen_addresses=127.0.0.1"]
            + ["-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "synchronous_commit=off"]
            + ["-c", "full_page_writes=off", "-c", "max_connections=200"],
        ),
        env,
        logdir,
        cwd=top,
    )
    pg = Postgres(bindir, datadir, port, proc, user)
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if not proc.alive():
            raise AssertionError(f"postgres exited {proc.popen.returncode}\n{proc.tail()}")
        ready = subprocess.run(
            [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-U", "prefect"],
            capture_output=True,
            timeout=10,
        )
        if ready.returncode == 0:
            subprocess.run(
                [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "prefect", pg.db],
                check=True,
                capture_output=True,
                timeout=60,
            )
            return pg
        time.sleep(0.3)
    pg.stop()
    raise AssertionError(f"postgres not ready after {timeout_s} s\n{proc.tail()}")
