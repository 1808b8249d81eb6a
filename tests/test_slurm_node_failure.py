"""A node failure on a real SLURM: the node goes down while two destVI tasks train on it.

`scontrol update state=down` kills every job on the node at once, as a crashed node does (SLURM
accounts them NODE_FAIL). SLURM requeues batch jobs after a node failure by default, so each element
runs again on the node once it is back and its task resumes from its last checkpoint; a task whose
element was not requeued is reported failed and `--retry-failed` resumes it the same way. Either way,
afterwards every task is done, exactly once: one result each, one attempt that finished.

Taking the node down stops every job on it, so this test brings up a cluster of its own (its own
state folder, daemons and ports) and the shared test cluster, where other test files run side by side,
is not touched.
"""

from __future__ import annotations

import copy
import socket
import subprocess
import time
from pathlib import Path

import yaml

from tests.conftest import REPO, TINY_SWEEP
from tests.slurm_cluster import private_cluster
from tests.slurm_hold import resumed_on_failure, suspend_each_once_saved
from toolkit.backends.checkpointed import read_attempts
from toolkit.backends.slurm import records as slurm
from toolkit.backends.slurm.submit import wait_for
from toolkit.config import parse_sweep
from toolkit.launch import run_sweep, sweep_states
from toolkit.layout import OutputLayout
from toolkit.sweep import expand

EPOCHS = 300
"""Held still at its first checkpoint (tests/slurm_hold.py), neither task can finish before the other has
saved or before the node goes down, however fast or slow the machine. Killing the node's jobs lets them
train on for KillWait (5 s: SIGCONT and SIGTERM, which submitit bypasses, then SIGKILL; 25 epochs here under
load), so EPOCHS leaves room for a machine ten times as fast to still be training at the SIGKILL."""
EVERY = 5


def _states_ever(job_id: str) -> set[str]:
    """Every state sacct recorded for a job, its earlier runs included (-D: requeued runs too)."""
    output = subprocess.run(
        ["sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", job_id], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[0] for line in output.splitlines() if line.strip()}


def _scontrol_node(state: str) -> None:
    node = socket.gethostname().split(".")[0]
    subprocess.run(
        ["scontrol", "update", f"nodename={node}", f"state={state}", "reason=spotsweep node-failure test"],
        capture_output=True,
        check=False,  # resume answers an error when the node came back by itself (ReturnToService)
    )


def test_after_a_node_failure_every_task_is_done_once_resumed_from_its_checkpoint(tmp_path: Path) -> None:
    with private_cluster("node-failure", port=6837):
        profile = yaml.safe_load((REPO / "hpc" / "profiles" / "local.yaml").read_text())
        profile.update(checkpoint_every_epochs=EVERY, time_min=20)
        (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile))
        data = copy.deepcopy(TINY_SWEEP)
        data["name"] = "slurm-node-failure"
        data["methods"][0].update(amortization="both", batch_size=8, max_epochs=EPOCHS, seed=[0, 1])
        data["executor"] = {"kind": "slurm", "profile": str(tmp_path / "profile.yaml")}
        sweep = parse_sweep(data, "slurm-node-failure")
        out = tmp_path / "out"
        run_sweep(sweep, out, wait=False, report=False)
        layout = OutputLayout(out)
        tasks = expand(sweep)
        submission = slurm.read_submissions(layout)[-1]

        with resumed_on_failure(suspend_each_once_saved(layout, [task.id for task in tasks])):
            _scontrol_node("down")  # the node's jobs are then killed, held or not
        time.sleep(5)
        _scontrol_node("resume")
        wait_for(layout, tasks, submission, progress=False)

        for task in tasks:
            assert "NODE_FAIL" in _states_ever(submission.elements[task.id])
        if any(state.state != "done" for state in sweep_states(out)):
            run_sweep(sweep, out, retry_failed=True, wait=True, report=False)
        assert {state.state for state in sweep_states(out)} == {"done"}, sweep_states(out)

    results = sorted(path.parent.name for path in (out / "tasks").glob("*/result.json"))
    assert results == sorted(task.id for task in tasks)
    for task in tasks:
        finished = [a for a in read_attempts(layout, task.id) if a["outcome"] == "done"]
        assert len(finished) == 1, read_attempts(layout, task.id)  # the killed run could not log; one finished
        assert finished[0]["resumed_from_epoch"] >= EVERY  # ... from the checkpoint saved before the failure
