"""The study at a glance: destVI's accuracy against batch size in every experiment that has run, beside
the batch sizes the study found to work and the batch its rule picks (the README's front-page figure).

    .venv/bin/python results/study-2022/overview.py [--out PATH]   # default results/study-2022/overview.png

Read from the committed summary.nc files alone, with findings.py's measure: the excitatory layers' PCC on
STARmap (real and synthetic), every cell type's on MERFISH; mean and sd over seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from findings import E1, E1_BUDGET, HERE, MERFISH, layer_types, load, measure, merfish_run, pick  # beside this file
from matplotlib.ticker import NullLocator

STUDY_GOOD = {"starmap-189": (8, 16), "starmap-57": (4, 4), "merfish": (32, 256), "merfish-scaled": (32, 256)}
"""The batch sizes the study found to work (F1, F2, F3); the synthetic tissue is not the study's."""
COLOURS = {"both": "tab:orange", "latent": "tab:green"}


def auto_batch(summary, amortization: str) -> int:
    """Where `auto` ran: its resolved batch (min(n_spots // 10, 128))."""
    used = summary["batch_size_used"].sel({"method": "destvi", "amortization": amortization, "batch_size": "auto"})
    return int(np.nanmax(used.values))


def panel(ax: plt.Axes, name: str, summary) -> None:
    n_spots = summary.sizes["spot"]
    table = measure(name, summary)
    ticks: set[int] = set()
    for amortization in sorted(set(table.index.get_level_values(0))):
        rows = table.loc[amortization]
        x = [auto_batch(summary, amortization) if b == "auto" else int(b) for b in rows.index]
        order = np.argsort(x)
        ticks.update(int(b) for b in rows.index if b != "auto")  # auto: the star and the rule's line
        xs, means, sds = np.array(x)[order], rows["mean"].to_numpy()[order], rows["std"].fillna(0).to_numpy()[order]
        ax.errorbar(
            xs, means, yerr=sds, marker="o", capsize=3, color=COLOURS.get(amortization), label=f"destVI {amortization}"
        )
        if "auto" in rows.index:
            auto = rows.loc["auto", "mean"]
            ax.plot(
                [auto_batch(summary, amortization)],
                [auto],
                marker="*",
                markersize=13,
                color=COLOURS.get(amortization),
                zorder=5,
            )
    c2l = measure(name, summary, "cell2location")
    if not c2l.empty:
        mean, sd = float(c2l["mean"].iloc[0]), float(np.nan_to_num(c2l["std"].iloc[0]))
        ax.axhspan(mean - sd, mean + sd, color="tab:blue", alpha=0.15)
        ax.axhline(mean, color="tab:blue", lw=1, label=f"Cell2location (n={int(c2l['count'].iloc[0])})")
    if name in STUDY_GOOD:
        low, high = STUDY_GOOD[name]
        ax.axvspan(low / 1.15, high * 1.15, color="grey", alpha=0.2, label="batches the study found to work")
    rule = min(n_spots // 10, 128)
    ax.axvline(rule, color="black", ls="--", lw=1, label=f"the rule: min(n/10, 128) = {rule}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("minibatch size (spots)")
    ax.set_title(f"{name} ({n_spots:,} spots)", fontsize=10)
    ax.grid(alpha=0.3)


def by_run(values):
    """`values` as point x run: every other dimension (seed, and the one-valued ones) stacked into runs."""
    return values.stack(run=[d for d in values.dims if d != "point"]).transpose("point", "run")


def steps_panel(ax: plt.Axes, summary, amortization: str) -> None:
    """E1: the excitatory layers' PCC through training against optimizer steps, one line per batch (mean over
    the seeds done, a band of +- sd), every batch given the same 30,000 steps."""
    part = pick(summary, {"method": "destvi", "variant": "2022", "amortization": amortization, **E1_BUDGET})
    done = part["status"] == "done"
    scores = part["trajectory_pcc"].sel({"cell_type": layer_types(E1)}).mean("cell_type").where(done)
    steps = part["trajectory_step"].where(done)
    ran = (part["status"] != "absent").any([d for d in part["status"].dims if d != "batch_size"])
    swept = sorted(int(b) for b in part["batch_size"].values[ran.values])
    colours = dict(zip(swept, plt.colormaps["viridis"](np.linspace(0, 0.9, len(swept))), strict=True))
    for batch, colour in colours.items():
        if not bool(done.sel({"batch_size": batch}).any()):
            continue
        runs = by_run(scores.sel({"batch_size": batch})).dropna("run", how="all")
        x = np.nanmean(by_run(steps.sel({"batch_size": batch})).values, axis=1)
        mean, sd = runs.mean("run").values, runs.std("run", ddof=1).fillna(0).values
        ax.plot(x, mean, color=colour, lw=1.2, label=f"batch {batch} (n={runs.sizes['run']})")
        ax.fill_between(x, mean - sd, mean + sd, color=colour, alpha=0.2, lw=0)
    nnls = pick(summary, {"method": "control", "variant": "nnls"})
    nnls = nnls["pcc"].sel({"cell_type": layer_types(E1)}).mean("cell_type").where(nnls["status"] == "done")
    if np.isfinite(nnls.values).any():
        ax.axhline(float(np.nanmean(nnls.values)), color="tab:red", ls=":", lw=1.2, label="NNLS control (untrained)")
    ax.axvline(5_000, color="grey", ls="--", lw=1, label="5,000 steps: batch 128's 2,500 epochs")
    ax.set_xscale("log")
    ax.set_xlim(500, 32_000)
    ax.set_xlabel("optimizer steps")
    ax.set_title(f"E1: 30,000 steps for every batch ({amortization})", fontsize=10)
    ax.grid(alpha=0.3)
    if not bool(done.any()):
        ax.text(0.5, 0.5, "no task done yet", transform=ax.transAxes, ha="center", color="grey")
    ax.legend(fontsize=7, loc="lower right")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "overview.png")
    out = parser.parse_args().out
    names = ["starmap-57", "starmap-189", "starmap-like", merfish_run({m: load(m) for m in MERFISH})[0]]
    summaries = {name: summary for name in names if (summary := load(name)) is not None}
    if not summaries:
        sys.exit("results/study-2022: no experiment has a summary.nc yet; run one (README) first")
    steps = load(E1)
    rows = 1 if steps is None else 2
    fig = plt.figure(figsize=(4.2 * len(summaries), 4 * rows), layout="constrained")
    top, bottom = fig.subfigures(rows, 1, squeeze=False)[:, 0] if rows == 2 else (fig, None)
    axes = top.subplots(1, len(summaries), squeeze=False)
    for ax, (name, summary) in zip(axes[0], summaries.items(), strict=True):
        panel(ax, name, summary)
    axes[0, 0].set_ylabel("PCC (STARmap: excitatory layers;\nMERFISH: all cell types), mean +- sd")
    if bottom is not None:
        below = bottom.subplots(1, 2)  # own y scales: latent starts near 0, both near 0.7
        for ax, amortization in zip(below, ("both", "latent"), strict=True):
            steps_panel(ax, steps, amortization)
        below[0].set_ylabel("excitatory-layer PCC during training\n(mean +- sd over seeds)")
    handles, labels = {}, {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            key = label.split(":")[0]
            handles.setdefault(key, handle)
            labels.setdefault(key, label if not label.startswith("the rule") else "the rule: min(n/10, 128)")
    top.legend(handles.values(), labels.values(), loc="outside lower center", ncol=5, fontsize=8)
    fig.suptitle("destVI (2022 settings) against minibatch size; a star is the rule's `auto` batch", fontsize=11)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
