"""`spotsweep tune` on the real single-node SLURM (hpc/slurm): two trials at once as SLURM array tasks, a
trial whose task is cancelled fails without stopping the study, and the same command again runs only
what is missing (real training of tiny models; the fake GPUs satisfy the request, the CPU trains)."""

from __future__ import annotations

import copy
import subprocess
import threading
import time
from pathlib import Path

import pytest
import xarray as xr
import yaml

from tests.conftest import REPO, TINY_SWEEP
from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401
from toolkit.backends.slurm import records
from toolkit.config import parse_sweep
from toolkit.layout import OutputLayout, read_json
from toolkit.tune.loop import tune
from toolkit.tune.study import load_study

HANG_GUARD_S = 1800.0


def _states(out: Path) -> dict[int, str]:
    study = load_study(OutputLayout(out))
    return {} if study is None else {t.number: t.state.name.lower() for t in study.get_trials(deepcopy=False)}


def test_trials_run_two_at_once_on_slurm_and_a_cancelled_one_fails_alone(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    profile = yaml.safe_load((REPO / "hpc" / "profiles" / "local.yaml").read_text())
    profile.update(checkpoint_every_epochs=1, time_min=20)
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile))
    data = copy.deepcopy(TINY_SWEEP)
    data.update(name="tune-slurm", output=str(tmp_path / "out"))
    data["methods"][0].update(
        amortization="both",
        batch_size=8,
        max_epochs=40,
        trajectory_points=5,
        search={"batch_size": {"low": 4, "high": 64, "log": True}, "amortization": ["both", "latent"]},
    )
    data["executor"] = {"kind": "slurm", "profile": str(tmp_path / "profile.yaml"), "max_parallel": 2}
    sweep = parse_sweep(data, "tune-slurm")
    out = tmp_path / "out"
    layout = OutputLayout(out)

    # Cancel trial 1's array task once it trains, from beside the tuner (as `scancel` by a user).
    cancelled: list[str] = []

    def cancel_trial_1() -> None:
        deadline = time.monotonic() + HANG_GUARD_S
        while time.monotonic() < deadline:
            for submission in records.read_submissions(layout) if (out / "slurm").exists() else []:
                for task_id, element in submission.elements.items():
                    if "-n1-" in task_id and (layout.task_dir(task_id) / "started.json").exists():
                        subprocess.run(["scancel", element], check=True)
                        cancelled.append(task_id)
                        return
            time.sleep(0.5)

    canceller = threading.Thread(target=cancel_trial_1, daemon=True)
    canceller.start()
    summary = tune(sweep, "tune-slurm", trials=3, report=False)
    canceller.join(timeout=60)
    assert cancelled, "trial 1 never started"
    assert _states(out) == {0: "complete", 1: "fail", 2: "complete"}, summary

    # two trials ran at once: trial 1 started before trial 0 had finished
    def started(number: int) -> float:
        (task_dir,) = out.glob(f"tasks/*-n{number}-*")
        return float(read_json(task_dir / "started.json")["started"])

    (first_result,) = out.glob("tasks/*-n0-*/result.json")
    assert started(1) < first_result.stat().st_mtime
    submissions = records.read_submissions(layout)
    assert len(submissions) == 3  # one array per trial, each through the backend core
    with xr.open_dataset(out / "summary.nc") as summary_nc:  # the finish's aggregate: each trial's state
        assert summary_nc["trial_state"].values.tolist() == ["complete", "fail", "complete"]

    # the same command asks one more trial for --trials 4 and runs nothing finished again
    written = first_result.stat().st_mtime_ns
    tune(sweep, "tune-slurm", trials=4, report=False)
    assert _states(out) == {0: "complete", 1: "fail", 2: "complete", 3: "complete"}
    assert first_result.stat().st_mtime_ns == written
    assert len(records.read_submissions(layout)) == 4


def test_a_pruned_trials_array_task_reads_pruned_not_failed(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The median pruner stops trial 1 (lr 1e-5, barely learning) on SLURM: its array task is cancelled, and
    `spotsweep status` and the finish's aggregate (which records a task SLURM ended without a result as
    failed) keep it pruned."""
    from typer.testing import CliRunner

    from toolkit.cli import app
    from toolkit.tune.study import open_study

    profile = yaml.safe_load((REPO / "hpc" / "profiles" / "local.yaml").read_text())
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump({**profile, "time_min": 20}))
    data = copy.deepcopy(TINY_SWEEP)
    data.update(name="tune-slurm-prune", output=str(tmp_path / "out"))
    search = {"lr": {"low": 1e-5, "high": 0.05}, "pruner": "median", "startup_trials": 1, "prune_interval_steps": 20}
    data["methods"][0].update(
        amortization="latent", batch_size=8, max_epochs=200, trajectory_points=20, lr=0.02, search=search
    )
    data["executor"] = {"kind": "slurm", "profile": str(tmp_path / "profile.yaml"), "max_parallel": 1}
    sweep = parse_sweep(data, "tune-slurm-prune")
    out = tmp_path / "out"
    study = open_study(OutputLayout(out), sweep.name, sweep.methods[0].search)
    study.enqueue_trial({"lr": 0.02})
    study.enqueue_trial({"lr": 1e-5})
    tune(sweep, "tune-slurm-prune", trials=2, report=False)
    assert _states(out) == {0: "complete", 1: "pruned"}
    (task_dir,) = out.glob("tasks/*-n1-*")
    assert (task_dir / "pruned.json").is_file() and not (task_dir / "result.json").exists()
    shown = CliRunner().invoke(app, ["status", str(out)], env={"COLUMNS": "250"})
    assert shown.exit_code == 0 and "1 done, 0 failed, 1 pruned" in shown.output, shown.output
    with xr.open_dataset(out / "summary.nc") as summary_nc:
        assert summary_nc["status"].values.ravel().tolist() == ["done", "pruned"]
        assert summary_nc["trial_state"].values.tolist() == ["complete", "pruned"]


@pytest.fixture(autouse=True)
def _repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
