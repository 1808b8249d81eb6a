"""Hold a training task still (SIGSTOP) once it has saved a checkpoint, so that a test which must stop it
mid-training (a time limit, a node failure) neither races the training nor depends on the machine's speed.

A task is held only after it has saved (so submitit's and spotsweep's signal handlers are installed), and
everything else stays real: SLURM's limit and its USR2, the node failure, the checkpoint, the requeue.
Before, such a test had to train past the event: 5 to 14 two-minute limits for 3,000 epochs under CI's
load (10 to 20 minutes), 1,000 epochs per task for a node failure, and a slow machine made them longer.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import psutil

from tests.local_launch import HANG_GUARD_S
from toolkit.engines import checkpoint
from toolkit.layout import OutputLayout

T = TypeVar("T")

USR2 = 1 << (signal.SIGUSR2 - 1)
"""SIGUSR2's bit in /proc/<pid>/status's masks of pending signals."""


def task_processes(layout: OutputLayout, task_id: str) -> list[psutil.Process]:
    """The processes training the task: those holding its tasks/<id>/.running.lock (checkpointed.task_lock)."""
    lock = str((layout.task_dir(task_id) / ".running.lock").resolve())
    found = []
    for process in psutil.process_iter(["name"]):
        if not (process.info["name"] or "").startswith("python"):
            continue
        with contextlib.suppress(psutil.Error):
            if any(opened.path == lock for opened in process.open_files()):
                found.append(process)
    return found


def _wait_for(condition: Callable[[], T], stop: threading.Event | None, what: str) -> T | None:
    """The first true value of `condition()`, or None once the test has stopped holding."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not (value := condition()):
        if stop is not None and stop.is_set():
            return None
        assert time.monotonic() < deadline, f"{what}: not within an hour"
        time.sleep(0.2)
    return value


def _saved_by(layout: OutputLayout, task_id: str, skip: set[int]) -> list[psutil.Process]:
    """The task's running processes (not in `skip`) once one of them has saved a checkpoint; else []."""
    saved = layout.task_dir(task_id) / "checkpoint" / checkpoint.FAST_CHECKPOINT_NAME
    if not saved.exists():
        return []  # a file to look at before the processes' open files
    processes = [p for p in task_processes(layout, task_id) if p.pid not in skip]
    try:
        started = min(p.create_time() for p in processes) if processes else None
        return processes if started is not None and saved.stat().st_mtime > started else []
    except (FileNotFoundError, psutil.Error):
        return []


def suspend_each_once_saved(layout: OutputLayout, task_ids: list[str]) -> list[psutil.Process]:
    """Stop each task's process as soon as it has saved (none trains on while another is awaited)."""
    held: dict[str, list[psutil.Process]] = {}
    suspended: list[psutil.Process] = []

    def all_held() -> bool:
        for task_id in task_ids:
            if task_id not in held and (processes := _saved_by(layout, task_id, set())):
                for process in processes:
                    process.suspend()
                    suspended.append(process)
                held[task_id] = processes
            assert task_id in held or not layout.result(task_id).exists(), f"{task_id} finished before its hold"
        return len(held) == len(task_ids)

    with resumed_on_failure(suspended):
        _wait_for(all_held, None, "a checkpoint of every task")
    return suspended


@contextlib.contextmanager
def resumed_on_failure(processes: list[psutil.Process]) -> Iterator[None]:
    """Let held processes go if the block fails, so that a failing test leaves none stopped behind it (a
    stopped process heeds nothing but SIGKILL and SIGCONT). Reads `processes` at the failure,
    so a list the block appends to is let go as it stands then."""
    try:
        yield
    except BaseException:
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.resume()
        raise


def _usr2_pending_or_gone(processes: list[psutil.Process]) -> bool:
    try:
        for process in processes:
            status = Path(f"/proc/{process.pid}/status").read_text()
            pending = [line.split(":")[1] for line in status.splitlines() if line.startswith(("SigPnd", "ShdPnd"))]
            if any(int(mask, 16) & USR2 for mask in pending):
                return True
        return False
    except (FileNotFoundError, ProcessLookupError):
        return True  # the task ended while held: nothing left to hold


def let_go_once_usr2_pending(processes: list[psutil.Process]) -> None:
    """Resume held processes once a USR2 (a preemption's, sent meanwhile) is pending on every one of them
    (or it has ended), so that each handles it mid-training, as it would have without the hold."""
    try:
        _wait_for(lambda: all(_usr2_pending_or_gone([p]) for p in processes), None, "USR2 pending on each held task")
    finally:
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.resume()


def _hold_through_limits(
    layout: OutputLayout, task_id: str, attempts: int, stop: threading.Event, held: list[list[int]]
) -> None:
    for _ in range(attempts):
        skip = {pid for pids in held for pid in pids}
        found = _wait_for(functools.partial(_saved_by, layout, task_id, skip), stop, "a new attempt's checkpoint")
        if not found:
            return
        for process in found:
            process.suspend()
        held.append([p.pid for p in found])
        try:
            _wait_for(functools.partial(_usr2_pending_or_gone, found), stop, "SLURM's USR2 before the limit")
        finally:
            for process in found:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.resume()


@contextlib.contextmanager
def held_through_limits(out: Path, task_id: str, attempts: int) -> Iterator[list[list[int]]]:
    """While in the block, hold each of the task's first `attempts` attempts still from its first checkpoint until
    SLURM's USR2 (sent before the time limit) is pending on it, then let it go to handle that signal as it
    would have mid-training. Yields the attempts held, as their pids. Raises what failed in holding."""
    held: list[list[int]] = []
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_hold_through_limits, OutputLayout(out), task_id, attempts, stop, held)
        try:
            yield held
        finally:
            stop.set()
            future.result()
