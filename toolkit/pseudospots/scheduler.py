"""Where Dask computes a grid, as the grid builder sees it: threads in this process, or a distributed
scheduler that the caller opened and hands over (its Client, or its address).

Why: science never names a cluster type. Which cluster runs the workers (a LocalCluster on this node,
Dask workers as SLURM jobs built from a cluster profile) is decided where scheduling is known, by the
backends (toolkit.backends.dask_scheduler opens one for a sweep's prepare job and for `spotsweep build`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dask


@dataclass(frozen=True)
class Scheduler:
    """The Dask scheduler a grid is computed on: threads here when `client` is None, else a running
    distributed scheduler, given as its `distributed.Client` or its address ("tcp://host:8786")."""

    kind: str = "threads"
    """How the grid's provenance names it (threads, local, slurm)."""
    n_workers: int | None = None
    """Threads in this process (with no client); None: one per core."""
    client: Any = None


@contextmanager
def use_scheduler(scheduler: Scheduler) -> Iterator[Any]:
    """Run the enclosed dask computations on `scheduler`; yields the distributed Client, or None for threads."""
    if scheduler.client is None:
        with dask.config.set(scheduler="threads", num_workers=scheduler.n_workers):
            yield None
    elif isinstance(scheduler.client, str):
        from distributed import Client

        with Client(scheduler.client) as client:
            yield client
    else:
        yield scheduler.client
