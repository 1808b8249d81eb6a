"""Preemption and time limits of a running task: USR2 saves at the end of the epoch, then requeues.

submitit sends USR2 before a SLURM time limit and on preemption, then its own handler requeues the
job (`checkpoint()` -> `scontrol requeue` -> exit). A task running inside `activate` defers that: the
training saves its state at the end of the current epoch (toolkit.engines.checkpoint, which knows
nothing of signals), then the previous handler runs. If the epoch does not end within `grace_s`, the
handler runs anyway and the task resumes from the last periodic checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.engines.session import CheckpointSession, use_session

log = logging.getLogger(__name__)


@dataclass
class _Deferral:
    """USR2 deferred to the end of an epoch for one session."""

    session: CheckpointSession
    grace_s: float
    previous_usr2: Any = None
    deadline: float = 0.0
    timer: threading.Timer | None = None
    active: bool = True

    def hand_over(self, signum: int = signal.SIGUSR2, frame: Any = None) -> None:
        """Run the handler that was installed before ours (submitit's: checkpoint, requeue, exit)."""
        if self.timer is not None:
            self.timer.cancel()
        if not callable(self.previous_usr2):
            return
        try:
            self.previous_usr2(signum, frame)
        except subprocess.CalledProcessError as exc:
            if not killed_by_its_own_requeue(exc):
                raise
            log.warning("USR2: `scontrol requeue` was stopped by the requeue's own SIGTERM; the job is requeued")
            raise SystemExit(-1) from None  # as submitit exits after a requeue

    def on_usr2(self, signum: int, frame: Any) -> None:
        session = self.session
        if session.training is None:
            self.hand_over(signum, frame)  # not training: nothing to save beyond what is on disk
            return
        if not session.stop_requested:
            session.stop_requested = True
            self.deadline = time.monotonic() + self.grace_s
            session.events.append({"event": "stop-requested", "time": time.time()})
            log.warning("USR2: saving a checkpoint at the end of this epoch, then requeueing")
            self.timer = self._resignal_after(self.grace_s)
        elif time.monotonic() >= self.deadline:
            log.warning("USR2: the epoch did not end within %.0f s; requeueing from the last checkpoint", self.grace_s)
            self.hand_over(signum, frame)

    def _resignal_after(self, seconds: float) -> threading.Timer:
        """Deliver USR2 again after the grace period, so a very long epoch cannot outlast the time limit
        (only while this deferral is active: the signal's default action would kill the process)."""

        def resignal() -> None:
            if self.active:
                os.kill(os.getpid(), signal.SIGUSR2)

        timer = threading.Timer(seconds, resignal)
        timer.daemon = True
        timer.start()
        return timer


def killed_by_its_own_requeue(exc: subprocess.CalledProcessError) -> bool:
    """Whether submitit's `scontrol requeue` died of SIGTERM. SLURM requeues a running job by terminating it,
    and that SIGTERM reaches every process of the job, scontrol too when it has not exited yet (seen under
    load, in CI): the requeue went through, so the task is being requeued, not failed."""
    return [str(part) for part in exc.cmd[:2]] == ["scontrol", "requeue"] and exc.returncode == -signal.SIGTERM


@contextlib.contextmanager
def activate(directory: Path, every_n_epochs: int, grace_s: float = 60.0) -> Iterator[CheckpointSession]:
    """Within this block trainings checkpoint into `directory` every N epochs and USR2 waits for an epoch end."""
    session = CheckpointSession(Path(directory), every_n_epochs)
    deferral = _Deferral(session, grace_s)
    session.hand_over = deferral.hand_over
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        deferral.previous_usr2 = signal.getsignal(signal.SIGUSR2)
        sigterm = signal.getsignal(signal.SIGTERM)
        session.sigterm_handler = sigterm if callable(sigterm) else None
        signal.signal(signal.SIGUSR2, deferral.on_usr2)
    try:
        with use_session(session):
            yield session
    finally:
        deferral.active = False
        if deferral.timer is not None:
            deferral.timer.cancel()
        if in_main_thread:
            signal.signal(signal.SIGUSR2, deferral.previous_usr2 or signal.SIG_DFL)
