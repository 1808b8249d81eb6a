"""The findings of results/study-2022/README.md, read from the committed summary.nc files alone.

    .venv/bin/python results/study-2022/findings.py           # prints every generated block (markdown)
    .venv/bin/python results/study-2022/findings.py --check   # exit 1 if a block in a README differs
    .venv/bin/python results/study-2022/findings.py --write   # put the blocks into the READMEs

The answer that opens the repository's README is a block too (advice.py: what batch size to use).

Each of the study's claims is one `Claim` in CLAIMS: a contrast between two settings (`Side`s) and the
study's direction, judged by the one rule of contrasts.py (its words, `contrasts.RULE`, are a block of the
README too). The narratives' own comparisons are `Claim`s without a direction (COMPARISONS). Beside each
experiment the README shows its destVI table and its controls table (truth, NNLS, reference frequencies,
uniform, Cell2location), generated here. A new experiment is one entry in EXPERIMENTS, a new contrast one
entry in CLAIMS or COMPARISONS, a new measure (e.g. accuracy at a given step, from a trajectory) one
function in MEASURES.

The measure is the study's: on STARmap the excitatory layers, the mean of per-cell-type PCC (Li et al.'s)
over eL2/3, eL4, eL5 and eL6, the types whose layered bands the study's maps show; on MERFISH, where the
study looked at every type, the mean over all cell types.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from budgets import at_budget, final_epochs
from contrasts import RULE, Contrast, Direction, compare, compare_paired, resolved, seeds, verdict

from toolkit.layout import write_atomically
from toolkit.methods import grids

HERE = Path(__file__).resolve().parent
EXCITATORY = ["eL2/3", "eL4", "eL5", "eL6"]
SYNTHETIC_LAYERS = ["ExcitatoryL2and3", "ExcitatoryL4", "ExcitatoryL5", "ExcitatoryL6"]
"""The starmap-like tissue's names for eL2/3 ... eL6 (toolkit.data.synthetic)."""
EPOCHS = 2500
MERFISH = ("merfish", "merfish-scaled")
"""The full-size run first: where it exists, its numbers are the findings' and the scaled run is not read."""
MERFISH_RUN = "merfish*"
"""A Side's experiment meaning: the full-size MERFISH run where it exists, else the scaled one."""
STUDY_SPOTS = 27_395
STUDY_MINUTES = {32: 211, 48: 104, 64: 86, 128: 36, 256: 21, 512: 11, 1024: 10}
"""The study's destVI training times on one RTX 3090 (27,395 spots, 2,500 epochs); Cell2location 123 min."""
GPU_CHECKS = HERE.parent / "gpu-h200"
"""The H200 check's runs (tests/benchmarks/gpu_check.py): per-step times at the study's size, for F5."""
GPU = "gpu-h200"
"""The GPU check read as an experiment: one run (seed 0) per engine and batch, minutes for 2,500 epochs."""
CONTROLS = ("truth", "nnls", "reference_frequencies", "uniform")
SCALE_TOLERANCE = 2.0
"""A setting represents the study's condition when its spots and epochs are within this factor of the study's."""


# --- reading the summaries -------------------------------------------------------------------------


def load(experiment: str) -> xr.Dataset | None:
    """An experiment's committed summary (the GPU check as one, see `gpu_summary`); None where it has not run."""
    if experiment == GPU:
        return gpu_summary()
    path = HERE / experiment / "summary.nc"
    return xr.load_dataset(path, engine="h5netcdf") if path.exists() else None


def gpu_summary() -> xr.Dataset | None:
    """The committed H200 checks as a summary (engine x batch_size x one seed of minutes), so F5's GPU part
    is read like any experiment; None without a check."""
    rows = []
    device, spots = "", 0
    for path in sorted(GPU_CHECKS.glob("*.json")):
        check = json.loads(path.read_text())
        device = check["device_name"]
        for row in check["sections"].get("runtime_table", []):
            if "minutes_2500_epochs" in row:
                rows.append((row["engine"], int(row["batch"]), row["minutes_2500_epochs"] * 60))
                spots = int(row.get("n_spots", spots))
    if not rows:
        return None
    frame = pd.DataFrame(rows, columns=["engine", "batch_size", "train_time_s"]).assign(seed=0)
    dataset = xr.Dataset.from_dataframe(frame.set_index(["engine", "batch_size", "seed"]))
    dataset["status"] = xr.where(dataset["train_time_s"].notnull(), "done", "absent")
    dataset.attrs = {"provenance": json.dumps({"device": device}), "n_spots": spots, "epochs": EPOCHS}
    return dataset


def merfish_run(summaries: Mapping[str, xr.Dataset | None]) -> tuple[str, xr.Dataset | None]:
    """The MERFISH experiment the findings read: the full size if it ran, else the scaled one."""
    for name in MERFISH:
        if summaries.get(name) is not None:
            return name, summaries[name]
    return MERFISH[-1], None


def pick(summary: xr.Dataset, where: Mapping[str, Any]) -> xr.Dataset:
    """The part of a summary at `where` (coordinate values, compared as text: the aggregate stores batch sizes
    as numbers, or as text where one is `auto`)."""
    for key, value in where.items():
        summary = summary.isel({key: [i for i, v in enumerate(summary[key].values) if str(v) == str(value)]})
    return summary


def n_spots(summary: xr.Dataset) -> int:
    return int(summary.sizes.get("spot", summary.attrs.get("n_spots", 0)))


def device(summary: xr.Dataset) -> str:
    return json.loads(summary.attrs.get("provenance", "{}")).get("device", "unknown device")


def base_epochs(summary: xr.Dataset) -> int:
    """The epochs most destVI tasks train (2,500 in the study, 1,000 scaled); longer arms are F4's."""
    if "method" not in summary.dims:
        return int(summary.attrs.get("epochs", EPOCHS))
    status = summary["status"].sel({"method": "destvi"})
    counts = (status != "absent").sum([d for d in status.dims if d != "max_epochs"])
    return int(counts.idxmax("max_epochs"))


def layer_types(name: str) -> list[str]:
    return SYNTHETIC_LAYERS if name.startswith("starmap-like") else EXCITATORY


def is_merfish(name: str) -> bool:
    return name.startswith("merfish")


# --- measures: per task, reduced over cell types; a new one (e.g. PCC at a step of a trajectory) goes here ---


