"""The SLURM launcher on a real single-node SLURM (hpc/slurm), with real training on tiny data.

Each task asks for one GPU; the fake gres devices of the harness satisfy the request (SLURM sets
CUDA_VISIBLE_DEVICES as on a cluster) but there is no GPU here, so the training itself runs on the CPU.
What cannot be checked here is the GPU arithmetic, not the scheduling.

One scenario serves the tests, in order: a 4-task sweep goes in as ONE array (at most 2 at once); one
running task is killed with scancel, another is preempted with submitit's `job._interrupt()`; the run
ends (aggregate job, afterany) with 3 done and 1 failed; `--retry-failed` reruns only the killed one;
running again submits nothing.
"""

from __future__ import annotations

import copy
import inspect
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import submitit
import xarray as xr
import yaml
from typer.testing import CliRunner

from tests.conftest import REPO, TINY_SWEEP
from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401
from toolkit.backends.checkpointed import read_attempts
from toolkit.backends.slurm import records as slurm
from toolkit.backends.slurm.submit import wait_for
from toolkit.cli import app
from toolkit.config import SweepConfig, parse_sweep
from toolkit.engines import checkpoint
from toolkit.launch import RunSummary, run_sweep, sweep_states
from toolkit.layout import OutputLayout, read_json
from toolkit.sweep import Task, expand

EPOCHS = 500
"""Long enough to be caught training: the preempted task is signalled at its first checkpoint (epoch 5), a
second at most after its partner task started (the cancel comes first). Each EPOCHS is trained three times
(preempted and resumed, retried, and the uninterrupted reference): 1,500 took 4-6 min a task under CI's load."""
EVERY = 5
POLL_S = 0.2
ALIVE_EVERY = 10
"""Ask SLURM whether the job still lives every 10th poll (2 s): each query is two SLURM client calls, and 20 of
them a second (as it was) took CPU from the very tasks the test waits on."""


def _long_sweep(profile: Path) -> SweepConfig:
    """Four tasks: the first two (to be preempted and cancelled) long enough to be caught while training,
    the last two of 3 epochs, since they need only finish (expanded in this order: epochs, then seed)."""
    data = copy.deepcopy(TINY_SWEEP)
    data["name"] = "slurm-test"
    data["methods"][0].update(amortization="both", batch_size=8, max_epochs=[EPOCHS, 3], seed=[0, 1])
    data["executor"] = {"kind": "slurm", "profile": str(profile)}
    return parse_sweep(data, "slurm-test")


def _hook_wired() -> bool:
    from toolkit.methods import destvi

    return "train_kwargs" in inspect.getsource(destvi)


@dataclass
class Scenario:
    out: Path
    layout: OutputLayout
    sweep: SweepConfig
    tasks: list[Task]
    submitted: RunSummary
    submission: slurm.Submission
    preempted: Task
    cancelled: Task


def _job(submission: slurm.Submission, element: str) -> slurm.JobState | None:
    names = {array.job_id: f"{submission.name}-tasks" for array in submission.arrays}
    return slurm.query(names).get(element)


def _until(what: str, ready: Callable[[], bool], alive: Callable[[], bool]) -> None:
    """Poll until `ready`; fail (not hang) if what we wait on can no longer become ready."""
    polls = 0
    while not ready():
        if polls % ALIVE_EVERY == 0 and not alive():
            pytest.fail(f"{what}: the job ended first")
        polls += 1
        time.sleep(POLL_S)


