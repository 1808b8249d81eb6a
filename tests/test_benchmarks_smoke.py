"""Smoke runs of benchmark scripts whose figures are committed: pytest does not collect tests/benchmarks, and
a script that only imports (test_architecture) can still rot in its arguments or its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_trajectory_quick_runs_every_part(tmp_path: Path) -> None:
    """`bench_trajectory --quick` (tiny simulated data, one process, eager) times the scorings, the steps and
    the off/on pair, and reports all three; the "on" run took its scorings, the "off" run none."""
    out = tmp_path / "runs.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks.bench_trajectory", "--quick", "--out", str(out)],
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for heading in ("(a) One scoring", "ms per training step", "(b) Direct"):
        assert heading in done.stdout, done.stdout
    runs = json.loads(out.read_text())
    assert len(runs["scoring"][0]["take_wall"]) == 3
    assert runs["steps"] and all(run["n_steps"] > 0 for run in runs["steps"])
    assert sorted(run["scorings"] for run in runs["direct"]) == [0, 5]
