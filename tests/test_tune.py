"""`spotsweep tune`: Optuna trials as real tasks (tiny destVI models trained in local processes).

A small synthetic tissue, trained for 300 optimizer steps at a learning rate where that already separates
the settings: its small grid (amortization x batch 8 and 64) is run once, and the tuner, searching batch
sizes 4 to 64 on a log scale and both amortizations, must find a setting within TOLERANCE of the grid's
best. Then a stop half way (Ctrl-C) and the same command again (no finished trial rerun, none lost), and
a hopeless trial pruned on its trajectory (its task stopped).
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import REPO
from tests.local_launch import HANG_GUARD_S
from toolkit.backends.checkpointed import read_attempts
from toolkit.cli import app
from toolkit.config import load_sweep, parse_sweep
from toolkit.errors import SpotsweepError
from toolkit.launch import run_sweep
from toolkit.layout import OutputLayout
from toolkit.status import is_running, task_state
from toolkit.sweep import Task, expand
from toolkit.tune.objective import final_score, trial_points
from toolkit.tune.study import load_study, open_study

TOLERANCE = 0.08
"""How far below the small grid's best (excitatory-layer PCC of latent amortization at batch 64, 0.52 at
seed 0; the other three grid settings score 0.20 to 0.25) the tuner's best may be after 6 trials: one
standard deviation over seeds at that setting (seeds 0, 1, 2 score 0.52, 0.67, 0.54 on this tissue at
this budget; batch 56: 0.47, 0.62, 0.50), so a gap below it is seed noise, not a worse setting."""


SMALL: dict[str, Any] = {
    "name": "tune-small",
    "output": "unused",
    "datasets": [
        {
            "name": "small",
            "simulate": {
                "preset": "starmap-like",
                "seed": 0,
                "n_spatial_cells": 1500,
                "n_reference_cells": 1000,
                "n_genes": 120,
            },
        }
    ],
    "methods": [
        {
            "name": "destvi",
            "reference": {"max_epochs": 20, "batch_size": 128, "n_hidden": 32, "n_latent": 5, "n_layers": 1},
            "variant": "2022",
            "amortization": ["both", "latent"],
            "batch_size": [8, 64],
            "max_steps": 300,
            "n_steps_kl_warmup": 50,
            "lr": 0.02,
            "trajectory_points": 10,
            "seed": 0,
        }
    ],
    "executor": {"kind": "local", "max_parallel": 2, "timeout_min": 20},
}
SEARCH: dict[str, Any] = {
    "batch_size": {"low": 4, "high": 64, "log": True},
    "amortization": ["both", "latent"],
    "startup_trials": 2,
    "prune_interval_steps": 30,
    "pruner": "none",
}


def sweep_data(out: Path, search: dict[str, Any] | None = None, **executor: Any) -> dict[str, Any]:
    data = copy.deepcopy(SMALL)
    data["output"] = str(out)
    data["executor"].update(executor)
    if search is not None:
        data["methods"][0]["search"] = copy.deepcopy(search)
    return data


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[OutputLayout, float]:
    """The small grid, run as a sweep: its output (prepared inputs and reference model to reuse) and its
    best score on the tuner's objective."""
    out = tmp_path_factory.mktemp("grid") / "out"
    sweep = parse_sweep(sweep_data(out), "grid")
    summary = run_sweep(sweep, report=False)
    assert summary.states["done"] == 4, summary
    layout = OutputLayout(out)
    search = parse_sweep(sweep_data(out, SEARCH), "t").methods[0].search
    best = max(final_score(layout, task.id, search.objective) for task in expand(sweep))
    return layout, best


def prepared(grid: tuple[OutputLayout, float], out: Path) -> None:
    """The grid's pseudospots and reference model in `out`: a tuning run's prepare step then has nothing
    to do (the same dataset, the same reference settings)."""
    for part in ("data", "models"):
        shutil.copytree(grid[0].root / part, out / part)


