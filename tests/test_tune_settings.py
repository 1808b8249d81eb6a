"""`spotsweep tune`'s settings that need no training to check: what a trial's sampled parameters become,
the samplers and pruners a `search:` block names, and optuna-dashboard on the study's journal.

tests/test_tune.py trains real (tiny) models to show the tuner works end to end; everything here is
decided before a task starts, or by Optuna from the values a trial reports, so a real journal study in a
temporary folder, trials asked and told by hand, and trajectory lines written by hand show it in seconds:
a searched budget (max_steps, max_epochs), variant and drop_last reach each trial's tasks, their ids and
the summary's trial coordinates; random, gp, nsga2 (and tpe) are the samplers asked for and repeat
themselves for the same tuner seed; Hyperband prunes a clearly worse trial at the optimizer steps the
loop reports; the dashboard lists the study, its trials and their values from the journal file.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
import yaml

from tests.test_tune import SEARCH, sweep_data
from toolkit.aggregate import _trial_coordinates
from toolkit.config import SweepConfig, load_sweep, parse_sweep
from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout
from toolkit.sweep import Task, optional_settings
from toolkit.task import LIVE_TRAJECTORY, append_line
from toolkit.tune.loop import Loop, Running
from toolkit.tune.space import suggest, trial_tasks
from toolkit.tune.study import journal_path, open_study


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


def test_variant_and_drop_last_choices_become_each_tasks_settings_ids_and_trial_coordinates(tmp_path: Path) -> None:
    """`variant: [2022, current]` as a user types it (2022 unquoted, a YAML number), drop_last both ways:
    each combination is its trial's task, named by its id, and a coordinate along `trial` in summary.nc."""
    data = sweep_data(tmp_path / "out", {"variant": [2022, "current"], "drop_last": [True, False]})
    data["methods"][0]["amortization"] = "latent"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data).replace("- '2022'", "- 2022"))
    assert "- 2022\n" in path.read_text()
    sweep = load_sweep(path)
    assert sweep.methods[0].search.variant == ["2022", "current"]
    picks = [("2022", True), ("current", True), ("2022", False), ("current", False)]
    tasks = []
    for number, (variant, drop_last) in enumerate(picks):
        settings, (task,) = tasks_of(sweep, number, {"variant": variant, "drop_last": drop_last, "batch_size": 8})
        assert (settings["variant"], settings["drop_last"]) == (variant, drop_last)
        assert task.variant == variant and task.setting("drop_last", False) is drop_last
        assert task.id.startswith(f"small-destvi-{variant}-latent-b8-t300-")
        assert ("-dl-" in task.id) is drop_last, task.id
        tasks.append(task)
    assert len({task.id for task in tasks}) == 4
    coords = _trial_coordinates(tasks, optional_settings(tasks), [0, 1, 2, 3])
    assert coords["variant"] == ("trial", ["2022", "current", "2022", "current"])
    assert coords["drop_last"] == ("trial", [True, True, False, False])
    assert coords["max_steps"] == ("trial", [300] * 4) and coords["amortization"] == ("trial", ["latent"] * 4)


def test_a_grid_listing_several_variants_lets_the_trial_choose_among_them(tmp_path: Path) -> None:
    """A setting the search leaves out but the grid lists twice is the trial's choice, asked of the study."""
    sweep = tuned_sweep(tmp_path, {"batch_size": {"low": 4, "high": 64}}, variant=["2022", "current"])
    study = open_study(OutputLayout(tmp_path / "out"), sweep.name, sweep.methods[0].search)
    trial = study.ask()
    settings = suggest(trial, sweep.methods[0])
    assert trial.distributions["variant"] == optuna.distributions.CategoricalDistribution(["2022", "current"])
    assert trial_tasks(sweep, sweep.methods[0], 0, settings)[0].variant == settings["variant"]


