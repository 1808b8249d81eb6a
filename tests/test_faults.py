"""Faults and hostile input, first part: what broke when a tester tried (each of these failed before).

- a sweep whose every task fails still ends with a summary and a report that lists the failures;
- a result.json cut short does not block the sweep: aggregate keeps it aside, records the failure
  naming the file, and `--retry-failed` redoes the task; a cut error.json or sweep.json is one sentence;
- an error.json deleted (by a requeue) while the launcher reads it is no crash;
- results and folders are readable by the group and others (umask), as on a cluster's shared disk;
- `--max-parallel 0` is refused, not silently replaced.
"""

from __future__ import annotations

import copy
import os
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import TINY_SWEEP
from toolkit import status
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
    data["methods"][0].update({"amortization": "both", "batch_size": 8, "plan_kwargs": {"optimizer": "Nadam2"}})
    summary = run_sweep(parse_sweep(data, "t"))
    assert summary.states["failed"] == 1 and summary.states["done"] == 0
    page = (tmp_path / "report" / "index.md").read_text()
    assert "1 tasks are not done" in page and "Optimizer not understood" in page
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


def test_an_error_file_deleted_while_status_reads_it_is_no_crash(
    controls_run: tuple[dict, OutputLayout], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task requeued at its SLURM time limit deletes the error.json its stopped attempt wrote. If that
    happens while the launcher polls, the poll sees no error, not a crash (CI once died on this race)."""
    data, layout = controls_run
    task = expand(parse_sweep(data, "t"))[1]
    kept = layout.result(task.id).rename(tmp_path / "result.json")
    layout.error(task.id).write_text('{"reason": "requeued"}')
    read = status.read_json

    def requeued_meanwhile(path: Path) -> object:
        path.unlink(missing_ok=True)  # the requeued attempt's cleanup wins the race
        return read(path)

    monkeypatch.setattr(status, "read_json", requeued_meanwhile)
    try:
        assert status.task_state(layout, task).state == "started"  # its started.json is there
    finally:
        kept.rename(layout.result(task.id))


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


# --- hostile input: one sentence each, before anything runs ------------------------------------------


def cli(args: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`spotsweep ARGS` in this process, as a user runs it: (exit status, what it printed)."""
    import sys

    from toolkit.cli import main

    monkeypatch.setattr(sys, "argv", ["spotsweep", *args])
    with pytest.raises(SystemExit) as ended:
        main()
    printed = capsys.readouterr()
    return int(ended.value.code or 0), printed.out + printed.err


def _write(tmp_path: Path, data: dict) -> Path:
    import yaml

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_yaml_tag_is_named_as_a_tag_not_as_bad_syntax(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text('name: x\noutput: !!python/object/apply:os.system ["echo hi"]\n')
    status, printed = cli(["run", str(path)], capsys, monkeypatch)
    assert status == 2 and "the YAML tag at line 2" in printed and "remove the tag" in printed


def test_a_newline_in_a_path_never_reaches_a_job_script(tmp_path: Path, capsys, monkeypatch) -> None:
    data = _controls(tmp_path / "out")
    data["output"] = f"{tmp_path}/out\nsrun touch {tmp_path}/pwned"
    status, printed = cli(["run", str(_write(tmp_path, data))], capsys, monkeypatch)
    assert status == 2 and "newline or another control character" in printed
    assert not (tmp_path / "pwned").exists()


def test_an_output_that_is_a_file_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "taken").write_text("mine")
    data = _controls(tmp_path / "taken")
    status, printed = cli(["run", str(_write(tmp_path, data))], capsys, monkeypatch)
    assert status == 2 and "the output is an existing file" in printed
    status, printed = cli(["simulate", "--out", str(tmp_path / "taken")], capsys, monkeypatch)
    assert status == 2 and "--out is an existing file" in printed
    assert (tmp_path / "taken").read_text() == "mine"


def test_a_sweep_of_a_million_tasks_is_refused_at_once(tmp_path: Path, capsys, monkeypatch) -> None:
    data = _controls(tmp_path / "out")
    data["methods"] = [{**TINY_SWEEP["methods"][0], "seed": list(range(1000)), "batch_size": list(range(1, 1001))}]
    status, printed = cli(["run", str(_write(tmp_path, data))], capsys, monkeypatch)
    assert status == 2
    assert "has 2,000,000 tasks, more than the limit of 10,000" in printed and "--max-tasks" in printed
    assert not (tmp_path / "out").exists()


def test_a_window_too_small_for_the_coordinates_is_one_sentence() -> None:
    from toolkit.data.synthetic import simulate
    from toolkit.pseudospots import build_pseudospots

    _, cells = simulate("starmap-like", 1, n_spatial_cells=200, n_reference_cells=50, n_genes=20)
    with pytest.raises(SpotsweepError, match="more than 2\\^31 windows of 1e-300"):
        build_pseudospots(cells, 1e-300)


def test_missing_predictions_are_not_scored_as_zero(tmp_path: Path, capsys, monkeypatch) -> None:
    (tmp_path / "truth.csv").write_text("spot,A,B\ns1,0.5,0.5\ns2,1,0\ns3,0,1\n")
    (tmp_path / "pred.csv").write_text("spot,A,B\ns1,0.4,0.6\ns2,,0.1\ns3,0.1,0.9\n")
    status, printed = cli(["score", str(tmp_path / "truth.csv"), str(tmp_path / "pred.csv")], capsys, monkeypatch)
    assert status == 2 and "1 predictions are missing (NaN), such as spot s2, column A" in printed


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"module_kwargs": {"amortisation": "both"}}, "module_kwargs 'amortisation' is not an argument of scvi-tools"),
        ({"module_kwargs": {"n_latent": 3}}, "module_kwargs 'n_latent' comes from the CondSCVI reference"),
        ({"plan_kwargs": {"beta_regg": 1.0}}, "plan_kwargs 'beta_regg' is neither a training-plan option nor a loss"),
        ({"plan_kwargs": {"lr": 0.1}}, "plan_kwargs 'lr' is set from this grid's own key"),
    ],
)
def test_pass_through_keywords_are_checked_before_anything_trains(kwargs: dict, expected: str) -> None:
    data = copy.deepcopy(TINY_SWEEP)
    data["methods"][0].update(kwargs)
    with pytest.raises(SpotsweepError, match=expected):
        parse_sweep(data, "sweep.yaml")