def test_search_mistakes_are_one_sentence_naming_file_field_and_fix(tmp_path: Path) -> None:
    cases = {
        "methods[0].search.batch_size' has low 64 above high 4; give low <= high": {
            "batch_size": {"low": 64, "high": 4}
        },
        "unknown key 'methods[0].search.bath_size'; did you mean 'batch_size'": {"bath_size": {"low": 4, "high": 8}},
        "searches both max_steps and max_epochs; search one budget": {
            "max_steps": {"low": 100, "high": 200},
            "max_epochs": {"low": 1, "high": 2},
        },
        "amortization 'lattent' is unknown; use both, latent, none, proportion": {"amortization": ["both", "lattent"]},
    }
    for expected, search in cases.items():
        path = tmp_path / "sweep.yaml"
        path.write_text(yaml.safe_dump(sweep_data(tmp_path / "out", search)))
        with pytest.raises(SpotsweepError) as error:
            load_sweep(path)
        assert str(path) in str(error.value) and expected in str(error.value), str(error.value)
        assert "\n" not in str(error.value)


def test_a_sweep_without_a_search_block_is_refused_in_one_sentence(tmp_path: Path) -> None:
    from toolkit.tune.loop import tune

    with pytest.raises(SpotsweepError, match=r"add a `search:` block .* to one destVI entry"):
        tune(parse_sweep(sweep_data(tmp_path / "out"), "s.yaml"), "s.yaml", trials=1)


def test_a_trials_intermediate_values_are_its_seeds_mean_at_common_steps() -> None:
    """Seeds (and trials) are compared at multiples of the interval; a seed not there yet holds the mark back."""
    seed0 = {30: 0.1, 60: 0.2, 90: 0.3}
    seed1 = {30: 0.3, 60: 0.4}
    assert trial_points([seed0, seed1], 30) == pytest.approx({30: 0.2, 60: 0.3})
    assert trial_points([{25: 0.1, 50: 0.2, 75: 0.3}], 30) == pytest.approx({30: 0.1, 60: 0.2})
    assert trial_points([seed0, {}], 30) == {}


