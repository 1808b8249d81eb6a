"""The report: a markdown page with PNG figures, drawn from summary.nc alone.

Figures follow the study: proportion maps on the spot grid (truth beside each configuration), each
metric against batch size with one line per amortization (spread over seeds), and runtimes.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import textwrap
from html import escape
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.ticker import LogFormatter, NullLocator, ScalarFormatter

from toolkit.errors import SpotsweepError
from toolkit.layout import OutputLayout, write_atomically
from toolkit.methods import describe
from toolkit.methods.description import budget_words
from toolkit.metrics import accuracy_score, why_undefined
from toolkit.sweep import settings_of, trial_settings
from toolkit.trajectories import (
    CONVERGED_WITHIN,
    POINT,
    convergence_table,
    final_only,
    has_trajectory,
    trajectory_figure,
)
from toolkit.tuned import report_section

MEAN_METRICS = {
    "mean_pcc_cell_type": ("PCC", "higher is better"),
    "mean_ssim_cell_type": ("SSIM", "higher is better"),
    "mean_rmse_cell_type": ("RMSE", "lower is better"),
    "mean_js_cell_type": ("JS distance", "lower is better"),
}
LINE_SETTINGS = ("method", "variant", "amortization")


def _grid_image(values: np.ndarray, grid_x: np.ndarray, grid_y: np.ndarray) -> np.ndarray:
    """Spot values -> 2-D image indexed [grid_y, grid_x], NaN where no spot."""
    image = np.full((grid_y.max() + 1, grid_x.max() + 1), np.nan)
    image[grid_y, grid_x] = values
    return image


def _config_keys(summary: xr.Dataset) -> list[str]:
    """The settings that tell one configuration from another (a seed is a repeat, not a configuration); in a
    tuned aggregate the trial and its settings, which are coordinates along `trial`."""
    return [name for name in settings_of(summary) if name not in ("dataset", "seed")] + trial_settings(summary)


def _label(config: dict) -> str:
    """A configuration's column title in the maps, as its method words it."""
    return describe(str(config["method"])).label(config)


def _map_order(config: dict) -> tuple:
    """The study's column order: each method's place (Cell2location, then destVI), its own order of its
    configurations (destVI: amortization both, latent, ...), then epochs and batch size."""
    method = describe(str(config["method"]))
    batch = config["batch_size"]
    return (method.order, method.config_rank(config), config["max_epochs"], _batch_rank(batch), str(config["variant"]))


