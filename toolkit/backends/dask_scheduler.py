"""The Dask scheduler of a grid build: a picklable recipe that the prepare job (or `spotsweep build`)
opens, and that hands science a `pseudospots.scheduler.Scheduler`.

Why here: which cluster runs the Dask workers is scheduling knowledge. `kind` names it: `threads` (no
cluster, this process), or the backend whose cluster it is: `local` (toolkit.backends.local, a
dask.distributed LocalCluster on this node) or `slurm` (toolkit.backends.slurm builds a
dask_jobqueue.SLURMCluster; under `executor: slurm` from its profile). The backend is found through
the registry, so the backends stay peers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from toolkit.errors import SpotsweepError
from toolkit.pseudospots.scheduler import Scheduler

if TYPE_CHECKING:
    from toolkit.config import SweepConfig

SchedulerKind = Literal["threads", "local", "slurm"]
SCHEDULERS: tuple[str, ...] = ("threads", "local", "slurm")


@dataclass(frozen=True)
class DaskCluster:
    """Where the chunks are computed: `threads` (default, this process), `local` (a LocalCluster on this
    node) or `slurm` (Dask workers as SLURM jobs, for grids too large for a node).

    `options` are keyword arguments for LocalCluster or SLURMCluster (queue, account, cores, memory,
    walltime, job_extra_directives, ...). With `slurm` the input and output paths must be on a file
    system that the compute nodes share.
    """

    kind: SchedulerKind = "threads"
    n_workers: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULERS:
            raise SpotsweepError(f"scheduler '{self.kind}' is unknown; use {', '.join(SCHEDULERS)}.")
        if self.n_workers is not None and self.n_workers < 1:
            raise SpotsweepError(f"--workers must be at least 1, got {self.n_workers}; give a positive number.")

    @contextmanager
    def open(self) -> Iterator[Scheduler]:
        """The running scheduler for the enclosed build; its cluster is closed afterwards."""
        if self.kind == "threads":
            yield Scheduler("threads", self.n_workers)
            return
        from distributed import Client

        from toolkit.backends import backend

        cluster = backend(self.kind).dask_cluster(dict(self.options), self.n_workers)
        try:
            with Client(cluster) as client:
                client.wait_for_workers(1)  # waves are sized by the workers present: wait for the first job
                yield Scheduler(self.kind, self.n_workers, client)
        finally:
            cluster.close()


def prepare_cluster(sweep: SweepConfig, backend_options: Mapping[str, Any] | None = None) -> DaskCluster:
    """The scheduler of the sweep's `prepare:` block; its `cluster_options` over those the backend adds
    (the SLURM profile's, for Dask workers as SLURM jobs)."""
    settings = sweep.prepare
    return DaskCluster(settings.scheduler, settings.workers, {**(backend_options or {}), **settings.cluster_options})


def local_cluster(options: dict[str, Any], n_workers: int | None) -> Any:
    """A dask.distributed LocalCluster on this node, one thread per worker unless the options say more."""
    from distributed import LocalCluster

    options.setdefault("threads_per_worker", 1)
    if n_workers is not None:
        options["n_workers"] = n_workers
    return LocalCluster(**options)


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
