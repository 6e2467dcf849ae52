"""The task runner of the flows, chosen by the flow-run process's environment.

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
"""

from __future__ import annotations

import os

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
