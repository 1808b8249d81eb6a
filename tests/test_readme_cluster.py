"""The README's three ways to run on a cluster, run as written on the local SLURM (and the real image).

Each `<!-- readme-test: NAME -->` block of README.md is read from the README itself and run with bash
from the repository root (tests/readme.py), with only its paths pointed at a scaled-down sweep (one destVI task): the
sweep file, the profile (the local test cluster's), the output folder and the image. Then the test
waits for what the block promises: every task done and a summary.
"""

from __future__ import annotations

import copy
import re
import time
from pathlib import Path

import yaml

from tests.conftest import REPO, TINY_SWEEP
from tests.readme import run_block
from tests.slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401
from tests.test_container import image  # noqa: F401  (the image of this checkout, built in CI)
from toolkit.backends.slurm import records
from toolkit.backends.slurm.submit import wait_for
from toolkit.launch import sweep_states
from toolkit.layout import OutputLayout
from toolkit.status import load_tasks


def _scaled_down(tmp_path: Path) -> dict[str, str]:
    """A one-task sweep and the local cluster's profile; what to put for the README's paths."""
    profile = yaml.safe_load((REPO / "hpc" / "profiles" / "local.yaml").read_text())
    profile.update(time_min=10, prepare_time_min=10, aggregate_time_min=10)
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile))
    data = copy.deepcopy(TINY_SWEEP)
    data["name"] = "readme-cluster"
    data["output"] = str(tmp_path / "out")
    data["methods"][0].update(amortization="both", batch_size=8)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(data))
    return {
        "sweeps/demo.yaml": str(tmp_path / "sweep.yaml"),
        "hpc/profiles/my-cluster.yaml": str(tmp_path / "profile.yaml"),
        "results/demo": str(tmp_path / "out"),
        "results/launcher-": str(tmp_path / "launcher-"),
    }


def _every_task_done(out: Path) -> None:
    layout = OutputLayout(out)
    tasks = load_tasks(layout)
    for submission in records.read_submissions(layout):
        wait_for(layout, tasks, submission, progress=False)
    assert {state.state for state in sweep_states(out)} == {"done"}, sweep_states(out)
    assert layout.summary.exists()


def test_the_launcher_on_the_login_node_submits_and_returns(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    paths = _scaled_down(tmp_path)
    done = run_block("cluster-login", paths)
    assert "SLURM jobs: prepare" in done.stdout and "status" in done.stdout
    _every_task_done(tmp_path / "out")


def test_the_launcher_as_a_batch_job_submits_the_chain(
    slurm_cluster: SlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    paths = _scaled_down(tmp_path)
    done = run_block("cluster-sbatch", paths)
    job = re.search(r"Submitted batch job (\d+)", done.stdout)
    assert job, done.stdout
    deadline = time.monotonic() + 3600  # a guard against a hang, not a timing
    while not records.read_submissions(OutputLayout(tmp_path / "out")):
        states = records.query({job.group(1): "spotsweep-launcher"})
        launcher = states.get(job.group(1))
        log = next(tmp_path.glob("launcher-*.log"), None)
        assert launcher is None or launcher.live, f"the launcher job ended {launcher}: {log and log.read_text()}"
        assert time.monotonic() < deadline
        time.sleep(1)
    _every_task_done(tmp_path / "out")


def test_the_sweep_inside_the_image_on_one_node(
    slurm_cluster: SlurmCluster,  # noqa: F811
    image: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    paths = {**_scaled_down(tmp_path), "build/spotsweep.sif": str(image)}
    run_block("cluster-apptainer", paths)
    states = sweep_states(tmp_path / "out")
    assert {state.state for state in states} == {"done"}, states
    result = (tmp_path / "out" / "tasks" / states[0].task.id / "result.json").read_text()
    assert str(image) in result  # the task ran in the image: its provenance names it
