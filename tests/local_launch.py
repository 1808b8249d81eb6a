"""A one-task local sweep launched as a user starts it, for the tests that stop it half way."""

from __future__ import annotations

import copy
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.conftest import REPO, TINY_SWEEP

HANG_GUARD_S = 3600
"""How long a test waits for a stage before calling it a hang: a guard, not a timing (a loaded CI is slow)."""


def one_task_sweep(out: Path, epochs: int = 300) -> dict:
    """One destVI task that checkpoints every 10 epochs and trains long enough to be stopped before its end."""
    data = copy.deepcopy(TINY_SWEEP)
    data["output"] = str(out)
    data["methods"][0].update({"amortization": "both", "batch_size": 8, "max_epochs": epochs})
    data["executor"] = {"kind": "local", "max_parallel": 1, "timeout_min": 20, "checkpoint_every_epochs": 10}
    return data


def launch(tmp_path: Path, data: dict, stderr: int) -> subprocess.Popen:
    """`spotsweep run` of the sweep as a user starts it from a terminal: in a session of its own (the launcher
    and the task processes it starts: one group to kill), with SIGINT handled as a terminal's, not ignored
    as for a test runner's background worker."""
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(data))
    return subprocess.Popen(
        [sys.executable, "-m", "toolkit", "run", str(sweep_file)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_checkpoint(launcher: subprocess.Popen, checkpoint: Path) -> None:
    """Until the running task has saved its training once (the launcher still running)."""
    deadline = time.monotonic() + HANG_GUARD_S
    while not checkpoint.exists():
        assert launcher.poll() is None, "the run ended before its task saved a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within an hour"
        time.sleep(0.2)