def _trained(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of methods that train (the controls compute: reference levels, not configurations to compare)."""
    return frame[np.array([describe(str(method)).trains for method in frame["method"]], dtype=bool)]


def _dataset_text(summary: xr.Dataset, name: str, dataset: str) -> str:
    """A per-dataset text variable of the summary ("" where absent: summaries from before it)."""
    return str(summary[name].sel(dataset=dataset).item()) if name in summary else ""


def _map_caption(summary: xr.Dataset, dataset: str, sideways: bool, holes: bool = False) -> str:
    """How to read a map: what one pixel is, what a white one is where the grid has holes (windows without
    cells make no spot), which way the grid's axes point, how the tissue runs."""
    window = float(summary["spots_window"].sel(dataset=dataset)) if "spots_window" in summary else float("nan")
    units = _dataset_text(summary, "spots_units", dataset) or "data units"
    orientation = _dataset_text(summary, "spots_orientation", dataset)
    parts = [f"one pixel = one spot, a window of {window:g} {units}"] if np.isfinite(window) else []
    if holes:
        parts.append("white = no spot (a window without cells)")
    parts.append("grid y to the right, grid x up" if sideways else "grid x to the right, grid y up")
    if orientation:
        parts.append(orientation)
    return "; ".join(parts).replace("$", r"\$")  # the sweep's words, never matplotlib's math mode


MAP_PANEL_IN = 1.1
"""A map's long side, in inches, where the grid is not elongated."""
MAP_SHORT_SIDE_IN = 0.32
"""The least a map's short side may be (about 35 pixels at the report's 110 dpi): a strip of 19 x 150 spots
or Li et al.'s 3 x 19 columns gets longer maps rather than a line one pixel high."""
MAP_PANEL_MAX_IN = 3.0
MAPS_MAX_WIDTH_IN = 24.0
"""Wider than this, the configurations wrap into bands, each starting with the truth again."""
MAP_COLORBAR_IN = 1.2


def _map_bands(n_configs: int, panel: float, label_width: float) -> list[int]:
    """How many configurations each band of maps holds: as few bands as fit the width, evenly filled."""
    per_band = max(1, int((MAPS_MAX_WIDTH_IN - label_width - MAP_COLORBAR_IN) // panel) - 1)  # one column is the truth
    n_bands = -(-n_configs // per_band)
    size, larger = divmod(n_configs, n_bands)
    return [size + 1] * larger + [size] * (n_bands - larger)


def proportion_maps(summary: xr.Dataset, dataset: str, path: Path) -> bool:
    """Rows: cell types; columns: the truth, then every trained configuration that finished (first seed),
    in the study's order. Controls are left out: they are reference levels, not maps to compare. Many
    configurations of an elongated grid wrap into bands, so that a map stays several pixels per spot."""
    data = summary.sel(dataset=dataset).isel(seed=0)
    seed = int(summary.seed.values[0])
    table = data["status"].to_dataframe().reset_index()
    done = _trained(table[table["status"] == "done"]).to_dict("records")
    if not done:
        return False
    done.sort(key=_map_order)
    truth = data["true_proportion"]
    spots = truth.dropna("spot", how="all").spot.values
    grid_x, grid_y = summary.grid_x.sel(spot=spots).values, summary.grid_y.sel(spot=spots).values
    types = list(summary.cell_type.values)
    keys = _config_keys(summary)
    dims = [key for key in keys if key in data["proportion"].dims]  # a trial's settings are not dimensions
    configs = [(_label(c), data["proportion"].sel({k: c[k] for k in dims})) for c in done]
    grid_x, grid_y = grid_x - grid_x.min(), grid_y - grid_y.min()
    sideways = grid_y.max() > grid_x.max()  # a tall grid (STARmap's cortex) is drawn lying down
    if sideways:
        grid_x, grid_y = grid_y, grid_x
    aspect = (grid_y.max() + 1) / (grid_x.max() + 1)
    panel = min(max(MAP_PANEL_IN, MAP_SHORT_SIDE_IN / aspect), MAP_PANEL_MAX_IN)
    label_width = 0.09 * max(len(str(name)) for name in types) + 0.2  # room for the whole cell-type name
    bands = _map_bands(len(configs), panel, label_width)
    band_height = panel * aspect * len(types) + 0.9
    fig = plt.figure(
        figsize=(label_width + panel * (max(bands) + 1) + MAP_COLORBAR_IN, band_height * len(bands) + 0.9),
        layout="constrained",
    )
    subfigures = np.atleast_1d(fig.subfigures(len(bands), 1))
    start = 0
    for subfigure, size in zip(subfigures, bands, strict=True):
        columns = [("truth", truth), *configs[start : start + size]]
        start += size
        _draw_map_band(subfigure, columns, max(bands) + 1, types, spots, (grid_x, grid_y), label_width / panel)
    # Title and caption wrapped to the figure's width (about 11 and 13 characters an inch at 10 and 8 pt):
    # a narrow figure of few configurations or a long orientation is not cut off.
    title = f"{dataset}: cell-type proportions on the spot grid, truth and each configuration (seed {seed})"
    fig.suptitle(textwrap.fill(title, width=max(30, int(fig.get_figwidth() * 11))), fontsize=10)
    holes = len(spots) < (grid_x.max() + 1) * (grid_y.max() + 1)
    caption = _map_caption(summary, dataset, sideways, holes)
    caption = textwrap.fill(caption, width=max(40, int(fig.get_figwidth() * 13)))
    fig.supxlabel(caption, fontsize=8)
    _save(fig, path)
    return True


def _draw_map_band(
    figure: plt.Figure,
    columns: list[tuple[str, xr.DataArray]],
    slots: int,
    types: list[str],
    spots: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray],
    label_ratio: float,
) -> None:
    """One band of maps: a column of cell-type names, then one column of maps per configuration, in
    `slots` columns so that a shorter last band lines up with the others."""
    axes = figure.subplots(
        len(types), slots + 1, squeeze=False, gridspec_kw={"width_ratios": [label_ratio] + [1] * slots}
    )
    for ax in axes[:, len(columns) + 1 :].ravel():
        ax.axis("off")
    for row, cell_type in enumerate(types):
        axes[row, 0].axis("off")
        axes[row, 0].text(
            1.0, 0.5, str(cell_type), ha="right", va="center", fontsize=8, transform=axes[row, 0].transAxes
        )
    image = None
    for col, (title, values) in enumerate(columns, start=1):
        axes[0, col].set_title(title, fontsize=7)
        for row, cell_type in enumerate(types):
            ax = axes[row, col]
            spot_values = values.sel(cell_type=cell_type, spot=spots).values
            image = ax.imshow(_grid_image(spot_values, *grid), vmin=0, vmax=1, cmap="viridis", origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
    figure.colorbar(image, ax=axes[:, 1:], shrink=0.6, aspect=30, label="proportion of the spot's cells")


def _lines(summary: xr.Dataset, dataset: str, variable: str) -> pd.DataFrame:
    """Mean and spread over seeds of `variable` per configuration, against the batch size trained with."""
    names = [variable, "batch_size_used"]
    frame = summary[names].sel(dataset=dataset).to_dataframe().reset_index().dropna(subset=[variable])
    keys = _config_keys(summary)
    table = frame.groupby(keys)[variable].agg(["mean", "std", "count"])
    table["x"] = frame.groupby(keys)["batch_size_used"].mean()
    return table.reset_index()


def _tick_labels(batch_sizes: list[float]) -> list[str]:
    """Plain numbers, leaving out a label that would touch the one before it on the log axis (an `auto`
    batch of 18 beside 16): a tick closer than a twentieth of the axis' span keeps its mark, not its label."""
    span = np.log2(batch_sizes[-1] / batch_sizes[0]) if batch_sizes[0] > 0 else 0.0
    labels, last = [], None
    for batch in batch_sizes:
        if last is not None and np.log2(batch / last) < span / 20:
            labels.append("")
            continue
        labels.append(f"{batch:g}")
        last = batch
    return labels


def _plot_against_batch(ax: plt.Axes, lines: pd.DataFrame, ylabel: str) -> None:
    """One line per method/variant/amortization/epochs; methods trained without batches, and those that
    train nothing (controls), as horizontal dashed lines, the levels a trained method should beat."""
    levels: dict[float, list[tuple[str, str]]] = {}  # controls at one level (uniform, reference at PCC 0) share it
    line_keys = [c for c in lines.columns if c not in ("batch_size", "mean", "std", "count", "x")]
    for key, group in lines.groupby(line_keys):
        config = dict(zip(line_keys, key, strict=True))
        method, variant, amortization = config["method"], config["variant"], config["amortization"]
        if group["x"].isna().all() or not describe(str(method)).trains:
            levels.setdefault(round(float(group["mean"].iloc[0]), 3), []).append((str(method), str(variant)))
            continue
        group = group.sort_values("x")
        label = f"{method} {variant}" + ("" if amortization == "n/a" else f", {amortization}")
        label += f", {budget_words(config)}"
        ax.errorbar(group["x"], group["mean"], yerr=group["std"].fillna(0), marker="o", capsize=3, label=label)
    for level, names in levels.items():
        ax.axhline(level, linestyle="--", linewidth=1, color="grey")
        ax.annotate(
            _level_label(names),
            (1, level),
            xycoords=("axes fraction", "data"),
            fontsize=6,
            ha="right",
            va="bottom",
            color="grey",
        )
    ax.set_xscale("log", base=2)
    # Tick the batch sizes that ran, written as plain numbers (8, 64), not powers of two.
    batch_sizes = sorted(lines["x"].dropna().unique())
    if batch_sizes:
        ax.set_xticks(batch_sizes, _tick_labels(batch_sizes))
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("minibatch size (spots)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


def _level_label(names: list[tuple[str, str]]) -> str:
    """The (method, variant) pairs at one level, each method named once: "control uniform, nnls"."""
    variants: dict[str, list[str]] = {}
    for method, variant in names:
        variants.setdefault(method, []).append(variant)
    return ", ".join(f"{method} {', '.join(listed)}" for method, listed in variants.items())


def metrics_vs_batch(summary: xr.Dataset, dataset: str, path: Path) -> bool:
    present = [name for name in MEAN_METRICS if name in summary]
    if not present or _lines(summary, dataset, present[0]).empty:
        return False
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), squeeze=False, layout="constrained")
    for ax, name in zip(axes.ravel(), present, strict=False):
        label, better = MEAN_METRICS[name]
        _plot_against_batch(ax, _lines(summary, dataset, name), f"mean {label} over cell types ({better})")
    if axes[0, 0].get_legend_handles_labels()[0]:
        axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{dataset}: accuracy against minibatch size (bars: s.d. over seeds)")
    _save(fig, path)
    return True


def machines(summary: xr.Dataset, dataset: str) -> list[str]:
    """What the dataset's trained tasks ran on (a GPU's name, or cpu with its model), each named once; empty
    for summaries written before the aggregate recorded it."""
    if "device" not in summary:
        return []
    frame = summary[["device", "cpu", "status"]].sel(dataset=dataset).to_dataframe().reset_index()
    frame = _trained(frame[(frame["status"] == "done") & (frame["device"] != "")])
    labels = [
        device if device != "cpu" else (f"cpu: {cpu}" if cpu else UNRECORDED_CPU)
        for device, cpu in zip(frame["device"], frame["cpu"], strict=True)
    ]
    return sorted(set(labels))


UNRECORDED_CPU = "cpu (model not recorded)"


def _runtime_title(dataset: str, ran_on: list[str]) -> str:
    title = f"{dataset}: training time against minibatch size"
    if len(ran_on) == 1:
        return f"{title}\non {ran_on[0]}"
    recorded = [machine for machine in ran_on if machine != UNRECORDED_CPU]
    if len(recorded) == 1 and recorded[0].startswith("cpu: "):  # unknown, not known to differ
        return f"{title}\non {recorded[0]} (and, for tasks that did not record it, an unnamed CPU)"
    if ran_on:
        return f"{title}\n" + textwrap.fill(f"on {len(ran_on)} machines, not comparable: {'; '.join(ran_on)}", 80)
    return title


def runtime_vs_batch(summary: xr.Dataset, dataset: str, path: Path) -> bool:
    lines = _lines(summary, dataset, "train_time_s")
    lines = _trained(lines)
    if lines.empty:
        return False
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    _plot_against_batch(ax, lines, "spatial model training time (s)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    # Minor labels only where the axis spans about a decade or less: over several decades they overlap.
    ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.set_title(_runtime_title(dataset, machines(summary, dataset)), fontsize=9)
    _save(fig, path)
    return True


def _save(fig: plt.Figure, path: Path) -> None:
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


FORMATS = {
    **{short: "{:.3f}" for short, _ in MEAN_METRICS.values()},
    "AS": "{:.3f}",
    "ms_per_step": "{:.1f}",
    "train_time_min": "{:.1f}",
    "reference_time_s": "{:.0f}",
    "n_steps": "{:,.0f}",
    "final PCC": "{:.3f}",
    "steps": "{:,.0f}",
    "converged at step": "{:,.0f}",
    "converged at epoch": "{:,.1f}",
    "batch_size_used": "{:.0f}",
}
"""One format per column, so that a column's numbers line up: metrics to 3 decimals, times to 0.1."""


def _markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = [
        "| " + " | ".join(_metric_cell(v, str(c)) for c, v in zip(frame.columns, row, strict=True)) + " |"
        for row in frame.itertuples(index=False)
    ]
    return "\n".join([header, rule, *rows])


def _metric_cell(value: object, column: str) -> str:
    """A metric left undefined is "n/a" (the note under the table says why), never a blank or a 0.000."""
    if column in SCORE_COLUMNS and isinstance(value, (float, np.floating)) and np.isnan(value):
        return "n/a"
    return _cell(value, FORMATS.get(column))


def _cell(value: object, form: str | None = None) -> str:
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return ""
        if form:
            return form.format(value)
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"
    return str(value)


def _without_placeholders(table: pd.DataFrame) -> pd.DataFrame:
    """A 0 that fills a setting a method does not have (a control's batch size and epochs) or asks for its
    default (Cell2location's batch 0: every spot) reads n/a; a method's own 0 (`real_zeros`) stays."""
    table = table.copy()
    for column in ("batch_size", "max_epochs"):
        if column in table:
            table[column] = [
                "n/a" if str(value) == "0" and column not in describe(str(method)).real_zeros else value
                for value, method in zip(table[column], table["method"], strict=True)
            ]
    return table


def _batch_rank(batch: object) -> tuple[int, int]:
    return (1, 0) if str(batch) == "auto" else (0, int(batch))


def _results_table(summary: xr.Dataset, dataset: str) -> pd.DataFrame:
    """One row per configuration (mean over seeds): accuracy score over the configurations, the four
    mean metrics; ranked by accuracy score (Li et al.: rank on each metric, N for the best, divided by N)."""
    names = [n for n in MEAN_METRICS if n in summary]
    if not names:  # no task finished: nothing to rank
        return pd.DataFrame()
    frame = summary[names].sel(dataset=dataset).to_dataframe().reset_index().dropna(subset=names, how="all")
    if frame.empty:
        return frame
    keys = _config_keys(summary)
    table = frame.groupby(keys)[names].mean()
    table["seeds"] = frame.assign(scored=frame[names].notna().any(axis=1)).groupby(keys)["scored"].sum()
    short = {n: n.removeprefix("mean_").removesuffix("_cell_type") for n in names}
    table["AS"] = accuracy_score(table[names].rename(columns=short)).to_numpy()
    table = table.rename(columns={n: MEAN_METRICS[n][0] for n in names}).sort_values("AS", ascending=False)
    return _without_placeholders(table.reset_index())


def _runtime_table(summary: xr.Dataset, dataset: str) -> pd.DataFrame:
    """Like the study's runtime table: steps, time per step and training time of each configuration."""
    names = ["n_steps", "train_time_s", "reference_time_s", "batch_size_used"]
    frame = summary[names].sel(dataset=dataset).to_dataframe().reset_index().dropna(subset=["train_time_s"])
    frame = _trained(frame)
    keys = _config_keys(summary)
    table = frame.groupby(keys)[names].mean()
    table["ms_per_step"] = 1000 * table["train_time_s"] / table["n_steps"]
    table["train_time_min"] = table["train_time_s"] / 60
    table = table[["batch_size_used", "n_steps", "ms_per_step", "train_time_min", "reference_time_s"]].reset_index()
    order = sorted(
        range(len(table)),
        key=lambda i: (*(str(table[k].iloc[i]) for k in keys[:3]), _batch_rank(table["batch_size"].iloc[i])),
    )
    return _without_placeholders(table.iloc[order])


def _status_section(summary: xr.Dataset) -> list[str]:
    """Task counts, and every task that is not done with its state and reason."""
    names = ("done", "failed", "pruned", "started", "missing")
    counts = {name: int(summary.attrs.get(f"n_{name}", 0)) for name in names}
    if not counts["pruned"]:  # only a tuned folder's tasks of pruned trials are
        del counts["pruned"]
    n_tasks = int(summary.attrs.get("n_tasks", 0))
    lines = [f"{n_tasks} tasks: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + ".", ""]
    if n_tasks > counts["done"]:
        frame = summary[["status", "reason", "task_id"]].to_dataframe().reset_index()
        frame = frame[~frame["status"].isin(["done", "absent"])]
        lines += [f"**{n_tasks - counts['done']} tasks are not done:**", "", _markdown_table(frame), ""]
    return lines


def _dataset_section(summary: xr.Dataset, dataset: str, folder: Path) -> list[str]:
    lines = [f"## Dataset {dataset}", ""]
    figures = (
        ("proportion maps", f"proportions_{dataset}.png", proportion_maps),
        ("accuracy against batch size", f"metrics_vs_batch_size_{dataset}.png", metrics_vs_batch),
        ("training time against batch size", f"runtime_vs_batch_size_{dataset}.png", runtime_vs_batch),
    )
    for title, name, draw in figures:
        if draw(summary, dataset, folder / name):
            lines += [f"### {title.capitalize()}", "", f"![{title}]({name})", ""]
    lines += _trajectory_section(summary, dataset, folder)
    ranked = _results_table(summary, dataset)
    if not ranked.empty:
        lines += ["### Configurations ranked by accuracy score (mean over seeds)", "", _markdown_table(ranked), ""]
        lines += _undefined_note(summary, dataset, ranked)
    runtimes = _runtime_table(summary, dataset)
    if not runtimes.empty:
        lines += ["### Runtimes (mean over seeds)", "", _markdown_table(runtimes), ""]
        if ran_on := machines(summary, dataset):
            lines += [f"Trained on: {'; '.join(ran_on)}.", ""]
    return lines


TRAJECTORY_CAPTION = (
    "Each line follows one configuration while it trains: every task scored its model against the true "
    "proportions {points} times, evenly spaced over its optimizer steps, the same way as its final result. "
    "Top: against optimizer steps (log scale), which a smaller batch takes more of per epoch; bottom: against "
    "epochs (passes over all spots). Where the lines of two batch sizes part at equal steps but meet at equal "
    "epochs (or the other way round), the number of updates, not the batch size itself, makes the difference."
)


def _trajectory_section(summary: xr.Dataset, dataset: str, folder: Path) -> list[str]:
    """The accuracy-during-training figure, its caption, the convergence table, and which methods were
    scored at the end only; nothing for a summary without trajectories."""
    if not has_trajectory(summary):
        return []
    keys = _config_keys(summary)
    name = f"trajectory_{dataset}.png"
    if not trajectory_figure(summary, dataset, keys, folder / name, _save):
        return []
    points = int(summary.sizes.get(POINT, 0))
    lines = ["### Accuracy during training", "", f"![accuracy during training]({name})", ""]
    lines += [TRAJECTORY_CAPTION.format(points=points), ""]
    table = convergence_table(summary, dataset, keys)
    if not table.empty:
        within = f"{CONVERGED_WITHIN:g}"
        lines += [
            f"Converged at: the first scored step whose mean PCC over seeds is within {within} of the final one; "
            f"still improving: it rose by more than {within} over the last tenth of the steps.",
            "",
            _markdown_table(_without_placeholders(table)),
            "",
        ]
    if scored_at_end := final_only(summary, dataset):
        lines += [f"Final only (not scored during training): {', '.join(scored_at_end)}.", ""]
    return lines


GLOSSARY = (
    "PCC (higher is better, at most 1): Pearson correlation, over the spots, of a cell type's predicted and "
    "true proportions; the mean over cell types.",
    "SSIM (higher is better, at most 1): structural similarity of those two vectors, each scaled by its "
    "maximum, in one global window (Li et al. 2022); the mean over cell types.",
    "RMSE (lower is better, at least 0): root mean squared difference of those two vectors; the mean over cell types.",
    "JS distance (lower is better, at least 0): Jensen-Shannon distance (square root of the divergence) between "
    "those two vectors, each renormalised to sum 1 (natural log: at most 0.83); the mean over cell types.",
    "AS (higher is better, 0 to 1): Li et al.'s accuracy score: the configurations of one table ranked on "
    "each of the four (best N of N, worst 1), divided by N, averaged; it compares rows of one table only.",
    "seeds: how many seeds the mean is over. batch auto: min(n_spots / 10, 128), the study's rule.",
)
"""One line per metric with its direction of better (the benchmark's own definitions: toolkit.metrics)."""


def _provenance_section(summary: xr.Dataset) -> list[str]:
    """What produced the results (versions, device, image, host, scheduler) as a two-column table."""
    provenance = summary.attrs.get("provenance", "")
    try:
        record = json.loads(provenance)
    except ValueError:
        try:  # summaries written before the provenance was JSON hold a Python literal
            record = ast.literal_eval(provenance)
        except (ValueError, SyntaxError):
            return ["## Provenance", "", f"`{provenance}`", ""] if provenance else []
    if not isinstance(record, dict):
        return []
    rows = [(f"{name} version", version) for name, version in (record.get("versions") or {}).items()]
    rows += [("device", record.get("device"))] + ([("cpu", record["cpu"])] if record.get("cpu") else [])
    rows += [("container image", record.get("container_image"))]
    rows += [("host", record.get("host"))]
    rows += [(f"job {key}", value) for key, value in (record.get("job") or {}).items()]
    cells = [(what, "none" if value is None else value) for what, value in rows]
    frame = pd.DataFrame(cells, columns=["what", "value"])
    return ["## Provenance", "", "Of the first task's result; every result.json holds its own.", "",
            _markdown_table(frame), ""]  # fmt: skip


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 110em; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td { font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
"""


def html_page(markdown_text: str, folder: Path, title: str) -> str:
    """The markdown page as one self-contained HTML file: its PNGs embedded, so it can be mailed or opened
    from a cluster's shared disk in any browser."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables"])

    def embed(match: re.Match[str]) -> str:
        image = folder / match.group(1)
        if not image.is_file():
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"/]+\.png)"', embed, body)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def write_report(root: Path) -> Path:
    """Draw every figure and write `report/index.md` and the same page as `report/index.html` (self-contained);
    returns the markdown page's path."""
    layout = OutputLayout(Path(root))
    if not layout.summary.exists():
        raise SpotsweepError(f"{layout.summary}: no summary yet; run `spotsweep aggregate {root}` first.")
    summary = _load_summary(layout)
    layout.report.mkdir(parents=True, exist_ok=True)
    lines = [f"# {summary.attrs.get('title', 'spotsweep report')}", "", *_status_section(summary)]
    lines += report_section(layout.root, layout.report)  # a tuned folder's study; nothing otherwise
    for dataset in summary.dataset.values:
        lines += _dataset_section(summary, str(dataset), layout.report)
    lines += ["## What the numbers mean", "", *(f"- {line}" for line in GLOSSARY), ""]
    lines += _provenance_section(summary)
    page = layout.report / "index.md"
    write_atomically(page, lambda tmp: tmp.write_text("\n".join(lines)))
    html = html_page("\n".join(lines), layout.report, str(summary.attrs.get("title", "spotsweep report")))
    write_atomically(layout.report / "index.html", lambda tmp: tmp.write_text(html))
    return page


SCORE_COLUMNS = frozenset({*(short for short, _ in MEAN_METRICS.values()), "AS"})


def _undefined_note(summary: xr.Dataset, dataset: str, table: pd.DataFrame) -> list[str]:
    """Under a table that shows n/a: which configurations, and why their metric is undefined (issue 36)."""
    columns = [name for name in SCORE_COLUMNS if name in table and name != "AS"]
    undefined = table[table[columns].isna().any(axis=1)] if columns else table.iloc[:0]
    if undefined.empty:
        return []
    truth = summary["true_proportion"].sel(dataset=dataset).to_numpy()
    notes = []
    for row in undefined.itertuples(index=False):
        chosen = summary["proportion"].sel(dataset=dataset)
        for name in (key for key in _config_keys(summary) if key in chosen.dims):
            labels, value = [str(v) for v in chosen[name].values], str(getattr(row, name))
            value = value if value in labels else value.replace("n/a", "0")  # a placeholder 0 the table shows n/a
            chosen = chosen.isel({name: labels.index(value)})
        seeds = [chosen.isel(seed=i).to_numpy() for i in range(chosen.sizes["seed"])]
        seeds = [values for values in seeds if np.isfinite(values).any()]
        parts = (row.method, row.variant, row.amortization, f"batch {row.batch_size}", f"{row.max_epochs} epochs")
        label = " ".join(str(part) for part in parts if "n/a" not in str(part))
        kept = np.isfinite(truth).all(axis=1)
        why = why_undefined(truth[kept], seeds[0][kept]) if seeds else "no predictions"
        notes.append(f"{label}: {why}")
    return [
        "n/a: undefined for every cell type, so no mean: PCC needs a truth and a prediction that vary over the "
        "spots (SSIM and JS a non-zero one). " + "; ".join(notes) + ".",
        "",
    ]


def _load_summary(layout: OutputLayout) -> xr.Dataset:
    """summary.nc, or one sentence when it is empty, cut short or not spotsweep's (issue 36: no traceback)."""
    try:
        summary = xr.load_dataset(layout.summary, engine="h5netcdf")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        summary = None
    else:
        reason = "it holds no task status: not a summary of spotsweep's"
    if summary is None or "status" not in summary or "dataset" not in summary.dims:
        raise SpotsweepError(
            f"{layout.summary}: cannot be read as a sweep summary ({reason}); it was cut short or replaced: run "
            f"`spotsweep aggregate {layout.root}` to write it again."
        )
    return summary
