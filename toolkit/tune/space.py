"""A trial's settings: the `search:` block's ranges and choices as Optuna suggestions, then its tasks.

A setting the block does not search takes the grid's value; where the grid lists several values, the
trial chooses among them. A trial's tasks carry its number (`trial`, an optional swept setting), so two
trials that happen to pick the same settings still have tasks of their own, and the aggregate keeps both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.errors import SpotsweepError
from toolkit.methods.search import FloatRange, IntRange, SearchConfig

if TYPE_CHECKING:
    import optuna

    from toolkit.config import SweepConfig
    from toolkit.methods.destvi import DestVIGrid
    from toolkit.sweep import Task

CHOICES = ("variant", "amortization", "drop_last")


def searched_grid(sweep: SweepConfig, source: str) -> DestVIGrid:
    """The one method entry with a `search:` block (one sentence where there is none, or several)."""
    entries = [grid for grid in sweep.methods if getattr(grid, "search", None) is not None]
    if len(entries) != 1:
        found = "none has" if not entries else f"{len(entries)} have"
        raise SpotsweepError(
            f"{source}: `spotsweep tune` searches one method entry's `search:` block, and {found} one; add a "
            "`search:` block (README: Tune destVI for your data) to one destVI entry."
        )
    if len(sweep.datasets) != 1:
        raise SpotsweepError(
            f"{source}: `spotsweep tune` tunes for one dataset, and the sweep has {len(sweep.datasets)}; keep "
            "the dataset to tune for (one sweep file per dataset)."
        )
    return entries[0]  # type: ignore[return-value]


def with_tuner_seed(sweep: SweepConfig, seed: int | None) -> SweepConfig:
    """The sweep with its search's sampler seed replaced (`spotsweep tune --seed`: one file, several tuner seeds)."""
    if seed is None:
        return sweep
    methods = [
        grid.model_copy(update={"search": grid.search.model_copy(update={"seed": seed})})
        if getattr(grid, "search", None) is not None
        else grid
        for grid in sweep.methods
    ]
    return sweep.model_copy(update={"methods": methods})


def _grid_values(grid: DestVIGrid) -> dict[str, list[Any]]:
    """Each tunable setting's values in the grid (the budget in steps or in epochs, as the grid says)."""
    axes = grid.axes()
    values = {name: list(axes[name]) for name in ("variant", "amortization", "batch_size", "drop_last")}
    values["max_steps" if "max_steps" in axes else "max_epochs"] = list(axes.get("max_steps") or axes["max_epochs"])
    values["lr"] = [grid.lr]
    return values


def suggest(trial: optuna.trial.BaseTrial, grid: DestVIGrid) -> dict[str, Any]:
    """The trial's settings: the search's ranges and choices, the grid's values for the rest."""
    search = grid.search
    assert search is not None
    values = _grid_values(grid)
    for budget, other in (("max_steps", "max_epochs"), ("max_epochs", "max_steps")):
        if getattr(search, budget) is not None:  # the searched budget in place of the grid's, in its unit
            values = {budget if name == other else name: value for name, value in values.items()}
    settings: dict[str, Any] = {}
    for name, grid_values in values.items():
        given = getattr(search, name)
        if isinstance(given, IntRange):
            step = None if given.log else given.step
            settings[name] = trial.suggest_int(name, given.low, given.high, log=given.log, step=step or 1)
        elif isinstance(given, FloatRange):
            settings[name] = trial.suggest_float(name, given.low, given.high, log=given.log)
        elif given is not None:
            settings[name] = trial.suggest_categorical(name, [_plain(v) for v in given])
        elif len(grid_values) > 1:
            settings[name] = trial.suggest_categorical(name, [_plain(v) for v in grid_values])
        else:
            settings[name] = _plain(grid_values[0])
    return settings


def _plain(value: Any) -> Any:
    """Optuna's choices are None, bool, int, float or str (a YAML 2022 may come as an int)."""
    return value if isinstance(value, bool | int | float | str) or value is None else str(value)


def seeds(grid: DestVIGrid, search: SearchConfig) -> list[int]:
    """The seeds every trial trains: the grid's first ones, then the next unused numbers."""
    listed = [int(seed) for seed in grid.seed]
    more = (seed for seed in range(10_000) if seed not in listed)
    return (listed + [next(more) for _ in range(max(0, search.seeds_per_trial - len(listed)))])[
        : search.seeds_per_trial
    ]


def narrow(grid: DestVIGrid, settings: dict[str, Any], seed_list: list[int]) -> DestVIGrid:
    """The grid at one trial's settings (every searched setting one value) and the given seeds."""
    update: dict[str, Any] = {name: [value] for name, value in settings.items() if name != "lr"}
    update["variant"] = [str(settings["variant"])]
    update["seed"] = seed_list
    if "max_steps" in settings:
        update["max_epochs"] = None
    else:
        update["max_steps"] = None
    update["lr"] = float(settings["lr"])
    return grid.model_copy(update=update)


def trial_tasks(sweep: SweepConfig, grid: DestVIGrid, number: int, settings: dict[str, Any]) -> list[Task]:
    """A trial's tasks, one per seed: the grid narrowed to the trial's settings, expanded as `run` would."""
    from toolkit.config import identity
    from toolkit.sweep import SWEPT_SETTINGS, Task

    assert grid.search is not None
    narrowed = narrow(grid, settings, seeds(grid, grid.search))
    dataset = sweep.datasets[0]
    tasks = []
    for point in narrowed.points():
        extra = {name: value for name, value in point.items() if name not in SWEPT_SETTINGS}
        tasks.append(
            Task(
                dataset=dataset.name,
                method=narrowed.name,
                **{name: value for name, value in point.items() if name in SWEPT_SETTINGS},
                extra_settings={**extra, "trial": number},
                params=narrowed.params(),
                dataset_config=identity(dataset),
                reference_config=narrowed.reference_config(point),
            )
        )
    return tasks
