"""Does a short last minibatch make a batch size worse on 189 spots? F1's side question, read from the
committed summaries of starmap-189, starmap-189-last-batch and E3 (starmap-189-drop-last) alone.

    .venv/bin/python results/study-2022/last_batch.py     # prints the table (markdown), quoted in the README

On 189 spots batch 12 and the rule's 18 were the worst, and each epoch of both ends in a minibatch of 9
spots. One row per batch size run there: the spots of that last minibatch (189 mod batch, or a whole batch
where it divides 189), the excitatory-layer PCC of destVI (mean +- sd over seeds) per amortization, and the
CondSCVI reference model its tasks were trained against. Each experiment trained its own reference model
(same data, same settings, another run), and a reference of another seed moves destVI's results (E6), so
rows of different reference models are not a clean comparison of batch sizes: one table per experiment,
naming its reference by its seconds of training and, where the experiment committed it, its weights' digest
(references.py): two tables of one digest are against one model.
E3 answers the question inside one reference: each batch with the last minibatch kept (the study's scvi-tools)
and dropped (`drop_last: true`, every minibatch full), side by side in its table.
"""

from __future__ import annotations

import sys

import numpy as np
import xarray as xr
from findings import HERE, _batch_key, layers, load, text
from references import weights_digest

EXPERIMENTS = ("starmap-189", "starmap-189-last-batch", "starmap-189-drop-last")
KEPT_DROPPED = {False: "kept", True: "dropped"}


def last_minibatch(n_spots: int, batch: int) -> int:
    """The spots of an epoch's last minibatch: the remainder, kept as the study's scvi-tools kept it."""
    return n_spots % batch or batch


def trained_batches(summary: xr.Dataset) -> dict[str, int]:
    """The minibatch each destVI batch label trained with, as its tasks recorded it (`auto`: the study's rule)."""
    used = summary["batch_size_used"].sel({"method": "destvi"})
    sizes = {}
    for label in used["batch_size"].values:
        values = used.sel({"batch_size": label}).values
        if np.isfinite(values).any():  # the label labels destVI tasks here, not only Cell2location's
            sizes[str(label)] = int(np.nanmax(values))
    return sizes


def reference(name: str, summary: xr.Dataset) -> str:
    """The reference model the experiment's destVI tasks used: its seconds of training (as every task records
    them) and, where the experiment committed it, its weights' digest (references.py), which says whether two
    tables' references are one model."""
    seconds = summary["reference_time_s"].sel({"method": "destvi"}).values
    seconds = sorted({round(float(s)) for s in seconds.ravel() if np.isfinite(s) and s > 0})
    models = sorted((HERE / name / "models").glob("*/condscvi-*/model.pt"))
    weights = f"weights {', '.join(weights_digest(m) for m in models)}" if models else "not kept"
    return f"{name}'s reference model ({', '.join(f'{s} s' for s in seconds)} of training; {weights})"


def table() -> str:
    """One table per reference model: rows compare cleanly within a table, not across the two."""
    summaries = {name: load(name) for name in EXPERIMENTS}
    if summaries["starmap-189"] is None:
        sys.exit("results/study-2022/starmap-189/summary.nc: not found; run results/study-2022/run_all.sh starmap-189")
    tables = [reference_table(name, summary) for name, summary in summaries.items() if summary is not None]
    return "\n\n".join(tables)


def reference_table(name: str, summary: xr.Dataset) -> str:
    """The batches of one experiment, all trained against its one reference model; where it swept drop_last
    (E3), a column per amortization and last-minibatch rule."""
    n_spots = summary.sizes["spot"]
    sizes = trained_batches(summary)
    rules = [bool(v) for v in summary["drop_last"].values] if "drop_last" in summary.dims else [None]
    columns = []  # (title, table, amortization)
    for amortization in ("both", "latent"):
        for rule in rules:
            part = summary if rule is None else summary.sel({"drop_last": rule})
            title = amortization if rule is None else f"{amortization}, last {KEPT_DROPPED[rule]}"
            columns.append((title, layers(part), amortization))
    lines = [
        f"Against {reference(name, summary)}: excitatory-layer PCC, mean +- sd over seeds",
        "",
        "| batch | last minibatch (spots) | " + " | ".join(title for title, _, _ in columns) + " |",
        "| --- | --- | " + " | ".join("---" for _ in columns) + " |",
    ]
    for batch in sorted(sizes, key=lambda label: _batch_key(str(sizes[label]))):
        label = f"{sizes[batch]} (`auto`)" if batch == "auto" else batch
        cells = [text(table, (amortization, batch)) for _, table, amortization in columns]
        lines.append(f"| {label} | {last_minibatch(n_spots, sizes[batch])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
