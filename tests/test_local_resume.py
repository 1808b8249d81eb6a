"""A local sweep stopped half way resumes each task from its last checkpoint, as a requeued SLURM task does.

The launcher and its task processes are killed (SIGKILL, no chance to clean up) once the one destVI task
has saved a checkpoint; the rerun resumes that task from the saved epoch, and on CPU the result equals an
uninterrupted run bit for bit. Progress files show the epoch while it trains.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.local_launch import HANG_GUARD_S, launch, one_task_sweep, wait_for_checkpoint
from toolkit.backends.checkpointed import read_attempts
from toolkit.config import parse_sweep
from toolkit.launch import run_sweep
from toolkit.layout import OutputLayout, read_json
from toolkit.status import is_running, task_state
from toolkit.sweep import expand

KILLED_EPOCHS = 120
"""The killed run trains three times (killed, resumed, uninterrupted): shorter than the SIGTERM test's, whose
stop takes longer to land (SIGKILL of the whole group is at once), yet 110 epochs past the first checkpoint."""


def test_a_killed_local_sweep_resumes_its_task_from_the_checkpoint(tmp_path: Path) -> None:
    data = one_task_sweep(tmp_path / "stopped", KILLED_EPOCHS)
    (task,) = expand(parse_sweep(data, "t"))
    layout = OutputLayout(tmp_path / "stopped")
    launcher = launch(tmp_path, data, stderr=subprocess.DEVNULL)
    checkpoint = layout.task_dir(task.id) / "checkpoint" / "last.pt"
    seen_progress = None
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while not checkpoint.exists():
            assert launcher.poll() is None, "the run ended before its task saved a checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within an hour"
            if layout.progress(task.id).exists():
                seen_progress = read_json(layout.progress(task.id))
            time.sleep(0.2)
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
    # SIGKILL lands when the kernel next schedules the task process, which on a loaded machine can be after
    # launcher.wait() returns; until then its lock says "running" and a rerun rightly leaves it alone.
    while is_running(layout, task.id):
        assert time.monotonic() < deadline, "the killed task process still holds its lock after an hour"
        time.sleep(0.2)
    assert not layout.result(task.id).exists()
    assert seen_progress is not None and seen_progress["max_epochs"] == KILLED_EPOCHS and seen_progress["epoch"] >= 1

    summary = run_sweep(parse_sweep(data, "t"), report=False)
    assert summary.states["done"] == 1, task_state(layout, task)
    (attempt,) = read_attempts(layout, task.id)  # the killed attempt could not log; the resumed one did
    assert attempt["outcome"] == "done" and attempt["resumed_from_epoch"] >= 10
    assert not layout.progress(task.id).exists()  # a finished task leaves no progress report

    whole = one_task_sweep(tmp_path / "whole", KILLED_EPOCHS)
    run_sweep(parse_sweep(whole, "t"), report=False)
    resumed = read_json(layout.result(task.id))
    uninterrupted = read_json(OutputLayout(tmp_path / "whole").result(task.id))
    assert resumed["proportions"] == uninterrupted["proportions"]  # bit for bit on CPU
    assert resumed["n_steps"] == uninterrupted["n_steps"]
    # The accuracy trajectory goes on across the kill: points scored after the last checkpoint were lost with
    # the process and scored again on resume, so every point is there exactly once, equal to one run's.
    steps = [point["step"] for point in resumed["trajectory"]["points"]]
    assert len(steps) == 50 and steps == sorted(set(steps)) and steps[-1] == resumed["n_steps"]
    assert resumed["trajectory"] == uninterrupted["trajectory"]


def test_a_local_run_stopped_by_sigterm_stops_its_task_which_resumes_unfailed(tmp_path: Path) -> None:
    """`kill` of the launcher (SIGTERM) stops its task process too, as Ctrl-C does: no orphan trains on, no
    failure is recorded, and a plain rerun (no --retry-failed) resumes the task from its checkpoint."""
    data = one_task_sweep(tmp_path / "out")
    (task,) = expand(parse_sweep(data, "t"))
    layout = OutputLayout(tmp_path / "out")
    launcher = launch(tmp_path, data, stderr=subprocess.PIPE)
    checkpoint = layout.task_dir(task.id) / "checkpoint" / "last.pt"
    deadline = time.monotonic() + HANG_GUARD_S
    try:
        wait_for_checkpoint(launcher, checkpoint)
        launcher.send_signal(signal.SIGTERM)
        _, stderr = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode != 0
    assert "stopped (Ctrl-C or SIGTERM) with 1 task(s) running: they were stopped too" in stderr, stderr
    assert "Traceback" not in stderr, stderr  # submitit's cancelled controllers write theirs to logs/controllers.log
    while is_running(layout, task.id):  # the lock goes with the process; on a loaded machine a moment later
        assert time.monotonic() < deadline, "the task process trains on after its launcher was stopped"
        time.sleep(0.2)
    assert task_state(layout, task).state == "started" and not layout.error(task.id).exists()
    assert [attempt["outcome"] for attempt in read_attempts(layout, task.id)] in ([], ["interrupted"])
    shown = subprocess.run(
        [sys.executable, "-m", "toolkit", "status", str(layout.root)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "200"},  # one table row a line
    ).stdout
    assert "stopped at epoch" in shown and "min left" not in shown, shown  # no end time for a stopped task

    summary = run_sweep(parse_sweep(data, "t"), report=False)
    assert summary.submitted == 1 and summary.states["done"] == 1
    assert read_attempts(layout, task.id)[-1]["resumed_from_epoch"] >= 10


def _sleep_and_say(path: str) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(600)


def test_a_run_started_in_a_scripts_background_still_stops_its_task_processes(tmp_path: Path) -> None:
    """`nohup spotsweep run ... &` in a script starts everything with SIGINT ignored, so a cancel (SIGINT)
    cannot reach the task processes: a stop kills them instead, rather than leaving them training on."""
    import psutil
    import submitit

    from toolkit.backends import local

    executor = submitit.LocalExecutor(folder=tmp_path / "logs")
    executor.update_parameters(timeout_min=20)
    said = tmp_path / "task.pid"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `&` in a script does; inherited by jobs
    try:
        job = executor.submit(_sleep_and_say, str(said))
        deadline = time.monotonic() + 600  # a guard against a hang, not a timing
        while not said.exists() or not said.read_text():
            assert time.monotonic() < deadline and not job.done(), "the job never started"
            time.sleep(0.1)
        task = psutil.Process(int(said.read_text()))
        assert local._stop([job])  # its one sentence then says the tasks were stopped
    finally:
        signal.signal(signal.SIGINT, previous)
    assert job.done()
    task.wait(timeout=60)  # the task process itself is gone, not only its controller
    assert not task.is_running()