def _layers(name: str, summary: xr.Dataset) -> xr.DataArray:
    return summary["pcc"].sel({"cell_type": layer_types(name)}).mean("cell_type")


def _all_types(name: str, summary: xr.Dataset) -> xr.DataArray:
    return summary["mean_pcc_cell_type"]


def _minutes(name: str, summary: xr.Dataset) -> xr.DataArray:
    return summary["train_time_s"] / 60


def _measure(name: str, summary: xr.Dataset) -> xr.DataArray:
    return (_all_types if is_merfish(name) else _layers)(name, summary)


@dataclass(frozen=True)
class Measure:
    read: Callable[[str, xr.Dataset], xr.DataArray]
    digits: int
    unit: str = "seed"
    """What one value is: a seed of training, or a run of a timing."""


MEASURES: dict[str, Measure] = {
    "measure": Measure(_measure, 3),
    "layers": Measure(_layers, 3),
    "all types": Measure(_all_types, 3),
    "minutes": Measure(_minutes, 1, "run"),
}

E1 = "starmap-189-steps"
E1_BUDGET = {"max_steps": 30_000, "n_steps_kl_warmup": 2_400}
"""E1's one budget for every batch: batch 16's 2,500 epochs in steps, its 200-epoch KL warm-up in steps."""
E1_AT = {
    "5,000 steps": ("step", 5_000),
    "625 epochs": ("epoch", 625),
    "2,500 epochs": ("epoch", 2_500),
    "30,000 steps": ("step", 30_000),
}
"""Where E1 compares batches, read from the trajectories (budgets.py): at equal steps (5,000: batch 16's 417
epochs, batch 128's 2,500, the budget starmap-189 gave 128) and at equal epochs: 625, batch 4's whole run
(48 minibatches an epoch), the most epochs every batch reaches, though batches 64 and 128 are then still in
their 2,400-step KL warm-up (1,875 and 1,250 steps); and 2,500, the study's epochs, which batches 16 to 128
reach past their warm-up (4 and 8 stop at 625 and 1,250)."""
E1_SMALL = {"2,500 epochs": (16, 32, 64)}
"""The batches E1 compares with 128 at a budget: 4, 8 and 16, but at 2,500 epochs (which 4 and 8 never reach)
16, 32 and 64."""


def _layers_at(axis: str, budget: float) -> Callable[[str, xr.Dataset], xr.DataArray]:
    def read(name: str, summary: xr.Dataset) -> xr.DataArray:
        scores = summary["trajectory_pcc"].sel({"cell_type": layer_types(name)}).mean("cell_type")
        return at_budget(summary[f"trajectory_{axis}"], scores, budget)

    return read


MEASURES |= {f"layers at {at}": Measure(_layers_at(*where), 3) for at, where in E1_AT.items()}


OPTIONAL = tuple(dict.fromkeys(name for grid in grids() for name in grid.optional_axes))
"""The settings a sweep may add as dimensions (step budgets, drop_last, the reference's seed, ...)."""
CONFIGURATION = ("dataset", "variant", "amortization", "batch_size", "max_epochs", *OPTIONAL)
"""What tells one destVI configuration from another in a summary (the optional ones only where swept)."""
SHOWN = {"dataset": "dataset", "variant": "variant", "drop_last": "drop last", "reference_seed": "reference seed"}
"""The configuration keys a destVI table gives a column of its own where they vary within an experiment."""


# --- the claims ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One setting of one experiment: its seeds are one side of a contrast."""

    experiment: str
    label: str
    where: Mapping[str, Any]
    epochs: int | None = None
    """destVI's max_epochs; None: the experiment's base epochs (2,500 on STARmap, 1,000 scaled)."""
    measure: str = "measure"

    def selection(self, summary: xr.Dataset) -> dict[str, Any]:
        where = dict(self.where)
        if where.get("method") == "destvi":
            where["max_epochs"] = self.epochs or base_epochs(summary)
        return where


def destvi(experiment: str, amortization: str, batch: int | str, epochs: int | None = None, **kw: Any) -> Side:
    """destVI (the study's 2022 settings) at one amortization, batch and epochs."""
    label = f"{amortization} {batch}" + (f" at {epochs:,} epochs" if epochs else "")
    where = {"method": "destvi", "variant": "2022", "amortization": amortization, "batch_size": batch}
    return Side(experiment, label, where, epochs, **kw)


def at_budget_side(amortization: str, batch: int, at: str) -> Side:
    """E1's destVI at one amortization and batch, read at one of its budgets (E1_AT)."""
    where = {"method": "destvi", "variant": "2022", "amortization": amortization, "batch_size": batch, **E1_BUDGET}
    return Side(E1, f"{amortization} {batch} at {at}", where, measure=f"layers at {at}")


def setting(experiment: str, amortization: str, batch: int | str, variant: str = "2022", **where: Any) -> Side:
    """destVI in one experiment at one amortization and batch, and at the other swept keys in `where`
    (dataset, drop_last, reference_seed): E2-E6's sides."""
    words = ", ".join(f"{SHOWN.get(key, key)} {value}" for key, value in where.items() if key != "dataset")
    label = f"{amortization} {batch}" + (f", {words}" if words else "")
    keys = {"method": "destvi", "variant": variant, "amortization": amortization, "batch_size": batch}
    return Side(experiment, label, keys | where)


def cell2location(experiment: str) -> Side:
    return Side(experiment, "Cell2location", {"method": "cell2location", "variant": "default"})


@dataclass(frozen=True)
class Claim:
    """One contrast A against B. With a direction it is a claim of the study's, judged by the verdict rule;
    without, a comparison a narrative rests on, said resolved or not by the same rule."""

    finding: str
    says: str
    a: Side
    b: Side
    direction: Direction | None = None
    study_spots: int | None = None
    """The spots of the study's condition; None: a claim for any number of spots (the rule's)."""
    study_epochs: int = EPOCHS
    gpu: bool = False
    """The claim is about a GPU's training time: a CPU cannot represent it."""
    paired: bool = False
    """A and B are the same tasks read twice (two budgets of one trajectory): compared seed by seed."""


