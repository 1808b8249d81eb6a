"""The Optuna study of a sweep: journal storage in its output folder, the sampler and pruner its
`search:` block names.

The journal is one append-only file (OUT/tune/journal.log), so a study needs no database server and
works on a cluster's shared file system; `optuna-dashboard OUT/tune/journal.log` shows it live.
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout
from toolkit.methods.search import SearchConfig
from toolkit.tuned import journal_path, load_study, storage

__all__ = ["directions", "journal_path", "load_study", "open_study", "pruner", "sampler", "storage"]


def directions(search: SearchConfig) -> list[str]:
    return [search.objective.direction] + (["minimize"] if search.second_objective else [])


def sampler(search: SearchConfig, trials_before: int = 0) -> Any:
    """The sampler the block names, seeded with its tuner seed; on a study resumed after `trials_before`
    trials, with a seed drawn from both. A sampler's random state lives in its process, not in the journal:
    seeded alike again, a resumed tune drew its first trials' settings again (2026-12-08: trial 2 repeated
    trial 0), so each resumption draws afresh, and the same resumption of the same tuner seed alike."""
    import numpy as np
    import optuna

    seed = (
        search.seed
        if trials_before == 0
        else int(np.random.SeedSequence([search.seed, trials_before]).generate_state(1)[0])
    )
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if search.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=search.startup_trials)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=search.startup_trials, multivariate=True)


def pruner(search: SearchConfig) -> Any:
    """The pruner the block names; none with two objectives (Optuna prunes single-objective studies)."""
    import optuna

    if search.second_objective is not None or search.pruner == "none":
        return optuna.pruners.NopPruner()
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=search.prune_interval_steps)
    return optuna.pruners.MedianPruner(
        n_startup_trials=search.startup_trials, n_warmup_steps=search.prune_warmup_steps, n_min_trials=1
    )


def open_study(layout: OutputLayout, name: str, search: SearchConfig) -> Any:
    """The sweep's study, created or resumed; one sentence where the journal's study wants other objectives."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    wanted = directions(search)
    study = optuna.create_study(
        study_name=name,
        storage=storage(layout),
        sampler=sampler(search),
        pruner=pruner(search),
        directions=wanted,
        load_if_exists=True,
    )
    before = len(study.get_trials(deepcopy=False))
    if before:
        study.sampler = sampler(search, before)
    had = [direction.name.lower() for direction in study.directions]
    if had != wanted:
        raise SpotsweepError(
            f"{journal_path(layout)}: the study there optimises {', '.join(had)}, this sweep's search "
            f"{', '.join(wanted)}; give the changed search its own output folder (--out)."
        )
    return study
