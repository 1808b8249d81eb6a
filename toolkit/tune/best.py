"""OUT/tune/best.yaml: the best trial's settings as a sweep file, to train again with seeds no trial used.

A trial's value is one draw (its `seeds_per_trial` seeds), and the best of many draws is an optimistic
estimate of what its settings give (the winner's curse): the same settings trained with fresh seeds say
what a user can expect of them. `spotsweep tune` writes this file after every study of one objective:
the searched method entry alone (no other method, no search), at the best trial's settings and 3 seeds
that no trial of the study trained. `spotsweep run OUT/tune/best.yaml`, from the folder the tune ran in
(its paths are read from there, as the sweep file's are), trains it into OUT/confirm, against the tune's
own reference model (shared into OUT/confirm); with the dataset swapped, it is what to train on the
user's own spot data.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
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
NAME_SUFFIX = "-best"


def best_path(layout: OutputLayout) -> Path:
    return layout.root / "tune" / "best.yaml"


def trained_seeds(study: Any) -> set[int]:
    """Every seed a trial of the study trained, as its tasks record them (the sweep file may have changed)."""
    return {
        int(task["seed"]) for trial in study.get_trials(deepcopy=False) for task in trial.user_attrs.get("tasks", [])
    }


def fresh_seeds(grid: DestVIGrid, used: set[int], count: int = CONFIRM_SEEDS) -> list[int]:
    """`count` seeds that no trial trained and that the sweep's trials would not train next."""
    assert grid.search is not None
    taken = used | set(seeds(grid, grid.search))
    return [seed for seed in range(10_000) if seed not in taken][:count]


def best_sweep(sweep: SweepConfig, grid: DestVIGrid, params: dict[str, Any], seed_list: list[int], out: Path) -> dict:
    """The searched entry alone as a plain grid (no search) at the best trial's settings and `seed_list`,
    writing into `out`; what the search left out keeps the sweep's values."""
    import optuna

    settings = suggest(optuna.trial.FixedTrial(params), grid)  # the grid's values for what was not searched
    confirm = narrow(grid, settings, seed_list).model_copy(update={"search": None})
    name = sweep.name + NAME_SUFFIX if len(sweep.name) + len(NAME_SUFFIX) <= 100 else sweep.name
    plain = sweep.model_copy(update={"methods": [confirm], "output": out, "name": name})
    data = plain.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    # the executor whole: its `kind` is each backend's default, which exclude_defaults would drop
    data["executor"] = sweep.executor.model_dump(mode="json", exclude_none=True)
    return data


def write_best(
    layout: OutputLayout, sweep: SweepConfig, grid: DestVIGrid, study: Any, say: Callable[[str], None] = print
) -> Path | None:
    """OUT/tune/best.yaml for a study of one objective with a complete trial; None otherwise (a Pareto front
    has no one best)."""
    if len(study.directions) != 1 or not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        return None
    best = study.best_trial
    seed_list = fresh_seeds(grid, trained_seeds(study))
    data = best_sweep(sweep, grid, dict(best.params), seed_list, layout.root / "confirm")
    trained = sorted({int(task["seed"]) for task in best.user_attrs.get("tasks", [])})
    header = (
        f"# The best trial of {layout.root}: trial {best.number}, value {best.value:.4f} from seed(s) "
        f"{', '.join(map(str, trained)) or 'unrecorded'}. Its settings again, with seeds {seed_list} that no "
        f"trial trained; run from the folder the tune ran in:\n#   spotsweep run {best_path(layout)}\n"
    )
    path = best_path(layout)
    for sentence in share_prepared(layout, OutputLayout(layout.root / "confirm")):
        say(sentence)
    write_atomically(path, lambda tmp: tmp.write_text(header + yaml.safe_dump(data, sort_keys=False)))
    return path


SKIPPED = shutil.ignore_patterns("*.lock", ".*.tmp*")
"""Lock files and a writer's unfinished temporaries: not part of what was prepared."""


def share_prepared(tuned: OutputLayout, confirm: OutputLayout) -> list[str]:
    """The tune's prepared inputs and each of its reference models in the confirmation's folder (hard links;
    copies where links fail), where that folder has none of its own: the confirmation then trains against
    the very CondSCVI the trials did and prepares nothing. Trained again, even from the same data and seed,
    a reference model moves the results (results/study-2022/README.md), and the confirmation would compare
    across two. Returns a sentence for each reference model the folder already holds another copy of."""
    differ = []
    if (tuned.root / "data").is_dir() and not (confirm.root / "data").exists():
        _link_tree(tuned.root / "data", confirm.root / "data")
    for model in sorted(path for path in (tuned.root / "models").glob("*/*") if path.is_dir()):
        target = confirm.root / model.relative_to(tuned.root)
        if not target.exists():
            _link_tree(model, target)
        elif not (target / "training.json").is_file() or not _same_file(model, target, "training.json"):
            differ.append(
                f"{target}: another reference model than the tune's {model} (an earlier run into this folder); "
                f"the confirmation trains against it: remove {target} to train against the tune's"
            )
    return differ


def _same_file(a: Path, b: Path, name: str) -> bool:
    """The same file, or one with the same bytes (a copy)."""
    return (a / name).samefile(b / name) or (a / name).read_bytes() == (b / name).read_bytes()


def _link_tree(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(source, target, copy_function=os.link, ignore=SKIPPED)
    except OSError:  # another file system, or links not allowed: a copy
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=SKIPPED)