def f1() -> list[Claim]:
    """189 spots: each small batch against 128, per amortization; both at 32 against each small batch."""
    claims = [
        Claim("F1", f"batch {small} beats 128 ({am})", destvi("starmap-189", am, small),
              destvi("starmap-189", am, 128), "higher", 189)
        for am in ("both", "latent") for small in (8, 12, 16)
    ]  # fmt: skip
    return claims + [
        Claim("F1", f"both at batch 32 does worse than at {small}", destvi("starmap-189", "both", 32),
              destvi("starmap-189", "both", small), "lower", 189)
        for small in (8, 12, 16)
    ]  # fmt: skip


def f2() -> list[Claim]:
    """57 spots: batch 4 against every other batch, per amortization; latent against both at batch 4."""
    claims = [
        Claim("F2", f"batch 4 beats {other} ({am})", destvi("starmap-57", am, 4), destvi("starmap-57", am, other),
              "higher", 57)
        for am in ("both", "latent") for other in (8, 12, 16, 32, "auto")
    ]  # fmt: skip
    return [
        *claims,
        Claim("F2", "latent beats both at batch 4", destvi("starmap-57", "latent", 4), destvi("starmap-57", "both", 4),
              "higher", 57),
    ]  # fmt: skip


def f3_f4_f5() -> list[Claim]:
    """MERFISH (27,395 spots in the study): F3's shape over batch, F4's long arms, F5's training time."""
    m = MERFISH_RUN
    base = {"study_spots": STUDY_SPOTS}
    return [
        Claim("F3", "quality holds to batch 256 (both): 256 not below 32", destvi(m, "both", 256),
              destvi(m, "both", 32), "higher", **base),
        Claim("F3", "quality drops at 512 (both)", destvi(m, "both", 512), destvi(m, "both", 256), "lower", **base),
        Claim("F3", "quality drops at 1,024 (both)", destvi(m, "both", 1024), destvi(m, "both", 256), "lower", **base),
        Claim("F3", "latent stable: 1,024 not below 32", destvi(m, "latent", 1024), destvi(m, "latent", 32), "higher",
              **base),
        Claim("F4", "512 recovers with 2x the epochs (the study's 5,000)", destvi(m, "both", 512, 2000),
              destvi(m, "both", 512), "higher", **base),
        Claim("F4", "1,024 does not recover with 4x the epochs (the study's 10,000): stays below 256",
              destvi(m, "both", 1024, 4000), destvi(m, "both", 256), "lower", **base),
        Claim("F5", "training is slower at batch 32 than at 1,024 (this CPU)", destvi(m, "both", 32, measure="minutes"),
              destvi(m, "both", 1024, measure="minutes"), "higher", gpu=True, **base),
        Claim("F5", "training is slower at batch 32 than at 1,024",
              Side(GPU, "H200 fast 32", {"engine": "fast", "batch_size": 32}, measure="minutes"),
              Side(GPU, "H200 fast 1024", {"engine": "fast", "batch_size": 1024}, measure="minutes"), "higher",
              gpu=True, **base),
    ]  # fmt: skip


def five_seeds() -> list[Claim]:
    """E5: the settings F1's and F2's verdicts hinge on, with 5 seeds each, in sweeps of their own."""
    e5, e5_57 = "starmap-189-seeds", "starmap-57-seeds"
    return [
        *[Claim("F1", f"batch {small} beats 128 ({am}; 5 seeds)", destvi(e5, am, small), destvi(e5, am, 128),
                "higher", 189)
          for am in ("both", "latent") for small in (8, 16)],
        *[Claim("F2", f"batch 4 beats auto ({am}; 5 seeds)", destvi(e5_57, am, 4), destvi(e5_57, am, "auto"),
                "higher", 57)
          for am in ("both", "latent")],
    ]  # fmt: skip


CLAIMS: list[Claim] = [*f1(), *f2(), *five_seeds(), *f3_f4_f5()]
"""Every claim of the study, one contrast each (the rule's rows are added from the data: `rule_claims`)."""

RULE_EXPERIMENTS = ("starmap-57", "starmap-189", "starmap-like", MERFISH_RUN, "starmap-189-seeds", "starmap-57-seeds")
"""Where the study's rule, batch = min(n_spots / 10, 128), is judged against the best other batch."""


def comparisons() -> list[Claim]:
    """The narratives' own contrasts (no study direction): said resolved or not by the same rule."""
    m = MERFISH_RUN
    rows = [
        Claim("57 spots", f"latent vs both at batch {b}", destvi("starmap-57", "latent", b),
              destvi("starmap-57", "both", b))
        for b in (4, 8, 12, 16, 32, "auto")
    ]  # fmt: skip
    rows += [
        Claim("189 spots", f"the dip: {dip} vs {good} ({am})", destvi("starmap-189", am, dip),
              destvi("starmap-189", am, good))
        for am in ("both", "latent") for dip, good in ((12, 16), ("auto", 16), ("auto", 32))
    ]  # fmt: skip
    rows += [
        Claim("189 spots", f"the fall from 16: {a} vs {b} ({am})", destvi("starmap-189", am, a),
              destvi("starmap-189", am, b))
        for am in ("both", "latent") for a, b in ((16, 32), (32, 48), (48, 64), (64, 128), (32, 128))
    ]  # fmt: skip
    rows += [
        Claim("last minibatch", f"17 (last minibatch 2) vs {other} ({am})",
              destvi("starmap-189-last-batch", am, 17), destvi("starmap-189-last-batch", am, other))
        for am in ("both", "latent") for other in (19, 21)
    ]  # fmt: skip
    rows += [
        Claim("E1 equal budgets", f"{small} vs 128 at {at} ({am})", at_budget_side(am, small, at),
              at_budget_side(am, 128, at))
        for am in ("both", "latent") for at in E1_AT for small in E1_SMALL.get(at, (4, 8, 16))
    ]  # fmt: skip
    rows += [
        Claim("E1 equal budgets", f"{batch}: 30,000 vs 5,000 steps ({am})", at_budget_side(am, batch, "30,000 steps"),
              at_budget_side(am, batch, "5,000 steps"), paired=True)
        for am in ("both", "latent") for batch in (4, 16, 128)
    ]  # fmt: skip
    return [
        *rows,
        Claim("MERFISH", "both 1,024: 4x the epochs vs 1x", destvi(m, "both", 1024, 4000), destvi(m, "both", 1024)),
        Claim("MERFISH", "both 1,024: 2x the epochs vs 1x", destvi(m, "both", 1024, 2000), destvi(m, "both", 1024)),
        Claim("MERFISH", "both 1,024 at 2x the epochs vs 256", destvi(m, "both", 1024, 2000),
              destvi(m, "both", 256)),
        Claim("MERFISH", "both 512: 4x the epochs vs 1x", destvi(m, "both", 512, 4000), destvi(m, "both", 512)),
        Claim("MERFISH", "latent 1,024: 4x the epochs vs 1x", destvi(m, "latent", 1024, 4000),
              destvi(m, "latent", 1024)),
        *[Claim("MERFISH", f"both {a:,} vs {b:,}", destvi(m, "both", a), destvi(m, "both", b))
          for a, b in ((64, 256), (64, 512), (128, 512), (256, 512), (32, 1024))],
        *[Claim("MERFISH", f"latent {a} vs 256", destvi(m, "latent", a), destvi(m, "latent", 256)) for a in (32, 128)],
        Claim("MERFISH", "Cell2location vs both 32", cell2location(m), destvi(m, "both", 32)),
        Claim("MERFISH", "Cell2location vs both 64", cell2location(m), destvi(m, "both", 64)),
        Claim("MERFISH", "Cell2location vs latent 256", cell2location(m), destvi(m, "latent", 256)),
    ]  # fmt: skip