@pytest.mark.parametrize(
    ("search", "grid", "expected"),
    [
        (
            {"variant": ["2022", "current"], "amortization": ["both", "proportion"]},
            {},
            "a trial of the search may pick variant 'current' with amortization 'proportion', which needs the "
            "normal prior of variant 2022; search variant 2022 only, or amortization without it",
        ),
        ({"variant": ["current"]}, {"amortization": "none"}, "variant 'current' with amortization 'none'"),
        ({"amortization": ["proportion"]}, {"variant": ["2022", "current"]}, "variant 'current' with amortization"),
        ({"variant": ["2023"]}, {}, "variant '2023' is unknown; use 2022, current"),
        ({"drop_last": [True, True]}, {}, "drop_last lists a value twice"),
    ],
)
def test_search_choices_the_grid_forbids_are_one_sentence(
    tmp_path: Path, search: dict[str, Any], grid: dict[str, Any], expected: str
) -> None:
    """A trial could combine choices the grid itself refuses (variant current's mixture prior with
    amortization proportion or none): the sweep stops before anything trains, in one sentence naming the
    file. (A search over both max_steps and max_epochs: tests/test_tune.py's search mistakes.)"""
    data = sweep_data(tmp_path / "out", search)
    data["methods"][0].update(grid)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SpotsweepError) as error:
        load_sweep(path)
    assert str(path) in str(error.value) and expected in str(error.value), str(error.value)
    assert "\n" not in str(error.value)


# --- samplers and pruners -------------------------------------------------------------------------

SPACE: dict[str, Any] = {
    "batch_size": {"low": 4, "high": 64, "log": True},
    "lr": {"low": 0.001, "high": 0.05, "log": True},
    "amortization": ["both", "latent"],
    "startup_trials": 2,
}


def made_up_values(params: dict[str, Any], objectives: int) -> float | list[float]:
    """A smooth stand-in for a trial's score (best near batch 16, lr 0.01, latent), and its seconds."""
    score = 0.6 - 0.1 * abs(math.log2(params["batch_size"] / 16)) - 0.1 * abs(math.log10(params["lr"] / 0.01))
    score += 0.05 if params["amortization"] == "latent" else 0.0
    return score if objectives == 1 else [score, 400.0 / params["batch_size"]]


def asked_and_told(root: Path, search: dict[str, Any], n_trials: int) -> tuple[Any, list[dict[str, Any]]]:
    """A journal study in `root` run by hand as the loop runs it (ask, suggest, tell): its trials' settings."""
    sweep = tuned_sweep(root, search)
    grid = sweep.methods[0]
    study = open_study(OutputLayout(root / "out"), sweep.name, grid.search)
    picked = []
    for _ in range(n_trials):
        trial = study.ask()
        settings = suggest(trial, grid)
        picked.append(settings)
        study.tell(trial, made_up_values(settings, len(study.directions)))
    return study, picked


@pytest.mark.parametrize(
    ("sampler", "expected", "extra"),
    [
        ("tpe", optuna.samplers.TPESampler, {}),
        ("random", optuna.samplers.RandomSampler, {}),
        ("gp", optuna.samplers.GPSampler, {}),
        ("nsga2", optuna.samplers.NSGAIISampler, {"second_objective": "train_time_s"}),
    ],
)
def test_each_sampler_is_the_one_named_and_the_same_tuner_seed_repeats_its_trials(
    tmp_path: Path, sampler: str, expected: type, extra: dict[str, Any]
) -> None:
    """Two journals, the same `seed:`, the same told values: the same trials, past the random start-up
    (tpe's and gp's third and fourth trials come from their models; nsga2's first generation is 50 trials);
    another seed picks another first trial."""
    search = {**SPACE, "sampler": sampler, "seed": 7, **extra}
    study, first = asked_and_told(tmp_path / "a", search, 4)
    assert type(study.sampler) is expected
    assert [trial.state.name for trial in study.get_trials()] == ["COMPLETE"] * 4
    again = asked_and_told(tmp_path / "b", search, 4)[1]
    assert again == first
    other = asked_and_told(tmp_path / "c", {**search, "seed": 8}, 1)[1]
    assert other[0] != first[0], (other, first)


