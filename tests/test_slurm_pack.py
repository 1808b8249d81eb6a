"""Packing on a real single-node SLURM: one array element runs several tasks side by side.

A 4-task sweep with `pack: 2` goes in as an array of 2 elements, each running 2 tasks in 2 worker
processes on its (fake) GPU. The first element is preempted (submitit's `job._interrupt()`: SIGTERM,
then USR2) while both its tasks train: each saves at its epoch end, the element is requeued as a whole,
and each task resumes from its own checkpoint.

Both tasks are held still (SIGSTOP, tests/slurm_hold.py) from their first checkpoint until the
preemption's USR2 is pending on each, then let go. Before, the element was preempted as soon as one task
had saved while both trained on, so what the signals found depended on the machine's load: the two
workers start training seconds apart on an idle machine and tens of seconds apart on a loaded one (CI once
saw the first finish 1,000 epochs before the second saved), and scancel's two signals took seconds to
arrive. The other task was then training, loading its data and model, or not yet started, and which of
those happened was chosen by the load, not by the test; under load the test once failed. Held, both are
training when the signals come, on any machine.
"""

from __future__ import annotations

import copy
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import submitit
import yaml

from tests.conftest import REPO, TINY_SWEEP
from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401
from tests.slurm_hold import let_go_once_usr2_pending, resumed_on_failure, suspend_each_once_saved
from toolkit.backends.checkpointed import read_attempts
from toolkit.backends.slurm import records as slurm
from toolkit.backends.slurm.submit import wait_for
from toolkit.config import parse_sweep
from toolkit.launch import run_sweep, sweep_states
from toolkit.layout import OutputLayout, read_json
from toolkit.sweep import Task, expand

EPOCHS = 300  # the element is preempted at its tasks' first checkpoint (epoch 5): far from the end
EVERY = 5


@dataclass
class Packed:
    layout: OutputLayout
    tasks: list[Task]
    submission: slurm.Submission
    preempted: list[Task]
    first_saved: Task
    """A task of the preempted element (each had saved a checkpoint when the preemption came)."""


@pytest.fixture(scope="module")
def packed(slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Packed:  # noqa: F811
    base = tmp_path_factory.mktemp("slurm-pack")
    profile = yaml.safe_load((REPO / "hpc" / "profiles" / "local.yaml").read_text())
    # memory per element: its 2 worker processes each hold torch and scvi-tools (~1 GB), enforced by SLURM
    profile.update(pack=2, cpus_per_task=2, mem_gb=4, checkpoint_every_epochs=EVERY, time_min=20)
    (base / "profile.yaml").write_text(yaml.safe_dump(profile))
    data = copy.deepcopy(TINY_SWEEP)
    data["name"] = "slurm-pack"
    # element 0: two long tasks, to be preempted while training; element 1: two of 3 epochs, to run once
    data["methods"][0].update(amortization="both", batch_size=8, max_epochs=[EPOCHS, 3], seed=[0, 1])
    data["executor"] = {"kind": "slurm", "profile": str(base / "profile.yaml")}
    sweep = parse_sweep(data, "slurm-pack")
    out = base / "out"
    run_sweep(sweep, out, wait=False)
    layout = OutputLayout(out)
    tasks = expand(sweep)
    submission = slurm.read_submissions(layout)[-1]
    first = [task for task in tasks if submission.elements[task.id] == f"{submission.arrays[0].job_id}_0"]

    held = suspend_each_once_saved(layout, [task.id for task in first])  # each still at its first checkpoint
    with resumed_on_failure(held):
        submitit.SlurmJob(folder=submission.folder, job_id=submission.elements[first[0].id])._interrupt()
    let_go_once_usr2_pending(held)
    wait_for(layout, tasks, submission, progress=False)
    return Packed(layout, tasks, submission, first, first[0])


def test_four_tasks_went_in_as_two_elements_of_two(packed: Packed) -> None:
    array = packed.submission.arrays[0]
    assert array.pack == 2 and array.task_ids == [task.id for task in packed.tasks]
    script = (Path(packed.submission.folder.replace("%j", array.job_id)) / f"{array.job_id}_submission.sh").read_text()
    assert "#SBATCH --array=0-1%2" in script
    assert "#SBATCH --gpus-per-node=1" in script
    elements = [packed.submission.elements[task.id] for task in packed.tasks]
    assert elements == [f"{array.job_id}_0"] * 2 + [f"{array.job_id}_1"] * 2
    assert len(packed.preempted) == 2
    assert all(task.max_epochs == EPOCHS for task in packed.preempted)


def test_every_task_is_done_and_ran_in_its_element(packed: Packed) -> None:
    states = {state.task.id: state for state in sweep_states(packed.layout.root)}
    assert [state.state for state in states.values()] == ["done"] * 4, [
        (s.task.id, s.state, s.reason) for s in states.values()
    ]
    for task in packed.tasks:
        result = read_json(packed.layout.result(task.id))
        job = result["provenance"]["job"]
        element = packed.submission.elements[task.id]
        assert f"{job['SLURM_ARRAY_JOB_ID']}_{job['SLURM_ARRAY_TASK_ID']}" == element
        assert result["method_settings"]["batch_size"] == 8


def test_the_preempted_element_saved_requeued_and_resumed_its_tasks(packed: Packed) -> None:
    saver = read_attempts(packed.layout, packed.first_saved.id)
    assert [attempt["outcome"] for attempt in saver] == ["requeued", "done"], saver
    assert EVERY <= saver[0]["checkpoint_epoch"] < EPOCHS
    for task in packed.preempted:
        attempts = read_attempts(packed.layout, task.id)
        # both were training when the preemption came (held until then): each requeued, then done
        assert [attempt["outcome"] for attempt in attempts] == ["requeued", "done"], attempts
        assert {attempt["job"] for attempt in attempts} == {packed.submission.elements[task.id]}  # requeued, same id
        assert EVERY <= attempts[0]["checkpoint_epoch"] == attempts[1]["resumed_from_epoch"]
        assert not packed.layout.error(task.id).exists()
    output = subprocess.run(
        [
            "sacct",
            "-n",
            "-P",
            "-X",
            "-D",
            "-o",
            "JobID,State",
            "-j",
            packed.submission.elements[packed.preempted[0].id],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "REQUEUED" in output or "PREEMPTED" in output, output


def test_the_unpreempted_element_ran_once(packed: Packed) -> None:
    for task in packed.tasks:
        if task not in packed.preempted:
            attempts = read_attempts(packed.layout, task.id)
            assert [attempt["outcome"] for attempt in attempts] == ["done"]
            assert attempts[0]["resumed_from_epoch"] is None