SHIFTS = {
    "starmap-189-resampled": "counts redrawn",
    "starmap-189-shift05": "capture sd 0.5",
    "starmap-189-shift10": "capture sd 1.0",
    "starmap-189-shift10-missing": "capture sd 1.0, a third of genes gone",
}
"""E2's references: each dataset of starmap-189-reference-shift, and how its reference was made to differ."""


def experiment_comparisons() -> list[Claim]:
    """E2-E4 and E6: the contrasts each experiment was run for, each inside one sweep."""
    e2, e3, e4, e6 = (f"starmap-189-{name}" for name in ("reference-shift", "drop-last", "current", "reference-seed"))
    rows = [
        Claim("E2 reference shift", f"{a} vs {b} ({words}, {am})", setting(e2, am, a, dataset=name),
              setting(e2, am, b, dataset=name))
        for name, words in SHIFTS.items() for am in ("both", "latent") for a, b in ((16, 128), (8, 128), ("auto", 16))
    ]  # fmt: skip
    rows += [
        Claim("E2 reference shift", f"128: {words} vs counts redrawn ({am})", setting(e2, am, 128, dataset=name),
              setting(e2, am, 128, dataset="starmap-189-resampled"))
        for name, words in list(SHIFTS.items())[1:] for am in ("both", "latent")
    ]  # fmt: skip
    rows += [
        Claim("E3 last minibatch", f"{batch}: dropped vs kept ({am})", setting(e3, am, batch, drop_last=True),
              setting(e3, am, batch, drop_last=False))
        for am in ("both", "latent") for batch in (12, 16, 17, 18, 19, 128)
    ]  # fmt: skip
    rows += [
        Claim("E3 last minibatch", f"{a} vs {b} (last minibatch {'dropped' if drop else 'kept'}, {am})",
              setting(e3, am, a, drop_last=drop), setting(e3, am, b, drop_last=drop))
        for drop in (False, True) for am in ("both", "latent") for a, b in ((17, 19), (18, 16), (12, 16), (16, 128))
    ]  # fmt: skip
    rows += [
        Claim("E4 today's destVI", f"{a} vs {b} ({am})", setting(e4, am, a, variant="current"),
              setting(e4, am, b, variant="current"))
        for am in ("both", "latent") for a, b in ((16, 128), (8, 128), ("auto", 16))
    ]  # fmt: skip
    rows += [
        Claim("E6 reference seed", f"{a} vs {b} (reference seed {seed})", setting(e6, "both", a, reference_seed=seed),
              setting(e6, "both", b, reference_seed=seed))
        for seed in (0, 1, 2) for a, b in ((16, 128), (18, 16))
    ]  # fmt: skip
    return rows + [  # the reference model's own effect, to set beside the batch contrasts above
        Claim("E6 reference seed", f"{batch}: reference seed {seed} vs 0",
              setting(e6, "both", batch, reference_seed=seed), setting(e6, "both", batch, reference_seed=0))
        for batch in (16, 18, 128) for seed in (1, 2)
    ]  # fmt: skip


COMPARISONS: list[Claim] = [*comparisons(), *experiment_comparisons()]

FINDINGS = {
    "F1": "189 spots: batch 8-16 recover the excitatory layers that batch 128 loses (both amortizations); "
    "both-amortization at batch 32 does badly",
    "F2": "57 spots: only batch 4 separates the excitatory layers; there latent amortization beats both",
    "F3": "27,395 MERFISH spots: quality holds to batch 256, drops at 512-1,024 (both); latent stable",
    "F4": "batch 512 recovers with 5,000 epochs; 1,024 does not with 10,000",
    "F5": "training time falls steeply with batch size (RTX 3090, minutes: "
    + ", ".join(f"batch {b} {STUDY_MINUTES[b]}" for b in (32, 128, 1024))
    + "; Cell2location 123)",
    "rule": "batch size = min(n_spots / 10, 128)",
}
"""The study's findings in its words; each is judged by its claims' rows."""

EXPERIMENTS = {
    "starmap-57": "STARmap, 57 spots",
    "starmap-189": "STARmap, 189 spots",
    E1: "STARmap, 189 spots, every batch given 30,000 optimizer steps (E1)",
    "starmap-like": "STARmap-like synthetic tissue, 190 spots",
    "merfish-scaled": "MERFISH-like, scaled (2,692 spots)",
    "starmap-189-reference-shift": "STARmap, 189 spots, against references shifted as another technology's (E2)",
    "starmap-189-drop-last": "STARmap, 189 spots, the last minibatch kept and dropped (E3)",
    "starmap-189-current": "STARmap, 189 spots, today's destVI (E4)",
    "starmap-189-seeds": "STARmap, 189 spots, 5 seeds (E5)",
    "starmap-57-seeds": "STARmap, 57 spots, 5 seeds (E5)",
    "starmap-189-reference-seed": "STARmap, 189 spots, three CondSCVI references by seed (E6)",
}
"""The experiments whose destVI and controls tables the README shows (a new one: one entry)."""

SEED_TYPES = {"merfish-scaled": ["Endothelial 1", "Endothelial 2", "Endothelial 3", "OD Mature 3"]}
"""Per experiment, the cell types whose PCC the narrative follows seed by seed (the rare types a seed loses)."""


