"""Cluster profiles (hpc/profiles/*.yaml): what a SLURM cluster needs to hear about every job of a sweep.

A profile is per cluster, not per study, so a sweep file stays portable: the same sweep runs on a laptop
or on any cluster with `--executor slurm --profile hpc/profiles/NAME.yaml`. It is validated before
anything is submitted; a mistake is one sentence naming the file, the key and the fix.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from toolkit.config import read_yaml
from toolkit.errors import SpotsweepError, printable


class SlurmProfile(BaseModel):
    """Resources and environment of the jobs of a sweep on one SLURM cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_task: int = Field(default=1, ge=0)
    """GPUs for each sweep task (and for the prepare job, which trains the reference models)."""
    gpu_type: str | None = None
    """A gres GPU type such as a100: requests gpu:TYPE:N instead of N GPUs of any type."""
    cpus_per_task: int = Field(default=4, gt=0)
    """CPUs of each array element; its tasks share them (torch threads: cpus_per_task // pack, at least 1)."""
    pack: int = Field(default=1, gt=0)
    """Tasks run side by side in each array element, on its GPU(s), one worker process each: one
    destVI fit uses a sliver of a modern GPU. A preempted element saves and requeues all of them."""
    mem_gb: float | None = Field(default=None, gt=0)
    """Memory of each task's job (of each array element: with `pack` K, its K tasks share it, each its own
    process); None takes the cluster's default (DefMemPerCPU x CPUs)."""
    prepare_mem_gb: float | None = Field(default=None, gt=0)
    """Memory of the prepare job (grids, reference models); None: mem_gb."""
    aggregate_mem_gb: float | None = Field(default=None, gt=0)
    """Memory of the aggregate job; None: mem_gb."""
    retry_mem_factor: float = Field(default=2.0, ge=1)
    """`run --retry-failed` asks this many times the memory of a task's last job when that job ran out of
    memory (as Nextflow's `memory { 2.GB * task.attempt }`); other tasks keep mem_gb. 1: never raise."""
    max_mem_gb: float | None = Field(default=None, gt=0)
    """The most a raised request may ask for (the largest node's memory); None: no cap."""
    time_min: int = Field(default=240, gt=0)
    """Time limit of each task; a task still training then is checkpointed and requeued."""
    prepare_time_min: int = Field(default=120, gt=0)
    aggregate_time_min: int = Field(default=60, gt=0)
    array_parallelism: int = Field(default=32, gt=0)
    """At most this many tasks of the array run at once (sbatch --array=...%N)."""
    max_array_size: int = Field(default=1000, gt=0)
    """The cluster's MaxArraySize: larger sweeps are split into several arrays."""
    signal_delay_s: int = Field(default=120, ge=30)
    """USR2 comes this long before the time limit: time to finish an epoch and save a checkpoint."""
    checkpoint_every_epochs: int = Field(default=50, gt=0)
    """Training saves its state every N epochs (and when asked to stop), to resume after a requeue."""
    max_timeouts: int = Field(default=3, ge=0)
    """Requeues after reaching the time limit before a task counts as failed (preemptions do not count)."""
    setup: list[str] = Field(default_factory=list)
    """Shell lines run in every job before the task starts (module load, source a venv, ...)."""
    python: str | None = None
    """The python that runs jobs on the compute nodes; default: the one running `spotsweep run`."""
    container: Path | None = None
    """An Apptainer image (.sif) to run every job in; None: the sweep's executor.container, else the host."""
    binds: list[str] = Field(default_factory=list)
    """Extra `apptainer --bind` specs the jobs need (the output folder is bound already)."""
    sbatch: dict[str, str] = Field(default_factory=dict)
    """Any other sbatch option, without the dashes: {constraint: a100, exclude: node12}."""

    @field_validator("sbatch")
    @classmethod
    def _no_managed_options(cls, value: dict[str, str]) -> dict[str, str]:
        managed = {"array", "dependency", "output", "error", "signal", "job-name", "time", "gpus-per-node"}
        clash = sorted(managed & {key.replace("_", "-") for key in value})
        if clash:
            raise ValueError(f"sets {', '.join(clash)}, which the launcher sets itself; remove it")
        return value


def _explain(error: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"]]
    where = ".".join(loc) or "the top level"
    if error["type"] == "extra_forbidden":
        known = list(SlurmProfile.model_fields)
        hint = difflib.get_close_matches(loc[-1], known, n=1)
        fix = f"did you mean '{hint[0]}'?" if hint else f"remove it (known keys: {', '.join(known)})"
        return f"unknown key '{where}'; {fix}"
    message = error["msg"].removeprefix("Value error, ")
    return f"'{where}' {message}" if error["type"] == "value_error" else f"'{where}': {message}; fix its value"


def parse_profile(data: Any, source: str) -> SlurmProfile:
    """Validate an already-parsed profile mapping; `source` names it in messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpotsweepError(f"{source}: a cluster profile must be a YAML mapping of keys to values.")
    try:
        return SlurmProfile.model_validate(data)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda error: error["type"] != "extra_forbidden")
        raise SpotsweepError(f"{source}: {printable(_explain(errors[0]))}.") from None


def load_profile(path: Path | str) -> SlurmProfile:
    """Read and validate a cluster profile file; every problem is one SpotsweepError sentence."""
    path = Path(path)
    if not path.is_file():
        raise SpotsweepError(
            f"{path}: no such cluster profile; give the path of a YAML file such as hpc/profiles/gpu-cluster.yaml."
        )
    profile = parse_profile(read_yaml(path), str(path))
    if profile.container is not None and not Path(profile.container).is_file():
        raise SpotsweepError(
            f"{path}: container points to '{profile.container}', which does not exist; build the image or fix the path."
        )
    return profile
