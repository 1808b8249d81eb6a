"""The GPU check script at toy size on the CPU (its rehearsal), so that it cannot rot between GPU runs.

Its GPU-only parts (torch.compile on CUDA, GPU memory, CUDA MPS) are absent from a CPU run by design;
CUDA graphs are asked for and refuse the CPU, which runs the path of a mode that fails on the GPU (an
error row, the mode not tried again), and `fast-rehearsal` (compile: true run by aot_eager) stands for
the compiled modes, through the equivalence gate to the pick of the fastest mode that passed. Everything
else (the sections, the files written after each) runs here as it would on the GPU; the budgets and the
deadline are set out of reach, so that a loaded machine cannot skip what the test reads, and a spent
budget's skips are checked on their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_rehearsal_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu-check"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "tests.benchmarks.gpu_check", "--device", "cpu", "--toy", "--out", str(out)]
    # A day per section: on a loaded CI machine no wall-clock budget may skip a measurement the test reads (the
    # toy sizes bound the work; a section's budget only decides whether a measurement may still start).
    command += ["--total", "86400"]
    for section in ("steps", "equivalence", "runtime_table", "packing"):
        command += ["--budget", f"{section}=86400"]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["device"] == "cpu" and report["spots"]["starmap"] == 189
    sections = report["sections"]
    assert [name for name in sections if name != "equivalence_runs"] == [
        "steps",
        "equivalence",
        "runtime_table",
        "packing",
        "goals",
    ]
    measured = [row for row in sections["steps"] if "ms_per_step" in row]
    assert {(row["data"], row["engine"]) for row in measured} >= {
        ("starmap", "scvi"),
        ("starmap", "fast"),
        ("starmap", "fast-rehearsal"),
        ("merfish-like", "fast-rehearsal"),
    }
    assert all(row["ms_per_step"] > 0 for row in measured)
    graphs = [row for row in sections["steps"] if row["engine"] == "fast-cudagraphs"]  # refuses a CPU
    assert "CudaGraphsUnavailable" in graphs[0]["error"]
    assert all(row["skipped"].startswith("failed at starmap batch 8") for row in graphs[1:])
    compared = {row["engine"]: row for row in sections["equivalence"] if "mean_pcc" in row}
    assert set(compared) == {"fast", "fast-rehearsal"}  # the failed mode is not compared
    assert compared["fast-rehearsal"]["passes"] is True and compared["fast-rehearsal"]["tolerance"] >= 0.02
    assert report["passed_equivalence"] == ["fast", "fast-rehearsal"]
    table = sections["runtime_table"]
    assert [row["batch"] for row in table] == [32, 64] and all("minutes_2500_epochs" in row for row in table)
    assert table[0]["engine"] in report["passed_equivalence"]
    packing = sections["packing"]
    assert [(row["k"], row["mps"]) for row in packing] == [(1, False), (2, False), ("-", True)]
    assert packing[1]["config_steps_per_s"] > 0 and "no CUDA device" in packing[2]["skipped"]
    goals = {row["goal"]: row for row in sections["goals"]}
    assert goals["STARmap batch 8, x stock per step"]["measured"] > 0
    markdown = (out / "gpu_check.md").read_text()
    for title in ("## steps", "## equivalence", "## runtime_table", "## packing", "## goals", "study RTX 3090"):
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


def test_the_table_and_packing_take_the_fastest_mode_that_passed_equivalence() -> None:
    """A faster mode that failed the equivalence gate (or one of its fits) is never picked."""
    from tests.benchmarks import gpu_check

    steps = [
        {"data": data, "engine": engine, "batch": 32, "ms_per_step": ms, "warmup_s": 1.0}
        for data in ("starmap", "merfish-like")
        for engine, ms in (("scvi", 20.0), ("fast", 8.0), ("fast-cudagraphs", 1.0), ("fast-reduce-overhead", 2.0))
    ]
    equivalence = [
        {"batch": 8, "engine": "fast", "passes": None},
        {"batch": 8, "engine": "fast-cudagraphs", "passes": False},
        {"batch": 8, "engine": "fast-reduce-overhead", "passes": True},
        {"batch": 128, "engine": "fast-reduce-overhead", "passes": True},
    ]
    passed = gpu_check.passed_modes(equivalence)
    assert passed == ["fast", "fast-reduce-overhead"]
    assert gpu_check.table_engine(steps, passed) == "fast-reduce-overhead"
    assert gpu_check.best_fast(steps, "starmap", passed) == "fast-reduce-overhead"
    failed_fit = [*equivalence, {"batch": 128, "engine": "fast-reduce-overhead", "error": "seed 1: boom"}]
    assert gpu_check.passed_modes(failed_fit) == ["fast"]
    goals = gpu_check.section_goals(steps, [], [], passed)
    assert goals[1]["engine"] == "fast-reduce-overhead" and goals[1]["measured"] == 10.0
    assert goals[1]["met"] is False and goals[2]["met"] is None  # 10x < 25x; no table: no verdict


def test_the_equivalence_plan_keeps_whole_batch_sizes_within_its_budget() -> None:
    from tests.benchmarks import gpu_check

    steps = [
        {"data": "starmap", "engine": e, "batch": b, "ms_per_step": ms, "warmup_s": w}
        for e, ms, w in (("fast", 8.0, 1.0), ("fast-cudagraphs", 1.0, 30.0))
        for b in (8, 128)
    ]
    cfg = {**gpu_check.FULL}
    jobs, left_out = gpu_check.plan_equivalence(steps, cfg, 189, ["fast", "fast-cudagraphs"], 10_000)
    assert len(jobs) == 2 * 2 * 3 and not left_out  # batches x modes x seeds
    jobs, left_out = gpu_check.plan_equivalence(steps, cfg, 189, ["fast", "fast-cudagraphs"], 90)
    # 4,800 eager steps of 8 ms per fit at batch 8 do not fit 90 s on 8 shared workers; 400 at batch 128 do
    assert {j["batch_size"] for j in jobs} == {128} and left_out[0].startswith("batch 8 ")
    assert gpu_check.timing_plan(189, 8, "fast-cudagraphs", 40, 60) == (24, 23, 4)  # full batches only
    assert gpu_check.timing_plan(189, 8, "scvi", 40, 60) == (24, 24, 4)
    assert gpu_check.timing_plan(189, 128, "fast-default", 40, 60) == (2, 1, 61)
    assert gpu_check.device_slug("NVIDIA H100 80GB HBM3") == "h100" and gpu_check.device_slug("NVIDIA H200") == "h200"


def test_the_mps_daemon_is_started_asked_and_stopped_with_its_own_pipe_folder(tmp_path: Path) -> None:
    """The MPS rounds' plumbing, with a stand-in for nvidia-cuda-mps-control (no GPU here): `-d` starts the
    daemon, `get_server_list` asks it, `quit` stops it even when the rounds inside fail, all with the clients'
    pipe folder."""
    from tests.benchmarks import gpu_check

    control = tmp_path / "nvidia-cuda-mps-control"
    calls = tmp_path / "calls"
    control.write_text(
        f'#!/usr/bin/env bash\necho "$* [$(cat 2>/dev/null || true)] $CUDA_MPS_PIPE_DIRECTORY" >> {calls}\n'
        'if [ "${1:-}" != -d ]; then echo 4242; fi\n'
    )
    control.chmod(0o755)
    with pytest.raises(ZeroDivisionError), gpu_check.mps_daemon(str(control), tmp_path / "mps") as env:
        assert gpu_check.mps_servers(str(control), env) == "4242"
        raise ZeroDivisionError  # a round that breaks still stops the daemon
    lines = calls.read_text().splitlines()
    pipe = str(tmp_path / "mps" / "pipe")
    assert [line.split(" [")[0] for line in lines] == ["-d", "", ""]
    assert "get_server_list" in lines[1] and "quit" in lines[2] and all(line.endswith(pipe) for line in lines)