# --- a side's seeds, a claim's row ----------------------------------------------------------------------


def resolve(experiment: str, summaries: Mapping[str, xr.Dataset | None]) -> tuple[str, xr.Dataset | None]:
    if experiment == MERFISH_RUN:
        return merfish_run(summaries)
    return experiment, summaries.get(experiment)


@dataclass
class Seeds:
    """A side's values per finished seed, and how many of its tasks the sweep has and has done."""

    name: str
    label: str
    values: np.ndarray = field(default_factory=lambda: np.array([]))
    done: int = 0
    total: int = 0
    by_seed: np.ndarray = field(default_factory=lambda: np.array([]))
    """Every task's value in seed order, nan where not done: what pairs the seeds of two readings."""


def side_seeds(side: Side, summaries: Mapping[str, xr.Dataset | None]) -> Seeds:
    name, summary = resolve(side.experiment, summaries)
    if summary is None:
        return Seeds(name, side.label)
    part = pick(summary, side.selection(summary))
    status = part["status"]
    by_seed = (
        MEASURES[side.measure]
        .read(name, part)
        .where(status == "done")
        .transpose(..., "seed", missing_dims="ignore")
        .values.ravel()
    )
    label = side.label
    if str(side.where.get("batch_size")) == "auto" and "batch_size_used" in part:
        used = part["batch_size_used"].values
        if np.isfinite(used).any():
            label = label.replace("auto", f"auto ({int(np.nanmax(used))})")
    done, total = int((status == "done").sum()), int((status != "absent").sum())
    return Seeds(name, label, by_seed[np.isfinite(by_seed)], done, total, by_seed)


def fmt(value: float, digits: int, sign: bool = False) -> str:
    """`value` to `digits` decimals, one more where it would round to 0 (an interval's end at +0.000 would hide
    which side of 0 it is on)."""
    if not math.isfinite(value):
        return "n/a"
    if value != 0 and abs(value) < 0.5 * 10**-digits:
        digits += 1
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def cell(values: np.ndarray, digits: int = 3) -> str:
    """Mean +- sd (n) of one setting's seeds; one seed has no spread."""
    if len(values) == 0:
        return ""
    if len(values) == 1:
        return f"{fmt(values[0], digits)} (n=1)"
    return f"{fmt(values.mean(), digits)} +- {fmt(values.std(ddof=1), digits)} (n={len(values)})"


def side_text(seeds: Seeds, digits: int) -> str:
    if seeds.total == 0:
        return f"{seeds.label}: not run"
    if len(seeds.values) == 0:
        return f"{seeds.label}: none done yet"
    return f"{seeds.label}: {cell(seeds.values, digits)}"


def interval_text(contrast: Contrast, digits: int) -> str:
    difference = fmt(contrast.difference, digits, sign=True)
    if not math.isfinite(contrast.low):
        return f"{difference} (no interval: a side has 1 run)"
    return f"{difference} ({fmt(contrast.low, digits, True)} to {fmt(contrast.high, digits, True)})"


def separation_text(contrast: Contrast) -> str:
    if contrast.n_a == 1 and contrast.n_b == 1:
        return "n/a (1 run a side)"
    if contrast.separated == 0:
        return "no"
    if contrast.paired:
        side = "above" if contrast.separated > 0 else "below"
        return f"yes, every seed's A {side} its B (sign p {contrast.rank_p:.2f})"
    side = "above" if contrast.separated > 0 else "below"
    p = contrast.rank_p
    return f"yes, A {side} (rank p {p:.2f})" if p >= 0.01 else f"yes, A {side} (rank p {p:.3f})"


def scale_reason(claim: Claim, summaries: Mapping[str, xr.Dataset | None]) -> str | None:
    """Why the claim's experiment cannot represent the study's condition (from the setting, not the values);
    None where it can. The study's condition: its spots at its epochs, on a GPU for time."""
    name, summary = resolve(claim.a.experiment, summaries)
    if summary is None:
        return None
    if claim.gpu and device(summary) == "cpu":
        return (
            f"{name} trained on a CPU, where a step's arithmetic grows with its batch, so an epoch costs about "
            "the same at any batch; the study timed a GPU, where a step costs about the same at any batch"
        )
    spots, epochs = n_spots(summary), base_epochs(summary)
    epochs_off = max(epochs / claim.study_epochs, claim.study_epochs / epochs) > SCALE_TOLERANCE
    if claim.study_spots is None:  # the rule: a claim for any number of spots, at the study's epochs
        if not epochs_off:
            return None
        return f"{name} trains {epochs:,} epochs against the study's {claim.study_epochs:,}"
    if max(spots / claim.study_spots, claim.study_spots / spots) <= SCALE_TOLERANCE and not epochs_off:
        return None
    here, study = steps(summary, 256, epochs), claim.study_epochs * math.ceil(claim.study_spots / 256)
    return (
        f"{name} has {spots:,} spots against the study's {claim.study_spots:,} and trains {epochs:,} epochs: "
        f"batch 256 takes {here:,} optimizer steps ({study:,} in the study, {study / here:.0f}x fewer) and "
        f"batch 1,024 covers {min(1024 / spots, 1):.0%} of the spots in each step "
        f"({1024 / claim.study_spots:.1%} in the study)"
    )


def steps(summary: xr.Dataset, batch: int, epochs: int) -> int:
    """Optimizer steps of a destVI task of this batch and epochs: as recorded, else epochs x minibatches."""
    if "n_steps" in summary:
        where = {"method": "destvi", "batch_size": batch, "max_epochs": epochs}
        recorded = pick(summary, where)["n_steps"].values
        if np.isfinite(recorded).any():
            return int(np.nanmax(recorded))
    return epochs * math.ceil(n_spots(summary) / batch)


@dataclass
class Row:
    claim: Claim
    a: Seeds
    b: Seeds
    contrast: Contrast | None
    outcome: str
    reason: str | None = None