@pytest.mark.parametrize(
    ("pruner", "extra", "expected"),
    [
        ("median", {}, optuna.pruners.MedianPruner),
        ("hyperband", {}, optuna.pruners.HyperbandPruner),
        ("none", {}, optuna.pruners.NopPruner),
        ("median", {"second_objective": "train_time_s"}, optuna.pruners.NopPruner),  # Optuna prunes one objective
    ],
)
def test_each_pruner_setting_gives_that_pruner(
    tmp_path: Path, pruner: str, extra: dict[str, Any], expected: type
) -> None:
    sweep = tuned_sweep(tmp_path, {**SPACE, "pruner": pruner, **extra})
    study = open_study(OutputLayout(tmp_path / "out"), sweep.name, sweep.methods[0].search)
    assert type(study.pruner) is expected


def trajectory_line(step: int, score: float) -> dict[str, Any]:
    """One line of a task's live trajectory (tasks/<id>/trajectory.jsonl) as a training task appends it."""
    types = ["ExcitatoryL2and3", "ExcitatoryL4", "ExcitatoryL5", "ExcitatoryL6", "Inhibitory"]
    return {"step": step, "metrics": ["pcc", "rmse"], "cell_types": types, "per_cell_type": [[score, 0.1]] * 5}


def test_hyperband_prunes_a_clearly_worse_trial_at_the_steps_the_loop_reports(tmp_path: Path) -> None:
    """`pruner: hyperband`, the trajectory reported every 30 steps of a 300-step budget (three brackets):
    six trials that learn complete; a seventh that does not is pruned part way by the loop's own
    reporting (Loop._report on trajectory lines written by hand), and its task reads pruned."""
    search = {"lr": {"low": 1e-5, "high": 0.05}, "pruner": "hyperband", "prune_interval_steps": 30}
    sweep = tuned_sweep(tmp_path, search)
    layout = OutputLayout(tmp_path / "out")
    study = open_study(layout, sweep.name, sweep.methods[0].search)
    said: list[str] = []
    loop = Loop(sweep, layout, study, sweep.methods[0], 1, said.append)
    for number, learns in enumerate([True] * 6 + [False]):
        trial = study.ask()
        tasks = trial_tasks(sweep, loop.grid, trial.number, suggest(trial, loop.grid))
        loop.running[number] = entry = Running(trial, tasks, None)
        (task,) = tasks
        layout.task_dir(task.id).mkdir(parents=True)  # as the task's process makes it
        for step in range(30, 301, 30):
            score = 0.6 * (1 - math.exp(-step / 60)) if learns else 0.01
            append_line(layout.task_dir(task.id) / LIVE_TRAJECTORY, trajectory_line(step, score))
            loop._report(entry)
            if number not in loop.running:
                break
        else:
            del loop.running[number]
            study.tell(trial, score)  # as Loop._end tells it from the task's result
    states = [trial.state.name.lower() for trial in study.get_trials()]
    assert states == ["complete"] * 6 + ["pruned"], (states, said)
    pruned = study.get_trials()[6]
    assert max(pruned.intermediate_values) < 300 and set(pruned.intermediate_values.values()) == {0.01}
    assert all(step % 30 == 0 for step in pruned.intermediate_values)
    assert said[-1].startswith("trial 6: pruned at step"), said
    assert json.loads((layout.task_dir(tasks[0].id) / "pruned.json").read_text())["reason"].startswith("trial 6 pruned")


# --- optuna-dashboard on the journal ----------------------------------------------------------------


def a_small_study(tmp_path: Path) -> Path:
    """A journal as `spotsweep tune` leaves it: three trials (two complete, one pruned), its tasks noted."""
    sweep = tuned_sweep(tmp_path, {**SEARCH, "sampler": "random"})
    grid = sweep.methods[0]
    layout = OutputLayout(tmp_path / "out")
    study = open_study(layout, sweep.name, grid.search)
    for number, value in enumerate([0.41, 0.52, None]):
        trial = study.ask()
        tasks = trial_tasks(sweep, grid, trial.number, suggest(trial, grid))
        trial.set_user_attr("tasks", [task.to_dict() for task in tasks])
        trial.set_user_attr("task_ids", [task.id for task in tasks])
        trial.report(0.3 if value else 0.01, 30)
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            trial.set_user_attr("seed_scores", [value])
            study.tell(trial, value)
        assert trial.number == number
    return journal_path(layout)


