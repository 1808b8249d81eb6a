"""Pytest fixture: a real single-node SLURM (hpc/slurm/start.sh) with accounting and fake GPUs.

It installs nothing. If the packages are there it starts the cluster (idempotent, ~10 s; as root) and
points SLURM_CONF at it for the session. It leaves the cluster running afterwards: another test session
may be using it, and the next session then starts at once (`sudo hpc/slurm/stop.sh` stops it).
Without the packages the SLURM tests skip with how to enable them, except in CI (CI=true), where they
must run: there a cluster that cannot start fails the tests with the reason.

Import it from conftest.py: `from tests.slurm_cluster import slurm_cluster  # noqa: F401`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "hpc" / "slurm"
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct", "srun")
TEST_SIZE = {"SPOTSWEEP_SLURM_CPUS": "6", "SPOTSWEEP_SLURM_GPUS": "6"}
"""The test node declares more CPUs and fake GPUs than the machine has: its jobs mostly wait (on the
scheduler, on signals, on each other), and test files run side by side (pytest-xdist) each submit some."""
ENABLE = "install the packages with `sudo hpc/slurm/install.sh` (Debian/Ubuntu) to run them"


@dataclass(frozen=True)
class SlurmCluster:
    state: Path
    conf: Path


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"SLURM tests must run in CI but {reason}", pytrace=False)
    pytest.skip(f"SLURM tests skipped: {reason}")


def _responds(conf: Path) -> bool:
    """A cluster already runs at this state directory (e.g. started by an administrator)."""
    environment = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        result = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], env=environment, capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and any(s in result.stdout for s in ("idle", "mix", "alloc"))


def _start(state: Path, settings: dict[str, str]) -> Path:
    """Start the cluster kept at `state` (hpc/slurm/start.sh, `settings` in its environment) unless it
    answers already; its slurm.conf. Skips (or fails, in CI) with the reason when it cannot."""
    conf = state / "etc" / "slurm.conf"
    missing = [name for name in DAEMONS if shutil.which(name) is None]
    if missing:
        _unavailable(f"{', '.join(missing)} not found; {ENABLE}.")
    with FileLock(f"{state}.start.lock"):  # pytest-xdist workers each open this session fixture: one starts
        if not _responds(conf):
            if os.geteuid() != 0:
                _unavailable(f"no cluster runs at {state} and starting one needs root: run `sudo {HARNESS}/start.sh`.")
            environment = {**os.environ, "SPOTSWEEP_SLURM_STATE": str(state), **settings}
            result = subprocess.run(
                [str(HARNESS / "start.sh")], capture_output=True, text=True, timeout=300, check=False, env=environment
            )
            if result.returncode != 0:
                tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-3:])
                _unavailable(f"hpc/slurm/start.sh failed (exit {result.returncode}): {tail}")
    return conf


@contextlib.contextmanager
def _pointed_at(conf: Path) -> Iterator[None]:
    """SLURM_CONF names `conf` meanwhile: sbatch, sacct and the jobs they start talk to that cluster."""
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """The local SLURM cluster, up; SLURM_CONF points at it while the session lasts."""
    state = Path(os.environ.get("SPOTSWEEP_SLURM_STATE", "/tmp/spotsweep-slurm"))
    settings = {key: os.environ.get(key, value) for key, value in TEST_SIZE.items()}
    conf = _start(state, settings)
    with _pointed_at(conf):
        yield SlurmCluster(state=state, conf=conf)


@contextlib.contextmanager
def private_cluster(name: str, port: int) -> Iterator[SlurmCluster]:
    """A second single-node cluster with its own state folder, daemons and ports, for a test that takes
    its node down: the shared one's jobs (other test files, side by side) are not touched. Stopped after."""
    state = Path(f"/tmp/spotsweep-slurm-{name}")
    settings = {"SPOTSWEEP_SLURM_PORT": str(port), **TEST_SIZE}
    conf = _start(state, settings)
    try:
        with _pointed_at(conf):
            yield SlurmCluster(state=state, conf=conf)
    finally:
        environment = {**os.environ, "SPOTSWEEP_SLURM_STATE": str(state), **settings}
        subprocess.run([str(HARNESS / "stop.sh")], capture_output=True, timeout=300, check=False, env=environment)