def judge(claim: Claim, summaries: Mapping[str, xr.Dataset | None]) -> Row:
    """A claim's row: its sides' seeds, the contrast, and the rule's verdict (or why there is none yet)."""
    a, b = side_seeds(claim.a, summaries), side_seeds(claim.b, summaries)
    if a.total == 0 or b.total == 0:
        return Row(claim, a, b, None, "not run")
    if a.done < a.total or b.done < b.total:
        done, total = (a.done, a.total) if claim.paired else (a.done + b.done, a.total + b.total)
        return Row(claim, a, b, None, f"no verdict yet: {done} of {total} tasks done")
    unit = MEASURES[claim.a.measure].unit
    if claim.paired and (claim.a.experiment != claim.b.experiment or a.by_seed.shape != b.by_seed.shape):
        raise ValueError(f"{claim.says}: a paired claim reads one experiment's same tasks on both sides")
    contrast = compare_paired(a.by_seed, b.by_seed) if claim.paired else compare(a.values, b.values)
    if claim.direction is None:
        sign = resolved(contrast)
        outcome = {1: "A above B", -1: "A below B"}.get(sign, f"not resolved at {seeds(contrast, unit)}")
        return Row(claim, a, b, contrast, outcome)
    reason = scale_reason(claim, summaries)
    return Row(claim, a, b, contrast, verdict(contrast, claim.direction, reason, unit), reason)


