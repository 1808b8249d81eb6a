"""`spotsweep tune`'s settings that need no training to check: what a trial's sampled parameters become.

tests/test_tune.py trains real (tiny) models to show the tuner works end to end; a trial's settings are
decided before a task starts, so a real journal study in a temporary folder (or a FixedTrial) shows in
seconds that a searched budget (max_steps, max_epochs) reaches each trial's tasks and their ids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from tests.test_tune import sweep_data
from toolkit.config import SweepConfig, parse_sweep
from toolkit.layout import OutputLayout
from toolkit.sweep import Task
from toolkit.tune.space import suggest, trial_tasks
from toolkit.tune.study import open_study


def tuned_sweep(tmp_path: Path, search: dict[str, Any], **grid: Any) -> SweepConfig:
    """test_tune's small sweep with this `search:` block, its destVI grid updated with `grid`."""
    data = sweep_data(tmp_path / "out", search)
    data["methods"][0].update(grid)
    return parse_sweep(data, "t")


def tasks_of(sweep: SweepConfig, number: int, params: dict[str, Any]) -> tuple[dict[str, Any], list[Task]]:
    """The settings and tasks of trial `number` had the sampler picked `params` (a FixedTrial)."""
    grid = sweep.methods[0]
    settings = suggest(optuna.trial.FixedTrial(params), grid)
    return settings, trial_tasks(sweep, grid, number, settings)


# --- a trial's parameters become its tasks ---------------------------------------------------------

BUDGETS = {
    "max_steps": {"low": 100, "high": 1000, "step": 100},
    "max_epochs": {"low": 10, "high": 80, "log": True},
}


@pytest.mark.parametrize("grid_budget", [{"max_steps": 300}, {"max_epochs": 30, "max_steps": None}])
@pytest.mark.parametrize("searched", ["max_steps", "max_epochs"])
def test_a_searched_budget_is_each_tasks_budget_whatever_unit_the_grid_gives(
    tmp_path: Path, grid_budget: dict[str, Any], searched: str
) -> None:
    """The search's budget replaces the grid's, in the search's unit (a search over max_epochs beside a
    grid in steps once trained the default 2,000 epochs, and max_steps beside one in epochs the grid's)."""
    search = {"amortization": ["both", "latent"], searched: BUDGETS[searched]}
    sweep = tuned_sweep(tmp_path, search, **grid_budget)
    value = 500 if searched == "max_steps" else 50
    settings, (task,) = tasks_of(sweep, 3, {searched: value, "amortization": "latent", "batch_size": 8})
    other = "max_epochs" if searched == "max_steps" else "max_steps"
    assert settings[searched] == value and other not in settings, settings
    if searched == "max_steps":
        assert (task.max_epochs, task.extra_settings["max_steps"]) == (0, 500)  # 0 epochs: the budget is steps
        assert "-t500-w50-n3-s0-" in task.id, task.id
    else:
        assert task.max_epochs == 50 and "max_steps" not in task.extra_settings, task.extra_settings
        assert "-e50-w50-n3-s0-" in task.id, task.id
    assert task.amortization == "latent" and task.extra_settings["trial"] == 3
    assert task.extra_settings["n_steps_kl_warmup"] == 50  # the grid's settings the search leaves alone
    assert task.params["lr"] == 0.02 and task.batch_size == 8  # the grid lists 8 and 64: the trial chose


def test_a_real_study_suggests_budgets_on_the_searched_scale_and_records_them(tmp_path: Path) -> None:
    """Asked of a journal study: steps on their step (multiples of 100 from 100), epochs on a log scale in
    range; the journal keeps each trial's distribution, so a resumed study knows the space."""
    for searched, expected in (
        ("max_steps", optuna.distributions.IntDistribution(100, 1000, step=100)),
        ("max_epochs", optuna.distributions.IntDistribution(10, 80, log=True)),
    ):
        sweep = tuned_sweep(tmp_path / searched, {searched: BUDGETS[searched], "sampler": "random"})
        grid = sweep.methods[0]
        study = open_study(OutputLayout(tmp_path / searched / "out"), sweep.name, grid.search)
        for _ in range(5):
            trial = study.ask()
            settings = suggest(trial, grid)
            (task,) = trial_tasks(sweep, grid, trial.number, settings)
            budget = task.extra_settings["max_steps"] if searched == "max_steps" else task.max_epochs
            assert budget == settings[searched] == trial.params[searched]
            study.tell(trial, 0.5)
        recorded = [t.distributions[searched] for t in study.get_trials()]
        assert recorded == [expected] * 5
        values = [t.params[searched] for t in study.get_trials()]
        if searched == "max_steps":
            assert all(value % 100 == 0 and 100 <= value <= 1000 for value in values), values
        else:
            assert all(10 <= value <= 80 for value in values) and len(set(values)) > 1, values
