"""How the flows run: the task runner (chosen by the environment) and subflows' heartbeats.

The task runner of the flows is chosen by the flow-run process's environment:

| ``RNTFLOW_TASK_RUNNER`` | runner |
| --- | --- |
| unset, ``thread`` | Prefect's ``ThreadPoolTaskRunner`` (the default) |
| ``dask`` | ``prefect_dask.DaskTaskRunner`` (optional extra ``prefect-dask``): a temporary local
  cluster per flow run (``RNTFLOW_DASK_WORKERS`` processes, default 2, one thread each),
  or the scheduler at ``RNTFLOW_DASK_ADDRESS`` (``tcp://host:8786``) |

The runner is fixed when the flow module is imported, i.e. when a worker's flow-run process
starts, so set the variables on the worker (or in a deployment's ``job_variables.env``).
Only work started with ``.submit()`` / ``.map()`` goes to the runner; what a flow calls
directly runs in the flow's own process whatever the runner (deployments/README.md, "Dask").

Subflows run without heartbeats (:func:`subflows_without_heartbeats`): only the flow run a
worker's process starts (the root) sends them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner

RUNNER_VAR = "RNTFLOW_TASK_RUNNER"
ADDRESS_VAR = "RNTFLOW_DASK_ADDRESS"
WORKERS_VAR = "RNTFLOW_DASK_WORKERS"


def runner_name() -> str:
    """``thread`` or ``dask``, from ``RNTFLOW_TASK_RUNNER`` (anything else is refused)."""
    name = (os.environ.get(RUNNER_VAR) or "thread").strip().lower()
    if name not in ("thread", "dask"):
        raise ValueError(f"{RUNNER_VAR}={name!r}: expected 'thread' or 'dask'")
    return name


def task_runner():
    """The task runner the environment asks for (module docstring)."""
    if runner_name() == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:  # optional extra: say what to install
            raise ImportError(f"{RUNNER_VAR}=dask needs the optional extra: pip install prefect-dask ({exc})") from exc
        address = os.environ.get(ADDRESS_VAR) or None
        if address:
            return DaskTaskRunner(address=address)
        n = int(os.environ.get(WORKERS_VAR) or 2)
        return DaskTaskRunner(cluster_kwargs={"n_workers": n, "threads_per_worker": 1, "processes": True})
    return ThreadPoolTaskRunner()


@contextmanager
def subflows_without_heartbeats() -> Iterator[None]:
    """Flow runs started in this block (subflows, in this thread) send no heartbeats.

    Prefect 3.8 gives every flow run a heartbeat thread (every
    ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` s, default 180) that sleeps in 1 s steps, and joins
    it when the run ends: ~0.5 s of waiting per subflow, 3-4 subflows per study (a cProfile of
    one campaign run of 12 studies: 13 of its 69 s; BENCHMARKS.md, issue 19). A heartbeat tells the server
    that the *process* is alive; subflows live in their root run's process, whose own
    heartbeat (started before this block) keeps that signal. The setting is scoped to this
    context (Prefect's settings context), not changed for the process. Entering it costs a
    settings copy (~0.2 s: pydantic validates them all), so it is entered once per root run and
    is free where heartbeats are already off.
    """
    if get_current_settings().flows.heartbeat_frequency is None:
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
