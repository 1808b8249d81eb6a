"""Hold a SLURM task still while its time limit runs out, so that a time-limit test lasts the same few minutes,
and costs almost no CPU, on any machine.

The task trains until it has saved a checkpoint (so submitit's and spotsweep's USR2 handlers are installed),
then is stopped (SIGSTOP) until SLURM's own USR2, sent before the limit, is pending on it; it is let go at once
and handles that signal as it would have mid-training. Everything else is real: the limit, the signal, the
checkpoint, the requeue. Without the hold, a test had to train past the limit, and how many limits that took
depended on the machine's speed (5 to 10 attempts, 10 to 20 minutes, under CI's load).
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

import psutil

from tests.local_launch import HANG_GUARD_S
from toolkit.layout import OutputLayout

USR2 = 1 << (signal.SIGUSR2 - 1)
"""SIGUSR2's bit in /proc/<pid>/status's masks of pending signals."""


def _task_processes(layout: OutputLayout) -> list[psutil.Process]:
    """The running task's Python processes: submitit's, started for this sweep's SLURM log folder."""
    folder = str(layout.logs.resolve() / "slurm")
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "submitit.core._submit" in cmdline and any(folder in part for part in cmdline):
            found.append(process)
    return found


def _usr2_pending(process: psutil.Process) -> bool:
    status = Path(f"/proc/{process.pid}/status").read_text()
    masks = dict(line.split(":\t", 1) for line in status.splitlines() if line.startswith(("SigPnd", "ShdPnd")))
    return any(int(mask, 16) & USR2 for mask in masks.values())


def _usr2_pending_or_gone(processes: list[psutil.Process]) -> bool:
    try:
        return any(_usr2_pending(p) for p in processes)
    except (FileNotFoundError, ProcessLookupError):
        return True  # the task ended while held: nothing left to hold


def _wait_for(condition: Callable[[], bool], stop: threading.Event, what: str) -> bool:
    """Until `condition()` (True) or until the test has stopped holding (False)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not condition():
        if stop.is_set():
            return False
        assert time.monotonic() < deadline, f"{what}: not within an hour"
        time.sleep(0.2)
    return True


def _hold(layout: OutputLayout, task_id: str, attempts: int, stop: threading.Event, held: list[list[int]]) -> None:
    checkpoint = layout.task_dir(task_id) / "checkpoint" / "last.pt"

    def new_attempt() -> list[psutil.Process]:
        return [p for p in _task_processes(layout) if not any(p.pid in pids for pids in held)]

    def saved_by_a_new_attempt() -> bool:
        processes = new_attempt()
        return bool(processes) and checkpoint.exists() and checkpoint.stat().st_mtime > processes[0].create_time()

    for _ in range(attempts):
        if not _wait_for(saved_by_a_new_attempt, stop, "a new attempt's checkpoint"):
            return
        processes = new_attempt()
        for process in processes:
            process.suspend()
        held.append([p.pid for p in processes])
        try:
            _wait_for(functools.partial(_usr2_pending_or_gone, processes), stop, "SLURM's USR2 before the limit")
        finally:
            for process in processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.resume()


@contextlib.contextmanager
def holding(out: Path, task_id: str, attempts: int) -> Iterator[list[list[int]]]:
    """While in the block, hold each of the task's first `attempts` attempts still until SLURM's USR2 is pending
    on it; yields the attempts held, as their pids (to assert that it happened). Raises what failed in holding."""
    held: list[list[int]] = []
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_hold, OutputLayout(out), task_id, attempts, stop, held)
        try:
            yield held
        finally:
            stop.set()
            future.result()
