"""OUT/tune/best.yaml: the best trial's settings as a sweep file, to train again with seeds no trial used.

A trial's value is one draw (its `seeds_per_trial` seeds), and the best of many draws is an optimistic
estimate of what its settings give (the winner's curse): the same settings trained with fresh seeds say
what a user can expect of them. `spotsweep tune` writes this file after every study of one objective;
`spotsweep run OUT/tune/best.yaml` trains it (into OUT/confirm), and the same settings, with the dataset
swapped, are what to train on the user's own spot data.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from toolkit.layout import OutputLayout, write_atomically
from toolkit.tune.space import narrow, seeds, suggest

if TYPE_CHECKING:
    from toolkit.config import SweepConfig
    from toolkit.methods.destvi import DestVIGrid

CONFIRM_SEEDS = 3
"""Fresh seeds the best settings are trained with again: the fewest for which the verdict rule gives an
interval with some room (3 a side)."""


def best_path(layout: OutputLayout) -> Path:
    return layout.root / "tune" / "best.yaml"


def fresh_seeds(grid: DestVIGrid, count: int = CONFIRM_SEEDS) -> list[int]:
    """`count` seeds that no trial trained (trials train the grid's first seeds, `space.seeds`)."""
    assert grid.search is not None
    used = set(seeds(grid, grid.search))
    return [seed for seed in range(10_000) if seed not in used][:count]


def best_sweep(sweep: SweepConfig, grid: DestVIGrid, params: dict[str, Any], out: Path) -> dict[str, Any]:
    """The sweep as a plain grid (no search) at the best trial's settings and fresh seeds, writing into `out`."""
    import optuna

    settings = suggest(optuna.trial.FixedTrial(params), grid)  # the grid's values for what was not searched
    confirm = narrow(grid, settings, fresh_seeds(grid)).model_copy(update={"search": None})
    methods = [confirm if method is grid else method for method in sweep.methods]
    plain = sweep.model_copy(update={"methods": methods, "output": out, "name": f"{sweep.name}-best"})
    return plain.model_dump(mode="json", exclude_none=True, exclude_defaults=True)


def write_best(layout: OutputLayout, sweep: SweepConfig, grid: DestVIGrid, study: Any) -> Path | None:
    """OUT/tune/best.yaml for a study of one objective with a complete trial; None otherwise (a Pareto front
    has no one best)."""
    if len(study.directions) != 1 or not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        return None
    best = study.best_trial
    data = best_sweep(sweep, grid, dict(best.params), layout.root / "confirm")
    header = (
        f"# The best trial of {layout.root} (trial {best.number}, value {best.value:.4f} over its "
        f"{len(best.user_attrs.get('task_ids', [])) or 1} seed(s)), to train again with {CONFIRM_SEEDS} seeds no "
        f"trial used:\n#   spotsweep run {best_path(layout)}\n"
    )
    path = best_path(layout)
    write_atomically(path, lambda tmp: tmp.write_text(header + yaml.safe_dump(data, sort_keys=False)))
    return path
