"""Out of memory on the real local SLURM, and the retry that asks for more.

The test cluster enforces each job's --mem as a cluster does (jobacct_gather/linux with OverMemoryKill:
no cgroups here). A destVI task given 128 MB is killed while it imports torch; `status` says it ran out
of memory, and `run --retry-failed` resubmits just that task with retry_mem_factor (32) times its last
request: 4 GB, and it finishes. With cgroups a cluster accounts such a job OUT_OF_MEMORY; SLURM 22.05's
OverMemoryKill accounts it FAILED and writes the reason into the job's log: both read as out of memory.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import yaml

from tests.conftest import REPO, TINY_SWEEP
from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401
from toolkit.backends.slurm import records as slurm
from toolkit.backends.slurm.memory import task_memory
from toolkit.backends.slurm.profile import SlurmProfile
from toolkit.config import parse_sweep
from toolkit.launch import run_sweep, sweep_states
from toolkit.layout import OutputLayout
from toolkit.status import TaskState
from toolkit.sweep import expand


def _requested_mb(job_id: str) -> str:
    """sacct's ReqMem of a job (e.g. '4G' or '128M')."""
    output = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "ReqMem", "-j", job_id], capture_output=True, text=True, check=True
    ).stdout
    return output.split()[0]


def test_a_task_out_of_memory_is_reported_so_and_its_retry_asks_for_more(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    profile = yaml.safe_load((REPO / "hpc" / "profiles" / "local.yaml").read_text())
    profile.update(
        mem_gb=0.125, prepare_mem_gb=2, aggregate_mem_gb=2, retry_mem_factor=32, time_min=10, prepare_time_min=10
    )
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile))
    data = copy.deepcopy(TINY_SWEEP)
    data["name"] = "slurm-oom"
    data["methods"][0].update({"batch_size": 16, "max_epochs": 5})
    data["executor"] = {"kind": "slurm", "profile": str(tmp_path / "profile.yaml")}
    sweep = parse_sweep(data, "slurm-oom")
    out = tmp_path / "out"

    run_sweep(sweep, out, wait=True, report=False)
    first = slurm.read_submissions(OutputLayout(out))[-1]
    states = {state.task.id: state for state in sweep_states(out)}
    destvi = [state for state in states.values() if state.task.method == "destvi"]
    assert destvi and all(state.state == "failed" for state in destvi), destvi
    for state in destvi:
        assert state.cause == "OUT_OF_MEMORY" and "ran out of memory" in state.reason, state
    assert _requested_mb(first.arrays[0].job_id) in ("128M", "0.12G")

    summary = run_sweep(sweep, out, retry_failed=True, wait=True, report=False)
    assert summary.states["done"] == len(states), sweep_states(out)
    retry = slurm.read_submissions(OutputLayout(out))[-1]
    assert not retry.prepare  # prepared already: only the failed tasks went in again
    assert sorted(task_id for array in retry.arrays for task_id in array.task_ids) == sorted(s.task.id for s in destvi)
    assert [array.mem_gb for array in retry.arrays] == [4.0]
    assert _requested_mb(retry.arrays[0].job_id) in ("4G", "4096M")


def test_only_tasks_that_ran_out_of_memory_ask_for_more_up_to_the_cap() -> None:
    tasks = {task.id: task for task in expand(parse_sweep(copy.deepcopy(TINY_SWEEP), "t"))}
    oom, other, again = list(tasks)[:3]

    def failed(task_id: str, cause: str) -> TaskState:
        return TaskState(tasks[task_id], "failed", cause=cause)

    profile = SlurmProfile(mem_gb=4, retry_mem_factor=2, max_mem_gb=12)
    submissions = [
        slurm.Submission(1, 0.0, "s", "f/%j", "", [slurm.ArrayRecord("7", [oom, other, again], mem_gb=4)], "9"),
        slurm.Submission(2, 0.0, "s", "f/%j", "", [slurm.ArrayRecord("8", [again], mem_gb=8)], "10"),
    ]
    states = [failed(oom, "OUT_OF_MEMORY"), failed(other, "NODE_FAIL"), failed(again, "OUT_OF_MEMORY")]
    assert task_memory(states, profile, submissions) == {oom: 8, other: 4, again: 12}
    # a task once raised keeps its raise when it fails for another reason; without mem_gb nothing scales
    assert task_memory([failed(again, "NODE_FAIL")], profile, submissions) == {again: 8}
    assert task_memory([failed(oom, "OUT_OF_MEMORY")], SlurmProfile(), []) == {oom: None}


def test_out_of_memory_is_read_from_sacct_or_from_slurmstepd_in_the_log(tmp_path: Path) -> None:
    killed = tmp_path / "killed.err"
    killed.write_text(
        "epoch 3\nslurmstepd-node7: error: StepId=12.0 exceeded memory limit (178483200 > 134217728), being killed\n"
        "slurmstepd-node7: error: *** STEP 12.0 ON node7 CANCELLED AT 2026-11-30T09:30:35 ***\n"
    )
    plain = tmp_path / "plain.err"
    plain.write_text("Traceback ...\nValueError: out of memory in my own code\n")
    assert slurm.ran_out_of_memory(slurm.JobState("12", "OUT_OF_MEMORY"), tmp_path / "absent.err")  # cgroups
    assert slurm.ran_out_of_memory(slurm.JobState("12", "FAILED"), killed)  # OverMemoryKill: FAILED + the line
    assert "(178483200 > 134217728)" in slurm.memory_kill_line(killed)
    assert not slurm.ran_out_of_memory(slurm.JobState("12", "FAILED"), plain)  # only slurmstepd's word counts
    assert not slurm.ran_out_of_memory(slurm.JobState("12", "CANCELLED"), killed)
