"""What a study found, for `spotsweep status` and the report: the trials, the best value over time, the
best settings with their score and seeds, the Pareto front (two objectives), and which settings mattered
(Optuna's importance evaluator).

Written after the sweep's own report: OUT/tune/trials.csv and trials.nc (one row per trial: number, state,
values, settings, task ids), and a "Tuning" section in report/index.md and index.html.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.layout import OutputLayout, write_atomically
from toolkit.methods.search import SearchConfig
from toolkit.trial_states import trials_table
from toolkit.tune.objective import describe
from toolkit.tune.study import journal_path, load_study

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
        title = "Best settings" if len(best) == 1 else "Pareto front (objective, training seconds)"
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


def trials_dataset(frame: pd.DataFrame) -> Any:
    """The trials as an xarray Dataset along `trial` (state, values, settings, task ids)."""
    import xarray as xr

    return xr.Dataset.from_dataframe(frame.set_index("trial").astype({"state": str, "task_ids": str}))


def write_trials(layout: OutputLayout, study: Any) -> None:
    """tune/trials.csv (which the aggregate reads the trials' states from) and trials.nc."""
    frame = trials_frame(study)
    write_atomically(trials_table(layout.root), lambda tmp: frame.to_csv(tmp, index=False))
    if not frame.empty:
        dataset = trials_dataset(frame)
        write_atomically(layout.root / "tune" / "trials.nc", lambda tmp: dataset.to_netcdf(tmp, engine="h5netcdf"))


def write_tune_report(layout: OutputLayout, study: Any, search: SearchConfig, report: bool = True) -> None:
    """The trials' tables; with `report`, the Tuning section in report/index.md and index.html."""
    write_trials(layout, study)
    if not report:
        return
    from toolkit.report import html_page

    page = layout.report / "index.md"
    layout.report.mkdir(parents=True, exist_ok=True)
    lines = page.read_text().split("\n") if page.exists() else ["# spotsweep report", ""]
    at = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    lines[at:at] = section(layout, study, search, layout.report)
    text = "\n".join(lines)
    write_atomically(page, lambda tmp: tmp.write_text(text))
    html = html_page(text, layout.report, lines[0].lstrip("# ").strip() or "spotsweep report")
    write_atomically(layout.report / "index.html", lambda tmp: tmp.write_text(html))


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
