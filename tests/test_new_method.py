"""A new method is one file and one line: tests/methods_echo.py, registered here only, runs through a
sweep like the demo's (plan, prepare, tasks, aggregate, report) with no stage told about it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from tests.conftest import REPO, TINY_SWEEP

SCRIPT = """
import json, sys
from toolkit.methods import ADAPTERS

ADAPTERS["echo"] = "tests.methods_echo"  # the one line: before the sweep file's schema is built from the registry

from toolkit.config import parse_sweep
from toolkit.launch import run_sweep
from toolkit.plan import plan_sweep

sweep = parse_sweep(json.loads(sys.argv[1]), "echo sweep")
planned = plan_sweep(sweep, sys.argv[2]).tasks
run_sweep(sweep, sys.argv[2])
print(json.dumps([[p.task.method, p.task.batch_size, p.n_spots, p.batch_size, p.steps, p.mode] for p in planned]))
"""


def test_a_method_in_one_file_and_one_registry_line_runs_to_a_report(tmp_path: Path) -> None:
    """The registry line is run in a fresh process, as a sweep's `methods:` schema is built from the
    registry when toolkit.config is first imported; the tasks run in that process (`kind: inline`)."""
    out = tmp_path / "out"
    sweep = {
        **TINY_SWEEP,
        "name": "echo",
        "methods": [
            {"name": "echo", "batch_size": [8, 64], "max_epochs": 3},
            {"name": "control", "kind": ["uniform"]},
        ],
        "executor": {"kind": "inline"},
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(sweep), str(out)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    planned = json.loads(done.stdout.strip().splitlines()[-1])
    n_spots = planned[0][2]
    assert planned == [
        ["echo", 8, n_spots, 8, 3 * -(-n_spots // 8), "echo"],  # plan counts its steps from the defaults
        ["echo", 64, n_spots, 64, 3 * -(-n_spots // 64), "echo"],
        ["control", 0, n_spots, 0, 0, "control"],
    ]

    summary = xr.load_dataset(out / "summary.nc", engine="h5netcdf")
    assert sorted(summary.method.values.tolist()) == ["control", "echo"]
    assert int(summary.attrs["n_done"]) == 3
    steps = summary["n_steps"].sel({"method": "echo"}).values.ravel()  # a dict: `method` is a keyword of sel
    assert sorted(steps[~np.isnan(steps)].tolist()) == [planned[1][4], planned[0][4]]  # it ran the steps planned

    page = (out / "report" / "index.md").read_text()
    assert "3 tasks: 3 done" in page
    assert "### Proportion maps" in page  # a trained method: its maps, its lines, its runtimes, its trajectory
    assert "### Runtimes (mean over seeds)" in page and "| echo | default |" in page
    assert "### Accuracy during training" in page
    assert (out / "report" / "proportions_tiny-tissue.png").stat().st_size > 10_000
    assert (out / "report" / "index.html").exists()