@pytest.fixture(scope="module")
def scenario(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Scenario:  # noqa: F811
    base = tmp_path_factory.mktemp("slurm")
    profile = yaml.safe_load((REPO / "hpc" / "profiles" / "local.yaml").read_text())
    profile.update(checkpoint_every_epochs=EVERY, time_min=20)
    (base / "profile.yaml").write_text(yaml.safe_dump(profile))
    sweep = _long_sweep(base / "profile.yaml")
    out = base / "out"
    submitted = run_sweep(sweep, out, wait=False)
    layout = OutputLayout(out)
    tasks = expand(sweep)
    submission = slurm.read_submissions(layout)[-1]
    preempted, cancelled = tasks[0], tasks[1]
    assert preempted.max_epochs == cancelled.max_epochs == EPOCHS
    element = submission.elements

    def live(task: Task) -> Callable[[], bool]:
        def check() -> bool:
            job = _job(submission, element[task.id])
            return job is None or job.live

        return check

    def training(task: Task) -> bool:
        if not (layout.task_dir(task.id) / "started.json").exists():
            return False  # a file to look at, before asking SLURM
        job = _job(submission, element[task.id])
        return job is not None and job.running

    # Kill one task while it runs: scancel, as a user would.
    _until("cancel a running task", lambda: training(cancelled), live(cancelled))
    subprocess.run(["scancel", element[cancelled.id]], check=True)

    # Preempt another once it has saved a training checkpoint (or, unwired, once it trains).
    folder = layout.task_dir(preempted.id) / "checkpoint"
    saved = [folder / checkpoint.CHECKPOINT_NAME, folder / checkpoint.FAST_CHECKPOINT_NAME]  # stock, fast engine
    ready = (lambda: any(path.exists() for path in saved)) if _hook_wired() else (lambda: training(preempted))
    _until("preempt a training task", ready, live(preempted))
    submitit.SlurmJob(folder=submission.folder, job_id=element[preempted.id])._interrupt()

    wait_for(layout, tasks, submission, progress=False)  # returns: nothing hangs on the killed task
    return Scenario(out, layout, sweep, tasks, submitted, submission, preempted, cancelled)


def test_submission_returns_job_ids_without_waiting(scenario: Scenario) -> None:
    assert not scenario.submitted.waited
    assert scenario.submitted.submitted == 4
    assert scenario.submitted.jobs == {
        "prepare": scenario.submission.prepare,
        "tasks": scenario.submission.arrays[0].job_id,
        "aggregate": scenario.submission.aggregate,
    }


def test_four_gpu_tasks_ran_as_one_throttled_array_after_prepare(scenario: Scenario) -> None:
    submission = scenario.submission
    assert len(submission.arrays) == 1
    array = submission.arrays[0]
    assert array.task_ids == [task.id for task in scenario.tasks]
    script = (Path(submission.folder.replace("%j", array.job_id)) / f"{array.job_id}_submission.sh").read_text()
    assert "#SBATCH --array=0-3%2" in script
    assert "#SBATCH --gpus-per-node=1" in script
    assert f"#SBATCH --dependency=afterok:{submission.prepare}" in script

    output = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,AllocTRES", "-j", array.job_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    tres = dict(line.split("|", 1) for line in output.splitlines())
    assert sorted(tres) == [f"{array.job_id}_{i}" for i in range(4)]
    assert all("gres/gpu=1" in value for value in tres.values()), tres

    for task in scenario.tasks:
        if task != scenario.cancelled:
            job = read_json(scenario.layout.result(task.id))["provenance"]["job"]
            assert job["SLURM_ARRAY_JOB_ID"] == array.job_id
            assert job["SUBMITIT_EXECUTOR"] == "slurm"


def test_aggregate_job_ran_after_the_array_and_kept_every_task(scenario: Scenario) -> None:
    submission = scenario.submission
    script = Path(submission.folder.replace("%j", submission.aggregate)) / f"{submission.aggregate}_submission.sh"
    assert f"--dependency=afterany:{submission.prepare}:{submission.arrays[0].job_id}" in script.read_text()
    aggregate = slurm.query({submission.aggregate: f"{submission.name}-aggregate"})[submission.aggregate]
    assert aggregate.state == "COMPLETED"
    with xr.open_dataset(scenario.out / "summary.nc") as summary:
        status = summary["status"].values.ravel()
        assert sorted(s for s in status if s != "absent") == ["done", "done", "done", "failed"]
    assert "4 tasks: 3 done" in (scenario.out / "report" / "index.md").read_text()


def test_cancelled_task_is_reported_failed_with_its_log_and_reason(scenario: Scenario) -> None:
    states = {state.task.id: state for state in sweep_states(scenario.out)}
    killed = states[scenario.cancelled.id]
    assert killed.state == "failed"
    assert "CANCELLED" in killed.reason
    assert killed.job == scenario.submission.elements[scenario.cancelled.id]
    assert Path(killed.log).is_file()
    assert read_json(scenario.layout.error(scenario.cancelled.id))["job"] == killed.job  # for aggregate & retry
    assert [s.state for s in states.values()].count("done") == 3

    result = CliRunner().invoke(app, ["status", str(scenario.out)], terminal_width=300)
    assert result.exit_code == 0, result.output
    assert "3 done, 1 failed" in result.output
    assert "CANCELLED" in result.output
    assert f"array {scenario.submission.arrays[0].job_id} (4 tasks)" in result.output


def test_preempted_task_was_requeued_and_completed(scenario: Scenario) -> None:
    attempts = read_attempts(scenario.layout, scenario.preempted.id)
    assert [attempt["outcome"] for attempt in attempts] == ["requeued", "done"]
    element = scenario.submission.elements[scenario.preempted.id]
    assert {attempt["job"] for attempt in attempts} == {element}  # the same array element, requeued
    assert scenario.layout.result(scenario.preempted.id).exists()
    assert not scenario.layout.error(scenario.preempted.id).exists()


def test_preempted_task_resumed_from_its_checkpoint_with_the_uninterrupted_result(scenario: Scenario) -> None:
    """Needs the hook in the destVI adapter: `model.train(..., **checkpoint.train_kwargs())`."""
    if not _hook_wired():
        pytest.fail(
            "toolkit/methods/destvi.py does not pass **toolkit.engines.checkpoint.train_kwargs() to model.train(), "
            "so a preempted task retrains from epoch 0; add it (see hpc/slurm/README.md).",
            pytrace=False,
        )
    first, last = read_attempts(scenario.layout, scenario.preempted.id)
    assert first["checkpoint_epoch"] >= EVERY
    assert last["resumed_from_epoch"] == first["checkpoint_epoch"]
    result = read_json(scenario.layout.result(scenario.preempted.id))

    # The same task trained without interruption, here, on one thread like the array task.
    import anndata as ad
    import torch

    from toolkit.methods import destvi
    from toolkit.prepare import ensure_reference_model
    from toolkit.pseudospots import read_spots

    task, layout = scenario.preempted, scenario.layout
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fit = destvi.fit(
            read_spots(layout.spots(task.dataset)),
            ad.read_h5ad(layout.reference(task.dataset)),
            ensure_reference_model(task, layout),
            task,
        )
    finally:
        torch.set_num_threads(threads)
    assert result["n_steps"] == fit.n_steps
    frame: dict[str, Any] = result["proportions"]
    assert frame["columns"] == list(fit.proportions.columns)
    assert np.array_equal(np.asarray(frame["values"]), fit.proportions.to_numpy().astype(float))


@pytest.fixture(scope="module")
def retried(scenario: Scenario) -> tuple[RunSummary, dict[str, int]]:
    before = {t.id: scenario.layout.result(t.id).stat().st_mtime_ns for t in scenario.tasks if t != scenario.cancelled}
    summary = run_sweep(scenario.sweep, scenario.out, retry_failed=True, wait=True, report=False)
    return summary, before


def test_retry_failed_reruns_only_the_failed_task(scenario: Scenario, retried: tuple) -> None:
    summary, before = retried
    assert summary.submitted == 1 and summary.skipped == 3
    assert summary.states == {"done": 4, "failed": 0, "started": 0, "missing": 0}
    submissions = slurm.read_submissions(scenario.layout)
    assert len(submissions) == 2
    assert [array.task_ids for array in submissions[-1].arrays] == [[scenario.cancelled.id]]
    assert submissions[-1].prepare == ""  # everything was prepared: no prepare job to queue behind
    after = {task_id: scenario.layout.result(task_id).stat().st_mtime_ns for task_id in before}
    assert after == before


def test_resubmitting_a_finished_sweep_submits_nothing(scenario: Scenario, retried: tuple) -> None:
    again = run_sweep(scenario.sweep, scenario.out, wait=True, report=False)
    assert again.submitted == 0 and again.skipped == 4 and again.jobs == {}
    assert len(slurm.read_submissions(scenario.layout)) == 2
    queued = subprocess.run(["squeue", "-h", "-n", f"spotsweep-{scenario.sweep.name}-tasks"], capture_output=True)
    assert queued.stdout.strip() == b""


def test_failed_prepare_job_fails_the_tasks_with_its_reason_and_the_run_ends(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The array depends on prepare (afterok, killed when that cannot be met); aggregate runs anyway."""
    data = copy.deepcopy(TINY_SWEEP)
    data["name"] = "slurm-bad-prepare"
    for name in ("cells.h5ad", "reference.h5ad"):  # present, so the sweep file is valid; unreadable on the node
        (tmp_path / name).write_text("not an AnnData file")
    dataset = {"name": "broken", "spatial": str(tmp_path / "cells.h5ad"), "reference": str(tmp_path / "reference.h5ad")}
    data["datasets"] = [{**dataset, "window": 750}]
    data["methods"][0].update(amortization="both", batch_size=[8, 64])
    data["executor"] = {"kind": "slurm", "profile": str(REPO / "hpc" / "profiles" / "local.yaml")}
    summary = run_sweep(parse_sweep(data, "bad"), tmp_path / "out", wait=True, report=False)
    assert summary.submitted == 2
    assert summary.states["failed"] == 2 and summary.states["done"] == 0
    for state in sweep_states(tmp_path / "out"):
        assert state.state == "failed"
        assert f"the prepare job {summary.jobs['prepare']} ended FAILED" in state.reason
        assert "cannot read the AnnData" in state.reason
        assert Path(state.log).is_file()


def test_harness_start_is_idempotent(slurm_cluster: SlurmCluster) -> None:  # noqa: F811
    """Starting a running cluster changes nothing (the tests and a user may both start it)."""
    import os

    if os.geteuid() != 0:
        pytest.skip("start.sh needs root")
    pid = (slurm_cluster.state / "run" / "slurmctld.pid").read_text()
    result = subprocess.run([str(REPO / "hpc" / "slurm" / "start.sh")], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "already running" in result.stderr
    assert (slurm_cluster.state / "run" / "slurmctld.pid").read_text() == pid


def test_scheduler_output_parsing() -> None:
    """Pending array elements come back from sacct as one bracketed row."""
    assert slurm._expand("12_[0-3%2]") == ["12_0", "12_1", "12_2", "12_3"]
    assert slurm._expand("12_[1,4-5]") == ["12_1", "12_4", "12_5"]
    assert slurm._expand("12_3") == ["12_3"]


def test_last_error_line(tmp_path: Path) -> None:
    log = tmp_path / "job.err"
    log.write_text("submitit INFO starting\nTraceback ...\nValueError: bad batch\nsubmitit INFO done\n")
    assert slurm.last_error_line(log) == "ValueError: bad batch"
    log.write_text(
        "slurmstepd-vm: error: *** JOB 12 ON vm CANCELLED AT 2026-01-01T00:00:00 ***\n"
        "srun: forcing job termination\nsrun: error: vm: task 0: Killed\n"
    )
    assert slurm.last_error_line(log).endswith("*** JOB 12 ON vm CANCELLED AT 2026-01-01T00:00:00 ***")
    assert slurm.last_error_line(tmp_path / "absent.err") == ""


def test_packed_array_elements() -> None:
    """Element i of a packed array runs tasks i*pack .. i*pack+pack-1; one element is a plain job."""
    packed = slurm.Submission(1, 0.0, "s", "f/%j", "", [slurm.ArrayRecord("7", ["a", "b", "c"], pack=2)], "9")
    assert packed.elements == {"a": "7_0", "b": "7_0", "c": "7_1"}
    single = slurm.Submission(1, 0.0, "s", "f/%j", "", [{"job_id": "8", "task_ids": ["a", "b"], "pack": 2}], "9")
    assert single.elements == {"a": "8", "b": "8"}
    unpacked = slurm.Submission(1, 0.0, "s", "f/%j", "", [{"job_id": "5", "task_ids": ["a", "b"]}], "9")
    assert unpacked.elements == {"a": "5_0", "b": "5_1"}  # records written before packing existed
