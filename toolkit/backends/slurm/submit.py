"""Submitting a sweep to SLURM: prepare job -> one array of all tasks -> aggregate job, then (maybe) wait.

The chain is built from SLURM dependencies, so it runs on its own once submitted: the array waits for
the prepare job (afterok; if prepare fails the array is cancelled rather than left pending forever) and
the aggregate job waits for the array whatever its outcome (afterany). A sweep larger than the
cluster's MaxArraySize becomes several arrays, sharing the parallelism limit.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import submitit
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from toolkit.backends import apptainer
from toolkit.backends.common import RunSummary, input_files, tasks_to_run
from toolkit.backends.slurm import memory, records
from toolkit.backends.slurm.dask import cluster_options
from toolkit.backends.slurm.jobs import SweepTask, finish_sweep
from toolkit.backends.slurm.pack import PackedSweepTask
from toolkit.backends.slurm.profile import SlurmProfile
from toolkit.backends.slurm.status import scheduled_states
from toolkit.config import SweepConfig
from toolkit.errors import SpotsweepError
from toolkit.freshness import current_inputs, prepared_is_current
from toolkit.layout import OutputLayout
from toolkit.prepare import prepare, reference_model_id
from toolkit.status import count_states
from toolkit.sweep import Task

POLL_S = 2.0
LOST_POLLS = 30
"""Consecutive polls in which the scheduler does not know the aggregate job before waiting gives up."""


def _python(sweep: SweepConfig, profile: SlurmProfile, layout: OutputLayout) -> str:
    """The command that starts each job's python: the profile's image (else the sweep's), else a python."""
    image = profile.container or sweep.executor.container
    if image is not None:
        binds = apptainer.job_binds(layout.root, [*sweep.executor.binds, *profile.binds], input_files(sweep))
        return apptainer.python_command(Path(image), binds, slurm=True)
    return profile.python or shlex.quote(sys.executable)


def _executor(
    layout: OutputLayout, profile: SlurmProfile, python: str, mem_gb: float | None, **parameters: object
) -> submitit.SlurmExecutor:
    """A fresh executor per job kind (submitit parameters persist across submits)."""
    executor = submitit.SlurmExecutor(
        folder=layout.logs / "slurm" / "%j", max_num_timeout=profile.max_timeouts, python=python
    )
    common: dict[str, object] = {
        "partition": profile.partition,
        "account": profile.account,
        "qos": profile.qos,
        "cpus_per_task": profile.cpus_per_task,
        "signal_delay_s": profile.signal_delay_s,
        "setup": list(profile.setup) or None,
        "mem": memory.mem_option(mem_gb) if mem_gb is not None else None,
    }
    executor.update_parameters(**{key: value for key, value in {**common, **parameters}.items() if value is not None})
    return executor


def _gpu_parameters(profile: SlurmProfile, gpus: int) -> dict[str, object]:
    if not gpus:
        return {}
    if profile.gpu_type:
        return {"gres": f"gpu:{profile.gpu_type}:{gpus}"}
    return {"gpus_per_node": gpus}


def prepared(sweep: SweepConfig, layout: OutputLayout, to_run: list[Task]) -> bool:
    """Pseudospots, references and reference models all on disk already, from the inputs as they are now: no
    prepare job needed (a retry)."""
    datasets = {task.dataset for task in to_run}
    for dataset in datasets:
        if not (layout.spots(dataset).exists() and layout.reference(dataset).exists()):
            return False
    for config in sweep.datasets:
        if config.name in datasets and not prepared_is_current(layout, config, current_inputs(config)):
            return False
    for task in to_run:
        model_id = reference_model_id(task)
        if model_id is not None and not (layout.model_dir(task.dataset, model_id) / "training.json").exists():
            return False
    return True


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
    submitted: list[str] = []
    task_memory = task_memory or {}
    try:
        return _submit_chain(sweep, layout, to_run, profile, parallel, report, submitted, task_memory)
    except BaseException:
        if submitted:  # a half-submitted chain would run without its aggregate (or its array)
            subprocess.run(["scancel", *submitted], check=False, capture_output=True)
        raise


def _submit_chain(
    sweep: SweepConfig,
    layout: OutputLayout,
    to_run: list[Task],
    profile: SlurmProfile,
    parallel: int,
    report: bool,
    submitted: list[str],
    task_memory: dict[str, float | None],
) -> records.Submission:
    name = f"spotsweep-{sweep.name}"
    extra = dict(profile.sbatch)
    root = str(layout.root.resolve())
    gpus = _gpu_parameters(profile, profile.gpus_per_task)
    python = _python(sweep, profile, layout)

    prepare_id = ""
    after_prepare: dict[str, str] = {}
    if not prepared(sweep, layout, to_run):
        prepare_executor = _executor(
            layout,
            profile,
            python,
            profile.prepare_mem_gb or profile.mem_gb,
            job_name=f"{name}-prepare",
            time=profile.prepare_time_min,
            additional_parameters=extra,
            **gpus,
        )
        dask_options = None
        if sweep.prepare.scheduler == "slurm":  # the grid's Dask workers as jobs with the profile's resources
            binds = [*sweep.executor.binds, *(str(p.resolve().parent) for p in input_files(sweep)), root]
            dask_options = cluster_options(profile, binds)
        prepare_job = prepare_executor.submit(
            prepare, sweep.model_dump(mode="json"), [task.to_dict() for task in to_run], root, dask_options
        )
        prepare_id = prepare_job.job_id
        submitted.append(prepare_id)
        after_prepare = {"dependency": f"afterok:{prepare_id}", "kill-on-invalid-dep": "yes"}

    chunks = [
        (mem_gb, chunk)
        for mem_gb, group in memory.by_request(to_run, {t.id: task_memory.get(t.id, profile.mem_gb) for t in to_run})
        for chunk in _chunks(group, profile.max_array_size * profile.pack)
    ]
    task_runner = _task_runner(root, profile)
    arrays: list[records.ArrayRecord] = []
    for mem_gb, chunk in chunks:
        array_executor = _executor(
            layout,
            profile,
            python,
            mem_gb,
            job_name=f"{name}-tasks",
            time=profile.time_min,
            array_parallelism=max(1, parallel // len(chunks)),
            additional_parameters={**extra, **after_prepare},
            **gpus,
        )
        if profile.pack == 1:
            elements: list[object] = [task.to_dict() for task in chunk]
        else:
            elements = [[task.to_dict() for task in pack] for pack in _chunks(chunk, profile.pack)]
        jobs = array_executor.map_array(task_runner, elements)
        arrays.append(
            records.ArrayRecord(jobs[0].job_id.split("_")[0], [task.id for task in chunk], profile.pack, mem_gb)
        )
        submitted.append(arrays[-1].job_id)

    after = ":".join([job for job in (prepare_id, *(array.job_id for array in arrays)) if job])
    aggregate_executor = _executor(
        layout,
        profile,
        python,
        profile.aggregate_mem_gb or profile.mem_gb,
        job_name=f"{name}-aggregate",
        time=profile.aggregate_time_min,
        cpus_per_task=1,
        additional_parameters={**extra, "dependency": f"afterany:{after}"},
    )
    aggregate_job = aggregate_executor.submit(finish_sweep, root, report)

    submission = records.Submission(
        number=len(records.read_submissions(layout)) + 1,
        time=time.time(),
        name=name,
        folder=str(layout.logs.resolve() / "slurm" / "%j"),
        prepare=prepare_id,
        arrays=arrays,
        aggregate=aggregate_job.job_id,
    )
    records.record_submission(layout, submission)
    return submission


def wait_for(layout: OutputLayout, tasks: list[Task], submission: records.Submission, progress: bool = True) -> None:
    """Poll the scheduler until the aggregate job has ended, showing how the submitted tasks fare."""
    ids = {task.id for task in tasks}
    lost = 0
    columns = (
        TextColumn("tasks"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[running]} running, {task.fields[failed]} failed"),
    )
    with Progress(*columns, TimeElapsedColumn(), transient=False, disable=not progress) as bar:
        handle = bar.add_task("tasks", total=len(ids), running=0, failed=0)
        while True:
            aggregate = records.query({submission.aggregate: f"{submission.name}-aggregate"}).get(submission.aggregate)
            states = [s for s in scheduled_states(layout, tasks) if s.task.id in ids]
            counts = count_states(states)
            bar.update(
                handle,
                completed=counts["done"] + counts["failed"],
                running=counts.get("running", 0),
                failed=counts["failed"],
            )
            if aggregate is not None and not aggregate.live:
                if aggregate.state != "COMPLETED":
                    log = submission.log(submission.aggregate)
                    raise SpotsweepError(
                        f"the aggregate job {submission.aggregate} ended {aggregate.state}; see its log {log} "
                        f"and rerun `spotsweep aggregate {layout.root}`."
                    )
                return
            lost = 0 if aggregate is not None else lost + 1
            if lost >= LOST_POLLS:
                raise SpotsweepError(
                    f"SLURM no longer knows the aggregate job {submission.aggregate}; check `sacct -j "
                    f"{submission.aggregate}` and run `spotsweep status {layout.root}`."
                )
            time.sleep(POLL_S)


def _submit_or_explain(
    sweep: SweepConfig,
    layout: OutputLayout,
    to_run: list[Task],
    profile: SlurmProfile,
    parallel: int,
    report: bool,
    task_memory: dict[str, float | None],
) -> records.Submission:
    """`submit`, with sbatch's refusals and a missing SLURM turned into one sentence each."""
    try:
        return submit(sweep, layout, to_run, profile, parallel, report, task_memory)
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


def run_on_slurm(
    sweep: SweepConfig,
    layout: OutputLayout,
    tasks: list[Task],
    profile: SlurmProfile,
    *,
    retry_failed: bool,
    max_parallel: int | None,
    report: bool,
    wait: bool,
) -> RunSummary:
    """Submit what is not done (nothing if all is), then wait for the aggregate job unless told not to."""
    start = time.perf_counter()
    states = scheduled_states(layout, tasks)
    to_run = tasks_to_run(states, retry_failed)
    if not to_run:
        finish_sweep(str(layout.root), report)
        return RunSummary(0, len(tasks), count_states(scheduled_states(layout, tasks)), time.perf_counter() - start)
    parallel = max_parallel or sweep.executor.max_parallel or profile.array_parallelism
    task_memory = memory.task_memory(states, profile, records.read_submissions(layout))
    submission = _submit_or_explain(sweep, layout, to_run, profile, parallel, report, task_memory)
    if wait:
        wait_for(layout, to_run, submission, progress=sys.stderr.isatty())
    return RunSummary(
        submitted=len(to_run),
        skipped=len(tasks) - len(to_run),
        states=count_states(scheduled_states(layout, tasks)),
        seconds=time.perf_counter() - start,
        jobs={
            key: value
            for key, value in (
                ("prepare", submission.prepare),
                ("tasks", ",".join(array.job_id for array in submission.arrays)),
                ("aggregate", submission.aggregate),
            )
            if value
        },
        waited=wait,
    )
