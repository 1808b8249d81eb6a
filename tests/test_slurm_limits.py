"""SLURM limits and a cancelled prepare, on the real local SLURM: quick control tasks only (no training).

- A sweep larger than the profile's `max_array_size` (the cluster's MaxArraySize; lowered to 3 here)
  goes in as several arrays, and every task runs exactly once.
- A prepare job cancelled by a user (scancel) does not leave the array hanging: its tasks end failed
  with the prepare job's state as the reason, and the run ends.
"""

from __future__ import annotations

import copy
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TINY_SWEEP
from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401
from toolkit.backends.checkpointed import read_attempts
from toolkit.backends.slurm import records as slurm
from toolkit.backends.slurm.submit import wait_for
from toolkit.config import parse_sweep
from toolkit.launch import run_sweep, sweep_states
from toolkit.layout import OutputLayout
from toolkit.sweep import expand


def _controls_sweep(tmp_path: Path, name: str, seeds: list[int], **profile_keys: object):
    """Control tasks (truth, uniform, reference, nnls) on one tiny tissue per seed, through SLURM."""
    profile = yaml.safe_load((REPO / "hpc" / "profiles" / "local.yaml").read_text())
    profile.update(time_min=5, prepare_time_min=5, aggregate_time_min=5, **profile_keys)
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile))
    data = copy.deepcopy(TINY_SWEEP)
    data["name"] = name
    base = data["datasets"][0]
    data["datasets"] = [
        {**base, "name": f"tissue-{seed}", "simulate": {**base["simulate"], "seed": seed}} for seed in seeds
    ]
    data["methods"] = [{"name": "control"}]
    data["executor"] = {"kind": "slurm", "profile": str(tmp_path / "profile.yaml")}
    return parse_sweep(data, name)


def test_a_sweep_over_max_array_size_goes_in_several_arrays_each_task_once(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    sweep = _controls_sweep(tmp_path, "slurm-split", [1, 2], max_array_size=3)
    tasks = expand(sweep)
    assert len(tasks) == 8
    summary = run_sweep(sweep, tmp_path / "out", wait=True, report=False)
    layout = OutputLayout(tmp_path / "out")
    submission = slurm.read_submissions(layout)[-1]
    assert [len(array.task_ids) for array in submission.arrays] == [3, 3, 2]
    assert sorted(task_id for array in submission.arrays for task_id in array.task_ids) == sorted(t.id for t in tasks)
    assert summary.states["done"] == 8
    results = sorted(path.parent.name for path in (tmp_path / "out" / "tasks").glob("*/result.json"))
    assert results == sorted(t.id for t in tasks)  # every task once: one result each, no other
    for task in tasks:  # ... and each ran in one attempt of one array element
        attempts = read_attempts(layout, task.id)
        assert [attempt["outcome"] for attempt in attempts] == ["done"], attempts
        assert attempts[0]["job"] == submission.elements[task.id]


def test_a_cancelled_prepare_job_fails_the_tasks_with_its_state_and_the_run_ends(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    sweep = _controls_sweep(tmp_path, "slurm-cancel-prepare", [3])
    tasks = expand(sweep)
    summary = run_sweep(sweep, tmp_path / "out", wait=False, report=False)
    layout = OutputLayout(tmp_path / "out")
    submission = slurm.read_submissions(layout)[-1]
    subprocess.run(["scancel", summary.jobs["prepare"]], check=True)
    start = time.monotonic()
    wait_for(layout, tasks, submission, progress=False)  # returns: nothing waits on a prepare that never ran
    assert time.monotonic() - start < 3600  # (a guard against a hang, not a speed test)
    states = sweep_states(tmp_path / "out")
    assert {state.state for state in states} == {"failed"}
    for state in states:
        assert f"the prepare job {summary.jobs['prepare']} ended CANCELLED" in state.reason, state.reason


@pytest.mark.parametrize("limit", [0, -1])
def test_max_array_size_must_be_positive(limit: int) -> None:
    from toolkit.backends.slurm.profile import parse_profile
    from toolkit.errors import SpotsweepError

    with pytest.raises(SpotsweepError, match="max_array_size"):
        parse_profile({"max_array_size": limit}, "p.yaml")
