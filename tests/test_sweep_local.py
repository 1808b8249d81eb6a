"""The demo sweep, shrunk: real CondSCVI + DestVI training in real local processes through submitit.

One run serves every test here; the assertions read the aggregate's contents, not just its files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.conftest import TINY_SWEEP
from toolkit.config import parse_sweep
from toolkit.launch import run_sweep, sweep_states
from toolkit.layout import OutputLayout, read_json
from toolkit.sweep import expand


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("tiny-sweep")
    summary = run_sweep(parse_sweep(TINY_SWEEP, "tiny"), out)
    return out, summary


def test_every_task_ran_once_and_finished(finished: tuple[Path, object]) -> None:
    out, summary = finished
    assert summary.submitted == 4
    assert summary.states == {"done": 4, "failed": 0, "started": 0, "missing": 0}
    assert {state.state for state in sweep_states(out)} == {"done"}


def test_tasks_ran_as_separate_local_submitit_processes(finished: tuple[Path, object]) -> None:
    out, _ = finished
    layout = OutputLayout(out)
    jobs = [read_json(layout.result(task.id))["provenance"]["job"] for task in expand(parse_sweep(TINY_SWEEP, "t"))]
    assert {job["SUBMITIT_EXECUTOR"] for job in jobs} == {"local"}
    assert len({job["SUBMITIT_LOCAL_JOB_ID"] for job in jobs}) == 4
    logs = sorted(path.name for path in layout.logs.iterdir() if path.is_dir())
    assert "%j" not in logs and len(logs) == 5, logs  # one folder per job (prepare + 4), no literal pattern
    assert (layout.logs / "controllers.log").exists()  # submitit's job controllers' own stderr


def test_reference_model_trained_once_for_the_whole_sweep(finished: tuple[Path, object]) -> None:
    out, _ = finished
    models = list((out / "models" / "tiny-tissue").glob("condscvi-*/training.json"))
    assert len(models) == 1


def test_summary_has_named_dims_and_sensible_values(finished: tuple[Path, object]) -> None:
    out, _ = finished
    with xr.open_dataset(out / "summary.nc") as summary:
        pcc = summary["pcc"].squeeze(["dataset", "method", "variant", "max_epochs", "seed"])
        assert pcc.dims == ("amortization", "batch_size", "cell_type")
        assert list(pcc.amortization.values) == ["both", "latent"]
        assert list(pcc.batch_size.values) == [8, 64]
        assert pcc.sizes["cell_type"] == 12
        assert (summary["status"] == "done").all()

        proportion = summary["proportion"]
        assert np.allclose(proportion.sum("cell_type"), 1.0, atol=1e-5)
        truth = summary["true_proportion"].isel(dataset=0)
        assert np.allclose(truth.sum("cell_type"), 1.0)
        assert summary.sizes["spot"] == truth.sizes["spot"] > 10

        # The metric really compares prediction and truth: recompute one PCC by hand.
        one = proportion.isel(dataset=0, method=0, variant=0, max_epochs=0, seed=0).sel(
            amortization="both", batch_size=8
        )
        cell_type = str(summary.cell_type.values[0])
        expected = np.corrcoef(one.sel(cell_type=cell_type), truth.sel(cell_type=cell_type))[0, 1]
        assert float(pcc.sel(amortization="both", batch_size=8, cell_type=cell_type)) == pytest.approx(
            expected, abs=1e-6
        )

        # DestVI counts whole minibatches per epoch (the last one partial).
        n_spots = summary.sizes["spot"]
        steps = summary["n_steps"].squeeze(["dataset", "method", "variant", "max_epochs", "seed"])
        for batch_size in (8, 64):
            assert int(steps.sel(amortization="both", batch_size=batch_size)) == 3 * math.ceil(n_spots / batch_size)
        assert (summary["train_time_s"] > 0).all()
        assert summary["train_time_s"].attrs["units"] == "s"


def test_report_has_a_page_and_figures(finished: tuple[Path, object]) -> None:
    out, _ = finished
    page = (out / "report" / "index.md").read_text()
    assert "4 tasks: 4 done" in page
    assert (out / "report" / "proportions_tiny-tissue.png").stat().st_size > 10_000
    assert (out / "report" / "metrics_vs_batch_size_tiny-tissue.png").exists()
    html = (out / "report" / "index.html").read_text()
    # maps, metrics and runtimes against batch size, accuracy during training
    assert html.count('src="data:image/png;base64,') == 4 and "What the numbers mean" in html


def test_running_again_redoes_nothing(finished: tuple[Path, object]) -> None:
    out, _ = finished
    results = sorted((out / "tasks").glob("*/result.json"))
    before = [path.stat().st_mtime_ns for path in results]
    again = run_sweep(parse_sweep(TINY_SWEEP, "tiny"), out)
    assert again.submitted == 0 and again.skipped == 4
    assert [path.stat().st_mtime_ns for path in results] == before


def test_status_names_every_task_in_full_and_lists_only_the_states_asked(finished: tuple[Path, object]) -> None:
    """A narrow terminal folds a task id rather than cut it; `--state` leaves the others out, not the counts."""
    from typer.testing import CliRunner

    from toolkit.cli import TaskStateName, app
    from toolkit.status import ALL_STATES

    assert [name.value for name in TaskStateName] == list(ALL_STATES)
    out, _ = finished
    ids = [task.id for task in expand(parse_sweep(TINY_SWEEP, "tiny"))]
    every = CliRunner().invoke(app, ["status", str(out)], terminal_width=60)
    assert every.exit_code == 0, every.output
    first_column = "".join(line.split("│")[1].strip() for line in every.output.splitlines() if line.startswith("│"))
    assert all(task_id in first_column for task_id in ids) and "…" not in every.output
    failed_only = CliRunner().invoke(app, ["status", str(out), "--state", "failed"], terminal_width=60)
    assert failed_only.exit_code == 0, failed_only.output
    assert not [line for line in failed_only.output.splitlines() if line.startswith("│")]  # no task row
    assert "4 done, 0 failed" in failed_only.output
