"""A tuned output folder (`spotsweep tune`), as the report and `spotsweep status` read it: the study in its
journal (OUT/tune/journal.log), the search block recorded in sweep.json, and the "Tuning" section drawn
from them: the trials, the best value over time, the best settings with their score and seeds, the
Pareto front (two objectives), and which settings mattered (Optuna's importance evaluator).

Below the report in the layers (the tuner, toolkit.tune, sits above every stage), so that
`spotsweep report OUT` draws the section itself, from the folder alone, whenever the folder was tuned.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.layout import CorruptFile, OutputLayout, read_json, write_atomically
from toolkit.methods.search import ObjectiveConfig, SearchConfig


def journal_path(layout: OutputLayout) -> Path:
    return layout.root / "tune" / "journal.log"


def storage(layout: OutputLayout) -> Any:
    """Optuna's journal storage on OUT/tune/journal.log (made on first use)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = journal_path(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def load_study(layout: OutputLayout) -> Any | None:
    """The study in an output folder, for status and the report; None where it was never tuned."""
    if not journal_path(layout).exists():
        return None  # not tuned: optuna is not even imported (`spotsweep status` of every sweep asks)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = optuna.get_all_study_names(storage(layout))
    return optuna.load_study(study_name=names[0], storage=storage(layout)) if names else None


def describe(objective: ObjectiveConfig) -> str:
    """The objective in words, for the report and status."""
    types = ", ".join(objective.cell_types) if objective.cell_types else "the excitatory layers (else all types)"
    return f"mean per-cell-type {objective.metric} over {types} ({objective.direction})"


STATES = ("complete", "pruned", "fail", "running", "waiting")


def count_trials(study: Any) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    return counts


def best_trials(study: Any) -> list[dict[str, Any]]:
    """The best trial (one objective) or the Pareto front (two), as number, values, params, seed scores."""
    return [
        {
            "number": trial.number,
            "values": list(trial.values),
            "params": dict(trial.params),
            "seed_scores": trial.user_attrs.get("seed_scores", []),
        }
        for trial in study.best_trials
    ]


def trials_frame(study: Any) -> pd.DataFrame:
    """One row per trial: number, state, value(s), best so far, settings, seconds, task ids."""
    rows = []
    single = len(study.directions) == 1
    maximise = single and study.direction.name == "MAXIMIZE"
    best: float | None = None
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name.lower()}
        values = list(trial.values) if trial.values is not None and trial.state.name == "COMPLETE" else []
        names = ["value"] if single else ["value", "train_time_s"]
        for index, name in enumerate(names):
            row[name] = values[index] if index < len(values) else float("nan")
        if single and values:
            best = values[0] if best is None else (max if maximise else min)(best, values[0])
        row["best_so_far"] = best if best is not None else float("nan")
        row.update({f"param_{name}": value for name, value in trial.params.items()})
        row["seconds"] = trial.duration.total_seconds() if trial.duration is not None else float("nan")
        row["pruned_at_step"] = max(trial.intermediate_values) if trial.state.name == "PRUNED" else -1
        row["task_ids"] = " ".join(trial.user_attrs.get("task_ids", []))
        rows.append(row)
    return pd.DataFrame(rows)


def _importances(study: Any) -> dict[str, float]:
    """Which settings mattered (fANOVA, Optuna's default), {} until there are enough complete trials."""
    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 3:
        return {}
    with contextlib.suppress(Exception):  # e.g. every trial with the same settings: nothing to attribute
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)  # direction-free, unlike PED-ANOVA
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator, target=lambda t: t.values[0]))
    return {}


def _best_over_time(frame: pd.DataFrame, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = frame[frame["state"] == "complete"]
    if done.empty:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.scatter(done["trial"], done["value"], s=14, color="0.6", label="complete trial")
    ax.step(frame["trial"], frame["best_so_far"], where="post", color="C0", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("objective")
    ax.legend(frameon=False)
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return True


def _table(frame: pd.DataFrame) -> list[str]:
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return [head, rule, *body, ""]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if value != value else f"{value:.4g}"
    return str(value)


def section(layout: OutputLayout, study: Any, search: SearchConfig, folder: Path) -> list[str]:
    """The report's "Tuning" section (markdown lines); its figure goes into `folder`."""
    frame = trials_frame(study)
    counts = count_trials(study)
    lines = ["## Tuning", ""]
    lines += [
        f"Objective: {describe(search.objective)}"
        + (", and training seconds (minimised): a Pareto front" if search.second_objective else "")
        + f"; {search.seeds_per_trial} seed(s) per trial; sampler {search.sampler} (seed {search.seed}), "
        f"pruner {search.pruner if len(study.directions) == 1 else 'none'}.",
        "",
        "Trials: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n) + ".",
        "",
    ]
    best = best_trials(study)
    if best:
        # a front of one trial is still a front: its title says the trial won on both, not on accuracy alone
        title = "Best settings" if len(study.directions) == 1 else "Pareto front (objective, training seconds)"
        rows = [
            {"trial": b["number"], **dict(zip(("objective", "training s"), b["values"], strict=False)), **b["params"]}
            | {"seed scores": ", ".join(f"{s:.4f}" for s in b["seed_scores"])}
            for b in best
        ]
        lines += [f"### {title}", "", *_table(pd.DataFrame(rows))]
    if len(study.directions) == 1 and _best_over_time(frame, folder / "tune_best_over_time.png"):
        lines += ["### Best value over trials", "", "![best value over trials](tune_best_over_time.png)", ""]
    importances = _importances(study)
    if importances:
        lines += ["### Which settings mattered (fANOVA importance)", ""]
        lines += _table(pd.DataFrame({"setting": list(importances), "importance": list(importances.values())}))
    shown = frame.drop(columns=["task_ids"]) if "task_ids" in frame else frame
    lines += ["### Trials", "", *_table(shown)]
    lines += [f"Live view: `optuna-dashboard {journal_path(layout)}`.", ""]
    return lines


def status_lines(root: Path) -> list[str]:
    """`spotsweep status`: the study's trials and its best so far (nothing where the folder was not tuned)."""
    layout = OutputLayout(Path(root))
    study = load_study(layout)
    if study is None:
        return []
    counts = count_trials(study)
    lines = ["tuning: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n) + f" ({journal_path(layout)})"]
    for best in best_trials(study):
        values = ", ".join(f"{value:.4f}" for value in best["values"])
        params = ", ".join(f"{name} {value}" for name, value in best["params"].items())
        lines.append(f"best: trial {best['number']}: {values}: {params}")
    return lines


def recorded_search(layout: OutputLayout) -> SearchConfig | None:
    """The `search:` block the folder was tuned with, as sweep.json records the sweep (None: none there)."""
    try:
        config = read_json(layout.sweep_file).get("config", {})
    except (FileNotFoundError, CorruptFile):
        return None
    blocks = [entry["search"] for entry in config.get("methods", []) if entry.get("search")]
    return SearchConfig.model_validate(blocks[0]) if blocks else None


def report_section(root: Path, folder: Path) -> list[str]:
    """The report's "Tuning" section for the folder `root` (figure into `folder`); [] where not tuned."""
    layout = OutputLayout(Path(root))
    study = load_study(layout)
    search = recorded_search(layout)
    if study is None or search is None:
        return []
    return section(layout, study, search, folder)