def rule_claims(summaries: Mapping[str, xr.Dataset | None]) -> list[Claim]:
    """The rule's batch against the best other batch by mean (the best is picked after the fact, which favours
    it), per experiment and amortization at the base epochs."""
    claims = []
    for experiment in RULE_EXPERIMENTS:
        name, summary = resolve(experiment, summaries)
        if summary is None:
            continue
        table = measure(name, summary)
        for amortization in sorted(set(table.index.get_level_values(0))):
            rows = table.loc[amortization]
            rule = "auto" if "auto" in rows.index else str(min(n_spots(summary) // 10, 128))
            if rule not in rows.index or len(rows) < 2:
                continue
            best = str(rows.drop(index=rule)["mean"].idxmax())
            claims.append(
                Claim(
                    "rule",
                    f"{name}, {amortization}: the rule's batch not below the best other",
                    destvi(experiment, amortization, rule),
                    destvi(experiment, amortization, best),
                    "higher",
                )
            )
    return claims


# --- markdown -------------------------------------------------------------------------------------------


def claim_table(rows: list[Row], verdicts: bool = True) -> str:
    last = "verdict" if verdicts else "resolved?"
    lines = [
        f"| finding | {'the study says' if verdicts else 'compared'} | experiment | A | B | A - B (95% Welch interval) "
        f"| seeds separated | {last} |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        digits = MEASURES[row.claim.a.measure].digits
        cells = [
            row.claim.finding,
            row.claim.says,
            row.a.name if row.a.name == row.b.name else f"{row.a.name}; {row.b.name}",
            side_text(row.a, digits),
            side_text(row.b, digits),
            interval_text(row.contrast, digits) if row.contrast else "",
            separation_text(row.contrast) if row.contrast else "",
            row.outcome,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_table(rows: list[Row]) -> str:
    """One line per finding: its claims grouped by verdict, and why a claim is not testable where one is not."""
    lines = ["| finding | the study says | verdicts of its contrasts (the rows below) |", "| --- | --- | --- |"]
    for finding, says in FINDINGS.items():
        mine = [row for row in rows if row.claim.finding == finding]
        groups: dict[str, list[str]] = {}
        for row in mine:
            groups.setdefault(row.outcome, []).append(row.claim.says)
        parts = [f"**{outcome}** ({len(names)}): {'; '.join(names)}" for outcome, names in groups.items()]
        reasons = sorted({row.reason for row in mine if row.reason})
        parts += [f"not testable because {reason}" for reason in reasons]
        lines.append(f"| {finding} | {says} | {'<br>'.join(parts) or 'not run yet'} |")
    return "\n".join(lines)


def findings_block(summaries: Mapping[str, xr.Dataset | None]) -> str:
    rows = [judge(claim, summaries) for claim in [*CLAIMS, *rule_claims(summaries)]]
    return (
        summary_table(rows)
        + "\n\nEvery contrast (mean +- sd over seeds; A - B with its 95% Welch interval; the rank p is the "
        "smallest an exact two-sided rank test gives at these n, reached only by complete separation):\n\n"
        + claim_table(rows)
    )


def comparisons_block(summaries: Mapping[str, xr.Dataset | None]) -> str:
    return claim_table([judge(claim, summaries) for claim in COMPARISONS], verdicts=False)


def seeds_table(pcc: xr.DataArray, method: str, epochs: int | None) -> pd.DataFrame:
    """Mean, sd and number of seeds of `pcc` per (amortization, batch) of one method at one epoch count."""
    pcc = pcc.sel({"method": method, "variant": "2022" if method == "destvi" else "default"})
    if method == "destvi":
        pcc = pcc.sel({"max_epochs": epochs})
    frame = pcc.squeeze(drop=True).to_dataframe(name="pcc").reset_index().dropna(subset=["pcc"])
    if "batch_size" in frame:  # the aggregate's batch sizes are numbers, or text where one is "auto"
        frame["batch_size"] = frame["batch_size"].astype(str)
    keys = [k for k in ("amortization", "batch_size") if k in frame]
    return frame.groupby(keys)["pcc"].agg(["mean", "std", "count"])


def layers(summary: xr.Dataset, method: str = "destvi", types: list[str] = EXCITATORY) -> pd.DataFrame:
    """Excitatory-layer PCC per configuration: mean, sd and number of seeds; rows (amortization, batch)."""
    pcc = summary["pcc"].sel({"cell_type": types}).mean("cell_type")
    return seeds_table(pcc, method, EPOCHS)


def measure(name: str, summary: xr.Dataset, method: str = "destvi", epochs: int | None = None) -> pd.DataFrame:
    """An experiment's measure per configuration (at its base epochs): the overview figure's and the rule's."""
    epochs = epochs or base_epochs(summary)
    return seeds_table(_measure(name, summary), method, epochs if method == "destvi" else None)


def text(table: pd.DataFrame, key: tuple | str) -> str:
    if key not in table.index:
        return "not run"
    row = table.loc[key]
    if int(row["count"]) == 1:  # one seed has no spread
        return f"{row['mean']:.3f} (n=1)"
    return f"{row['mean']:.3f} +- {row['std']:.3f} (n={int(row['count'])})"


def _batch_key(batch: str) -> tuple[int, int]:
    return (1, 0) if batch == "auto" else (0, int(batch))


def settings(name: str, summary: xr.Dataset) -> pd.DataFrame:
    """Every destVI setting of an experiment, one row per seed: its configuration (CONFIGURATION), the epochs
    and steps it trained, the batch `auto` used, and its measure."""
    part = summary.sel({"method": "destvi"})
    done = part["status"] == "done"
    frame = xr.Dataset(
        {
            "value": _measure(name, part).where(done),
            "steps": part["n_steps"].where(done),
            "used": part["batch_size_used"].where(done),
            "epochs": final_epochs(part).where(done),
        }
    )
    frame = frame.to_dataframe().reset_index().dropna(subset=["value"])
    frame["batch_size"] = frame["batch_size"].astype(str)
    keys = [key for key in CONFIGURATION if key in frame]
    return frame[[*keys, "seed", "epochs", "steps", "used", "value"]]


def configuration(frame: pd.DataFrame) -> list[str]:
    return [key for key in CONFIGURATION if key in frame]


def destvi_table(name: str, summary: xr.Dataset) -> str:
    """destVI's measure per configuration, one column per amortization, with each one's epochs and steps
    (the epochs a step budget reached); a column for each other key that varies (dataset, variant, ...)."""
    frame = settings(name, summary)
    amortizations = sorted(frame["amortization"].unique())
    words = "excitatory-layer PCC" if not is_merfish(name) else "all-type PCC"
    shown = [key for key in SHOWN if key in frame and frame[key].nunique() > 1]
    lines = [
        "| " + "".join(f"{SHOWN[key]} | " for key in shown) + "batch | epochs | optimizer steps | "
        + " | ".join(f"{a}: {words}" for a in amortizations) + " |",
        "|" + " --- |" * len(shown) + " --- | ---: | ---: |" + " --- |" * len(amortizations),
    ]  # fmt: skip
    rows = [key for key in configuration(frame) if key != "amortization"]
    base = base_epochs(summary)

    def order(key: tuple) -> tuple:
        at = dict(zip(rows, key, strict=True))
        return (*[str(at[k]) for k in shown], at["max_epochs"] != base, at["max_epochs"], _batch_key(at["batch_size"]))

    for _, at in sorted(frame.groupby(rows), key=lambda group: order(group[0])):
        batch = str(at["batch_size"].iloc[0])
        label = f"auto ({int(at['used'].max())})" if batch == "auto" else batch
        cells = [cell(at[at["amortization"] == a]["value"].to_numpy()) for a in amortizations]
        lines.append(
            "| " + "".join(f"{at[k].iloc[0]} | " for k in shown)
            + f"{label} | {at['epochs'].max():,.0f} | {int(at['steps'].max()):,} | " + " | ".join(cells) + " |"
        )  # fmt: skip
    return "\n".join(lines)


def budget_table(name: str, summary: xr.Dataset) -> str:
    """E1: each batch's measure at every budget of E1_AT, read from its trajectory, one column per
    amortization and budget: the same tasks at equal steps and at equal epochs."""
    lines = [
        "| batch | " + " | ".join(f"{am}: at {at}" for am in ("both", "latent") for at in E1_AT) + " |",
        "| --- |" + " --- |" * (2 * len(E1_AT)),
    ]
    summaries = {name: summary}
    for batch in sorted({str(b) for b in settings(name, summary)["batch_size"]}, key=_batch_key):
        cells = [
            cell(side_seeds(at_budget_side(am, int(batch), at), summaries).values)
            for am in ("both", "latent") for at in E1_AT
        ]  # fmt: skip
        lines.append(f"| {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def controls_table(name: str, summary: xr.Dataset) -> str:
    """The controls and Cell2location beside destVI: each one's measure, all-type PCC and RMSE, and how many
    destVI settings fall below it on the measure (by mean; and with every seed below every run of it)."""
    frame = settings(name, summary)
    by_setting = frame.groupby(configuration(frame))["value"]
    means, highs = by_setting.mean(), by_setting.max()
    total = len(means)
    merfish = is_merfish(name)
    head = "all-type PCC" if merfish else "excitatory-layer PCC | all-type PCC"
    lines = [
        f"| | runs | {head} | all-type RMSE | destVI settings below it (of {total}): by mean | every seed below |",
        "| --- | ---: |" + " ---: |" * (3 if merfish else 4) + " --- |",
    ]
    kinds = [("control", kind) for kind in CONTROLS] + [("cell2location", "default")]
    for method, variant in kinds:
        part = pick(summary, {"method": method, "variant": variant})
        done = part["status"] == "done"
        if not bool(done.any()):
            continue
        pcc = part["pcc"].where(done)
        constant = bool(pcc.isnull().all("cell_type").where(done, False).any())  # a map with one value everywhere
        values = _measure(name, part).where(done).values.ravel()
        values = values[np.isfinite(values)]
        n = len(values) or int(done.sum())
        label = "Cell2location" if method == "cell2location" else variant.replace("_", " ")
        if constant or not n:
            cells = ["undefined (one value in every spot)"] * (1 if merfish else 2)
            below = ["", ""]
        else:
            cells = [mean_sd(values)] if merfish else [mean_sd(values), mean_sd(_all_types(name, part))]
            below = [f"{int((means < values.mean()).sum())}", f"{int((highs < values.min()).sum())}"]
        rmse = mean_sd(part["mean_rmse_cell_type"].where(done))
        lines.append(f"| {label} | {n} | " + " | ".join([*cells, rmse, *below]) + " |")
    rmse = pick(summary, {"method": "destvi"})
    rmse = rmse["mean_rmse_cell_type"].where(rmse["status"] == "done")
    all_types = settings_range(_all_types(name, summary.sel({"method": "destvi"})))
    cells = [f"{means.min():.3f} to {means.max():.3f}"] + ([] if merfish else [all_types])
    lines.append(
        f"| destVI, its {total} settings (range of their means) | {len(frame)} | "
        + " | ".join([*cells, settings_range(rmse), "", ""])
        + " |"
    )
    return "\n".join(lines)


def mean_sd(values: xr.DataArray | np.ndarray) -> str:
    values = np.asarray(values).ravel()
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return ""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} +- {values.std(ddof=1):.3f}"


def settings_range(values: xr.DataArray) -> str:
    """The range of the means over seeds of every setting (other dims than seed)."""
    means = values.mean("seed").values.ravel()
    means = means[np.isfinite(means)]
    return f"{means.min():.3f} to {means.max():.3f}" if len(means) else ""


def seed_table(name: str, summary: xr.Dataset, types: list[str]) -> str:
    """Every destVI seed's all-type PCC and the PCC of `types`: where a mean hides one seed losing a type."""
    part = summary.sel({"method": "destvi", "variant": "2022"})
    done = part["status"] == "done"
    columns = {"all types": part["mean_pcc_cell_type"]} | {
        kind: part["pcc"].sel({"cell_type": kind}).drop_vars("cell_type") for kind in types
    }
    frame = xr.Dataset({k: v.where(done) for k, v in columns.items()}).to_dataframe()
    frame = frame.reset_index().dropna(subset=["all types"])
    frame["batch"] = frame["batch_size"].astype(str).map(_batch_key)
    lines = [
        f"| amortization | batch | epochs | seed | all types | {' | '.join(types)} |",
        "| --- | --- | ---: | ---: |" + " ---: |" * (len(types) + 1),
    ]
    for _, row in frame.sort_values(["amortization", "max_epochs", "batch", "seed"]).iterrows():
        values = " | ".join(f"{row[c]:.2f}" for c in columns)
        lines.append(
            f"| {row['amortization']} | {row['batch_size']} | {row['max_epochs']:,} | {row['seed']} | {values} |"
        )
    return "\n".join(lines)


def variants(name: str, summary: xr.Dataset) -> str:
    """The destVI variants an experiment ran, in words ("2022 settings", "current settings")."""
    return " and ".join(f"{variant} settings" for variant in sorted(settings(name, summary)["variant"].unique()))


def reference_seed_table(name: str, summary: xr.Dataset) -> str:
    """E6: per batch, each reference model's seeds (mean +- sd), the sd of the three references' means and the
    mean sd within one reference: which of the two a batch-size contrast has to beat."""
    frame = settings(name, summary)
    references = sorted(frame["reference_seed"].unique())
    lines = [
        "| batch | " + " | ".join(f"reference seed {r}" for r in references)
        + " | sd of the references' means | mean sd within a reference |",
        "| --- |" + " --- |" * len(references) + " ---: | ---: |",
    ]  # fmt: skip
    for batch in sorted(frame["batch_size"].unique(), key=_batch_key):
        at = frame[frame["batch_size"] == batch].groupby("reference_seed")["value"]
        cells = [cell(at.get_group(r).to_numpy()) if r in at.groups else "" for r in references]
        between, within = at.mean().std(ddof=1), at.std(ddof=1).mean()
        lines.append(f"| {batch} | " + " | ".join(cells) + f" | {fmt(between, 3)} | {fmt(within, 3)} |")
    return "\n".join(lines)


def experiment_block(name: str, summary: xr.Dataset | None) -> str:
    if summary is None:
        return f"{name}: not run yet"
    return (
        f"destVI ({variants(name, summary)}) on {EXPERIMENTS.get(name, name)}, mean +- sd over seeds:\n\n"
        + destvi_table(name, summary)
        + "\n\nControls and the study's baseline beside it (one run each for the controls, which do not train):\n\n"
        + controls_table(name, summary)
        + (
            f"\n\nHow much of the spread is the reference model's (excitatory-layer PCC):\n\n"
            f"{reference_seed_table(name, summary)}"
            if "reference_seed" in summary.dims
            else ""
        )
        + (
            f"\n\nThe same tasks read at equal budgets from their trajectories (excitatory-layer PCC):\n\n"
            f"{budget_table(name, summary)}"
            if name == E1
            else ""
        )
        + (
            f"\n\nEvery seed, with the PCC of the cell types the text follows:\n\n{seed_table(name, summary, types)}"
            if (types := SEED_TYPES.get(name))
            else ""
        )
    )


def blocks() -> dict[str, str]:
    """Every generated block of the README, by name: the rule, the findings, the comparisons, and per
    experiment its tables."""
    names = {*EXPERIMENTS, *MERFISH, "starmap-189-last-batch", GPU}
    summaries = {name: load(name) for name in names}
    out = {"rule": RULE, "findings": findings_block(summaries), "comparisons": comparisons_block(summaries)}
    from advice import advice_block, answer_block  # advice.py reads this module's tables: imported once it is

    out["advice"] = advice_block(summaries)
    out["answer"] = answer_block(summaries)
    for name in EXPERIMENTS:
        out[f"experiment {name}"] = experiment_block(name, summaries[name])
    return out


def markers(name: str) -> tuple[str, str]:
    return f"<!-- findings.py: {name} begin -->", f"<!-- findings.py: {name} end -->"


READMES = {"answer": HERE.parent.parent / "README.md"}
"""Blocks written into another README than this folder's: the answer opens the repository's README."""


def readme_of(name: str) -> Path:
    return READMES.get(name, HERE / "README.md")


def put(readme: str, name: str, block: str) -> str:
    """The README with `block` between its markers (an error naming the markers where they are missing)."""
    begin, end = markers(name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(readme):
        where = readme_of(name).relative_to(HERE.parent.parent)
        sys.exit(f"{where}: no '{begin}' ... '{end}'; add them where the block belongs.")
    return pattern.sub(lambda _: f"{begin}\n{block}\n{end}", readme, count=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the blocks in the READMEs")
    parser.add_argument("--write", action="store_true", help="replace the blocks in the READMEs")
    args = parser.parse_args()
    current = blocks()
    if not (args.check or args.write):
        print("\n\n".join(f"{markers(name)[0]}\n{block}\n{markers(name)[1]}" for name, block in current.items()))
        return
    for path in sorted({readme_of(name) for name in current}):
        mine = {name: block for name, block in current.items() if readme_of(name) == path}
        where = path.relative_to(HERE.parent.parent)
        readme = path.read_text()
        expected = readme
        for name, block in mine.items():
            expected = put(expected, name, block)
        if args.write:
            write_atomically(path, lambda tmp, text=expected: tmp.write_text(text))  # never half a README
            print(f"wrote the findings blocks into {where}")
        elif expected != readme:
            differ = [name for name, block in mine.items() if put(readme, name, block) != readme]
            sys.exit(f"{where}: {', '.join(differ)} differ from findings.py's; run it with --write.")
    if args.check:
        print("the READMEs' findings blocks are what findings.py computes")


if __name__ == "__main__":
    main()
