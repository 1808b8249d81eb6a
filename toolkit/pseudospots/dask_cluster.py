"""Where Dask computes a grid: threads in this process, a LocalCluster on this node, or SLURM jobs.

The grid builder takes the `Scheduler` it is given and never looks further. `cluster_options` are the
keyword arguments of `distributed.LocalCluster` or `dask_jobqueue.SLURMCluster` (queue, account, cores,
memory, walltime, job_script_prologue, ...), from a YAML file of the user's (`spotsweep build
--cluster-options`) or, for a sweep, from its cluster profile through the SLURM backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import dask

from toolkit.errors import SpotsweepError

SchedulerKind = Literal["threads", "local", "slurm"]
SCHEDULERS: tuple[str, ...] = ("threads", "local", "slurm")


@dataclass(frozen=True)
class Scheduler:
    """Where the chunks are computed: `threads` (default, this process), `local` (a dask.distributed
    LocalCluster on this node) or `slurm` (a dask_jobqueue.SLURMCluster, for grids too large for a node).

    `cluster_options` are keyword arguments for LocalCluster or SLURMCluster (queue, account, cores,
    memory, walltime, job_extra_directives, ...). With `slurm` the input and output paths must be on a
    file system that the compute nodes share.
    """

    kind: SchedulerKind = "threads"
    n_workers: int | None = None
    cluster_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULERS:
            raise SpotsweepError(f"scheduler '{self.kind}' is unknown; use {', '.join(SCHEDULERS)}.")
        if self.n_workers is not None and self.n_workers < 1:
            raise SpotsweepError(f"--workers must be at least 1, got {self.n_workers}; give a positive number.")


def load_cluster_options(path: Path | None) -> dict[str, Any]:
    """Keyword arguments for LocalCluster or SLURMCluster from a YAML (or JSON) mapping; {} without a file."""
    if path is None:
        return {}
    import yaml

    from toolkit import strict_yaml

    path = Path(path)
    try:
        options = strict_yaml.load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:  # ValueError: not UTF-8 text; a key given twice too
        reason = " ".join(str(exc).split())  # YAML's multi-line report, on one line
        raise SpotsweepError(f"{path}: cannot read the cluster options ({reason}); give a YAML mapping.") from None
    if not isinstance(options, dict):
        raise SpotsweepError(f"{path}: the cluster options must be a mapping of keyword to value, like cores: 8.")
    return options


def make_cluster(scheduler: Scheduler) -> Any:
    """The (unscaled for SLURM) dask cluster of a `local` or `slurm` scheduler."""
    options = dict(scheduler.cluster_options)
    if scheduler.kind == "local":
        from distributed import LocalCluster

        options.setdefault("threads_per_worker", 1)
        if scheduler.n_workers is not None:
            options["n_workers"] = scheduler.n_workers
        return LocalCluster(**options)
    from dask_jobqueue import SLURMCluster

    try:
        return SLURMCluster(**options)
    except (TypeError, ValueError) as exc:
        raise SpotsweepError(
            f"cluster options {options}: SLURMCluster refuses them ({exc}); fix the options."
        ) from None


@contextmanager
def use_scheduler(scheduler: Scheduler) -> Iterator[Any]:
    """Run the enclosed dask computations on `scheduler`; yields the distributed Client, or None for threads."""
    if scheduler.kind == "threads":
        with dask.config.set(scheduler="threads", num_workers=scheduler.n_workers):
            yield None
        return
    from distributed import Client

    cluster = make_cluster(scheduler)
    try:
        if scheduler.kind == "slurm":
            cluster.scale(scheduler.n_workers or 1)
        with Client(cluster) as client:
            if scheduler.kind == "slurm":
                client.wait_for_workers(1)  # waves are sized by the workers present: wait for the first job
            yield client
    finally:
        cluster.close()