def test_optuna_dashboards_api_lists_the_study_and_its_trials_from_the_journal_file(tmp_path: Path) -> None:
    """The dashboard's WSGI app, given the journal's path as `optuna-dashboard PATH` is (it guesses the
    storage from the file): its API lists the study, each trial's state, value and settings, the best."""
    from optuna_dashboard import wsgi

    journal = a_small_study(tmp_path)
    app = wsgi(str(journal))

    def get(path: str) -> dict[str, Any]:
        environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET"}
        setup_testing_defaults(environ)
        status: list[str] = []
        body = b"".join(app(environ, lambda code, headers, exc_info=None: status.append(code)))
        assert status == ["200 OK"], (status, body[:300])
        return json.loads(body)

    (study,) = get("/api/studies")["study_summaries"]
    assert (study["study_name"], study["directions"]) == ("tune-small", ["maximize"])
    detail = get(f"/api/studies/{study['study_id']}")
    trials = detail["trials"]
    assert [(t["number"], t["state"], t["values"]) for t in trials] == [
        (0, "Complete", [0.41]),
        (1, "Complete", [0.52]),
        (2, "Pruned", [0.01]),  # Optuna keeps a pruned trial's last reported value as its value
    ]
    for trial in trials:
        params = {param["name"]: param["param_external_value"] for param in trial["params"]}
        assert set(params) == {"batch_size", "amortization"} and params["amortization"] in ("both", "latent")
        assert [value["step"] for value in trial["intermediate_values"]] == [30]
    assert [t["number"] for t in detail["best_trials"]] == [1]
    assert detail["has_intermediate_values"] is True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_optuna_dashboard_command_serves_the_journal_file(tmp_path: Path) -> None:
    """The README's command, `optuna-dashboard OUT/tune/journal.log`, as its own process on a free port."""
    journal = a_small_study(tmp_path)
    port = free_port()
    command = Path(sys.executable).with_name("optuna-dashboard")
    server = subprocess.Popen(
        [str(command), str(journal), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[1]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    listed = json.loads(response.read())
                break
            except OSError:
                assert time.monotonic() < deadline, "optuna-dashboard did not answer in 60 s"
                time.sleep(0.2)
        assert [study["study_name"] for study in listed["study_summaries"]] == ["tune-small"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/dashboard", timeout=5) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- the best settings, to train again with fresh seeds -----------------------------------------------


def test_the_best_trial_becomes_a_sweep_file_with_fresh_seeds_and_no_search(tmp_path: Path) -> None:
    """OUT/tune/best.yaml: the best of three hand-told trials as a plain grid (every setting one value, the
    grid's for what was not searched), 3 seeds no trial trained, writing into OUT/confirm; `spotsweep run`
    reads it as any sweep file. A Pareto front (two objectives) has no one best and gets no file."""
    from toolkit.sweep import expand
    from toolkit.tune.best import CONFIRM_SEEDS, best_path, write_best

    sweep = tuned_sweep(tmp_path, {**SEARCH, "seeds_per_trial": 2})
    grid = sweep.methods[0]
    layout = OutputLayout(tmp_path / "out")
    study = open_study(layout, sweep.name, grid.search)
    for batch, amortization, value in ((8, "both", 0.3), (23, "latent", 0.6), (64, "latent", 0.4)):
        study.enqueue_trial({"batch_size": batch, "amortization": amortization})
        trial = study.ask()
        settings = suggest(trial, grid)
        tasks = trial_tasks(sweep, grid, trial.number, settings)
        trial.set_user_attr("tasks", [task.to_dict() for task in tasks])
        study.tell(trial, value)

    path = write_best(layout, sweep, grid, study)
    assert path == best_path(layout)
    assert "from seed(s) 0, 1. Its settings again, with seeds [2, 3, 4]" in path.read_text()
    best = load_sweep(path)
    assert best.methods[0].search is None and best.output == layout.root / "confirm"
    assert best.executor.kind == "local" and best.name == f"{sweep.name}-best"
    tasks = expand(best)
    assert [task.seed for task in tasks] == [2, 3, 4][:CONFIRM_SEEDS]  # the trials trained seeds 0 and 1
    settings = {(task.batch_size, task.amortization, task.extra_settings["max_steps"]) for task in tasks}
    assert settings == {(23, "latent", 300)}
    assert all(task.params["lr"] == pytest.approx(0.02) and "trial" not in task.extra_settings for task in tasks)

    # the executor's kind survives (each backend's default, which a dump of non-defaults would leave out)
    inline = sweep.model_copy(update={"executor": parse_sweep({**sweep_data(tmp_path), "executor": {"kind": "inline"}},
                                                               "t").executor})  # fmt: skip
    assert load_sweep(write_best(layout, inline, grid, study)).executor.kind == "inline"

    two = tuned_sweep(tmp_path / "two", {**SEARCH, "second_objective": "train_time_s"})
    pareto = open_study(OutputLayout(tmp_path / "two" / "out"), two.name, two.methods[0].search)
    trial = pareto.ask()
    suggest(trial, two.methods[0])
    pareto.tell(trial, [0.5, 10.0])
    assert write_best(OutputLayout(tmp_path / "two" / "out"), two, two.methods[0], pareto) is None


def test_the_confirmation_gets_the_tunes_reference_models_or_is_told_it_holds_another(tmp_path: Path) -> None:
    """share_prepared links each reference model into OUT/confirm (not the lock files); where the folder
    already holds another model of that id (an earlier run into it), it keeps it and says so in a sentence
    naming the folder and the fix."""
    from toolkit.tune.best import share_prepared

    tuned, confirm, other = (OutputLayout(tmp_path / name) for name in ("out", "confirm", "other"))
    for layout, trained in ((tuned, "tune's"), (other, "another")):
        model = layout.model_dir("starmap", "condscvi-abc")
        model.mkdir(parents=True)
        (model / "training.json").write_text(f'{{"train_time_s": 1, "by": "{trained}"}}')
        (model.parent / "condscvi-abc.lock").write_text("")
    (tuned.root / "data" / "starmap").mkdir(parents=True)
    (tuned.root / "data" / "starmap" / "spots.txt").write_text("spots")

    assert share_prepared(tuned, confirm) == []
    shared = confirm.model_dir("starmap", "condscvi-abc") / "training.json"
    assert shared.samefile(tuned.model_dir("starmap", "condscvi-abc") / "training.json")
    assert (confirm.root / "data" / "starmap" / "spots.txt").samefile(tuned.root / "data" / "starmap" / "spots.txt")
    assert not (confirm.root / "models" / "starmap" / "condscvi-abc.lock").exists()
    assert share_prepared(tuned, confirm) == []  # again: the same model, nothing said

    (sentence,) = share_prepared(tuned, other)
    assert str(other.model_dir("starmap", "condscvi-abc")) in sentence and "remove" in sentence
    assert '"another"' in (other.model_dir("starmap", "condscvi-abc") / "training.json").read_text()  # kept


@pytest.mark.parametrize("name", ["tpe", "random"])
def test_a_resumed_study_does_not_draw_its_first_trials_again(tmp_path: Path, name: str) -> None:
    """A sampler's random state is not in the journal: seeded alike on resumption, a resumed tune asked for
    its first trials' settings again. Resumed after 2 trials, the next (still in the random start-up) is
    not trial 0's; and the same resumption repeats itself."""
    search = {**SPACE, "sampler": name, "seed": 3, "startup_trials": 5}
    first = asked_and_told(tmp_path / "a", search, 2)[1]
    resumed = asked_and_told(tmp_path / "a", search, 1)[1]  # the same folder: the journal's study, resumed
    assert resumed[0] != first[0], (resumed, first)
    assert asked_and_told(tmp_path / "b", search, 2)[1] == first
    assert asked_and_told(tmp_path / "b", search, 1)[1] == resumed
