"""The SLURM backend: one prepare job, ONE array of every task not done yet, an aggregate job after it.

- `submit`: the chain of jobs through submitit, and following it (`SlurmJobs`, the core's Jobs);
- `jobs`: what an array element runs (one task, checkpointed and requeued on USR2) and the aggregate job;
- `pack`: an element that runs `pack: K` tasks side by side on its GPU;
- `memory`: what each task's job asks for, raised after running out;
- `records`: OUT/slurm/submissions.json and the states sacct/squeue report;
- `status`: those states mapped onto the tasks;
- `dask`: the profile as the Dask workers' SLURM jobs, and their `dask_jobqueue.SLURMCluster`;
- `profile`: the cluster profile (hpc/profiles/*.yaml) every job's resources come from.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from toolkit.backends.common import JobOptions
from toolkit.backends.core import Context
from toolkit.backends.slurm import submit
from toolkit.backends.slurm.dask import dask_cluster
from toolkit.backends.slurm.jobs import finish_sweep
from toolkit.backends.slurm.profile import load_profile
from toolkit.backends.slurm.records import read_submissions
from toolkit.backends.slurm.status import refine_states
from toolkit.config import PlainPath
from toolkit.layout import OutputLayout
from toolkit.sweep import Task

__all__ = ["Options", "check", "dask_cluster", "describe", "dispatch", "finish", "refine_states"]


class Options(JobOptions):
    """`executor: {kind: slurm, profile: ...}`: a SLURM cluster, whose profile gives every job's resources
    (time limits, checkpoints and memory included)."""

    kind: Literal["slurm"] = "slurm"
    profile: PlainPath | None = None
    """A cluster profile such as hpc/profiles/gpu-cluster.yaml (partition, GPUs, ...)."""

    @model_validator(mode="after")
    def _needs_profile(self) -> Options:
        if self.profile is None:
            raise ValueError(
                "kind 'slurm' needs a cluster profile; add 'profile: hpc/profiles/NAME.yaml' or pass --profile"
            )
        return self


def check(executor: Options) -> None:
    """Load the cluster profile now: its mistakes stop the run before anything is submitted."""
    if executor.profile is not None:
        load_profile(executor.profile)


def dispatch(context: Context, tasks: list[Task]) -> submit.SlurmJobs:
    """Submit the chain for `tasks`; it runs on its own (the aggregate job finishes the sweep)."""
    assert context.options.profile is not None  # Options checks this
    return submit.dispatch(context, tasks, load_profile(context.options.profile))


def finish(layout: OutputLayout, report: bool) -> None:
    """With nothing to submit: mark the tasks SLURM saw die as failed, then aggregate and report here."""
    finish_sweep(str(layout.root), report)


def describe(layout: OutputLayout) -> list[str]:
    """One line per submission: its jobs and where their logs are."""
    lines = []
    for submission in read_submissions(layout):
        arrays = ", ".join(f"{a.job_id} ({len(a.task_ids)} tasks)" for a in submission.arrays)
        lines.append(
            f"submission {submission.number}: prepare {submission.prepare or '-'}, array {arrays}, "
            f"aggregate {submission.aggregate}; logs in {submission.folder.replace('/%j', '')}"
        )
    return lines
