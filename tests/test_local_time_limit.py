"""A local task still training at the executor's `timeout_min` saves its training and is failed with that
limit as its one-sentence reason (not submitit's "timed-out and not checkpointable"); raised, the limit lets
`--retry-failed` resume it from the saved epoch.

submitit's local job controller sends USR2 to the task 30 s before `timeout_min`, then kills it. The test
sends that same signal to the task process itself, once it has saved a first checkpoint, so that what it
checks does not hang on how fast this machine trains. submitit calls a USR2 a time limit (not a
preemption) for any job that asked for under 10 minutes, as this one does.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import psutil

from tests.local_launch import launch, one_task_sweep, wait_for_checkpoint
from toolkit.backends.checkpointed import read_attempts
from toolkit.config import parse_sweep
from toolkit.launch import run_sweep
from toolkit.layout import OutputLayout
from toolkit.status import task_state
from toolkit.sweep import expand

TIMEOUT_MIN = 9
EPOCHS = 150


def _task_processes(launcher: subprocess.Popen) -> list[psutil.Process]:
    """The processes running task bodies under the launcher (not the job controllers that start them)."""
    children = psutil.Process(launcher.pid).children(recursive=True)
    return [process for process in children if "submitit.core._submit" in " ".join(process.cmdline())]


def test_a_local_task_at_its_time_limit_is_failed_with_the_limit_and_resumes_once_it_is_raised(
    tmp_path: Path,
) -> None:
    data = one_task_sweep(tmp_path / "out", EPOCHS)
    data["executor"]["timeout_min"] = TIMEOUT_MIN
    (task,) = expand(parse_sweep(data, "t"))
    layout = OutputLayout(tmp_path / "out")
    launcher = launch(tmp_path, data, stderr=subprocess.PIPE)
    try:
        wait_for_checkpoint(launcher, layout.task_dir(task.id) / "checkpoint" / "last.pt")
        (process,) = _task_processes(launcher)
        process.send_signal(signal.SIGUSR2)  # what the controller sends 30 s before timeout_min
        _, stderr = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode == 1, stderr  # "1 tasks failed: see `spotsweep status ...`"
    assert "Traceback" not in stderr, stderr

    state = task_state(layout, task)
    (attempt,) = read_attempts(layout, task.id)
    saved = attempt["checkpoint_epoch"]
    assert state.state == "failed" and attempt["outcome"] == "failed" and 10 <= saved < EPOCHS
    assert state.reason == (
        f"stopped at the local time limit, the sweep's executor.timeout_min of {TIMEOUT_MIN} min, with its "
        f"training saved at epoch {saved}; raise executor.timeout_min in the sweep file, and "
        "`spotsweep run --retry-failed` resumes it from there"
    ), state.reason

    data["executor"]["timeout_min"] = 20
    summary = run_sweep(parse_sweep(data, "t"), retry_failed=True, report=False)
    assert summary.states["done"] == 1, task_state(layout, task)
    assert read_attempts(layout, task.id)[-1]["resumed_from_epoch"] == saved
