"""Execution backends: where a sweep's tasks run. One module (or package) per backend, behind one entry point.

The lifecycle of a run is the same for all and lives once in `core`: choose the tasks not done, dispatch
them, wait with progress, stop on Ctrl-C/SIGTERM, finish (aggregate + report). A backend module has
- `Options`: its `executor:` settings, a `toolkit.config.ExecutorOptions` with `kind: Literal["NAME"]`
  (`common.JobOptions` adds max_parallel, container and binds); the sweep schema picks it by `kind`;
- `check(options) -> None`: refuse a bad setting before anything runs (SLURM loads its profile);
- `dispatch(context, tasks) -> core.Jobs`: prepare the inputs its own way and start (or submit) the
  tasks, returning at once; the Jobs' `poll()` says which tasks ended, `running()`, `finished()`,
  `cancel(task_ids)`;
- `refine_states(layout, states) -> states`: what its scheduler knows beyond the files (pending, running,
  died without a word), or the states unchanged;
- `describe(layout) -> list[str]`: lines about its jobs for `spotsweep status` (none for local processes);
- `finish(layout, report)`: the finish in the launcher (`core.finish_here`, or after what the scheduler knows);
- `dask_cluster(options, n_workers)`, only where a sweep's `prepare.scheduler` can name the backend (local,
  slurm): the Dask cluster that builds prepare's grids (`dask_scheduler.DaskCluster` opens it; science
  gets its Client, never the cluster type).

How to add one: copy `inline.py` (the smallest complete backend: every task in the launcher's process),
give it its kind, add `"NAME": "toolkit.backends.NAME"` to `BACKENDS` below and the module to the
"Backends are peers" contract in pyproject.toml. `toolkit.launch` then runs `executor: {kind: NAME}`
through `core.run`. Backends never import each other: what two share lives in `core`, `common`,
`apptainer`, `packing`, `preemption` and `dask_scheduler`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS: dict[str, str] = {
    "local": "toolkit.backends.local",
    "slurm": "toolkit.backends.slurm",
    "inline": "toolkit.backends.inline",
}
"""The backend registry: `executor.kind` -> the module that runs it."""


def backend(kind: str) -> ModuleType:
    """The backend module of an executor kind (checked against `BACKENDS` by the launcher)."""
    return importlib.import_module(BACKENDS[kind])


def options_model(kind: str) -> type:
    """The model of an executor kind's settings: its backend's `Options` (toolkit.config picks it by `kind`)."""
    return backend(kind).Options


def all_backends() -> list[ModuleType]:
    return [backend(kind) for kind in BACKENDS]
