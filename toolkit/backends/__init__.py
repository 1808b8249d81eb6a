"""Execution backends: where a sweep's tasks run. One module (or package) per backend, behind one entry point.

A backend module has
- `run(sweep, layout, tasks, *, retry_failed, max_parallel, report, wait) -> common.RunSummary`: prepare,
  run (or submit) every task not done yet, then aggregate and report (`common.finish`);
- `check(executor) -> None`: refuse a bad executor setting before anything runs (SLURM loads its profile);
- `refine_states(layout, states) -> states`: what its scheduler knows beyond the files (pending, running,
  died without a word), or the states unchanged;
- `describe(layout) -> list[str]`: lines about its jobs for `spotsweep status` (none for local processes).

A new backend is its module plus one line in `BACKENDS`; `toolkit.launch` picks one by the sweep's
`executor.kind`. Backends never import each other: what two share lives in `common`, `apptainer`,
`packing` and `preemption`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS: dict[str, str] = {
    "local": "toolkit.backends.local",
    "slurm": "toolkit.backends.slurm",
}
"""The backend registry: `executor.kind` -> the module that runs it."""


def backend(kind: str) -> ModuleType:
    """The backend module of an executor kind (checked against `BACKENDS` by the launcher)."""
    return importlib.import_module(BACKENDS[kind])


def all_backends() -> list[ModuleType]:
    return [backend(kind) for kind in BACKENDS]
