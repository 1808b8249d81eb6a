"""The GPU check script at toy size on the CPU, so that it cannot rot between GPU runs.

Its GPU-only parts (torch.compile's reduce-overhead, GPU memory) are absent from a CPU run by design;
CUDA graphs are asked for and refuse the CPU, which runs the path of a mode that fails on the GPU
(an error row, the mode not tried again). Everything else (the four sections, the files written after
each) runs here as it would on the GPU; the budgets are set out of reach there, so that a loaded machine
cannot skip what the test reads, and a spent budget's skips are checked on their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_toy_run_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu-check"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "tests.benchmarks.gpu_check", "--device", "cpu", "--toy", "--out", str(out)]
    # A day per section: on a loaded CI machine no wall-clock budget may skip a measurement the test reads (the
    # toy sizes bound the work; a section's budget only decides whether a measurement may still start).
    for section in ("steps", "runtime_table", "packing", "equivalence"):
        command += ["--budget", f"{section}=86400"]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and report["spots"]["starmap"] == 189
    sections = report["sections"]
    assert [name for name in sections if name != "equivalence_runs"] == [
        "steps",
        "runtime_table",
        "packing",
        "equivalence",
    ]
    measured = [row for row in sections["steps"] if "ms_per_step" in row]
    assert {(row["data"], row["engine"]) for row in measured} >= {("starmap", "scvi"), ("starmap", "fast")}
    assert all(row["ms_per_step"] > 0 for row in measured)
    graphs = [row for row in sections["steps"] if row["engine"] == "fast-cudagraphs"]  # refuses a CPU
    assert "CudaGraphsUnavailable" in graphs[0]["error"]
    assert all(row["skipped"].startswith("failed at starmap batch 8") for row in graphs[1:])
    assert [row["k"] for row in sections["packing"]] == [1, 2]
    eager = [row for row in sections["equivalence"] if row["engine"] == "fast"]
    assert eager and all(row["within_seed_spread"] for row in eager)  # eager replays stock's stream on CPU
    markdown = (out / "gpu_check.md").read_text()
    for title in ("## steps", "## runtime_table", "## packing", "## equivalence", "study RTX 3090"):
        assert title in markdown


def test_a_narrower_run_is_refused_in_one_sentence_when_it_names_what_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A GPU lease is minutes: a typo in the options must stop the run before anything is built."""
    from tests.benchmarks import gpu_check

    for options, said in (
        (["--budget", "step=150"], "--budget 'step=150': give SECTION=SECONDS"),
        (["--engines", "fast,fast-turbo"], "--engines: unknown fast-turbo; choose from scvi, fast,"),
        (["--sections", "steps,packs"], "--sections: unknown packs"),
    ):
        with pytest.raises(SystemExit) as stopped:
            gpu_check.main(["--out", str(tmp_path), *options])
        assert stopped.value.code == 2 and said in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


def test_a_spent_budget_skips_every_measurement_and_says_so() -> None:
    from tests.benchmarks import gpu_check

    spent = gpu_check.Budget(0.0)  # nothing may start: no problem is built, no worker is asked
    rows = gpu_check.section_steps({}, gpu_check.TOY, "cpu", ["scvi", "fast"], 4, spent, run=None)
    assert rows and all(row["skipped"] == "budget" for row in rows)
    assert {(row["data"], row["engine"]) for row in rows} >= {("starmap", "scvi"), ("merfish-like", "fast")}
