"""Submitting a sweep to SLURM: prepare job -> one array of all tasks -> aggregate job, then (maybe) wait.

The chain is built from SLURM dependencies, so it runs on its own once submitted: the array waits for
the prepare job (afterok; if prepare fails the array is cancelled rather than left pending forever) and
the aggregate job waits for the array whatever its outcome (afterany). A sweep larger than the
cluster's MaxArraySize becomes several arrays, sharing the parallelism limit.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from pathlib import Path

import submitit

from toolkit.backends import apptainer
from toolkit.backends.common import input_files, needs_prepare
from toolkit.backends.core import Context, Execution, watch
from toolkit.backends.dask_scheduler import DaskCluster, prepare_cluster
from toolkit.backends.slurm import memory, records
from toolkit.backends.slurm.dask import cluster_options
from toolkit.backends.slurm.jobs import SweepTask, finish_sweep
from toolkit.backends.slurm.pack import PackedSweepTask
from toolkit.backends.slurm.profile import SlurmProfile
from toolkit.backends.slurm.status import scheduled_states
from toolkit.config import SweepConfig
from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout
from toolkit.prepare import prepare
from toolkit.sweep import Task


def _python(sweep: SweepConfig, profile: SlurmProfile, layout: OutputLayout) -> str:
    """The command that starts each job's python: the profile's image (else the sweep's), else a python."""
    image = profile.container or sweep.executor.container
    if image is not None:
        binds = apptainer.job_binds(layout.root, [*sweep.executor.binds, *profile.binds], input_files(sweep))
        return apptainer.python_command(Path(image), binds, slurm=True)
    return profile.python or shlex.quote(sys.executable)


def _gpu_parameters(profile: SlurmProfile, gpus: int) -> dict[str, object]:
    if not gpus:
        return {}
    if profile.gpu_type:
        return {"gres": f"gpu:{profile.gpu_type}:{gpus}"}
    return {"gpus_per_node": gpus}


def _chunks(tasks: list[Task], size: int) -> list[list[Task]]:
    return [tasks[start : start + size] for start in range(0, len(tasks), size)]


def _task_runner(root: str, profile: SlurmProfile) -> SweepTask | PackedSweepTask:
    """What each array element runs: one task, or a pack of `profile.pack` tasks side by side."""
    grace_s = profile.signal_delay_s / 2
    if profile.pack == 1:
        return SweepTask(root, profile.cpus_per_task, profile.checkpoint_every_epochs, grace_s)
    threads = max(1, profile.cpus_per_task // profile.pack)
    return PackedSweepTask(root, threads, profile.checkpoint_every_epochs, grace_s, profile.pack)


def submit(
    sweep: SweepConfig,
    layout: OutputLayout,
    to_run: list[Task],
    profile: SlurmProfile,
    parallel: int,
    report: bool,
    task_memory: dict[str, float | None] | None = None,
) -> records.Submission:
    """Submit prepare -> array(s) -> aggregate and record the job ids in OUT/slurm/submissions.json.

    `task_memory` (task id -> GB) is what each task's job asks for; by default the profile's mem_gb.
    """
    chain = _Chain(sweep, layout, profile)
    try:
        return chain.submit(to_run, parallel, report, task_memory or {})
    except BaseException:
        if chain.submitted:  # a half-submitted chain would run without its aggregate (or its array)
            subprocess.run(["scancel", *chain.submitted], check=False, capture_output=True)
        raise


class _Chain:
    """One submission: what its jobs share (name, python, profile, GPUs), and the ids submitted so far,
    which `submit` cancels should a later job of the chain be refused."""

    def __init__(self, sweep: SweepConfig, layout: OutputLayout, profile: SlurmProfile) -> None:
        self.sweep, self.layout, self.profile = sweep, layout, profile
        self.submitted: list[str] = []
        self.name = f"spotsweep-{sweep.name}"
        self.root = str(layout.root.resolve())
        self.python = _python(sweep, profile, layout)
        self.gpus = _gpu_parameters(profile, profile.gpus_per_task)

    def submit(
        self, to_run: list[Task], parallel: int, report: bool, task_memory: dict[str, float | None]
    ) -> records.Submission:
        """Prepare (if needed) -> the arrays -> aggregate, recorded in OUT/slurm/submissions.json."""
        prepare_id = self.submit_prepare(to_run)
        arrays = self.submit_arrays(to_run, parallel, task_memory, prepare_id)
        aggregate_id = self.submit_aggregate([prepare_id, *(array.job_id for array in arrays)], report)
        submission = records.Submission(
            number=len(records.read_submissions(self.layout)) + 1,
            time=time.time(),
            name=self.name,
            folder=str(self.layout.logs.resolve() / "slurm" / "%j"),
            prepare=prepare_id,
            arrays=arrays,
            aggregate=aggregate_id,
        )
        records.record_submission(self.layout, submission)
        return submission

    def executor(
        self, role: str, mem_gb: float | None, time_min: int, after: dict[str, str], **parameters: object
    ) -> submitit.SlurmExecutor:
        """A fresh executor per job kind (submitit parameters persist across submits)."""
        profile = self.profile
        folder = self.layout.logs / "slurm" / "%j"
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=profile.max_timeouts, python=self.python)
        common: dict[str, object] = {
            "partition": profile.partition,
            "account": profile.account,
            "qos": profile.qos,
            "cpus_per_task": profile.cpus_per_task,
            "signal_delay_s": profile.signal_delay_s,
            "setup": list(profile.setup) or None,
            "mem": memory.mem_option(mem_gb) if mem_gb is not None else None,
            "job_name": f"{self.name}-{role}",
            "time": time_min,
            "additional_parameters": {**profile.sbatch, **after},
        }
        chosen = {key: value for key, value in {**common, **parameters}.items() if value is not None}
        executor.update_parameters(**chosen)
        return executor

    def submit_prepare(self, to_run: list[Task]) -> str:
        """The prepare job, if the inputs need one: its id, or ""."""
        sweep, profile = self.sweep, self.profile
        if not needs_prepare(sweep, self.layout, to_run):
            return ""
        mem_gb = profile.prepare_mem_gb or profile.mem_gb
        executor = self.executor("prepare", mem_gb, profile.prepare_time_min, {}, **self.gpus)
        tasks = [task.to_dict() for task in to_run]
        job = executor.submit(prepare, sweep.model_dump(mode="json"), tasks, self.root, self.dask_cluster())
        self.submitted.append(job.job_id)
        return job.job_id

    def dask_cluster(self) -> DaskCluster:
        """Where the prepare job builds its grids; with `prepare.scheduler: slurm` the Dask workers are jobs
        with the profile's resources, binding what the sweep's jobs bind."""
        sweep = self.sweep
        if sweep.prepare.scheduler != "slurm":
            return prepare_cluster(sweep)
        binds = [*sweep.executor.binds, *(str(p.resolve().parent) for p in input_files(sweep)), self.root]
        return prepare_cluster(sweep, cluster_options(self.profile, binds))

    def submit_arrays(
        self, to_run: list[Task], parallel: int, task_memory: dict[str, float | None], prepare_id: str
    ) -> list[records.ArrayRecord]:
        """One array per memory request (and per MaxArraySize), after the prepare job; parallelism shared."""
        profile = self.profile
        after = {"dependency": f"afterok:{prepare_id}", "kill-on-invalid-dep": "yes"} if prepare_id else {}
        requests = {task.id: task_memory.get(task.id, profile.mem_gb) for task in to_run}
        chunks = [
            (mem_gb, chunk)
            for mem_gb, group in memory.by_request(to_run, requests)
            for chunk in _chunks(group, profile.max_array_size * profile.pack)
        ]
        task_runner = _task_runner(self.root, profile)
        arrays: list[records.ArrayRecord] = []
        for mem_gb, chunk in chunks:
            share = max(1, parallel // len(chunks))
            executor = self.executor("tasks", mem_gb, profile.time_min, after, array_parallelism=share, **self.gpus)
            if profile.pack == 1:
                elements: list[object] = [task.to_dict() for task in chunk]
            else:
                elements = [[task.to_dict() for task in pack] for pack in _chunks(chunk, profile.pack)]
            jobs = executor.map_array(task_runner, elements)
            job_id = jobs[0].job_id.split("_")[0]
            arrays.append(records.ArrayRecord(job_id, [task.id for task in chunk], profile.pack, mem_gb))
            self.submitted.append(job_id)
        return arrays

    def submit_aggregate(self, before: list[str], report: bool) -> str:
        """The aggregate job, after every job before it whatever their outcome."""
        profile = self.profile
        after = {"dependency": "afterany:" + ":".join(job for job in before if job)}
        mem_gb = profile.aggregate_mem_gb or profile.mem_gb
        executor = self.executor("aggregate", mem_gb, profile.aggregate_time_min, after, cpus_per_task=1)
        return executor.submit(finish_sweep, self.root, report).job_id


@contextlib.contextmanager
def _sbatch_explained() -> Iterator[None]:
    """sbatch's refusals and a missing SLURM, each turned into one sentence."""
    try:
        yield
    except submitit.core.utils.FailedJobError as exc:
        last = (str(exc).strip().splitlines() or ["no message"])[-1]
        raise SpotsweepError(
            f"sbatch refused a job ({last}); check the profile's partition, account, qos and GPU request."
        ) from None
    except RuntimeError as exc:
        if "srun" not in str(exc):
            raise
        raise SpotsweepError(
            "executor 'slurm': srun and sbatch are not on this machine's PATH; run on a SLURM login node "
            "(or start the local test cluster: hpc/slurm/start.sh, then export SLURM_CONF as it says)."
        ) from None


def dispatch(context: Context, to_run: list[Task], profile: SlurmProfile) -> SlurmJobs:
    """Submit prepare (if needed) -> array(s) -> aggregate; return at once (the chain runs on its own)."""
    sweep, layout = context.sweep, context.layout
    states = scheduled_states(layout, to_run)
    parallel = context.parallel or profile.array_parallelism
    task_memory = memory.task_memory(states, profile, records.read_submissions(layout))
    with _sbatch_explained():
        submission = submit(sweep, layout, to_run, profile, parallel, context.report, task_memory)
    return SlurmJobs(layout, to_run, submission, profile.checkpoint_every_epochs)


POLL_S = 2.0
LOST_POLLS = 30
"""Consecutive polls in which the scheduler does not know the aggregate job before waiting gives up."""


class SlurmJobs:
    """A submitted chain, followed through sacct/squeue until its aggregate job has ended (core.Jobs)."""

    poll_s = POLL_S
    finishes = True
    detached = True

    def __init__(self, layout: OutputLayout, tasks: list[Task], submission: records.Submission, every: int) -> None:
        self.layout, self.tasks, self.submission, self.every_n_epochs = layout, tasks, submission, every
        self.shows_progress = sys.stderr.isatty()
        self.ids = {
            key: value
            for key, value in (
                ("prepare", submission.prepare),
                ("tasks", ",".join(array.job_id for array in submission.arrays)),
                ("aggregate", submission.aggregate),
            )
            if value
        }
        self.lost, self.done, self.now_running = 0, False, list[str]()

    def preparing(self) -> bool:
        return False

    def poll(self) -> list[str]:
        submission = self.submission
        aggregate = records.query({submission.aggregate: f"{submission.name}-aggregate"}).get(submission.aggregate)
        states = scheduled_states(self.layout, self.tasks)
        self.now_running = [state.task.id for state in states if state.state == "running"]
        if aggregate is not None and not aggregate.live:
            if aggregate.state != "COMPLETED":
                raise SpotsweepError(
                    f"the aggregate job {submission.aggregate} ended {aggregate.state}; see its log "
                    f"{submission.log(submission.aggregate)} and rerun `spotsweep aggregate {self.layout.root}`."
                )
            self.done = True
        self.lost = 0 if aggregate is not None else self.lost + 1
        if self.lost >= LOST_POLLS:
            raise SpotsweepError(
                f"SLURM no longer knows the aggregate job {submission.aggregate}; check `sacct -j "
                f"{submission.aggregate}` and run `spotsweep status {self.layout.root}`."
            )
        return [state.task.id for state in states if state.state in ("done", "failed")]

    def running(self) -> list[str]:
        return self.now_running

    def finished(self) -> bool:
        return self.done

    def cancel(self, task_ids: Collection[str] | None = None) -> bool:
        """scancel the array elements of these tasks (of the whole chain when None)."""
        if task_ids is None:
            jobs = [job for job in (self.submission.prepare, *self.ids.get("tasks", "").split(",")) if job]
        else:
            jobs = [self.submission.elements[task_id] for task_id in task_ids if task_id in self.submission.elements]
        if jobs:
            subprocess.run(["scancel", *jobs], check=False, capture_output=True)
        return True

    def close(self) -> None:
        pass


def wait_for(layout: OutputLayout, tasks: list[Task], submission: records.Submission, progress: bool = True) -> None:
    """Poll the scheduler until the aggregate job has ended, showing how the submitted tasks fare."""
    from toolkit.backends import slurm

    jobs = SlurmJobs(layout, tasks, submission, every=0)
    watch(Execution(slurm, layout, tasks, jobs), progress)  # type: ignore[arg-type]  # a module as the Backend
