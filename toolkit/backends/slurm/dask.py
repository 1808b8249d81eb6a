"""Dask workers as SLURM jobs: a cluster profile as the keyword arguments of `dask_jobqueue.SLURMCluster`,
and the cluster itself (the SLURM backend's `dask_cluster`, opened by backends.dask_scheduler).

Why here: the grid builder takes whatever Dask scheduler it is given (toolkit.pseudospots.scheduler)
and knows nothing of SLURM; how a cluster is asked for jobs is the SLURM backend's knowledge, so the
profile that gives every sweep job its partition, account, CPUs, memory, time, setup lines and image
gives the Dask workers theirs too. Worker jobs need no GPU.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

from toolkit.backends import apptainer
from toolkit.backends.slurm.profile import SlurmProfile
from toolkit.errors import SpotsweepError


def cluster_options(profile: SlurmProfile, binds: list[str] | None = None) -> dict[str, Any]:
    """SLURMCluster(**cluster_options(profile)): one worker per job, the profile's resources each."""
    hours, minutes = divmod(profile.prepare_time_min, 60)
    mem_gb = profile.prepare_mem_gb or profile.mem_gb  # the workers are the prepare job's helpers
    options: dict[str, Any] = {
        "cores": profile.cpus_per_task,
        "processes": 1,
        "memory": f"{int((mem_gb or 2 * profile.cpus_per_task) * 1024)}MiB",
        "walltime": f"{hours:02d}:{minutes:02d}:00",
        "job_name": "spotsweep-dask",
        "job_script_prologue": list(profile.setup),
        "job_extra_directives": [f"--{key}={value}" for key, value in profile.sbatch.items()],
    }
    if profile.partition:
        options["queue"] = profile.partition
    if profile.account:
        options["account"] = profile.account
    if profile.qos:
        options["job_extra_directives"].append(f"--qos={profile.qos}")
    if mem_gb is None:
        options["job_directives_skip"] = ["--mem"]  # the cluster's default, as for the profile's other jobs
    if profile.container is not None:
        binds = [str(Path(b)) for b in (binds or [])]
        options["python"] = apptainer.python_command(Path(profile.container), [*binds, *profile.binds], digest=False)
    else:
        options["python"] = profile.python or shlex.quote(sys.executable)
    return options


def jobqueue_cluster(options: dict[str, Any]) -> Any:
    """A `dask_jobqueue.SLURMCluster` of these keyword arguments, no worker job submitted yet."""
    from dask_jobqueue import SLURMCluster

    try:
        return SLURMCluster(**options)
    except (TypeError, ValueError) as exc:
        reason = f"cluster options {options}: SLURMCluster refuses them ({exc}); fix the options."
        raise SpotsweepError(reason) from None


def dask_cluster(options: dict[str, Any], n_workers: int | None = None) -> Any:
    """The SLURM backend's Dask cluster for `prepare.scheduler: slurm`: `n_workers` worker jobs (at least one)."""
    cluster = jobqueue_cluster(options)
    cluster.scale(n_workers or 1)
    return cluster