# --- processes that meet: nothing done twice ---------------------------------------------------------


def test_a_second_run_is_refused_and_a_killed_launchers_task_is_not_trained_twice(tmp_path: Path) -> None:
    import signal
    import subprocess
    import time

    from tests.conftest import REPO
    from toolkit.backends.checkpointed import read_attempts

    data = copy.deepcopy(TINY_SWEEP)
    data["output"] = str(tmp_path / "out")
    data["methods"][0].update({"amortization": "both", "batch_size": 8, "max_epochs": 400})
    data["executor"] = {"kind": "local", "max_parallel": 1, "timeout_min": 20}
    (task,) = expand(parse_sweep(data, "t"))
    layout = OutputLayout(tmp_path / "out")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "run", str(_write(tmp_path, data))],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 3600  # a guard against a hang, not a timing: a loaded CI machine is slow
        while not layout.progress(task.id).exists():
            assert launcher.poll() is None and time.monotonic() < deadline, "the task never started training"
            time.sleep(0.2)
        with pytest.raises(SpotsweepError, match="another `spotsweep run` or `tune` is working in this output folder"):
            run_sweep(parse_sweep(data, "t"))
        launcher.kill()  # the launcher alone: its task process trains on, an orphan
        launcher.wait()
        assert {s.task.id: s.state for s in sweep_states(layout.root)}[task.id] == "running"
        again = run_sweep(parse_sweep(data, "t"), report=False)
        assert again.submitted == 0  # running elsewhere: not started a second time
        while not layout.result(task.id).exists():
            assert time.monotonic() < deadline, "the orphaned task never finished"
            time.sleep(0.5)
    finally:
        os.killpg(launcher.pid, signal.SIGKILL) if launcher.poll() is None else None
        subprocess.run(["pkill", "-KILL", "-s", str(launcher.pid)], check=False)
    assert [attempt["outcome"] for attempt in read_attempts(layout, task.id)] == ["done"]


def test_two_aggregations_of_one_folder_take_turns(controls_run: tuple[dict, OutputLayout]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    _, layout = controls_run
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: write_summary(layout.root), range(2)))
    assert all(r.sizes == results[0].sizes for r in results)
    assert (layout.root / "summary.zarr").is_dir()


def test_a_zarr_store_with_missing_chunks_is_refused_not_read_as_zeros(tmp_path: Path) -> None:
    import anndata as ad
    import numpy as np

    from toolkit.data.readers import open_cells
    from toolkit.data.synthetic import simulate

    _, cells = simulate("starmap-like", 1, n_spatial_cells=3000, n_reference_cells=50, n_genes=20)
    cells.X = np.asarray(cells.X.todense() if hasattr(cells.X, "todense") else cells.X)
    store = tmp_path / "cells.zarr"
    with ad.settings.override(zarr_write_format=2):
        cells.write_zarr(store, chunks=(500, 20))
    (store / "X" / "1.0").unlink()  # an interrupted copy
    with pytest.raises(SpotsweepError, match=r"cells.zarr: X has 1 of its 6 stored chunks missing"):
        open_cells(store)


def test_apptainer_lines_are_quoted_and_comma_paths_refused(tmp_path: Path) -> None:
    """A path with spaces or quotes stays one word of the `apptainer exec` line; a comma (apptainer's bind
    separator) is refused, since the job would silently see other paths."""
    import shlex

    from toolkit.backends.apptainer import job_binds, python_command

    odd = tmp_path / "it's a $HOME folder"
    odd.mkdir()
    image = odd / "img.sif"
    image.write_bytes(b"not an image, but a file")
    line = python_command(image, job_binds(odd), digest=False)
    words = shlex.split(line)
    assert words[words.index("--bind") + 1] == str(odd.resolve())
    assert str(image.resolve()) in words
    comma = tmp_path / "a,b"
    comma.mkdir()
    with pytest.raises(SpotsweepError, match="comma"):
        job_binds(comma)


def test_a_task_stopped_by_sigterm_says_so_and_how_to_rerun_it() -> None:
    """Lightning's SIGTERMException has no message: error.json's reason would read "SIGTERMException: "."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from toolkit.task import _reason

    assert "SIGTERM" in _reason(SIGTERMException()) and "--retry-failed" in _reason(SIGTERMException())
    assert _reason(ValueError("bad")) == "ValueError: bad"


def test_an_interrupted_task_is_told_from_a_failed_one() -> None:
    """Ctrl-C reaches a task as KeyboardInterrupt, or as the SystemExit Lightning raises after shutting down
    on one: either is a stop (resumable as it is), not a failure."""
    from toolkit.task import interrupted

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemExit(1) from None
    except SystemExit as lightning_exit:
        assert interrupted(lightning_exit)
    assert interrupted(KeyboardInterrupt()) and not interrupted(SystemExit(1)) and not interrupted(ValueError())
