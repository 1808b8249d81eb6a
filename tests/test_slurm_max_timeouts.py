"""Past the profile's `max_timeouts`, a task stopped by its SLURM time limit is failed with "time limit" as its
reason, after a requeue that resumed from its checkpoint (the set-up is tests/test_slurm_time_limit.py's)."""

from __future__ import annotations

from pathlib import Path

from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401
from tests.slurm_hold import held_through_limits
from tests.test_slurm_time_limit import _timed_sweep
from toolkit.backends.checkpointed import read_attempts
from toolkit.launch import run_sweep, sweep_states
from toolkit.layout import OutputLayout
from toolkit.sweep import expand


def test_a_task_past_max_timeouts_fails_with_time_limit_as_its_reason(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    sweep = _timed_sweep(tmp_path, "slurm-time-limit-spent", epochs=10**6, max_timeouts=1)
    (task,) = expand(sweep)
    with held_through_limits(tmp_path / "out", task.id, attempts=2) as held:  # no CPU spent on needless epochs
        summary = run_sweep(sweep, tmp_path / "out", wait=True, report=False)
    assert len(held) == 2
    (state,) = sweep_states(tmp_path / "out")
    assert summary.states["failed"] == 1
    assert "time limit" in state.reason and "max_timeouts" in state.reason, state.reason
    attempts = read_attempts(OutputLayout(tmp_path / "out"), task.id)
    assert [a["outcome"] for a in attempts][:1] == ["requeued"] and len(attempts) == 2
    assert attempts[1]["resumed_from_epoch"] == attempts[0]["checkpoint_epoch"]
