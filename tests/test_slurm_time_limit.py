"""A real SLURM time limit, on the local SLURM: USR2 before the limit, a checkpoint, a requeue, a resume,
until the task finishes. (tests/test_slurm_max_timeouts.py: once `max_timeouts` is spent, the task is
failed with "time limit" as its reason; a file of its own, so that the two run side by side.)

SLURM counts time limits in minutes and checks them about once a minute, so its signal may come up
to a minute early: the profile here asks for 2 minutes with USR2 30 s before the limit, so that USR2
never comes before Python has installed submitit's handler (the signal's default action kills).
The tests assert what happened (attempts, reasons, results), never how long it took. They hold the task
still (tests/slurm_hold.py) from its first checkpoint until SLURM's USR2 is pending, so that the number of
limits does not depend on the machine's speed, and they mostly wait on the scheduler.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import yaml

from tests.conftest import REPO, TINY_SWEEP
from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401
from tests.slurm_hold import held_through_limits
from toolkit.backends.checkpointed import read_attempts
from toolkit.config import parse_sweep
from toolkit.launch import run_sweep, sweep_states
from toolkit.layout import OutputLayout, read_json
from toolkit.sweep import expand

EPOCHS = 200
"""Many more than a task trains before the test holds it (its first checkpoint, at epoch 5), few enough
for the attempt after the requeue to finish them (about 20-40 s under CI's load)."""


def _timed_sweep(tmp_path: Path, name: str, epochs: int, max_timeouts: int):
    """One destVI task on the tiny tissue, under a 2-minute time limit, checkpointing every 5 epochs."""
    profile = yaml.safe_load((REPO / "hpc" / "profiles" / "local.yaml").read_text())
    profile.update(
        time_min=2,
        signal_delay_s=30,
        max_timeouts=max_timeouts,
        checkpoint_every_epochs=5,
        prepare_time_min=10,
        aggregate_time_min=10,
    )
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile))
    data = copy.deepcopy(TINY_SWEEP)
    data["name"] = name
    data["methods"][0].update(amortization="both", batch_size=8, max_epochs=epochs, seed=0)
    data["executor"] = {"kind": "slurm", "profile": str(tmp_path / "profile.yaml")}
    return parse_sweep(data, name)


def test_a_task_longer_than_its_time_limit_is_requeued_resumes_and_finishes(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Held still through its first time limit, the task is requeued there, resumes from its checkpoint and
    finishes (a slow machine may need a further limit: max_timeouts leaves room)."""
    sweep = _timed_sweep(tmp_path, "slurm-time-limit", epochs=EPOCHS, max_timeouts=30)
    (task,) = expand(sweep)
    with held_through_limits(tmp_path / "out", task.id, attempts=1) as held:
        summary = run_sweep(sweep, tmp_path / "out", wait=True, report=False)
    assert len(held) == 1, "the task finished before the test could hold it: raise EPOCHS"
    layout = OutputLayout(tmp_path / "out")
    attempts = read_attempts(layout, task.id)
    assert summary.states["done"] == 1, [state.reason for state in sweep_states(tmp_path / "out")]
    assert len(attempts) >= 2
    assert [a["outcome"] for a in attempts] == ["requeued"] * (len(attempts) - 1) + ["done"]
    for before, after in itertools.pairwise(attempts):
        assert after["resumed_from_epoch"] == before["checkpoint_epoch"]  # never back to epoch 0 once saved
    result = read_json(layout.result(task.id))
    assert result["n_steps"] == EPOCHS * result["method_settings"]["steps_per_epoch"]
