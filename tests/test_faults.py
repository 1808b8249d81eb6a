"""Faults and hostile input, first part: what broke when a tester tried (each of these failed before).

- a sweep whose every task fails still ends with a summary and a report that lists the failures;
- a result.json cut short does not block the sweep: aggregate keeps it aside, records the failure
  naming the file, and `--retry-failed` redoes the task; a cut error.json or sweep.json is one sentence;
- results and folders are readable by the group and others (umask), as on a cluster's shared disk;
- `--max-parallel 0` is refused, not silently replaced.
"""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import TINY_SWEEP
from toolkit.aggregate import write_summary
from toolkit.cli import app
from toolkit.config import parse_sweep
from toolkit.errors import SpotsweepError
from toolkit.launch import run_sweep, sweep_states
from toolkit.layout import OutputLayout
from toolkit.sweep import expand


def _controls(out: Path) -> dict:
    data = copy.deepcopy(TINY_SWEEP)
    data["output"] = str(out)
    data["methods"] = [{"name": "control", "kind": ["truth", "nnls"]}]
    return data


@pytest.fixture(scope="module")
def controls_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, OutputLayout]:
    out = tmp_path_factory.mktemp("faults")
    data = _controls(out)
    run_sweep(parse_sweep(data, "t"))
    return data, OutputLayout(out)


def test_a_sweep_in_which_every_task_fails_still_reports(tmp_path: Path) -> None:
    data = copy.deepcopy(TINY_SWEEP)
    data["output"] = str(tmp_path)
    data["methods"][0].update({"amortization": "both", "batch_size": 8, "plan_kwargs": {"no_such_option": 1}})
    summary = run_sweep(parse_sweep(data, "t"))
    assert summary.states["failed"] == 1 and summary.states["done"] == 0
    page = (tmp_path / "report" / "index.md").read_text()
    assert "1 tasks are not done" in page and "no_such_option" in page
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output


def test_a_result_cut_short_is_kept_aside_and_redone(controls_run: tuple[dict, OutputLayout]) -> None:
    data, layout = controls_run
    task = expand(parse_sweep(data, "t"))[0]
    result = layout.result(task.id)
    result.write_bytes(result.read_bytes()[:100])  # a full disk, a killed copy
    summary = write_summary(layout.root)
    assert str(summary["status"].sel(variant="truth").squeeze().item()) == "failed"
    reason = str(summary["reason"].sel(variant="truth").squeeze().item())
    assert "result.json was not valid JSON" in reason and "--retry-failed" in reason
    assert list(layout.task_dir(task.id).glob("result.corrupt-*.json"))  # kept, not deleted
    states = {s.task.id: s.state for s in sweep_states(layout.root)}
    assert states[task.id] == "failed"
    again = run_sweep(parse_sweep(data, "t"), retry_failed=True)
    assert again.submitted == 1 and again.states["done"] == 2


def test_cut_error_and_sweep_files_are_one_sentence(controls_run: tuple[dict, OutputLayout], tmp_path: Path) -> None:
    data, layout = controls_run
    task = expand(parse_sweep(data, "t"))[1]
    kept = layout.result(task.id).rename(tmp_path / "result.json")
    layout.error(task.id).write_text('{"reason": "Traceb')
    try:
        states = {s.task.id: s for s in sweep_states(layout.root)}
        assert states[task.id].state == "failed" and "error.json: not valid JSON" in states[task.id].reason
    finally:
        layout.error(task.id).unlink()
        kept.rename(layout.result(task.id))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sweep.json").write_text('{"name": "t", "tas')
    with pytest.raises(SpotsweepError, match=r"sweep.json: cannot read the sweep's task list .*run `spotsweep run"):
        sweep_states(broken)


def test_results_and_folders_are_readable_by_colleagues(controls_run: tuple[dict, OutputLayout]) -> None:
    _, layout = controls_run
    mask = os.umask(0)
    os.umask(mask)
    expected_file, expected_dir = 0o666 & ~mask, 0o777 & ~mask
    files = [layout.summary, layout.sweep_file, *layout.root.glob("tasks/*/result.json"), layout.report / "index.md"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == expected_file, path
    for path in [layout.root / "summary.zarr", *layout.root.glob("data/*/spots.zarr")]:
        assert stat.S_IMODE(path.stat().st_mode) == expected_dir, path


def test_max_parallel_zero_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "sweeps/demo.yaml", "--max-parallel", "0"])
    assert result.exit_code == 2 and "max-parallel" in result.output