def test_the_tuner_finds_a_setting_near_the_small_grids_best(grid: tuple[OutputLayout, float], tmp_path: Path) -> None:
    from toolkit.tune.loop import tune
    from toolkit.tune.report import status_lines

    out = tmp_path / "out"
    prepared(grid, out)
    start = time.perf_counter()
    summary = tune(parse_sweep(sweep_data(out, SEARCH), "t"), "t", trials=6, max_parallel=2)
    seconds = time.perf_counter() - start
    assert summary.trials["complete"] == 6, summary
    (best,) = summary.best
    assert best["values"][0] >= grid[1] - TOLERANCE, (best, grid[1])
    assert best["params"]["amortization"] == "latent"  # the grid's best's, where both scores 0.25 at most
    print(f"tuner best {best['values'][0]:.4f} ({best['params']}), grid best {grid[1]:.4f}, {seconds:.0f} s")
    confirm = expand(load_sweep(summary.best_file))  # the best settings again, with seeds no trial trained
    assert {(task.batch_size, task.amortization) for task in confirm} == {
        (best["params"]["batch_size"], best["params"]["amortization"])
    }
    assert [task.seed for task in confirm] == [1, 2, 3]
    # ... against the trials' own reference model, shared into OUT/confirm: that run trains no CondSCVI
    from toolkit.prepare import reference_model_id

    for task in confirm:
        model = reference_model_id(task)
        shared = OutputLayout(out / "confirm").model_dir(task.dataset, model) / "training.json"
        assert shared.is_file() and shared.samefile(OutputLayout(out).model_dir(task.dataset, model) / "training.json")

    # every trial's task reached the aggregate with its trial number, and the report and status show the study
    import xarray as xr

    with xr.open_dataset(out / "summary.nc") as summary_nc:
        assert sorted(summary_nc["trial"].values.tolist()) == [0, 1, 2, 3, 4, 5]
        assert int((summary_nc["status"] == "done").sum()) == 6
        assert summary_nc["trial_state"].values.tolist() == ["complete"] * 6
        # laid out along trial, each trial's settings beside it: it grows with trials, not with distinct values
        assert summary_nc["status"].dims == ("dataset", "method", "trial", "seed")
        assert summary_nc["proportion"].dims == ("dataset", "method", "trial", "seed", "spot", "cell_type")
        for name in ("batch_size", "amortization", "max_steps", "lr"):
            assert summary_nc[name].dims == ("trial",), name
        trial = best["number"]
        assert int(summary_nc["batch_size"].sel(trial=trial)) == best["params"]["batch_size"]
        assert str(summary_nc["amortization"].sel(trial=trial).item()) == best["params"]["amortization"]
    print(f"summary.nc of the tuned folder: {(out / 'summary.nc').stat().st_size:,} bytes")
    page = (out / "report" / "index.md").read_text()
    assert "## Tuning" in page and "### Best settings" in page and "optuna-dashboard" in page
    assert "### Configurations ranked by accuracy score" in page and "### Accuracy during training" in page

    # `spotsweep report` draws the page again from the folder alone, and keeps the Tuning section
    (out / "report" / "tune_best_over_time.png").unlink()
    redrawn = CliRunner().invoke(app, ["report", str(out)])
    assert redrawn.exit_code == 0, redrawn.output
    assert (out / "report" / "index.md").read_text() == page
    assert (out / "report" / "tune_best_over_time.png").is_file()
    assert "tune_best_over_time.png" in page and (out / "report" / "tune_best_over_time.png").is_file()
    assert len((out / "tune" / "trials.csv").read_text().strip().splitlines()) == 7
    lines = status_lines(out)
    assert lines[0].startswith("tuning: 6 complete") and lines[1].startswith(f"best: trial {best['number']}")
    shown = CliRunner().invoke(app, ["status", str(out)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and lines[0] in shown.output and lines[1] in shown.output, shown.output

    # the page in a real headless browser: the Tuning section, its figure decoded, no console error
    from selenium.webdriver.common.by import By

    from tests.test_report_html import _browser

    browser = _browser()
    try:
        browser.get((out / "report" / "index.html").as_uri())
        assert "Tuning" in [h.text for h in browser.find_elements(By.TAG_NAME, "h2")]
        (figure,) = browser.find_elements(By.CSS_SELECTOR, "img[alt='best value over trials']")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", figure) > 100
        assert not [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    finally:
        browser.quit()


def _launch(sweep_file: Path, trials: int) -> subprocess.Popen:
    """`spotsweep tune` as a user starts it from a terminal (its own session; SIGINT not ignored)."""
    return subprocess.Popen(
        [sys.executable, "-m", "toolkit", "tune", str(sweep_file), "--trials", str(trials)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _trial_states(out: Path) -> dict[int, str]:
    study = load_study(OutputLayout(out))
    return {} if study is None else {t.number: t.state.name.lower() for t in study.get_trials(deepcopy=False)}


@pytest.mark.parametrize("stop", ["ctrl-c", "killed"])
def test_a_stopped_tune_resumes_without_rerunning_or_losing_a_trial(
    grid: tuple[OutputLayout, float], tmp_path: Path, stop: str
) -> None:
    """Ctrl-C while trial 1 trains (or the launcher and its processes killed outright, as when a terminal's
    session dies): trial 0 stays complete, trial 1 stays in the journal (running) and its task keeps its
    checkpoint; the same command resumes trial 1 (same number) and asks trial 2, no more."""
    from toolkit.tune.loop import tune

    out = tmp_path / "out"
    prepared(grid, out)
    data = sweep_data(out, SEARCH, max_parallel=1, checkpoint_every_epochs=1)
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(data))
    launcher = _launch(sweep_file, trials=3)
    deadline = time.monotonic() + HANG_GUARD_S
    try:
        while not (_trial_states(out).get(0) == "complete" and list(out.glob("tasks/*-n1-*/checkpoint/last.pt"))):
            assert launcher.poll() is None, launcher.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.5)
        if stop == "killed":
            os.killpg(launcher.pid, signal.SIGKILL)
        else:
            launcher.send_signal(signal.SIGINT)
        _, stderr = launcher.communicate(timeout=600)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode != 0
    if stop == "ctrl-c":
        assert "stopped (Ctrl-C or SIGTERM) with 1 trial(s) running" in stderr, stderr
    assert _trial_states(out) == {0: "complete", 1: "running"}
    layout = OutputLayout(out)
    (first,) = out.glob("tasks/*-n0-*/result.json")
    first_written = first.stat().st_mtime_ns
    (stopped,) = out.glob("tasks/*-n1-*")
    while is_running(layout, stopped.name):
        assert time.monotonic() < deadline, "trial 1's task trains on after its launcher was stopped"
        time.sleep(0.2)
    assert not (stopped / "result.json").exists() and not (stopped / "error.json").exists()

    summary = tune(parse_sweep(data, str(sweep_file)), str(sweep_file), trials=3)
    assert _trial_states(out) == {0: "complete", 1: "complete", 2: "complete"}
    assert summary.trials["complete"] == 3
    assert first.stat().st_mtime_ns == first_written  # trial 0 was not run again
    attempts = read_attempts(layout, stopped.name)
    assert attempts[-1].get("resumed_from_epoch", 0) >= 1, attempts  # trial 1 went on from its checkpoint


def test_a_hopeless_trial_is_pruned_on_its_trajectory_and_its_task_stopped(
    grid: tuple[OutputLayout, float], tmp_path: Path
) -> None:
    """Trial 0 learns (lr 0.02); trial 1 barely moves (lr 1e-5): the median pruner stops it part way."""
    from toolkit.tune.loop import tune

    out = tmp_path / "out"
    prepared(grid, out)
    search = {
        "lr": {"low": 1e-5, "high": 0.05, "log": True},
        "pruner": "median",
        "startup_trials": 1,
        "prune_interval_steps": 30,
    }
    data = sweep_data(out, search, max_parallel=1)
    data["methods"][0].update({"amortization": "latent", "batch_size": 64})
    sweep = parse_sweep(data, "t")
    layout = OutputLayout(out)
    study = open_study(layout, sweep.name, sweep.methods[0].search)
    study.enqueue_trial({"lr": 0.02})
    study.enqueue_trial({"lr": 1e-5})
    summary = tune(sweep, "t", trials=2)
    assert _trial_states(out) == {0: "complete", 1: "pruned"}, summary
    pruned = load_study(layout).trials[1]
    assert max(pruned.intermediate_values) < 300  # stopped before its budget
    (task_dir,) = out.glob("tasks/*-n1-*")
    assert not is_running(layout, task_dir.name)
    # the stopped task reads pruned (not started) in status, the aggregate and the report
    state = task_state(layout, next(t for t in load_tasks(layout) if t.id == task_dir.name))
    assert (state.state, state.reason.split(" at step")[0]) == ("pruned", "trial 1 pruned"), state
    # its own process: the CLI's console takes its width from COLUMNS when first made, which in a test worker
    # may be before this test (the table would wrap the task id at 80 columns)
    shown = subprocess.run(
        [sys.executable, "-m", "toolkit", "status", str(out), "--state", "pruned"],
        env={**os.environ, "COLUMNS": "250"}, capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert shown.returncode == 0 and task_dir.name in shown.stdout, shown.stdout + shown.stderr
    assert "1 done, 0 failed, 1 pruned, 0 started, 0 missing" in shown.stdout, shown.stdout
    import xarray as xr

    with xr.open_dataset(out / "summary.nc") as summary_nc:
        assert summary_nc["status"].sel(trial=1).values.ravel().tolist() == ["pruned"]
        assert summary_nc["trial_state"].values.tolist() == ["complete", "pruned"]
    assert "2 tasks: 1 done, 0 failed, 1 pruned, 0 started, 0 missing." in (out / "report" / "index.md").read_text()


def test_a_trial_of_two_seeds_scores_their_mean(grid: tuple[OutputLayout, float], tmp_path: Path) -> None:
    """`seeds_per_trial: 2`: each trial trains seeds 0 and 1 (two tasks), its value is their scores' mean,
    and the aggregate and the report's best settings show both (a short budget: 120 steps)."""
    from toolkit.tune.loop import tune

    out = tmp_path / "out"
    prepared(grid, out)
    data = sweep_data(out, {**SEARCH, "seeds_per_trial": 2}, max_parallel=2)
    data["methods"][0]["max_steps"] = 120
    sweep = parse_sweep(data, "t")
    summary = tune(sweep, "t", trials=2, max_parallel=1)
    assert summary.trials["complete"] == 2, summary
    layout = OutputLayout(out)
    objective = sweep.methods[0].search.objective
    for trial in load_study(layout).trials:
        tasks = sorted(trial.user_attrs["tasks"], key=lambda task: task["seed"])
        assert [task["seed"] for task in tasks] == [0, 1]
        scores = [final_score(layout, task_id, objective) for task_id in sorted(trial.user_attrs["task_ids"])]
        assert sorted(trial.user_attrs["seed_scores"]) == pytest.approx(sorted(scores))
        assert trial.value == pytest.approx(sum(scores) / 2)
    import xarray as xr

    with xr.open_dataset(out / "summary.nc") as summary_nc:
        assert summary_nc["status"].sizes["seed"] == 2 and int((summary_nc["status"] == "done").sum()) == 4
    page = (out / "report" / "index.md").read_text()
    assert "2 seed(s) per trial" in page
    best = page.split("### Best settings")[1].split("###")[0]
    (row,) = [line for line in best.splitlines() if line.startswith("| ")][1:]
    assert len(row.rstrip(" |").split("|")[-1].split(", ")) == 2, row  # the seed scores column lists both


def load_tasks(layout: OutputLayout) -> list:
    from toolkit.status import load_tasks as load

    return load(layout)


def test_two_objectives_train_real_trials_into_a_front_without_pruning_or_best_yaml(
    grid: tuple[OutputLayout, float], tmp_path: Path
) -> None:
    """Accuracy and training seconds with real training: each trial is told both values (its seeds' mean
    score, its seeds' mean seconds), none is pruned (Optuna cannot prune a study of two objectives), the
    front is what the summary, status and report give, and no best.yaml is written (a front has no one best)."""
    from toolkit.tune.loop import tune
    from toolkit.tune.objective import train_seconds

    out = tmp_path / "out"
    prepared(grid, out)
    search = {**SEARCH, "second_objective": "train_time_s", "pruner": "median"}
    summary = tune(parse_sweep(sweep_data(out, search), "t"), "t", trials=3, max_parallel=2)
    assert summary.trials["complete"] == 3 and summary.best_file is None, summary
    assert not (out / "tune" / "best.yaml").exists()
    layout, objective = OutputLayout(out), parse_sweep(sweep_data(out, search), "t").methods[0].search.objective
    trials = load_study(layout).get_trials(deepcopy=False)
    for trial in trials:
        (task,) = (Task.from_dict(data) for data in trial.user_attrs["tasks"])
        assert trial.values[0] == pytest.approx(final_score(layout, task.id, objective))
        assert trial.values[1] == pytest.approx(train_seconds(layout, task.id)) and trial.values[1] > 0
    front = {trial["number"] for trial in summary.best}
    dominated = {
        t.number
        for t in trials
        if any(o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values for o in trials)
    }
    assert front == {t.number for t in trials} - dominated and front
    page = (out / "report" / "index.md").read_text()
    assert "### Pareto front (objective, training seconds)" in page
    shown = CliRunner().invoke(app, ["status", str(out)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and shown.output.count("best: trial") == len(front), shown.output


def test_two_objectives_give_a_pareto_front_in_the_report_and_status(tmp_path: Path) -> None:
    """Accuracy and training seconds: the report's section shows the front (trials no other beats on both),
    not a best value over time; status names each trial of the front. A real journal, trials told by hand."""
    import optuna

    from toolkit.tune.report import section, status_lines

    search = parse_sweep(sweep_data(tmp_path, {**SEARCH, "second_objective": "train_time_s"}), "t").methods[0].search
    layout = OutputLayout(tmp_path / "out")
    study = open_study(layout, "pareto", search)
    distributions = {"batch_size": optuna.distributions.IntDistribution(4, 64, log=True)}
    for batch, values in ((8, [0.5, 30.0]), (64, [0.4, 5.0]), (16, [0.3, 40.0])):
        trial = optuna.trial.create_trial(params={"batch_size": batch}, distributions=distributions, values=values)
        study.add_trial(trial)
    lines = section(layout, study, search, tmp_path)
    text = "\n".join(lines)
    assert "### Pareto front (objective, training seconds)" in text and "best value over trials" not in text
    front = text.split("### Pareto front")[1].split("###")[0]
    assert "| 0 | 0.5 | 30 |" in front and "| 1 | 0.4 | 5 |" in front and "| 2 |" not in front
    assert [line.split(":")[0] for line in status_lines(layout.root)[1:]] == ["best", "best"]
